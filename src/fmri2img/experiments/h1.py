"""H1 of the study: decoders trained on perception, scored on perception and on imagery.

For each subject and decoder: train on the subject's NSD perception index, evaluate on its
test split and on the NSD-Imagery session. Finished cells are reused when their saved
configuration and inputs match, so a restarted study only does what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import subject_name
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder
from fmri2img.io.reuse import is_done, mark_done, run_once
from fmri2img.models import registry

log = logging.getLogger(__name__)


class H1Config(StrictModel):
    """Where H1 reads its indices (``indices/<subject>_{nsd,imagery}.parquet``) and writes
    its decoders and evaluations, and what it trains."""

    out: Path
    indices: Path
    targets: Path
    subjects: list[int]
    models: list[str]
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 0
    n_permutations: int = Field(1000, ge=1)
    n_bootstrap: int = Field(2000, ge=1)

    _models = field_validator("models")(
        classmethod(lambda cls, v: [registry.decoders.check_name(m) for m in v]))
    _model_options = field_validator("model_options")(
        classmethod(lambda cls, v: registry.decoders.check_options(v)))


def run_h1(cfg: H1Config) -> list[dict[str, Any]]:
    rows = []
    for s in cfg.subjects:
        subj = subject_name(s)
        for model in cfg.models:
            base = cfg.out / "decoders" / subj / model
            tcfg = TrainConfig(index=cfg.indices / f"{subj}_nsd.parquet", targets=cfg.targets,
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
                    index=cfg.indices / index, checkpoint=checkpoint_path(base),
                    targets=cfg.targets, mode=mode, output_dir=out, seed=cfg.seed,
                    n_permutations=cfg.n_permutations, n_bootstrap=cfg.n_bootstrap,
                    perception_metrics=(cfg.out / "eval" / subj / model / "perception" /
                                        "metrics.json") if mode == "imagery" else None)
                results[mode] = run_once(ecfg, "metrics.json", evaluate)
            rows.append(_row(subj, model, results["perception"], results["imagery"]))
    return rows


COMPARED = ("cosine", "retrieval_top1", "two_way")


def _row(subj: str, model: str, perc: dict, img: dict) -> dict[str, Any]:
    def metric(block: dict, k: str) -> dict[str, Any] | None:
        if k not in block["overall"]:
            return None
        return {"value": block["overall"][k], "ci": block["ci"][k],
                "p": block.get("p_vs_chance", {}).get(k)}

    ratios = img["transfer"]["metrics"]
    primary = img["transfer"]["primary"]
    control = (img.get("controls") or {}).get("mean_target")
    return {
        "subject": subj, "model": model,
        "perception": {k: metric(perc, k) for k in (*COMPARED, "cosine_centred")},
        "perception_pool": min(perc["config"]["pool_size"], perc["gallery_size"]),
        "perception_per_item": {k: {key: v[k] for key, v in perc["by_stimulus"].items()}
                                for k in COMPARED},
        "imagery": {k: metric(img, k) for k in (*COMPARED, "cosine_centred")},
        "vision": {k: metric(img["vision"], k) for k in ("cosine", "two_way")},
        "mean_target": ({k: metric(control, k) for k in ("cosine", "two_way")}
                        if control else None),
        "transfer_ratio": {"metric": primary, "value": ratios[primary]["ratio"],
                           "ci": ratios[primary]["ci"]},
        "transfer_ratio_cosine": {"value": ratios["cosine"]["ratio"],
                                  "ci": ratios["cosine"]["ci"]},
        "repetitions_matched": img["transfer"]["repetitions_matched"],
    }
