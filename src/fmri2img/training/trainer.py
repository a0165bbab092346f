"""One training loop for every torch model in the package (decoders now, adapters later).

The loop knows nothing about the model: it takes an ``nn.Module``, a loss
``loss_fn(model(x), y) -> scalar`` and (x, y) batches, either as two tensors or as a
DataLoader. It provides AdamW with decoupled weight decay, a linear-warmup + cosine learning
rate schedule, gradient clipping, early stopping on the validation loss (the best weights
are restored at the end), seeding, a progress bar on terminals, a per-epoch history and
optional checkpoints that let a killed run resume where it stopped.

Resuming is exact: the ``last`` checkpoint holds the weights, the optimiser moments, the
torch random state (dropout) and the early-stopping bookkeeping, and each epoch's shuffle
is keyed by (seed, epoch), so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from pydantic import Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from fmri2img.config import StrictModel
from fmri2img.devices import check_device_name, resolve_device
from fmri2img.errors import DataError
from fmri2img.models.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.progress import progress
from fmri2img.training.seeding import deterministic_algorithms, epoch_generator, seed_everything

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = tuple[torch.Tensor, torch.Tensor] | DataLoader
# callback(record of the finished epoch, model) -> True to stop training
EpochCallback = Callable[[dict[str, Any], nn.Module], bool | None]

LAST = "last.pt"
BEST = "best.pt"
_LAST_KIND = "fmri2img.trainer.last"
_BEST_KIND = "fmri2img.trainer.best"
# settings that may change between a killed run and its resumption without changing the
# result; any other difference means the checkpoint belongs to another experiment
_RESUME_FREE = {"checkpoint_dir", "save_every", "resume", "device", "description"}


class TrainerConfig(StrictModel):
    """Options of :func:`train`."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1, description="rows per step when given tensors")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0, description="AdamW decay, matrices only")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor, as a share of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; None: off")
    early_stop_patience: int | None = Field(
        10, ge=1, description="epochs without val improvement before stopping; None: off")
    min_delta: float = Field(0.0, ge=0, description="val loss drop that counts as improvement")
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = True
    checkpoint_dir: Path | None = None
    save_every: int = Field(1, ge=1, description="write `last` every this many epochs")
    resume: bool = Field(True, description="continue from checkpoint_dir/last.pt if present")
    description: str = "training"

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))


@dataclass
class TrainResult:
    """What :func:`train` returns. Epoch numbers are 1-based, as in the history."""

    history: list[dict[str, Any]]
    best_epoch: int | None  # epoch whose weights the model holds now
    best_val_loss: float | None  # None without validation data
    stopped_early: bool
    resumed_from: int  # epochs finished before this call (0: fresh run)
    seconds: float  # training time over all calls, resumed parts included
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def to_meta(self) -> dict[str, Any]:
        """JSON-able summary for checkpoints and reports."""
        out = asdict(self)
        out["epochs_run"] = self.epochs_run
        return out


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based).

    Linear warmup from ``1/warmup_steps`` to 1 (large early steps with fresh Adam moments
    are what warmup avoids), then a half cosine down to ``min_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def grouped_holdout(
    n: int, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) with whole groups on one side.

    Repetitions of a stimulus share a group; splitting them would let the model be
    validated on the very images it trained on and stop too late. Without ``groups``
    every row is its own group. Returns an empty validation set when there are fewer than
    two groups or ``fraction`` is 0.
    """
    rows = np.arange(n)
    if fraction <= 0:
        return rows, rows[:0]
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}")
    labels = rows if groups is None else np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {labels.shape}")
    uniq, inverse = np.unique(labels, return_inverse=True)
    if uniq.size < 2:
        return rows, rows[:0]
    n_val = min(uniq.size - 1, max(1, int(round(fraction * uniq.size))))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA11D]))
    val_groups = rng.choice(uniq.size, size=n_val, replace=False)
    is_val = np.isin(inverse, val_groups)
    return rows[~is_val], rows[is_val]


# -- batches ------------------------------------------------------------------------------

def _as_tensor(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) spans; a last span of one row is merged into the one before.

    A single-row batch breaks BatchNorm in training mode and makes a contrastive loss
    trivially zero.
    """
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans


