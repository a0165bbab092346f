"""``fmri2img train-adapter``: an adapter on the output of a frozen perception decoder,
trained on imagery trials of an NSD-Imagery index.

The decoder is only ever asked for predictions (it is loaded, used, never written; its
checkpoint's checksum is recorded and checked again at the end), so the adapter is the only
thing that learns. Trials are chosen by a protocol (:func:`fmri2img.data.splits.make_fold`, default
leave-targets-out) or, with ``split_train``/``split_val``, by the index's own split labels.
Training examples are decoder outputs of repetition averages of random size
(:func:`subset_averages`), the targets the stimuli's embeddings.

Outputs in ``output_dir``: ``checkpoints/adapter_best.pt`` and ``adapter_last.pt`` (tensors
+ JSON, with what the adapter saw so evaluation can exclude it), ``checkpoints/trainer/``
(resume state: a killed run restarted with the same command continues), ``logs/history.csv``,
``cache/targets.npz`` (the target rows used), ``metrics_train.json``, ``metrics_val.json``,
``config_resolved.yaml`` and ``figures/loss_curve.{png,pdf}``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from fmri2img.data.splits import Fold, make_fold, usable_rows
from fmri2img.data.trials import IndexData, Targets, average_by_stimulus, subset_averages
from fmri2img.errors import DataError
from fmri2img.eval import metrics as M
from fmri2img.experiments.fold_training import FoldTrainingOptions
from fmri2img.experiments.recorded import targets_for
from fmri2img.io.atomic import atomic_path, write_json, write_text
from fmri2img.io.checksum import file_checksum
from fmri2img.io.reuse import forget_state_of_other_options, run_once
from fmri2img.models import registry
from fmri2img.models.adapters import (
    AdapterConfig,
    apply_adapter,
    build_adapter,
    load_adapter,
    pack,
    save_adapter,
    save_adapter_folds,
)
from fmri2img.models.pipeline import DecoderPipeline
from fmri2img.report.figures import loss_curve
from fmri2img.training.resume import last_weights
from fmri2img.training.seeding import seed_everything
from fmri2img.training.trainer import train_from_start

log = logging.getLogger(__name__)

BEST = "checkpoints/adapter_best.pt"
LAST = "checkpoints/adapter_last.pt"


class AdapterTrainConfig(FoldTrainingOptions):
    index: Path = Field(description="NSD-Imagery index")
    checkpoint: Path = Field(description="the frozen decoder")
    targets: Path | None = Field(None, description="embedding table (default: the one "
                                 "recorded in the decoder checkpoint)")
    output_dir: Path
    model_type: str | None = Field(None, description="checked against the checkpoint")
    adapter: str = Field("mlp", description="adapter type")
    hidden: int = Field(256, ge=1, description="mlp adapter: hidden width")
    dropout: float = Field(0.1, ge=0, lt=1, description="mlp adapter: dropout")
    condition_token: bool = Field(False, description="learned per-domain vectors; trains on "
                                                     "imagery and vision trials")
    # A control for conditioned adapters: the same examples, domain labels permuted among
    # them, so the per-domain vectors cannot learn what is specific to imagery.
    shuffle_domains: bool = Field(False, description="with condition_token: permute the "
                                  "domain labels among the training examples (a control "
                                  "with the same data)")
    split_train: str | None = Field(None, description="use the index's split labels "
                                                      "instead of a protocol")
    split_val: str | None = None
    fold: int | None = Field(None, ge=0, description="the one fold to train (0-based); "
                             "default: every fold, saved together so that eval scores each "
                             "target with the fold that never saw it")

    _known = field_validator("adapter")(
        classmethod(lambda cls, v: registry.adapters.check_name(v)))

    @model_validator(mode="after")
    def _check(self) -> AdapterTrainConfig:
        if (self.split_train is None) != (self.split_val is None):
            raise ValueError("give both split_train and split_val, or neither")
        if self.condition_token and self.train_domain != "imagery":
            raise ValueError("a conditioned adapter trains on both domains; leave "
                             "train_domain at imagery")
        if self.shuffle_domains and not self.condition_token:
            raise ValueError("shuffle_domains permutes the condition labels; it needs "
                             "condition_token")
        return self

    @property
    def domains(self) -> tuple[str, ...]:
        return ("imagery", "perception") if self.condition_token else (self.train_domain,)


def _fold(cfg: AdapterTrainConfig, data: IndexData) -> Fold:
    if cfg.split_train is None:
        assert cfg.fold is not None
        return make_fold(data.frame, protocol=cfg.protocol, fold=cfg.fold, n_folds=cfg.n_folds,
                         seed=cfg.seed, data_fraction=cfg.data_fraction, domains=cfg.domains,
                         source=cfg.index)
    rows = usable_rows(data.frame, cfg.domains)
    train = rows[rows["split"] == cfg.split_train]
    val = rows[rows["split"] == cfg.split_val]
    if len(train) == 0:
        raise DataError(f"no {'/'.join(cfg.domains)} rows in split {cfg.split_train!r}",
                        cfg.index)
    test = sorted(set(rows["stimulus"]) - set(train["stimulus"]) - set(val["stimulus"]))
    return Fold("index-splits", 0, 1, train, val, test)


def domain_examples(pipeline: DecoderPipeline, data: IndexData, rows: pd.DataFrame,
                    targets: Targets, n_averages: int, rng: np.random.Generator,
                    condition: bool, shuffle: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decoder outputs, target embeddings, domain of each example) of repetition averages
    drawn per (domain, target); inputs are packed with the domain code when
    ``condition``, a permutation of the true codes when ``shuffle``."""
    xs, ys, doms = [], [], []
    for domain, part in rows.groupby("domain", sort=True):
        if not len(part):
            continue
        avg, keys = subset_averages(part["stimulus"].to_numpy(), data.betas(part), n_averages,
                                    rng)
        xs.append(pipeline.predict(avg))
        ys.append(targets.rows(list(keys)))
        doms += [str(domain)] * len(keys)
    x = np.concatenate(xs)
    if condition:
        x = pack(x, rng.permutation(doms) if shuffle else doms)
    return x, np.concatenate(ys), np.array(doms)


