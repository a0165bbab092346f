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
from typing import Any, Literal

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


class ImageryTraining(StrictModel):
    """Imagery trials added to a decoder's training data (mixed training, imagery only),
    chosen by a protocol fold so that evaluation can leave out what was seen."""

    index: Path  # an NSD-Imagery index of the same subject and voxels
    protocol: Literal["leave-targets-out", "held-out-repetitions"] = "leave-targets-out"
    n_folds: int = Field(6, ge=2)
    fold: int = Field(0, ge=0)
    data_fraction: float = Field(1.0, gt=0, le=1)
    seed: int = 0


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
    include_perception: bool = True  # False with `imagery`: an imagery-only decoder
    imagery: ImageryTraining | None = None
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
    if not cfg.include_perception:
        rows = rows.iloc[:0]
    val_rows = data.select(splits=["val"], domains=cfg.domains) \
        if decoder_cls.uses_validation and cfg.include_perception else rows.iloc[:0]
    X = data.betas(rows)
    Y = targets.rows(rows["stimulus"].tolist())
    groups = rows["stimulus"].to_numpy()
    imagery_meta = None
    X_vi = Y_vi = None
    if cfg.imagery is not None:
        X_im, Y_im, g_im, X_vi, Y_vi, imagery_meta = _imagery_rows(cfg, data, targets,
                                                                     decoder_cls)
        X, Y = np.concatenate([X, X_im]), np.concatenate([Y, Y_im])
        groups = np.concatenate([groups, g_im])
    if len(X) < 2:
        raise DataError(f"{len(X)} training rows (splits {train_splits}, domains "
                        f"{cfg.domains}); nothing to train on", cfg.index)
    log.info("%s: %d training rows x %d voxels -> %d-d targets (%s); %d validation rows",
             data.subject, len(X), X.shape[1], Y.shape[1], targets.path.name, len(val_rows))
    pre = Preprocessor(zscore=cfg.zscore, pca_components=cfg.pca, seed=cfg.seed).fit(X)
    Xp = pre.transform(X)
    n_rows = len(X)
    del X
    fit_kw: dict[str, Any] = {"groups": groups}
    if len(val_rows) or X_vi is not None:
        xv = [data.betas(val_rows)] + ([X_vi] if X_vi is not None else [])
        yv = [targets.rows(val_rows["stimulus"].tolist())] + ([Y_vi] if Y_vi is not None
                                                             else [])
        fit_kw["X_val"] = pre.transform(np.concatenate(xv))
        fit_kw["Y_val"] = np.concatenate(yv)
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
            "n_rows": n_rows,
            "n_perception_rows": len(rows),
            "n_stimuli": int(rows["stimulus"].nunique()),
            "n_val_rows": len(val_rows),
            "fit_seconds": round(fit_s, 3),
        },
        "config": cfg.resolved(),
    }
    if imagery_meta is not None:
        meta["imagery_training"] = imagery_meta
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
        "n_train_rows": n_rows,
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


def _imagery_rows(cfg: TrainConfig, data: IndexData, targets: Targets, decoder_cls: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                             np.ndarray | None, dict[str, Any]]:
    """Single imagery trials of the fold's training targets (plus its validation trials:
    training data for self-tuning decoders, validation data for the others)."""
    from fmri2img.experiments.imagery_protocol import make_fold

    im = cfg.imagery
    assert im is not None
    idata = IndexData.open(im.index)
    if idata.n_voxels != data.n_voxels or idata.subject != data.subject:
        raise DataError(f"imagery index of {idata.subject} with {idata.n_voxels} voxels does "
                        f"not match the perception index ({data.subject}, {data.n_voxels})",
                        im.index)
    fold = make_fold(idata.frame, protocol=im.protocol, fold=im.fold, n_folds=im.n_folds,
                     seed=im.seed, data_fraction=im.data_fraction, source=im.index)
    train, val = fold.train, fold.val
    if not decoder_cls.uses_validation:
        train, val = pd.concat([train, val]), val.iloc[:0]
    X = idata.betas(train)
    Y = targets.rows(train["stimulus"].tolist())
    X_val = idata.betas(val) if len(val) else None
    Y_val = targets.rows(val["stimulus"].tolist()) if len(val) else None
    desc = {**fold.describe(idata.index_checksum), "domains": ["imagery"],
            "strategy": "mixed" if cfg.include_perception else "imagery_only"}
    log.info("%s: + %d imagery trials of %d targets (%s fold %d/%d)", idata.subject,
             len(train), train["stimulus"].nunique(), fold.protocol, fold.fold, fold.n_folds)
    return X, Y, train["stimulus"].to_numpy(), X_val, Y_val, desc


def _chosen_hyperparameters(decoder: Any) -> dict[str, Any]:
    alpha = getattr(decoder, "alpha_", None)
    if alpha is None:
        return {}
    alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
    return {"alpha_median": float(np.median(alpha)), "alpha_min": float(alpha.min()),
            "alpha_max": float(alpha.max())}
