"""Checks on a command's paths before any work: an output never is, or holds, one of the
command's inputs, and it can be created where it is asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fmri2img.errors import DataError

# the fields that name what a command writes; every other path field is read
OUTPUT_FIELDS = ("output", "output_dir", "out", "cache_dir")


def _paths(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, Path)]
    return []


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_paths(config: BaseModel) -> None:
    """Refuse an output that is or contains an input, one under a regular file, and one
    in a place that cannot be written; raise :class:`DataError` naming the option."""
    fields = type(config).model_fields
    inputs = {name: p.resolve() for name in fields if name not in OUTPUT_FIELDS
              for p in _paths(getattr(config, name))}
    for name in OUTPUT_FIELDS:
        if name not in fields:
            continue
        for out in _paths(getattr(config, name)):
            target = out.resolve()
            option = "--" + name.replace("_", "-")
            for in_name, source in inputs.items():
                if source.exists() and _within(source, target):
                    raise DataError(
                        f"{option} {out} is or contains the input given as "
                        f"--{in_name.replace('_', '-')} ({source}); choose another output",
                        out)
            _check_writable(target, option, out)


def _check_writable(target: Path, option: str, given: Path) -> None:
    probe = target
    while not probe.exists():
        probe = probe.parent
    if probe != target and not probe.is_dir():
        raise DataError(f"{option}: {probe} is a file, so nothing can be written under it",
                        given)
    if not os.access(probe if probe.is_dir() else probe.parent, os.W_OK | os.X_OK):
        raise DataError(f"{option}: {probe} is not writable (read-only place?)", given)
