"""Image metrics in the ablation table: with a diffusion pipeline given
(``ablate --reconstruct-pipeline DIR``), every cell's imagery predictions are reconstructed
and scored against the stimuli (``reconstruct``), and the row carries the scores.

Reconstruction runs after the cells, each keyed by its own resolved options and inputs
(:func:`fmri2img.io.reuse.run_once`), so changing the pipeline or its options redoes the
images without retraining a cell, and a finished reconstruction is reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fmri2img.experiments.reconstruct import METRICS, RESULT, ReconstructConfig, reconstruct
from fmri2img.io.reuse import run_once
from fmri2img.progress import progress

log = logging.getLogger(__name__)

# ReconstructConfig fields the ablation sets itself
OWN_FIELDS = {"predictions", "pipeline", "backend", "output_dir", "domains"}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` validated as reconstruct's (for the config validator)."""
    own = OWN_FIELDS & set(options)
    if own:
        raise ValueError(f"{sorted(own)} are set by the ablation")
    ReconstructConfig(predictions=Path("predictions"), pipeline="pipeline",
                      output_dir=Path("reconstruction"), **options)
    return options


def add_image_metrics(rows: list[dict[str, Any]], out: Path, pipeline: str, backend: str,
                      options: dict[str, Any], name_of: Any) -> None:
    """Reconstruct and score each row's imagery predictions; sets ``row["image_metrics"]``
    (the imagery domain's scores) and ``row["reconstruction"]`` (its folder)."""
    def predictions(row: dict[str, Any]) -> Path:
        return out / "eval" / name_of(row["method"], float(row["fraction"])) / \
            row["subject"] / "imagery"

    # reference rows (the mean-target bounds) are computed, not decoded: no predictions
    decoded = [r for r in rows if (predictions(r) / "predictions.json").exists()]
    for row in progress(decoded, "ablation reconstructions", total=len(decoded)):
        name = name_of(row["method"], float(row["fraction"]))
        rcfg = ReconstructConfig(predictions=predictions(row), pipeline=pipeline, backend=backend,
                                 output_dir=out / "reconstruction" / name / row["subject"],
                                 domains=["imagery"], **options)
        result = run_once(rcfg, RESULT, reconstruct)
        metrics_file = rcfg.output_dir / METRICS
        row["reconstruction"] = {"folder": str(rcfg.output_dir),
                                 "untrained_test_pipeline":
                                     result.get("untrained_test_pipeline")}
        if metrics_file.exists():
            scores = json.loads(metrics_file.read_text())["domains"].get("imagery", {})
            row["image_metrics"] = scores
