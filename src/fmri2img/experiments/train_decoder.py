"""``fmri2img train``: fit a decoder (plus preprocessing) from an index to target embeddings.

Only training rows are ever seen by the preprocessing and the decoder. Decoders that stop
early (torch) train on the ``train`` split and watch ``val``; decoders that tune themselves
by grouped cross-validation (ridge) get ``train`` + ``val`` as training data. The test split
is never read here. With ``imagery_index``, imagery trials of one protocol fold are added
(mixed training) or, with ``perception`` off, used alone (an imagery-only decoder).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from fmri2img.config import StrictModel
from fmri2img.data.splits import Protocol, make_fold
from fmri2img.data.trials import IndexData, Targets
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json, write_text
from fmri2img.io.reuse import forget_state_of_other_options
from fmri2img.models import registry
from fmri2img.models.pipeline import fit_pipeline
from fmri2img.report.figures import loss_curve

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/decoder.pt"
SEED_CHECKPOINT = "best.pt"


class TrainConfig(StrictModel):
    index: Path = Field(description="trial index (build-index output); may hold {subject}")
    subject: str | None = Field(None, description="fills {subject} in the index path "
                                "(subj01, ...)")
    targets: Path = Field(description="embedding table (embed-images output, or the "
                                      "simulator's targets/clip_like.parquet)")
    model_type: str = Field(description="decoder name")
    output_dir: Path
    model: dict[str, Any] = Field(default_factory=dict,
                                  description="the decoder's own options")
    epochs: int | None = Field(None, ge=1, description="torch decoders: maximum epochs")
    loss: str | None = Field(None, description="gradient-trained decoders: the training loss "
                                               "(mse, cosine, hybrid, infonce); default: "
                                               "the decoder's")
    device: str | None = Field(None, description="cpu, cuda, cuda:N (default cpu)")
    zscore: bool = Field(True, description="z-score each voxel over the training rows")
    pca: int | None = Field(
        None, ge=1, description="PCA components on z-scored voxels, fitted on training "
                                "trials (e.g. 512); none: no PCA")
    domains: list[str] = Field(default_factory=lambda: ["perception"],
                               description="trial domains of the index to train on")
    perception: bool = Field(True, description="train on the index's perception trials; "
                                               "off with imagery_index: imagery only")
    imagery_index: Path | None = Field(
        None, description="NSD-Imagery index of the same subject and voxels: add the "
                          "imagery trials of a protocol fold (mixed training)")
    protocol: Protocol = Field("leave-targets-out",
                               description="imagery_index: protocol of the folds")
    n_folds: int = Field(6, ge=2, description="imagery_index: folds of the protocol")
    fold: int = Field(0, ge=0, description="imagery_index: the fold (0-based)")
    data_fraction: float = Field(1.0, gt=0, le=1,
                                 description="imagery_index: share of imagery training trials")
    imagery_domain: Literal["imagery", "perception"] = Field(
        "imagery", description="imagery_index: its imagery trials, or its vision trials of "
                               "the same targets (the mixed method's control)")
    seed: int = 0

    _known = field_validator("model_type")(
        classmethod(lambda cls, v: registry.decoders.check_name(v)))

    @model_validator(mode="after")
    def _imagery(self) -> TrainConfig:
        if "{subject}" in str(self.index):
            if self.subject is None:
                raise ValueError(f"index {self.index} holds {{subject}}: give subject "
                                 "(--subject subj01)")
            # object.__setattr__: assignment would validate (and re-enter) the model
            object.__setattr__(self, "index",
                               Path(str(self.index).replace("{subject}", self.subject)))
        if not self.perception and self.imagery_index is None:
            raise ValueError("perception off needs imagery_index (an imagery-only decoder)")
        if self.fold >= self.n_folds:
            raise ValueError(f"--fold {self.fold} does not exist with --n-folds "
                             f"{self.n_folds} (folds are 0..{self.n_folds - 1})")
        if self.loss is not None:
            if "loss" not in registry.decoders.get(self.model_type).Config.model_fields:
                raise ValueError(f"--loss applies to gradient-trained decoders; "
                                 f"{self.model_type} is fitted in closed form")
            registry.decoders.get(self.model_type).Config(loss=self.loss)  # a known loss
        self._check_decoder_options()
        return self

    def _check_decoder_options(self) -> None:
        """--set KEY=VALUE checked here, before any data is read."""
        config = registry.decoders.get(self.model_type).Config
        flags = {k: v for k, v in (("epochs", self.epochs), ("device", self.device),
                                   ("loss", self.loss))
                 if v is not None and k in config.model_fields}
        try:
            config(**{**flags, **self.model})
        except ValidationError as exc:
            raise ValueError("; ".join(
                f"--set {'.'.join(map(str, e['loc'])) or '?'}={e.get('input')!r}: {e['msg']}"
                f" (options of {self.model_type}: {', '.join(config.model_fields)})"
                for e in exc.errors(include_url=False))) from None

    def decoder_options(self) -> dict[str, Any]:
        opts = dict(self.model)
        fields = registry.decoders.get(self.model_type).Config.model_fields
        for key, value in (("epochs", self.epochs), ("device", self.device),
                           ("seed", self.seed), ("loss", self.loss)):
            if value is None:
                continue
            if key in fields:
                opts.setdefault(key, value)
            elif key != "seed":
                log.warning("--%s does not apply to %s; ignored", key, self.model_type)
        if "checkpoint_dir" in fields:
            # decoders trained by epochs keep a resume state here, so that a killed run
            # given the same command again continues; --set checkpoint_dir=null: none kept
            opts.setdefault("checkpoint_dir", str(Path(self.output_dir) / "checkpoints"
                                                  / "train_state"))
        return opts


def checkpoint_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT


def link_best(output_dir: Path) -> None:
    """``OUTPUT_DIR/best.pt``: the seed's name for the checkpoint (``--checkpoint
    .../best.pt`` in its documents), a relative link to ``checkpoints/decoder.pt``."""
    best = Path(output_dir) / SEED_CHECKPOINT
    tmp = best.with_name(best.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(CHECKPOINT)
        tmp.replace(best)
    except OSError as exc:  # a file system without links: the seed's name is not written
        log.info("best.pt not linked (%s); use %s", exc, checkpoint_path(output_dir))


def train_decoder(cfg: TrainConfig) -> dict[str, Any]:
    """Fit, save ``checkpoints/decoder.pt`` and a summary; returns the summary."""
    t0 = time.perf_counter()
    # a finished run with other options trains again (a study rerun with new model
    # options); where the folder lies is no option of the run (a moved folder resumes)
    out = Path(cfg.output_dir)
    forget_state_of_other_options(out, cfg, out / "checkpoints" / "train_state",
                                  ignore=("output_dir",))
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    decoder_cls = registry.decoders.get(cfg.model_type)
    train_splits = ["train"] if decoder_cls.uses_validation else ["train", "val"]
    rows = data.select(splits=train_splits, domains=cfg.domains)
    if not cfg.perception:
        rows = rows.iloc[:0]
    val_rows = data.select(splits=["val"], domains=cfg.domains) \
        if decoder_cls.uses_validation and cfg.perception else rows.iloc[:0]
    parts = [(data, rows)]
    Y = targets.rows(rows["stimulus"].tolist())
    groups = rows["stimulus"].to_numpy()
    val_parts = [(data, val_rows)] if len(val_rows) else []
    imagery_meta = None
    if cfg.imagery_index is not None:
        idata, im_train, im_val, imagery_meta = _imagery_fold(cfg, data, targets,
                                                               decoder_cls)
        parts.append((idata, im_train))
        Y = np.concatenate([Y, targets.rows(im_train["stimulus"].tolist())])
        groups = np.concatenate([groups, im_train["stimulus"].to_numpy()])
        if len(im_val):
            val_parts.append((idata, im_val))
    n_rows = sum(len(r) for _, r in parts)
    if n_rows < 2:
        raise DataError(f"{n_rows} training rows (splits {train_splits}, domains "
                        f"{cfg.domains}); nothing to train on", cfg.index)
    n_val = sum(len(r) for _, r in val_parts)
    log.info("%s: %d training rows x %d voxels -> %d-d targets (%s); %d validation rows",
             data.subject, n_rows, data.n_voxels, Y.shape[1], targets.path.name, len(val_rows))
    X_val = Y_val = None
    if val_parts:
        X_val = _betas(val_parts)
        Y_val = np.concatenate([targets.rows(r["stimulus"].tolist()) for _, r in val_parts])
    t_fit = time.perf_counter()
    # the betas are handed over without a reference here: fit_pipeline frees them once
    # they are preprocessed
    pipeline = fit_pipeline(cfg.model_type, _betas(parts), Y, groups=groups, X_val=X_val,
                            Y_val=Y_val, zscore=cfg.zscore, pca=cfg.pca, seed=cfg.seed,
                            options=cfg.decoder_options())
    fit_s = time.perf_counter() - t_fit
    report = pipeline.decoder.fit_report()

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
            "n_val_rows": n_val,
            "fit_seconds": round(fit_s, 3),
        },
        "config": cfg.resolved(),
        # the mean-target control and the centred cosine of every evaluation start here:
        # row-weighted, over the perception training rows (imagery-only: its own rows)
        "target_mean": [float(x) for x in
                        (Y[:len(rows)] if len(rows) else Y).astype(np.float64).mean(axis=0)],
    }
    if imagery_meta is not None:
        meta["imagery_training"] = imagery_meta
    pipeline.save(checkpoint_path(out), meta)
    link_best(out)
    cfg.save(out / "config_resolved.yaml")
    if report.history:
        write_text(out / "logs" / "history.csv", pd.DataFrame(report.history).to_csv(index=False))
        loss_curve(report.history, out / "figures" / "loss_curve",
                   title=f"{cfg.model_type}, {data.subject}")
    summary = {
        "checkpoint": str(checkpoint_path(out)),
        "model_type": cfg.model_type,
        "subject": data.subject,
        "n_train_rows": n_rows,
        "n_val_rows": n_val,
        "n_voxels": data.n_voxels,
        "n_features": pipeline.decoder.n_inputs,
        "target_dim": int(Y.shape[1]),
        "fit_seconds": round(fit_s, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
        "epochs_run": len(report.history) or None,
        "chosen": report.chosen,
    }
    write_json(out / "train_summary.json", summary)
    log.info("%s %s trained in %.1f s -> %s", data.subject, cfg.model_type, fit_s,
             checkpoint_path(out))
    return summary


def _betas(parts: list[tuple[IndexData, pd.DataFrame]]) -> np.ndarray:
    arrays = [d.betas(r) for d, r in parts]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _imagery_fold(cfg: TrainConfig, data: IndexData, targets: Targets, decoder_cls: Any
                  ) -> tuple[IndexData, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Single imagery trials of the fold's training targets, and its validation trials
    (training data for self-tuning decoders, validation data for the others)."""
    assert cfg.imagery_index is not None
    idata = IndexData.open(cfg.imagery_index)
    if idata.n_voxels != data.n_voxels or idata.subject != data.subject:
        raise DataError(f"imagery index of {idata.subject} with {idata.n_voxels} voxels does "
                        f"not match the perception index ({data.subject}, {data.n_voxels})",
                        cfg.imagery_index)
    fold = make_fold(idata.frame, protocol=cfg.protocol, fold=cfg.fold, n_folds=cfg.n_folds,
                     seed=cfg.seed, data_fraction=cfg.data_fraction,
                     domains=(cfg.imagery_domain,), source=cfg.imagery_index)
    train, val = fold.train, fold.val
    if not decoder_cls.uses_validation:
        train, val = pd.concat([train, val]), val.iloc[:0]
    desc = {**fold.describe(idata.index_checksum), "domains": [cfg.imagery_domain],
            "strategy": "mixed" if cfg.perception else "imagery_only",
            "target_mean": targets.mean(train["stimulus"].tolist())}
    log.info("%s: + %d %s trials of the imagery session, %d targets (%s fold %d/%d)",
             idata.subject, len(train), cfg.imagery_domain, train["stimulus"].nunique(),
             fold.protocol, fold.fold, fold.n_folds)
    return idata, train, val, desc
