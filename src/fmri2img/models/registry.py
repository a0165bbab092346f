"""Decoders by name. A module registers its class with ``@register``; ``MODULES`` lists
the modules that hold decoders so that looking a name up imports them (torch is only
imported when a torch decoder is asked for)."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from fmri2img.models.base import Decoder

# name -> module that defines (and registers) it
MODULES: dict[str, str] = {
    "ridge": "fmri2img.models.ridge",
    "mlp": "fmri2img.models.mlp",
    "two_stage": "fmri2img.models.two_stage",
    "contrastive_mlp": "fmri2img.models.contrastive_mlp",
}

_REGISTRY: dict[str, type[Decoder]] = {}


def register(cls: type[Decoder]) -> type[Decoder]:
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"decoder name {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    return sorted(MODULES)


def get(name: str) -> type[Decoder]:
    if name not in MODULES:
        raise KeyError(f"unknown decoder {name!r}; available: {', '.join(available())}")
    if name not in _REGISTRY:
        importlib.import_module(MODULES[name])
    if name not in _REGISTRY:
        raise RuntimeError(f"{MODULES[name]} did not register a decoder named {name!r}")
    return _REGISTRY[name]


def build(name: str, n_inputs: int, n_outputs: int,
          config: dict[str, Any] | None = None) -> Decoder:
    """A new, unfitted decoder; ``config`` is validated (unknown keys rejected)."""
    cls = get(name)
    try:
        cfg = cls.Config(**(config or {}))
    except ValidationError as exc:
        raise ValueError(f"invalid options for decoder {name!r}:\n{exc}") from exc
    return cls(n_inputs, n_outputs, cfg)
