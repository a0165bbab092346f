"""Checkpoints: named tensors plus JSON metadata, in one ``.pt`` file.

The file is ``torch.save`` of ``{"format", "version", "meta" (a JSON string), "tensors"}``
with nothing but tensors, strings and ints inside, and is read with
``torch.load(weights_only=True)``: a file that holds any other pickled object is refused
instead of executed. Written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path

FORMAT = "fmri2img.checkpoint"
VERSION = 1


def _file_array(value: Any) -> tuple[np.memmap, bool] | None:
    """(the memory map of a whole ``.npy`` file, transposed?) behind ``value``, if any."""
    for base, transposed in ((value, False), (getattr(value, "T", None), True)):
        if (isinstance(base, np.memmap) and base.filename and base.flags.c_contiguous
                and str(base.filename).endswith(".npy")
                and os.path.getsize(base.filename) - base.offset == base.nbytes):
            return base, transposed
    return None


def side_file(path: Path, name: str) -> Path:
    return path.with_name(f"{path.name}.{name.replace('/', '-')}.npy")


def _write_side_file(source: str, target: Path) -> None:
    if Path(source).resolve() == target.resolve():
        return  # saved again where it already is
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)


def save_checkpoint(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    path = Path(path)
    out = {}
    external = {}
    for name, value in tensors.items():
        mapped = None if isinstance(value, torch.Tensor) else _file_array(value)
        if mapped is not None:
            base, transposed = mapped
            target = side_file(path, name)
            _write_side_file(str(base.filename), target)
            external[name] = {"file": target.name, "shape": list(value.shape),
                              "dtype": str(base.dtype), "transposed": transposed}
            continue
        if isinstance(value, torch.Tensor):
            out[name] = value.detach().cpu().contiguous()
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(value))
    if external:
        meta = {**meta, "external_arrays": external}
    payload = {"format": FORMAT, "version": VERSION,
               "meta": json.dumps(meta, default=str), "tensors": out}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            "checkpoint holds pickled Python objects, which are never loaded (they could run "
            f"code); expected tensors plus JSON metadata as written by fmri2img ({exc})",
            path,
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"not a readable checkpoint (truncated or not a torch file?): {exc}",
                        path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"not an fmri2img checkpoint (expected format {FORMAT!r})", path)
    if payload.get("version") != VERSION:
        raise DataError(f"checkpoint version {payload.get('version')}; this fmri2img reads "
                        f"version {VERSION}", path)
    arrays = {k: v.numpy() for k, v in payload["tensors"].items()}
    meta = json.loads(payload["meta"])
    for name, info in meta.pop("external_arrays", {}).items():
        arrays[name] = _read_side_file(path, name, info)
    return arrays, meta


def _read_side_file(path: Path, name: str, info: dict[str, Any]) -> np.ndarray:
    # beside the real file: the checkpoint may be reached through a link (best.pt)
    file = path.resolve().with_name(info["file"])
    if not file.exists():
        raise DataError(f"the checkpoint keeps array {name!r} in a side file, which is "
                        f"missing: {file}", path)
    try:
        mapped = np.load(file, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"side file of array {name!r} is not a readable .npy: {exc}",
                        file) from exc
    array = mapped.T if info.get("transposed") else mapped
    if list(array.shape) != list(info["shape"]) or str(mapped.dtype) != info["dtype"]:
        raise DataError(f"side file of array {name!r} holds {mapped.dtype} {array.shape}; "
                        f"the checkpoint expects {info['dtype']} {tuple(info['shape'])}",
                        file)
    return array