def _item_metrics(pipeline: DecoderPipeline, adapter: Any, data: IndexData,
                  rows: pd.DataFrame, targets: Targets) -> dict[str, Any]:
    """Base vs adapted decoder on these rows' imagery trials, averaged per target."""
    rows = rows[rows["domain"] == "imagery"]
    if rows["stimulus"].nunique() < 2:
        return {"n_items": int(rows["stimulus"].nunique()),
                "note": "fewer than 2 imagery targets"}
    info, Xa = average_by_stimulus(rows, data.betas(rows))
    base = pipeline.predict(Xa)
    adapted = apply_adapter(adapter, base, "imagery")
    T = targets.rows(info["stimulus"].tolist())
    out: dict[str, Any] = {"n_items": len(info), "n_trials": len(rows),
                           "targets": info["stimulus"].tolist()}
    for name, pred in (("base", base), ("adapted", adapted)):
        out[name] = {"cosine": float(M.cosine_per_item(pred, T).mean()),
                     "two_way": float(M.two_way_per_item(pred, T, np.arange(len(T))).mean())}
    return out


def _check_unchanged(path: Path, checksum: str) -> None:
    if file_checksum(path) != checksum:  # pragma: no cover - the decoder is never written
        raise RuntimeError(f"the decoder checkpoint {path} changed during adapter training")


