"""H1 of the study: decoders trained on perception, scored on perception and on imagery.

For each subject and decoder: train on the subject's NSD perception index, evaluate on its
test split and on the NSD-Imagery session. Finished cells are reused when their saved
configuration matches, so a restarted study only does what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from fmri2img.data.nsd_layout import subject_name
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.reuse import is_done, mark_done, run_once
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder

if TYPE_CHECKING:
    from fmri2img.experiments.study import StudyConfig

log = logging.getLogger(__name__)


def run_h1(cfg: StudyConfig, idx_dir: Path, targets: Path) -> list[dict[str, Any]]:
    rows = []
    for s in cfg.subjects:
        subj = subject_name(s)
        for model in cfg.models:
            base = cfg.out / "decoders" / subj / model
            tcfg = TrainConfig(index=idx_dir / f"{subj}_nsd.parquet", targets=targets,
                               model_type=model, output_dir=base,
                               model=dict(cfg.model_options.get(model, {})), seed=cfg.seed)
            if is_done(base, tcfg, "train_summary.json") and checkpoint_path(base).exists():
                log.info("%s %s: reusing %s", subj, model, checkpoint_path(base))
            else:
                train_decoder(tcfg)
                mark_done(base, tcfg)
            results = {}
            for mode, index in (("perception", f"{subj}_nsd.parquet"),
                                ("imagery", f"{subj}_imagery.parquet")):
                out = cfg.out / "eval" / subj / model / mode
                ecfg = EvalConfig(
                    index=idx_dir / index, checkpoint=checkpoint_path(base), targets=targets,
                    mode=mode, output_dir=out, seed=cfg.seed,
                    n_permutations=cfg.n_permutations, n_bootstrap=cfg.n_bootstrap,
                    perception_metrics=(cfg.out / "eval" / subj / model / "perception" /
                                        "metrics.json") if mode == "imagery" else None)
                results[mode] = run_once(ecfg, "metrics.json", evaluate)
            rows.append(_row(subj, model, results["perception"], results["imagery"]))
    return rows


def _row(subj: str, model: str, perc: dict, img: dict) -> dict[str, Any]:
    def metric(block: dict, k: str) -> dict[str, Any]:
        return {"value": block["overall"][k], "ci": block["ci"][k],
                "p": block.get("p_vs_chance", {}).get(k)}

    tr = img["transfer"]["metrics"][img["transfer"]["primary"]]
    tw = img["transfer"]["metrics"]["two_way"]
    return {
        "subject": subj, "model": model,
        "perception": {k: metric(perc, k) for k in ("cosine", "retrieval_top1", "two_way")},
        "perception_pool": min(perc["config"]["pool_size"], perc["gallery_size"]),
        "imagery": {k: metric(img, k) for k in ("cosine", "retrieval_top1", "two_way")},
        "vision": {k: metric(img["vision"], k) for k in ("cosine", "two_way")},
        "transfer_ratio": {"metric": img["transfer"]["primary"], "value": tr["ratio"],
                           "ci": tr["ci"]},
        "transfer_ratio_two_way": {"value": tw["ratio"], "ci": tw["ci"]},
        "repetitions_matched": img["transfer"]["repetitions_matched"],
    }


def _ci(m: dict[str, Any]) -> str:
    return f"{m['value']:.2f} [{m['ci'][0]:.2f},{m['ci'][1]:.2f}]"


def print_h1_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="H1: perception-trained decoders on perception and imagery, "
                  "value [95% CI]")
    for col in ("subject", "model", "perc. top-1", "perc. 2-way", "vision 2-way",
                "imagery 2-way", "ratio (cosine)", "ratio (2-way)"):
        table.add_column(col, justify="right" if col not in ("subject", "model") else "left",
                         no_wrap=True)
    for r in rows:
        table.add_row(
            r["subject"], r["model"],
            f"{_ci(r['perception']['retrieval_top1'])} /{r['perception_pool']}",
            _ci(r["perception"]["two_way"]), _ci(r["vision"]["two_way"]),
            _ci(r["imagery"]["two_way"]), _ci(r["transfer_ratio"]),
            _ci(r["transfer_ratio_two_way"]),
        )
    console.print(table)
    console.print("perc. = NSD perception test images (top-1 in pools of /N); vision and "
                  "imagery = the 12 simple + complex NSD-Imagery targets (2-way chance 0.5); "
                  "ratio = (imagery - chance) / (vision - chance), repetitions matched")
