"""Models by name: one registry of decoders, one of adapters, both built and restored the
same way.

A module registers its class with ``@decoders.register`` (or ``@adapters.register``);
``modules`` names where the package's own models live, so that looking a name up imports
only that module (torch is loaded only when a torch model is asked for). Models defined
elsewhere (a user's own decoder, an EEG backbone) register the same way and are then
found, built, saved and loaded like the package's.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from fmri2img.models.base import MODEL_PREFIX, Decoder, as_shape, prefixed

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes of one model family by ``name``; every class is built as
    ``cls(input_shape, n_outputs, cls.Config(**options))``."""

    def __init__(self, kind: str, modules: dict[str, str]) -> None:
        self.kind = kind
        self.modules = dict(modules)  # name -> module that defines (and registers) it
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.kind} name {name!r} registered twice")
        self._classes[name] = cls
        return cls

    def available(self) -> list[str]:
        return sorted(set(self.modules) | set(self._classes))

    def check_name(self, name: str) -> str:
        """``name`` if it is registered; for config validators, a ValueError naming the
        choices otherwise."""
        if name not in self.available():
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.available()}")
        return name

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            if name not in self.modules:
                raise KeyError(f"unknown {self.kind} {name!r}; available: "
                               f"{', '.join(self.available())}")
            importlib.import_module(self.modules[name])
            if name not in self._classes:
                raise RuntimeError(f"{self.modules[name]} did not register a {self.kind} "
                                   f"named {name!r}")
        return self._classes[name]

    def config(self, name: str, options: dict[str, Any] | None = None) -> Any:
        """``name``'s validated options (unknown keys rejected)."""
        cls = self.get(name)
        try:
            return cls.Config(**(options or {}))  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise ValueError(f"invalid options for {self.kind} {name!r}:\n{exc}") from exc

    def check_options(self, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``options`` (per model name), each validated against its model's options, for
        config validators: a ValueError naming ``name.key``, the value and what is allowed,
        so a mistyped option costs nothing."""
        problems = []
        for name, opts in options.items():
            self.check_name(name)
            cls = self.get(name)
            try:
                cls.Config(**opts)  # type: ignore[attr-defined]
            except ValidationError as exc:
                problems += [f"{name}.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: "
                             f"{e['msg']}" for e in exc.errors(include_url=False)]
        if problems:
            raise ValueError("; ".join(problems))
        return options

    def build(self, name: str, input_shape: int | Sequence[int], n_outputs: int,
              config: dict[str, Any] | None = None) -> T:
        """A new, unfitted model; ``config`` is validated (unknown keys rejected)."""
        cls = self.get(name)
        return cls(as_shape(input_shape), int(n_outputs), self.config(name, config))  # type: ignore[call-arg]

    def from_entries(self, arrays: dict[str, Any], meta: dict[str, Any],
                     prefix: str = MODEL_PREFIX) -> T:
        """The model :func:`fmri2img.models.base.model_entries` stored."""
        cls = self.get(meta["model_type"])
        config = cls.Config(**meta["model_config"])  # type: ignore[attr-defined]
        return cls.from_state(as_shape(meta["input_shape"]), int(meta["n_outputs"]),  # type: ignore[attr-defined]
                              config, prefixed(arrays, prefix), meta["model_meta"])


decoders: Registry[Decoder] = Registry("decoder", {
    "ridge": "fmri2img.models.ridge",
    "mlp": "fmri2img.models.mlp",
    "two_stage": "fmri2img.models.two_stage",
    "contrastive_mlp": "fmri2img.models.contrastive_mlp",
    "multi_target": "fmri2img.models.multi_target",
    "eeg_conv": "fmri2img.models.eeg.decoders",
    "cbramod": "fmri2img.models.eeg.decoders",
})

adapters: Registry[Any] = Registry("adapter", {
    "linear": "fmri2img.models.adapters",
    "mlp": "fmri2img.models.adapters",
})

generators: Registry[Any] = Registry("generator", {
    "unclip": "fmri2img.models.diffusion.unclip",
    "ip_adapter": "fmri2img.models.diffusion.ip_adapter",
    "kandinsky": "fmri2img.models.diffusion.kandinsky",
})
