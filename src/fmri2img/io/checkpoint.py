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
import struct
import zlib
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
    """(arrays, metadata) of a checkpoint written by :func:`save_checkpoint`; anything else
    (truncated, corrupt, pickled objects, another layout) is refused with a DataError
    naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            "checkpoint holds pickled Python objects, which are never loaded (they could run "
            "code), or is corrupt; expected tensors plus JSON metadata as written by fmri2img "
            f"({exc})",
            path,
        ) from exc
    except _LOAD_ERRORS as exc:
        raise DataError(f"not a readable checkpoint (truncated or not a torch file?): {exc}",
                        path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"not an fmri2img checkpoint (expected format {FORMAT!r})", path)
    if payload.get("version") != VERSION:
        raise DataError(f"checkpoint version {payload.get('version')}; this fmri2img reads "
                        f"version {VERSION}", path)
    meta = _meta(payload.get("meta"), path)
    arrays = _tensors(payload.get("tensors"), path)
    external = meta.pop("external_arrays", {})
    if not isinstance(external, dict):
        raise DataError(f"checkpoint metadata 'external_arrays' is a "
                        f"{type(external).__name__}; expected an object", path)
    for name, info in external.items():
        arrays[name] = _read_side_file(path, name, info)
    return arrays, meta


# What torch.load raises for truncated or corrupt files besides UnpicklingError.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
    AttributeError, struct.error, OverflowError, zlib.error)


def _meta(raw: Any, path: Path) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise DataError(f"checkpoint metadata is a {type(raw).__name__}; expected a JSON "
                        "string", path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"checkpoint metadata is not JSON ({exc})", path) from exc
    if not isinstance(meta, dict):
        raise DataError(f"checkpoint metadata is a JSON {type(meta).__name__}; expected an "
                        "object", path)
    return meta


def _tensors(raw: Any, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise DataError(f"checkpoint 'tensors' is a {type(raw).__name__}; expected a dict "
                        "of named tensors", path)
    arrays = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise DataError(f"checkpoint entry {name!r} is a {type(value).__name__}; "
                            "expected named tensors", path)
        try:
            arrays[name] = value.numpy()
        except (TypeError, RuntimeError) as exc:  # bfloat16, sparse, ...
            raise DataError(f"checkpoint tensor {name!r} ({value.dtype}, {value.layout}) has "
                            f"no NumPy form ({exc})", path) from exc
    return arrays


def _read_side_file(path: Path, name: str, info: Any) -> np.ndarray:
    if not (isinstance(info, dict) and isinstance(info.get("file"), str)
            and isinstance(info.get("shape"), list) and isinstance(info.get("dtype"), str)):
        raise DataError(f"checkpoint metadata of side-file array {name!r} is {info!r}; "
                        "expected file, shape and dtype", path)
    if Path(info["file"]).name != info["file"] or info["file"] in ("", ".", ".."):
        raise DataError(f"side file {info['file']!r} of array {name!r} is not a file name "
                        "beside the checkpoint", path)
    # beside the real file: the checkpoint may be reached through a link (best.pt)
    file = path.resolve().with_name(info["file"])
    if not file.exists():
        raise DataError(f"the checkpoint keeps array {name!r} in a side file, which is "
                        f"missing: {file}", path)
    try:
        mapped = np.load(file, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"side file of array {name!r} is not a readable .npy: {exc}",
                        file) from exc
    if not isinstance(mapped, np.ndarray):
        raise DataError(f"side file of array {name!r} is not a single .npy array", file)
    array = mapped.T if info.get("transposed") else mapped
    if list(array.shape) != list(info["shape"]) or str(mapped.dtype) != info["dtype"]:
        raise DataError(f"side file of array {name!r} holds {mapped.dtype} {array.shape}; "
                        f"the checkpoint expects {info['dtype']} {tuple(info['shape'])}",
                        file)
    return array
