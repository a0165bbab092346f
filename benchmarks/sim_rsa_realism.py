"""The simulator against the real NSD-Imagery vision-imagery RSA table.

For each seed: simulate a preset (the imagery session and one perception session, no
images: the imagery betas do not depend on either), build the four subjects' imagery
indices, compute the table with ``fmri2img.experiments.imagery_rsa`` (the code behind
``fmri2img imagery-rsa``), and keep the group means. Prints, per set and ROI, the real
value, the mean over seeds, the SD across seeds and the distance, and whether the
stimulus-by-region crossover holds in the means.

    .venv/bin/python benchmarks/sim_rsa_realism.py --seeds 8          # ~1.5 min
    .venv/bin/python benchmarks/sim_rsa_realism.py --seeds 5 --null
    .venv/bin/python benchmarks/sim_rsa_realism.py --parameters imagery_simple_gain=0.3
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.simulate import SimulationConfig, simulate
from fmri2img.experiments.imagery_rsa import ImageryRSAConfig, run_imagery_rsa

# Group mean rho of a public analysis of the official NSD-Imagery betas (7 held-out
# participants, subjects 2-8; per participant, ROI and task: betas z-scored within run,
# repetitions averaged per target, 6x6 RDM of 1 - Pearson r, Spearman rho of the 15
# vision and 15 imagery distances), as given in issue 17.
REAL = {
    ("A", "early_visual"): 0.415, ("A", "higher_visual"): 0.269, ("A", "nsdgeneral"): 0.339,
    ("B", "early_visual"): 0.135, ("B", "higher_visual"): 0.365, ("B", "nsdgeneral"): 0.364,
}
TOLERANCE = 0.15


def one_seed(seed: int, scale: str, null: bool, parameters: dict, work: Path) -> dict:
    root = work / f"seed{seed}"
    cfg = SimulationConfig.from_scale(scale, seed=seed, null=null, n_sessions=1,
                                      write_images=False, **parameters)
    simulate(root / "nsd", cfg, progress=False)
    paths = []
    for s in cfg.subjects:
        out = root / "indices" / f"subj{s:02d}_imagery.parquet"
        build_imagery_index(ImageryIndexConfig(nsd_root=root / "nsd", subject=s, output=out))
        paths.append(out)
    result = run_imagery_rsa(ImageryRSAConfig(imagery_index=paths, output_dir=root / "rsa"))
    shutil.rmtree(root)
    return {f"{s}/{r}": result["group"][s][r]["mean"] for s, r in REAL}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--scale", default="default", choices=["small", "default"])
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--parameters", nargs="*", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 unless every mean is within {TOLERANCE} and the crossover "
                         "holds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parameters = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.parameters)}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    per_seed = {}
    with tempfile.TemporaryDirectory(prefix="sim_rsa_") as tmp:
        for seed in seeds:
            per_seed[seed] = one_seed(seed, args.scale, args.null, parameters, Path(tmp))
            print(f"seed {seed}: " + "  ".join(f"{k} {v:+.3f}" for k, v in
                                               per_seed[seed].items()), flush=True)
    rows, ok = [], True
    print(f"\n{'set':4} {'ROI':14} {'real':>6} {'sim':>6} {'SD':>5} {'diff':>6}  per seed")
    for (s, r), real in REAL.items():
        v = np.array([per_seed[seed][f"{s}/{r}"] for seed in seeds])
        diff = float(v.mean() - real)
        ok &= abs(diff) <= TOLERANCE
        rows.append({"set": s, "roi": r, "real": real, "mean": float(v.mean()),
                     "sd": float(v.std(ddof=1)) if v.size > 1 else None, "diff": diff,
                     "per_seed": v.tolist()})
        print(f"{s:4} {r:14} {real:6.3f} {v.mean():6.3f} {v.std(ddof=1):5.2f} {diff:+6.3f}  "
              + " ".join(f"{x:+.2f}" for x in v))
    mean = {(x["set"], x["roi"]): x["mean"] for x in rows}
    crossover = bool(mean[("A", "early_visual")] > mean[("A", "higher_visual")]
                     and mean[("B", "higher_visual")] > mean[("B", "early_visual")])
    print(f"\nall within {TOLERANCE}: {ok}; crossover in the means (A early > A higher, "
          f"B higher > B early): {crossover}; {len(seeds)} seeds x 4 subjects, "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "null": args.null,
                                         "parameters": parameters, "seeds": seeds,
                                         "rows": rows, "within_tolerance": ok,
                                         "crossover": crossover}, indent=2))
    return 1 if args.check and not (ok and crossover) else 0


if __name__ == "__main__":
    sys.exit(main())
