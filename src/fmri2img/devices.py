"""Device names in configs (``cpu``, ``cuda``, ``cuda:N``, ``mps``): one spelling, checked
when a config is read and resolved, with a clear error, when a model is placed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fmri2img.errors import DataError

if TYPE_CHECKING:
    import torch

DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
DEVICE_CHOICES = "cpu, cuda, cuda:N or mps"


def check_device_name(value: str) -> str:
    """Validator for config fields: the name only (availability is checked on use)."""
    text = str(value).strip().lower()
    if not DEVICE_RE.match(text):
        raise ValueError(f"unknown device {value!r}: expected {DEVICE_CHOICES}")
    return text


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for a config string; an unavailable device is a clear error."""
    import torch  # device names are checked without torch; only placing a model needs it

    text = str(name).strip().lower()
    if not DEVICE_RE.match(text):
        raise DataError(f"unknown device {name!r}: expected {DEVICE_CHOICES}")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"device {name!r} requested but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DataError(f"device {name!r} requested but only "
                            f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(f"device {name!r} requested but MPS is not available")
    return dev
