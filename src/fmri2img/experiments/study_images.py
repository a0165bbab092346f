"""The study's reconstruction step: one subject's imagery-session predictions (imagery and
vision trials of the same targets) through a diffusion pipeline, scored and drawn as the
grid stimulus | perception reconstruction | imagery reconstruction.

Without ``reconstruct_pipeline`` the study builds a tiny unCLIP pipeline with random
weights (:func:`fmri2img.models.diffusion.tiny.build_tiny_pipeline`), so that the main
job runs the real code path on any machine; its grid and numbers are labelled as produced
by an untrained test pipeline. With real weights (a local folder) the same step gives
real reconstructions.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.trials import Targets
from fmri2img.experiments.reconstruct import RESULT, UNTRAINED, ReconstructConfig, reconstruct
from fmri2img.io.reuse import run_once
from fmri2img.models.diffusion.tiny import build_tiny_pipeline

log = logging.getLogger(__name__)

TINY_SIZE = 64  # big enough to see the grid's panels, small enough for a CPU
TINY_STEPS = 4


def run_study_reconstruction(out: Path, *, subject: int, model: str, targets: Path,
                             pipeline: str | None, backend: str, options: dict[str, Any],
                             seed: int, n_bootstrap: int,
                             console: Console) -> dict[str, Any] | None:
    if importlib.util.find_spec("diffusers") is None:
        log.warning("reconstruction skipped: diffusers is not installed "
                    "(pip install 'fmri2img[embed]')")
        return None
    subj = subject_name(subject)
    predictions = out / "eval" / subj / model / "imagery"
    if not (predictions / "predictions.json").exists():
        log.warning("reconstruction skipped: no imagery predictions of %s %s in %s", subj,
                    model, predictions)
        return None
    opts = dict(options)
    if pipeline is None:
        table = Targets.open(targets)
        spec = table.provenance()
        pipeline = str(build_tiny_pipeline(
            backend, out / "pipelines" / f"tiny-{backend}-{table.dim}", embed_dim=table.dim,
            seed=seed, image_size=TINY_SIZE, embedding_model=spec["model"],
            normalization=spec["normalization"]))
        opts.setdefault("generator", {})
        opts["generator"] = {"steps": TINY_STEPS, "seed": seed, **opts["generator"]}
    rcfg = ReconstructConfig(predictions=predictions, pipeline=pipeline, backend=backend,
                             output_dir=out / "reconstruction" / subj / model,
                             n_bootstrap=n_bootstrap, **opts)
    result = run_once(rcfg, RESULT, reconstruct)
    grid = rcfg.output_dir / "grid.png"
    console.print(f"[bold]Reconstructions[/bold] ({subj}, {model}, {backend}): {grid}")
    if result.get("untrained_test_pipeline"):
        console.print(f"  {UNTRAINED}", markup=False)
    metrics = rcfg.output_dir / "image_metrics.md"
    if metrics.exists():
        console.print(metrics.read_text(), markup=False, soft_wrap=True)
    return {"output_dir": str(rcfg.output_dir), "grid": str(grid),
            "untrained_test_pipeline": result.get("untrained_test_pipeline"),
            "seconds": result.get("seconds")}