def _iter_batches(data: Batches, batch_size: int, device: torch.device,
                  generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, DataLoader):
        for xb, yb in data:
            yield (xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
        return
    X, Y = data
    n = X.shape[0]
    order = (torch.randperm(n, generator=generator) if generator is not None
             else torch.arange(n)).to(X.device)
    for start, stop in _chunks(n, batch_size):
        idx = order[start:stop]
        yield X[idx], Y[idx]


def _n_batches(data: Batches, batch_size: int) -> int | None:
    if isinstance(data, DataLoader):
        try:
            return len(data)
        except TypeError:  # iterable-style dataset of unknown length
            return None
    return len(_chunks(data[0].shape[0], batch_size))


def _prepare(data: Batches | None, device: torch.device, name: str) -> Batches | None:
    if data is None or isinstance(data, DataLoader):
        return data
    if len(data) != 2:
        raise ValueError(f"{name} data must be (inputs, targets) or a DataLoader")
    X, Y = (_as_tensor(a).to(device) for a in data)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{name} inputs and targets differ in rows: {X.shape[0]} vs "
                         f"{Y.shape[0]}")
    if X.shape[0] == 0:
        if name == "validation":
            return None
        raise ValueError("training data has no rows")
    return X, Y


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, data: Batches, batch_size: int = 1024,
             device: str | torch.device | None = None) -> float:
    """Mean loss over ``data`` in eval mode, batches weighted by their size."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for xb, yb in _iter_batches(data, batch_size, device, None):
            total += loss_fn(model(xb), yb).detach().double() * xb.shape[0]
            count += xb.shape[0]
    finally:
        model.train(was_training)
    return float(total) / max(count, 1)


# -- optimiser and checkpoint helpers ------------------------------------------------------

def _make_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.AdamW:
    # Decay only matrices: shrinking biases, norm gains or a learnt temperature toward zero
    # has no regularising value and can hurt (a temperature of 0 is degenerate).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=config.lr)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in params if p.grad is not None]
    if not norms:
        return torch.zeros((), device=params[0].device if params else None)
    return torch.linalg.vector_norm(torch.stack(norms))


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as flat named tensors plus JSON (checkpoints hold nothing else)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = torch.from_numpy(np.array(value))
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
            if k.startswith(prefix)}


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def _restore_rng(arrays: dict[str, np.ndarray], device: torch.device) -> None:
    if "rng.torch" in arrays:
        torch.set_rng_state(torch.from_numpy(np.array(arrays["rng.torch"])))
    if device.type == "cuda" and "rng.cuda" in arrays:
        states = torch.from_numpy(np.array(arrays["rng.cuda"]))
        if states.shape[0] == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(list(states))


def _comparable(config: TrainerConfig) -> dict[str, Any]:
    return {k: v for k, v in config.resolved().items() if k not in _RESUME_FREE}


@dataclass
class _Loop:
    """Mutable bookkeeping of one run; everything here goes into the `last` checkpoint."""

    epoch: int = 0  # epochs finished
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False
    seconds: float = 0.0
    data_key: str | None = None  # see _data_key


def _save_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer, loop: _Loop,
               config: TrainerConfig, device: torch.device, extra: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    if loop.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in loop.best_state.items()})
    tensors.update(_rng_tensors(device))
    meta = {
        "kind": _LAST_KIND,
        "config": config.resolved(),
        "extra": extra,
        "optimizer": opt_meta,
        "epoch": loop.epoch,
        "step": loop.step,
        "history": loop.history,
        "best_val_loss": loop.best_val,
        "best_epoch": loop.best_epoch,
        "bad_epochs": loop.bad_epochs,
        "stopped_early": loop.stopped_early,
        "finished": loop.finished,
        "train_seconds": loop.seconds,
        "data_key": loop.data_key,
        "torch_version": torch.__version__,
    }
    save_checkpoint(path, tensors, meta)


def _save_best(path: Path, state: dict[str, torch.Tensor], loop: _Loop,
               config: TrainerConfig, extra: dict[str, Any]) -> None:
    meta = {"kind": _BEST_KIND, "config": config.resolved(), "extra": extra,
            "epoch": loop.best_epoch, "val_loss": loop.best_val,
            "train_seconds": loop.seconds, "torch_version": torch.__version__}
    save_checkpoint(path, state, meta)


def _data_key(model: nn.Module, train_b: Batches, val_b: Batches | None) -> str | None:
    """Digest of the starting weights and the data, so that a resume state left by a run on
    other data (an index rebuilt in place, a retrained base decoder) is not continued.
    None for DataLoaders, whose contents are not known up front."""
    if isinstance(train_b, DataLoader) or isinstance(val_b, DataLoader):
        return None
    h = xxhash.xxh3_128()
    tensors = [t for _, t in sorted(model.state_dict().items())]
    tensors += list(train_b) + (list(val_b) if val_b is not None else [])
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(str((tuple(a.shape), str(a.dtype))).encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def _resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
            config: TrainerConfig, device: torch.device, data_key: str | None
            ) -> _Loop | None:
    """The saved loop, loaded into ``model`` and ``opt``; None (nothing loaded) when the
    state was written for other data. Other options or another architecture are errors."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != _LAST_KIND:
        raise DataError("not a trainer checkpoint (expected one written by train())", path)
    saved = {k: v for k, v in meta["config"].items() if k not in _RESUME_FREE}
    now = _comparable(config)
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise DataError(
            f"checkpoint was written with other training options ({', '.join(diff)} differ); "
            "use another checkpoint_dir or resume=False to start over", path)
    saved_model = _prefixed(arrays, "model.")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(np.shape(v)) for k, v in saved_model.items()} != shapes:
        raise DataError("checkpoint does not fit this model (other parameter names or "
                        "shapes)", path)
    if meta.get("data_key") != data_key:  # states written before keys existed included
        return None
    try:
        model.load_state_dict(saved_model)
        opt.load_state_dict(_optimizer_from_flat(arrays, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise DataError(f"checkpoint does not fit this model: {exc}", path) from exc
    _restore_rng(arrays, device)
    best = _prefixed(arrays, "best.")
    return _Loop(
        epoch=int(meta["epoch"]), step=int(meta["step"]), history=list(meta["history"]),
        best_val=meta["best_val_loss"], best_epoch=meta["best_epoch"],
        best_state=best or None, bad_epochs=int(meta["bad_epochs"]),
        stopped_early=bool(meta["stopped_early"]), finished=bool(meta["finished"]),
        seconds=float(meta["train_seconds"]),
    )


# -- the loop ----------------------------------------------------------------------------

def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Batches,
    val_data: Batches | None = None,
    config: TrainerConfig | None = None,
    *,
    callback: EpochCallback | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the best weights and sits on the device.

    ``train_data`` / ``val_data`` are ``(inputs, targets)`` tensors (or arrays), batched and
    shuffled here, or DataLoaders yielding ``(inputs, targets)``. Early stopping and the
    best-epoch choice need ``val_data``; without it the final weights are kept.
    ``callback(record, model)`` runs after every epoch (after the `last` checkpoint is
    written) and may return True to stop. ``extra_meta`` (JSON-able, e.g. the model's
    config) is stored in checkpoints.
    """
    config = config if config is not None else TrainerConfig()
    extra = dict(extra_meta or {})
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    train_b = _prepare(train_data, device, "training")
    val_b = _prepare(val_data, device, "validation")
    assert train_b is not None
    opt = _make_optimizer(model, config)
    params = [p for p in model.parameters() if p.requires_grad]

    steps_per_epoch = _n_batches(train_b, config.batch_size)
    # without a known epoch length the schedule advances once per epoch
    total_steps = config.epochs * (steps_per_epoch or 1)
    warmup_steps = int(round(config.warmup_fraction * total_steps))

    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    loop = _Loop()
    data_key = _data_key(model, train_b, val_b)
    if ckpt_dir is not None and config.resume and (ckpt_dir / LAST).exists():
        resumed = _resume(ckpt_dir / LAST, model, opt, config, device, data_key)
        if resumed is None:
            logger.warning("%s: %s was written for other data or starting weights; "
                           "starting over", config.description, ckpt_dir / LAST)
        else:
            loop = resumed
            logger.info("%s: resuming from %s after epoch %d", config.description,
                        ckpt_dir / LAST, loop.epoch)
    loop.data_key = data_key
    resumed_from = loop.epoch

    def set_lr(step: int) -> float:
        factor = lr_factor(step, total_steps, warmup_steps, config.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = config.lr * factor
        return config.lr * factor

    with deterministic_algorithms(config.deterministic):
        epochs = range(loop.epoch, config.epochs)
        for epoch in (progress(epochs, config.description) if not loop.finished else ()):
            t0 = time.perf_counter()
            model.train()
            total = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            pre_norms: list[torch.Tensor] = []
            post_norms: list[torch.Tensor] = []
            lr = set_lr(loop.step) if steps_per_epoch is None else config.lr
            gen = epoch_generator(config.seed, epoch)
            for xb, yb in _iter_batches(train_b, config.batch_size, device, gen):
                if steps_per_epoch is not None:
                    lr = set_lr(loop.step)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                if config.grad_clip is not None:
                    pre_norms.append(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
                    post_norms.append(_grad_norm(params))
                else:
                    pre_norms.append(_grad_norm(params))
                opt.step()
                if steps_per_epoch is not None:
                    loop.step += 1
                total += loss.detach().double() * xb.shape[0]
                seen += xb.shape[0]
            if steps_per_epoch is None:
                loop.step += 1
            train_loss = float(total) / max(seen, 1)
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"{config.description}: training loss is {train_loss} in epoch "
                    f"{epoch + 1}; lower lr, enable grad_clip or check the inputs for NaN")
            val_loss = (evaluate(model, loss_fn, val_b, config.batch_size, device)
                        if val_b is not None else None)
            loop.epoch = epoch + 1
            pre = torch.stack(pre_norms).float() if pre_norms else torch.zeros(1)
            record: dict[str, Any] = {
                "epoch": loop.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": lr,
                "grad_norm": float(pre.mean()),
                "grad_norm_max": float(pre.max()),
                "grad_norm_clipped_max": (float(torch.stack(post_norms).max())
                                          if post_norms else None),
                "seconds": 0.0,
            }
            improved = False
            if val_loss is not None:
                if loop.best_val is None or val_loss < loop.best_val - config.min_delta:
                    improved = True
                    loop.best_val, loop.best_epoch = val_loss, loop.epoch
                    loop.best_state = _cpu_state(model)
                    loop.bad_epochs = 0
                else:
                    loop.bad_epochs += 1
            stop = (config.early_stop_patience is not None and val_loss is not None
                    and loop.bad_epochs >= config.early_stop_patience)
            record["seconds"] = time.perf_counter() - t0
            loop.seconds += record["seconds"]
            loop.history.append(record)
            if stop:
                loop.stopped_early = True
                logger.info("%s: early stop after epoch %d (best %d, val %.5g)",
                            config.description, loop.epoch, loop.best_epoch, loop.best_val)
            loop.finished = stop or loop.epoch >= config.epochs
            logger.debug("%s: epoch %d train %.5g val %s lr %.3g", config.description,
                         loop.epoch, train_loss, val_loss, lr)
            if ckpt_dir is not None:
                if improved and loop.best_state is not None:
                    _save_best(ckpt_dir / BEST, loop.best_state, loop, config, extra)
                if loop.finished or loop.epoch % config.save_every == 0:
                    _save_last(ckpt_dir / LAST, model, opt, loop, config, device, extra)
            if callback is not None and callback(record, model) and not loop.finished:
                loop.finished = loop.stopped_early = True
                if ckpt_dir is not None:
                    _save_last(ckpt_dir / LAST, model, opt, loop, config, device, extra)
            if loop.finished:
                break

    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    else:
        # no validation data: the final weights are the result
        loop.best_epoch = loop.epoch or None
        if ckpt_dir is not None and loop.epoch > resumed_from:
            _save_best(ckpt_dir / BEST, _cpu_state(model), loop, config, extra)
    model.to(device)
    return TrainResult(
        history=loop.history, best_epoch=loop.best_epoch, best_val_loss=loop.best_val,
        stopped_early=loop.stopped_early, resumed_from=resumed_from, seconds=loop.seconds,
        steps=loop.step, extra=extra,
    )


def train_from_start(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Batches,
    val_data: Batches | None,
    config: TrainerConfig,
    *,
    extra_meta: dict[str, Any] | None = None,
) -> tuple[TrainResult, float | None, bool]:
    """:func:`train` for models that start from a solution (an identity adapter, a decoder
    to fine-tune): when no epoch beats the starting weights on the validation data, the
    starting weights are kept. Returns (result, starting validation loss, kept start)."""
    if val_data is None:
        return train(model, loss_fn, train_data, None, config, extra_meta=extra_meta), None, False
    start = evaluate(model, loss_fn, _prepare(val_data, torch.device("cpu"), "validation"))
    initial = _cpu_state(model)
    result = train(model, loss_fn, train_data, val_data, config, extra_meta=extra_meta)
    if result.best_val_loss is None or result.best_val_loss < start - config.min_delta:
        return result, start, False
    model.load_state_dict(initial)
    logger.info("%s: no epoch beat the starting weights on validation (%.5g); kept them",
                config.description, start)
    return result, start, True