def train_adapter(cfg: AdapterTrainConfig) -> dict[str, Any]:
    """Train the adapter of one fold (``fold`` given, or the index's own splits), or of
    every fold of the protocol, saved as one checkpoint of folds."""
    cfg = cfg.model_copy(update={"targets": targets_for(cfg.targets, cfg.checkpoint)})
    if cfg.fold is not None or cfg.split_train is not None:
        return _train_fold(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    summaries = []
    for k in range(cfg.n_folds):
        fold_cfg = cfg.model_copy(update={"fold": k, "output_dir": out / "folds" / f"fold{k}"})
        fold_out = Path(fold_cfg.output_dir)
        forget_state_of_other_options(fold_out, fold_cfg, fold_out / "checkpoints" / "trainer")
        summaries.append(run_once(fold_cfg, "train_summary.json", _train_fold))
    for name, key in ((BEST, "adapter_best"), (LAST, "adapter_last")):
        folds = [load_adapter(Path(s[key])) for s in summaries]
        save_adapter_folds(out / name, folds, {
            "protocol": summaries[0]["protocol"], "n_folds": cfg.n_folds,
            "note": "one adapter per fold; eval scores each target with the adapter whose "
                    "fold held it out"})
    for name in ("metrics_train.json", "metrics_val.json"):
        write_json(out / name, {
            "note": "per fold: its training / early-stopping targets, not a test result",
            "folds": [json.loads((Path(s["adapter_best"]).parents[1] / name).read_text())
                      for s in summaries]})
    histories = [pd.read_csv(Path(s["adapter_best"]).parents[1] / "logs" / "history.csv")
                 .assign(fold=s["fold"]) for s in summaries]
    write_text(out / "logs" / "history.csv", pd.concat(histories).to_csv(index=False))
    cfg.save(out / "config_resolved.yaml")
    summary = {
        "adapter_best": str(out / BEST), "adapter_last": str(out / LAST),
        "subject": summaries[0]["subject"], "adapter": cfg.adapter,
        "condition": cfg.condition_token, "shuffled_domains": cfg.shuffle_domains,
        "n_parameters": summaries[0]["n_parameters"], "protocol": summaries[0]["protocol"],
        "n_folds": cfg.n_folds, "folds": summaries,
        "test_targets": sorted(t for s in summaries for t in s["test_targets"]),
        "train_seconds": round(sum(s["train_seconds"] for s in summaries), 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(out / "train_summary.json", summary)
    log.info("%s adapter: %d folds of %s in %.1f s -> %s", cfg.adapter, cfg.n_folds,
             summary["protocol"], summary["total_seconds"], out / BEST)
    return summary


def _train_fold(cfg: AdapterTrainConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    assert cfg.targets is not None
    base_sum = file_checksum(cfg.checkpoint)
    pipeline, meta = DecoderPipeline.load(cfg.checkpoint)
    if cfg.model_type and meta["model_type"] != cfg.model_type:
        raise DataError(f"--model-type {cfg.model_type} given, but the checkpoint holds a "
                        f"{meta['model_type']} decoder", cfg.checkpoint)
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    if pipeline.n_inputs != data.n_voxels:
        raise DataError(f"the decoder takes {pipeline.n_inputs} voxels, this index has "
                        f"{data.n_voxels} ({data.subject})", cfg.index)
    if pipeline.n_outputs != targets.dim:
        raise DataError(f"the decoder predicts {pipeline.n_outputs}-d embeddings, the table "
                        f"holds {targets.dim}-d ones", cfg.targets)
    fold = _fold(cfg, data)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.fold or 0, 0xADA]))
    x_tr, y_tr, _ = domain_examples(pipeline, data, fold.train, targets, cfg.n_averages, rng,
                                    cfg.condition_token, cfg.shuffle_domains)
    val = None
    if len(fold.val):
        x_va, y_va, _ = domain_examples(pipeline, data, fold.val, targets,
                                        max(1, cfg.n_averages // 2), rng, cfg.condition_token,
                                        cfg.shuffle_domains)
        val = (torch.from_numpy(x_va), torch.from_numpy(y_va))
    used = sorted(set(fold.train["stimulus"]) | set(fold.val["stimulus"]))
    with atomic_path(out / "cache" / "targets.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(used), embeddings=targets.rows(used))

    acfg = AdapterConfig(hidden=cfg.hidden, dropout=cfg.dropout, condition=cfg.condition_token)
    seed_everything(cfg.seed)
    adapter = build_adapter(cfg.adapter, pipeline.n_outputs, acfg)
    trainer_dir = out / "checkpoints" / "trainer"
    tcfg = cfg.trainer_config(trainer_dir, f"adapter {cfg.adapter} fold {fold.fold}")
    log.info("%s: %s adapter (%d parameters) on %d examples from %d trials (%s, fold %d/%d); "
             "%d validation trials", data.subject, cfg.adapter, adapter.n_parameters(),
             len(x_tr), len(fold.train), fold.protocol, fold.fold, fold.n_folds, len(fold.val))
    result, start, kept = train_from_start(
        adapter, cfg.loss_fn(), (torch.from_numpy(x_tr), torch.from_numpy(y_tr)), val, tcfg,
        extra_meta={"adapter": {"type": cfg.adapter, **acfg.resolved()}})
    adapter.cpu().eval()
    _check_unchanged(cfg.checkpoint, base_sum)

    ameta = {
        "base_checkpoint": {"path": str(cfg.checkpoint), "checksum": base_sum,
                            "model_type": meta["model_type"]},
        "imagery_training": {**fold.describe(data.index_checksum), "domains": list(cfg.domains),
                             "target_mean": targets.mean(fold.train["stimulus"].tolist())},
        "data": data.provenance(),
        "targets": targets.provenance(),
        "train": {**result.to_meta(), "n_examples": len(x_tr), "start_val_loss": start,
                  "kept_identity": kept},
        "config": cfg.resolved(),
    }
    save_adapter(out / BEST, adapter, ameta)
    last = build_adapter(cfg.adapter, pipeline.n_outputs, acfg)
    last.load_state_dict(last_weights(trainer_dir))
    save_adapter(out / LAST, last, {**ameta, "weights": "last epoch"})

    metrics_train = _item_metrics(pipeline, adapter, data, fold.train, targets)
    metrics_val = _item_metrics(pipeline, adapter, data, fold.val, targets)
    label = {"protocol": fold.protocol, "fold": fold.fold, "n_folds": fold.n_folds,
             "note": "training / early-stopping targets: not a test result"}
    write_json(out / "metrics_train.json", {**label, **metrics_train})
    write_json(out / "metrics_val.json", {**label, **metrics_val})
    write_text(out / "logs" / "history.csv", pd.DataFrame(result.history).to_csv(index=False))
    cfg.save(out / "config_resolved.yaml")
    if cfg.figures:
        loss_curve(result.history, out / "figures" / "loss_curve",
                   title=f"{cfg.adapter} adapter, {data.subject}, fold {fold.fold}")
    summary = {
        "adapter_best": str(out / BEST), "adapter_last": str(out / LAST),
        "subject": data.subject, "adapter": cfg.adapter, "condition": cfg.condition_token,
        "shuffled_domains": cfg.shuffle_domains,
        "n_parameters": adapter.n_parameters(), "protocol": fold.protocol,
        "fold": fold.fold, "test_targets": fold.test_targets,
        "train_seconds": round(result.seconds, 3), "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "kept_identity": kept,
        "total_seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(out / "train_summary.json", summary)
    log.info("%s adapter fold %d: %d epochs (best %s) in %.1f s; val cosine %s -> %s",
             cfg.adapter, fold.fold, result.epochs_run, result.best_epoch, result.seconds,
             _fmt(metrics_val, "base"), _fmt(metrics_val, "adapted"))
    return summary


def _fmt(m: dict[str, Any], key: str) -> str:
    return f"{m[key]['cosine']:.3f}" if key in m else "-"
