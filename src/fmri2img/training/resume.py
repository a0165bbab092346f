"""Resume state of the training loop: a killed run restarted with the same command
continues where it stopped, and gives the weights an uninterrupted run would have given.

The ``last`` checkpoint holds the weights, the optimiser moments, the torch random state
(dropout) and the early-stopping bookkeeping; ``best`` holds the best weights so far. Both
are tensors plus JSON (:mod:`fmri2img.io.checkpoint`). A state written with other training
options, for another architecture or with other ``extra`` metadata (the model's own
options) is an error; one written for other data or starting weights (see
:func:`data_key`) is not continued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from torch import nn
from torch.utils.data import DataLoader

from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.training.batches import Batches
from fmri2img.training.config import TrainerConfig

LAST = "last.pt"
BEST = "best.pt"
_LAST_KIND = "fmri2img.trainer.last"
_BEST_KIND = "fmri2img.trainer.best"
# settings that may change between a killed run and its resumption without changing the
# result; any other difference means the checkpoint belongs to another experiment
RESUME_FREE = frozenset({"checkpoint_dir", "save_every", "resume", "device", "description"})


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
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


def optimizer_from_flat(arrays: dict[str, Any], meta: dict[str, Any]) -> dict:
    """The optimiser state dict back from :func:`optimizer_to_flat`'s tensors (or arrays)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = (
                value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value)))
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
    return {k: v for k, v in config.resolved().items() if k not in RESUME_FREE}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differing(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Dotted names of the entries that differ (nested mappings compared entry by entry,
    so that a message can name ``options.dropout`` rather than the whole block)."""
    a, b = _flat(saved), _flat(now)
    return sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))


def _start_over_hint(path: Path) -> str:
    return (f"delete {path.parent} (or use another checkpoint_dir, or resume=False) to "
            "start over")


@dataclass
class LoopState:
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
    data_key: str | None = None  # see data_key


def save_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer, loop: LoopState,
               config: TrainerConfig, device: torch.device, extra: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_flat(opt)
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


def save_best(path: Path, state: dict[str, torch.Tensor], loop: LoopState,
               config: TrainerConfig, extra: dict[str, Any]) -> None:
    meta = {"kind": _BEST_KIND, "config": config.resolved(), "extra": extra,
            "epoch": loop.best_epoch, "val_loss": loop.best_val,
            "train_seconds": loop.seconds, "torch_version": torch.__version__}
    save_checkpoint(path, state, meta)


def data_key(model: nn.Module, train_b: Batches, val_b: Batches | None) -> str | None:
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


def resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
            config: TrainerConfig, device: torch.device, data_key: str | None,
            extra: dict[str, Any] | None = None) -> LoopState | None:
    """The saved loop, loaded into ``model`` and ``opt``; None (nothing loaded) when the
    state was written for other data. Other options, another architecture or other
    ``extra`` metadata (as given to :func:`save_last`) are errors."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != _LAST_KIND:
        raise DataError("not a trainer checkpoint (expected one written by train())", path)
    saved = {k: v for k, v in meta["config"].items() if k not in RESUME_FREE}
    now = _comparable(config)
    if saved != now:
        raise DataError(
            f"checkpoint was written with other training options "
            f"({', '.join(_differing(saved, now))} differ); {_start_over_hint(path)}", path)
    saved_model = _prefixed(arrays, "model.")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(np.shape(v)) for k, v in saved_model.items()} != shapes:
        raise DataError("checkpoint does not fit this model (other parameter names or "
                        f"shapes); {_start_over_hint(path)}", path)
    # compared as stored: the metadata went through JSON (tuples are lists there)
    extra_now = json.loads(json.dumps(extra or {}, default=str))
    extra_saved = meta.get("extra", {})
    if extra_saved != extra_now:
        raise DataError(
            f"checkpoint was written for another model "
            f"({', '.join(_differing(extra_saved, extra_now))} differ); "
            f"{_start_over_hint(path)}", path)
    if meta.get("data_key") != data_key:  # states written before keys existed included
        return None
    try:
        model.load_state_dict(saved_model)
        opt.load_state_dict(optimizer_from_flat(arrays, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise DataError(f"checkpoint does not fit this model: {exc}", path) from exc
    _restore_rng(arrays, device)
    best = _prefixed(arrays, "best.")
    return LoopState(
        epoch=int(meta["epoch"]), step=int(meta["step"]), history=list(meta["history"]),
        best_val=meta["best_val_loss"], best_epoch=meta["best_epoch"],
        best_state=best or None, bad_epochs=int(meta["bad_epochs"]),
        stopped_early=bool(meta["stopped_early"]), finished=bool(meta["finished"]),
        seconds=float(meta["train_seconds"]),
    )


def last_weights(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of the last finished epoch in ``checkpoint_dir``."""
    path = Path(checkpoint_dir) / LAST
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != _LAST_KIND:
        raise DataError("not a trainer checkpoint (expected one written by train())", path)
    return _prefixed(arrays, "model.")
