"""``fmri2img train``: fit a decoder (plus preprocessing) from an index to target embeddings.

Only training rows are ever seen by the preprocessing and the decoder. Decoders that stop
early (torch) train on the ``train`` split and watch ``val``; decoders that tune themselves
by grouped cross-validation (ridge) get ``train`` + ``val`` as training data. The test split
is never read here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.atomic import write_json, write_text
from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.experiments.trial_data import IndexData, Targets
from fmri2img.models import registry
from fmri2img.models.pipeline import DecoderPipeline
from fmri2img.models.preprocess import Preprocessor

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/decoder.pt"


class TrainConfig(StrictModel):
    index: Path
    targets: Path
    model_type: str
    output_dir: Path
    model: dict[str, Any] = Field(default_factory=dict)  # the decoder's own options
    epochs: int | None = None  # shortcut for model.epochs (torch decoders)
    device: str | None = None  # shortcut for model.device
    zscore: bool = True
    pca: int | None = None  # PCA components (e.g. 512); None = no PCA
    domains: list[str] = Field(default_factory=lambda: ["perception"])
    seed: int = 0

    @field_validator("model_type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in registry.available():
            raise ValueError(f"unknown model type {v!r}; available: {registry.available()}")
        return v

    def decoder_options(self) -> dict[str, Any]:
        opts = dict(self.model)
        fields = registry.get(self.model_type).Config.model_fields
        for key, value in (("epochs", self.epochs), ("device", self.device),
                           ("seed", self.seed)):
            if value is None:
                continue
            if key in fields:
                opts.setdefault(key, value)
            elif key != "seed":
                log.warning("--%s does not apply to %s; ignored", key, self.model_type)
        return opts


def checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT


def train_decoder(cfg: TrainConfig) -> dict[str, Any]:
    """Fit, save ``checkpoints/decoder.pt`` and a summary; returns the summary."""
    t0 = time.perf_counter()
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    decoder_cls = registry.get(cfg.model_type)
    train_splits = ["train"] if decoder_cls.uses_validation else ["train", "val"]
    rows = data.select(splits=train_splits, domains=cfg.domains)
    if len(rows) < 2:
        raise DataError(f"{len(rows)} training rows (splits {train_splits}, domains "
                        f"{cfg.domains}); nothing to train on", cfg.index)
    val_rows = data.select(splits=["val"], domains=cfg.domains) \
        if decoder_cls.uses_validation else rows.iloc[:0]

    X = data.betas(rows)
    Y = targets.rows(rows["stimulus"].tolist())
    log.info("%s: %d training rows x %d voxels -> %d-d targets (%s); %d validation rows",
             data.subject, len(rows), X.shape[1], Y.shape[1], targets.path.name, len(val_rows))
    pre = Preprocessor(zscore=cfg.zscore, pca_components=cfg.pca, seed=cfg.seed).fit(X)
    Xp = pre.transform(X)
    del X
    fit_kw: dict[str, Any] = {"groups": rows["stimulus"].to_numpy()}
    if len(val_rows):
        fit_kw["X_val"] = pre.transform(data.betas(val_rows))
        fit_kw["Y_val"] = targets.rows(val_rows["stimulus"].tolist())
    decoder = registry.build(cfg.model_type, Xp.shape[1], Y.shape[1], cfg.decoder_options())
    t_fit = time.perf_counter()
    decoder.fit(Xp, Y, **fit_kw)
    fit_s = time.perf_counter() - t_fit

    pipeline = DecoderPipeline(pre, decoder)
    history = list(getattr(decoder, "history_", None) or [])
    out = Path(cfg.output_dir)
    meta = {
        "data": data.provenance(),
        "targets": targets.provenance(),
        "train": {
            "splits": train_splits,
            "domains": cfg.domains,
            "n_rows": len(rows),
            "n_stimuli": int(rows["stimulus"].nunique()),
            "n_val_rows": len(val_rows),
            "fit_seconds": round(fit_s, 3),
        },
        "config": cfg.resolved(),
    }
    pipeline.save(checkpoint_path(out), meta)
    cfg.save(out / "config_resolved.yaml")
    if history:
        hist = pd.DataFrame(history)
        write_text(out / "logs" / "history.csv", hist.to_csv(index=False))
        from fmri2img.report.figures import loss_curve

        loss_curve(history, out / "figures" / "loss_curve",
                   title=f"{cfg.model_type}, {data.subject}")
    summary = {
        "checkpoint": str(checkpoint_path(out)),
        "model_type": cfg.model_type,
        "subject": data.subject,
        "n_train_rows": len(rows),
        "n_val_rows": len(val_rows),
        "n_voxels": data.n_voxels,
        "n_features": int(Xp.shape[1]),
        "target_dim": int(Y.shape[1]),
        "fit_seconds": round(fit_s, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
        "epochs_run": len(history) or None,
        "chosen": _chosen_hyperparameters(decoder),
    }
    write_json(out / "train_summary.json", summary)
    log.info("%s %s trained in %.1f s -> %s", data.subject, cfg.model_type, fit_s,
             checkpoint_path(out))
    return summary


def _chosen_hyperparameters(decoder: Any) -> dict[str, Any]:
    alpha = getattr(decoder, "alpha_", None)
    if alpha is None:
        return {}
    alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
    return {"alpha_median": float(np.median(alpha)), "alpha_min": float(alpha.min()),
            "alpha_max": float(alpha.max())}
