#!/usr/bin/env python
"""Benchmark Vietoris-Rips persistent homology (H0, H1): giotto-ph, gudhi, ripser and
ours (``fmri2img.analysis.topology.persistence``, the wrapper the topology analysis
calls, on its default backend).

One run, one seeded point cloud (``--n`` points x ``--dim`` dims, float64): ``--n /
10`` cluster centres with 10 noisy members each, the shape of decoded trial embeddings
(targets x repetitions). Each library gets the points through its own point-cloud
entry (giotto-ph ``ripser_parallel``, gudhi ``RipsPersistence``, ripser ``ripser``),
maxdim 1, coefficients Z/2, one thread; each runs once to warm up and then
``--repeats`` times, and the median time is reported with its ratio to the fastest
library. The diagrams of every library are checked against the first one's.

Target: ours within 1.1x of the fastest library (exit 1 otherwise).

Examples::

    python benchmarks/bench_topology.py
    python benchmarks/bench_topology.py --n 1000 --repeats 3 --json /tmp/topology.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.analysis import topology as topo

log = logging.getLogger("bench_topology")

TARGET_RATIO = 1.1
PER_CLUSTER = 10


def make_points(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // PER_CLUSTER), dim)) * 2.0
    label = np.arange(n) % len(centres)
    return centres[label] + rng.standard_normal((n, dim))


def library_calls(x: np.ndarray) -> dict[str, Callable[[], list[np.ndarray]]]:
    """Each installed library through its own point-cloud entry."""
    calls: dict[str, Callable[[], list[np.ndarray]]] = {}
    try:
        from gph import ripser_parallel
        calls["giotto-ph"] = lambda: ripser_parallel(x, maxdim=1, coeff=2,
                                                     n_threads=1)["dgms"]
    except ImportError:
        log.warning("giotto-ph not installed (pip install giotto-ph): skipped")
    try:
        from gudhi.sklearn.rips_persistence import RipsPersistence
        rp = RipsPersistence(homology_dimensions=[0, 1], homology_coeff_field=2, n_jobs=1)
        calls["gudhi"] = lambda: rp.fit_transform([x])[0]
    except ImportError:
        log.warning("gudhi not installed (pip install gudhi): skipped")
    try:
        from ripser import ripser
        calls["ripser"] = lambda: ripser(x, maxdim=1, coeff=2)["dgms"]
    except ImportError:
        log.warning("ripser not installed (pip install ripser): skipped")
    return calls


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    out = fn()  # warm-up (imports, first-touch allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="points")
    ap.add_argument("--dim", type=int, default=512, help="dimensions")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per library")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore")  # ripser warns about more columns than rows
    x = make_points(args.n, args.dim, args.seed)
    calls = library_calls(x)
    if not calls:
        log.error("no persistent-homology library installed")
        return 1
    backend = topo.resolve_backend()
    calls["ours"] = lambda: topo.persistence(x, backend=backend)
    results: dict[str, Any] = {}
    diagrams: dict[str, list[np.ndarray]] = {}
    for name, fn in calls.items():
        median, times, dgms = time_call(fn, args.repeats)
        diagrams[name] = [topo.sort_diagram(np.asarray(d).reshape(-1, 2)) for d in dgms[:2]]
        results[name] = {"median_s": median, "times_s": times}
    libs = [n for n in results if n != "ours"]
    fastest = min(libs, key=lambda n: results[n]["median_s"])
    ref = diagrams[libs[0]]
    for name, res in results.items():
        res["ratio_to_fastest"] = res["median_s"] / results[fastest]["median_s"]
        res["same_diagrams"] = all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-9)
            for a, b in zip(diagrams[name], ref, strict=True))
        log.info("%-10s %8.4f s  x%.2f of %s  (H0 %d, H1 %d bars; same as %s: %s)", name,
                 res["median_s"], res["ratio_to_fastest"], fastest,
                 len(diagrams[name][0]), len(diagrams[name][1]), libs[0],
                 res["same_diagrams"])
    ok = results["ours"]["ratio_to_fastest"] <= TARGET_RATIO and all(
        r["same_diagrams"] for r in results.values())
    log.info("ours (backend %s) %.2fx the fastest (%s): target <= %.1fx %s", backend,
             results["ours"]["ratio_to_fastest"], fastest, TARGET_RATIO,
             "met" if ok else "NOT met")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "n": args.n, "dim": args.dim, "repeats": args.repeats, "seed": args.seed,
            "backend": backend, "fastest": fastest, "target_ratio": TARGET_RATIO,
            "met": ok, "results": results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
