"""Training of an EEG-fMRI aligner: the three losses of Brain2Image and their loop.

The loop takes any ``nn.Module`` with ``forward(eeg, fmri) -> aligned`` and
``eeg_embedding(eeg) -> embedding`` (a model may also offer
``aligned_and_embedding(eeg, fmri)`` to share one backbone pass between the two) and a
dataset of dicts with ``eeg``, ``fmri``, ``label`` (cluster) and ``pair`` (image pair id).

What differs from the original: InfoNCE is symmetric and records of one pair are not each
other's negatives (the ``cross`` records repeat a target, which made false negatives);
checkpoints are tensors plus JSON (safetensors, never pickles); a rerun of the same call
resumes from the last epoch and ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from fmri2img.config import StrictModel
from fmri2img.devices import check_device_name, resolve_device
from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path, write_json
from fmri2img.progress import progress
from fmri2img.training.losses import symmetric_infonce
from fmri2img.training.resume import optimizer_from_flat, optimizer_to_flat
from fmri2img.training.seeding import deterministic_algorithms, epoch_generator, seed_everything

logger = logging.getLogger(__name__)

LAST = "last.safetensors"
BEST = "best.safetensors"
_LAST_KIND = "fmri2img.align.last"
_BEST_KIND = "fmri2img.align.best"
# options that may change between a killed run and its resumption without changing the
# result; any other difference means the checkpoint belongs to another experiment
_RESUME_FREE = {"num_workers", "device"}


# -- losses -------------------------------------------------------------------------------

def mse_unit(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared distance of the unit vectors, summed over dims, mean over rows (2 - 2 cos).

    Both sides are normalised so that the term fixes the direction only; the scale of an
    fMRI projection carries no meaning the EEG could predict.
    """
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    return (p - t).pow(2).sum(dim=-1).mean()


