"""Checkpoints: named tensors plus JSON metadata, in one ``.pt`` file.

The file is ``torch.save`` of ``{"format", "version", "meta" (a JSON string), "tensors"}``
with nothing but tensors, strings and ints inside, and is read with
``torch.load(weights_only=True)``: a file that holds any other pickled object is refused
instead of executed. Written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path

FORMAT = "fmri2img.checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    path = Path(path)
    out = {}
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            out[name] = value.detach().cpu().contiguous()
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(value))
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
    return arrays, json.loads(payload["meta"])