def proto_distill(eeg_emb: torch.Tensor, fmri_emb: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
    """Squared distance between the EEG and fMRI prototypes of each cluster in the batch.

    A prototype is the mean embedding of a cluster's rows, L2-normalised; the term pulls
    the two modalities' cluster centres together even where single rows are too noisy to
    match (MultiEYE's prototype distillation).
    """
    if eeg_emb.shape != fmri_emb.shape or eeg_emb.ndim != 2:
        raise ValueError(f"eeg_emb and fmri_emb must be equal (n, d) shapes, got "
                         f"{tuple(eeg_emb.shape)} and {tuple(fmri_emb.shape)}")
    _, inverse = torch.unique(labels.to(eeg_emb.device), return_inverse=True)
    n_classes = int(inverse.max()) + 1
    onehot = F.one_hot(inverse, n_classes).to(eeg_emb.dtype).T  # (classes, rows)
    onehot = onehot / onehot.sum(dim=1, keepdim=True)
    pe = F.normalize(onehot @ eeg_emb, dim=-1)
    pf = F.normalize(onehot @ fmri_emb.to(eeg_emb.dtype), dim=-1)
    return (pe - pf).pow(2).sum(dim=-1).mean()


class LossWeights(StrictModel):
    """Weights of the three loss terms (Brain2Image's run script: 5, 1, 5)."""

    mse: float = Field(5.0, ge=0)
    infonce: float = Field(1.0, ge=0)
    proto: float = Field(5.0, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> LossWeights:
        if self.mse == 0 and self.infonce == 0 and self.proto == 0:
            raise ValueError("at least one loss weight must be positive")
        return self


def alignment_loss(aligned: torch.Tensor, fmri: torch.Tensor, labels: torch.Tensor,
                   pair_ids: torch.Tensor, weights: LossWeights, temperature: float,
                   *, eeg_emb: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted total, the unweighted terms with a positive weight).

    InfoNCE masks rows of the same pair out of each other's negatives (``pair_ids``);
    the prototype term compares ``eeg_emb`` (the EEG-only embedding; ``aligned`` when not
    given) with the fMRI by cluster ``labels``.
    """
    parts: dict[str, torch.Tensor] = {}
    if weights.mse > 0:
        parts["mse"] = mse_unit(aligned, fmri)
    if weights.infonce > 0:
        parts["infonce"] = symmetric_infonce(aligned, fmri, temperature, labels=pair_ids)
    if weights.proto > 0:
        parts["proto"] = proto_distill(aligned if eeg_emb is None else eeg_emb, fmri, labels)
    total = sum((getattr(weights, k) * v for k, v in parts.items()), aligned.new_zeros(()))
    return total, parts


# -- settings -----------------------------------------------------------------------------

class AlignTrainConfig(StrictModel):
    """Options of :func:`train_alignment` (defaults: Brain2Image's run script)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=2, description="InfoNCE needs negatives: 2 or more")
    lr: float = Field(1e-4, gt=0, description="backbone learning rate")
    head_lr_factor: float = Field(5.0, gt=0, description="everything else at lr x this")
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; None: off")
    eta_min: float = Field(1e-6, ge=0, description="cosine schedule floor")
    weights: LossWeights = Field(default_factory=LossWeights)
    temperature: float = Field(0.1, ge=0.01, le=1.0)
    seed: int = 648
    num_workers: int = Field(0, ge=0)
    drop_last: bool = Field(False, description="drop a short last training batch")
    deterministic: bool = True
    device: str = "cpu"

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))


# -- checkpoints --------------------------------------------------------------------------

def _write(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Tensors with the JSON inside the file (the truth) and beside it (for people)."""
    text = json.dumps(info, default=str)
    # safetensors refuses tensors that share memory; copies cost little once per epoch
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={"json": text})
    write_json(path.with_suffix(".json"), json.loads(text))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, info) of a checkpoint written by :func:`train_alignment`."""
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found", path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["json"])
    except Exception as exc:  # safetensors' own error type, KeyError, JSON errors
        raise DataError(f"not a readable alignment checkpoint: {exc}", path) from exc
    return tensors, info


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the model weights of a ``best`` or ``last`` checkpoint; returns its info."""
    tensors, info = read_checkpoint(path)
    if info.get("kind") == _LAST_KIND:
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    elif info.get("kind") != _BEST_KIND:
        raise DataError("not an alignment checkpoint", path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise DataError(f"checkpoint does not fit this model: {exc}", path) from exc
    return info


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    return sorted(f"{prefix}{k}" for k in set(saved) | set(now) if saved.get(k) != now.get(k))


class _Run:
    """Bookkeeping of one run; all of it goes into the ``last`` checkpoint."""

    def __init__(self) -> None:
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_val: float | None = None
        self.best_epoch: int | None = None
        self.seconds = 0.0


def _save_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler, run: _Run,
               cfg: AlignTrainConfig, meta: dict[str, Any], device: torch.device) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    info = {"kind": _LAST_KIND, "config": cfg.resolved(), "meta": meta,
            "optimizer": opt_meta, "scheduler": sched.state_dict(), "epoch": run.epoch,
            "step": run.step, "history": run.history, "best_val_loss": run.best_val,
            "best_epoch": run.best_epoch, "seconds": run.seconds,
            "torch_version": torch.__version__}
    _write(path, tensors, info)


def _resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler, cfg: AlignTrainConfig,
            meta: dict[str, Any], device: torch.device) -> _Run:
    tensors, info = read_checkpoint(path)
    if info.get("kind") != _LAST_KIND:
        raise DataError("not a resume checkpoint of train_alignment", path)
    saved = {k: v for k, v in info["config"].items() if k not in _RESUME_FREE}
    now = {k: v for k, v in cfg.resolved().items() if k not in _RESUME_FREE}
    diff = _differences(saved, now) + _differences(info.get("meta", {}), meta, "meta.")
    if diff:
        raise DataError(f"checkpoint was written by another run ({', '.join(diff)} differ); "
                        "use another out_dir or remove it to start over", path)
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in weights.items()} != shapes:
        raise DataError("checkpoint does not fit this model (other parameter names or "
                        "shapes)", path)
    model.load_state_dict(weights)
    opt.load_state_dict(optimizer_from_flat(tensors, info["optimizer"]))
    sched.load_state_dict(info["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        states = tensors["rng.cuda"]
        if states.shape[0] == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(list(states))
    run = _Run()
    run.epoch, run.step = int(info["epoch"]), int(info["step"])
    run.history = list(info["history"])
    run.best_val, run.best_epoch = info["best_val_loss"], info["best_epoch"]
    run.seconds = float(info["seconds"])
    return run


# -- the loop -----------------------------------------------------------------------------

def _outputs(model: nn.Module, eeg: torch.Tensor, fmri: torch.Tensor, need_emb: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    both = getattr(model, "aligned_and_embedding", None)
    if need_emb and callable(both):
        return both(eeg, fmri)
    aligned = model(eeg, fmri)
    return aligned, (model.eeg_embedding(eeg) if need_emb else None)


def _unpack(batch: dict[str, torch.Tensor], device: torch.device
            ) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, non_blocking=True)
                 for k in ("eeg", "fmri", "label", "pair"))


def _top1(x: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor, chunk: int = 1024) -> float:
    """Share of rows of ``x`` whose most similar ``y`` row belongs to their own pair."""
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    hits = 0
    for s in range(0, xn.shape[0], chunk):
        best = (xn[s:s + chunk] @ yn.T).argmax(dim=1)
        hits += int((pairs[best] == pairs[s:s + chunk]).sum())
    return hits / max(xn.shape[0], 1)


@torch.inference_mode()
def evaluate_alignment(model: nn.Module, ds: Dataset, cfg: AlignTrainConfig,
                       device: torch.device | None = None) -> dict[str, float]:
    """Validation numbers: loss (as trained), mean cosine of aligned vs fMRI, and top-1
    retrieval over the whole set of the aligned output (``top1_aligned``: optimistic, each
    output saw its own fMRI as the query; for monitoring only) and of the EEG-only
    embedding (``top1_eeg``, no such leak)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers)
    total, n = 0.0, 0
    keep: dict[str, list[torch.Tensor]] = {"aligned": [], "emb": [], "fmri": [], "pair": []}
    try:
        for batch in loader:
            eeg, fmri, labels, pairs = _unpack(batch, device)
            aligned, emb = _outputs(model, eeg, fmri, True)
            loss, _ = alignment_loss(aligned, fmri, labels, pairs, cfg.weights,
                                     cfg.temperature, eeg_emb=emb)
            total += float(loss) * eeg.shape[0]
            n += eeg.shape[0]
            for k, v in (("aligned", aligned), ("emb", emb), ("fmri", fmri), ("pair", pairs)):
                keep[k].append(v.float() if v.is_floating_point() else v)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("validation dataset is empty")
    cat = {k: torch.cat(v) for k, v in keep.items()}
    return {
        "loss": total / n,
        "cosine": float(F.cosine_similarity(cat["aligned"], cat["fmri"], dim=-1).mean()),
        "top1_aligned": _top1(cat["aligned"], cat["fmri"], cat["pair"]),
        "top1_eeg": _top1(cat["emb"], cat["fmri"], cat["pair"]),
    }


def _optimizer(model: nn.Module, cfg: AlignTrainConfig) -> torch.optim.AdamW:
    # the pretrained backbone moves slowly, the freshly initialised head and attention fast
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [g for g in ({"params": backbone, "lr": cfg.lr},
                          {"params": rest, "lr": cfg.lr * cfg.head_lr_factor}) if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_alignment(model: nn.Module, train_ds: Dataset, val_ds: Dataset | None,
                    cfg: AlignTrainConfig, out_dir: str | Path, *,
                    meta: dict[str, Any] | None = None,
                    stop_after: int | None = None) -> dict[str, Any]:
    """Train ``model`` in place; returns the history and where the checkpoints are.

    Writes ``out_dir/checkpoints/last.safetensors`` every epoch (weights, optimiser,
    schedule, random state) and ``best.safetensors`` (weights) on a new best validation
    loss, each with a JSON side file, and TensorBoard events under
    ``out_dir/tensorboard``. When ``last`` exists the run continues from it; a checkpoint
    of other options or other ``meta`` (JSON-able: model config, data, initialisation) is
    refused. ``stop_after`` caps the epochs run by this call (a time-limited job); the
    next call picks up from there. The model ends with the last epoch's weights (load the
    best with :func:`load_weights`).
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoints"
    meta = _jsonable(meta or {})
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device)
    opt = _optimizer(model, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    n_train = len(train_ds)  # type: ignore[arg-type]
    steps_per_epoch = (n_train // cfg.batch_size if cfg.drop_last
                       else math.ceil(n_train / cfg.batch_size))
    if steps_per_epoch < 1:
        raise ValueError(f"{n_train} training records give no batch of {cfg.batch_size}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.epochs * steps_per_epoch, eta_min=cfg.eta_min)
    run = _Run()
    if (ckpt / LAST).exists():
        run = _resume(ckpt / LAST, model, opt, sched, cfg, meta, device)
        logger.info("alignment: resuming from %s after epoch %d", ckpt / LAST, run.epoch)
    resumed_from = run.epoch
    need_emb = cfg.weights.proto > 0
    end = cfg.epochs if stop_after is None else min(cfg.epochs, run.epoch + stop_after)
    writer = SummaryWriter(str(out_dir / "tensorboard"),
                           purge_step=run.step + 1 if run.step else None)
    try:
        with deterministic_algorithms(cfg.deterministic):
            for epoch in range(run.epoch, end):
                t0 = time.perf_counter()
                model.train()
                loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True,
                                    generator=epoch_generator(cfg.seed, epoch),
                                    num_workers=cfg.num_workers, drop_last=cfg.drop_last)
                total, seen = 0.0, 0
                for batch in progress(loader, f"align epoch {epoch + 1}/{cfg.epochs}"):
                    eeg, fmri, labels, pairs = _unpack(batch, device)
                    opt.zero_grad(set_to_none=True)
                    aligned, emb = _outputs(model, eeg, fmri, need_emb)
                    loss, parts = alignment_loss(aligned, fmri, labels, pairs, cfg.weights,
                                                 cfg.temperature, eeg_emb=emb)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"alignment loss is {value} in epoch {epoch + 1}; lower lr or "
                            "check the inputs for NaN")
                    loss.backward()
                    if cfg.grad_clip is not None:
                        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        writer.add_scalar("train/grad_norm", float(norm), run.step + 1)
                    opt.step()
                    sched.step()
                    run.step += 1
                    writer.add_scalar("train/loss", value, run.step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", float(v.detach()), run.step)
                    for i, group in enumerate(opt.param_groups):
                        writer.add_scalar(f"lr/group{i}", group["lr"], run.step)
                    total += value * eeg.shape[0]
                    seen += eeg.shape[0]
                val = (evaluate_alignment(model, val_ds, cfg, device)
                       if val_ds is not None else {})
                run.epoch = epoch + 1
                seconds = time.perf_counter() - t0
                run.seconds += seconds
                record = {"epoch": run.epoch, "train_loss": total / max(seen, 1),
                          **{f"val_{k}": v for k, v in val.items()}, "seconds": seconds}
                run.history.append(record)
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, run.step)
                writer.add_scalar("epoch/train_loss", record["train_loss"], run.step)
                if val and (run.best_val is None or val["loss"] < run.best_val):
                    run.best_val, run.best_epoch = val["loss"], run.epoch
                    _save_best(ckpt / BEST, model, run, cfg, meta)
                _save_last(ckpt / LAST, model, opt, sched, run, cfg, meta, device)
                logger.info("alignment epoch %d: train %.4g val %s", run.epoch,
                            record["train_loss"], {k: round(v, 4) for k, v in val.items()})
        if val_ds is None and run.epoch > resumed_from and run.epoch == cfg.epochs:
            # without validation the final weights are the result
            run.best_epoch = run.epoch
            _save_best(ckpt / BEST, model, run, cfg, meta)
    finally:
        writer.close()
    return {"history": run.history, "epochs_run": run.epoch, "resumed_from": resumed_from,
            "finished": run.epoch >= cfg.epochs, "steps": run.step,
            "best_epoch": run.best_epoch, "best_val_loss": run.best_val,
            "seconds": run.seconds, "checkpoint_dir": str(ckpt)}


def _save_best(path: Path, model: nn.Module, run: _Run, cfg: AlignTrainConfig,
               meta: dict[str, Any]) -> None:
    info = {"kind": _BEST_KIND, "epoch": run.best_epoch, "val_loss": run.best_val,
            "config": cfg.resolved(), "meta": meta, "torch_version": torch.__version__}
    _write(path, dict(model.state_dict()), info)


__all__ = ["AlignTrainConfig", "LossWeights", "alignment_loss", "evaluate_alignment",
           "load_weights", "mse_unit", "proto_distill", "read_checkpoint",
           "train_alignment"]
