"""Skip a finished step only when nothing it depends on has changed.

A step (train, evaluate, train an adapter) is reused when its marker file exists, its saved
``config_resolved.yaml`` equals the wanted config, *and* every input file the config names
still has the content it had when the step finished. Paths alone are not enough: rebuilding
an index in place with other options (say, another z-scoring) keeps its path and must not
leave stale results behind.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fmri2img.io.atomic import write_json
from fmri2img.io.checksum import fingerprint, fingerprint_matches

INPUTS = "inputs.json"
log = logging.getLogger(__name__)
T = TypeVar("T")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def input_files(cfg: Any, out: Path) -> list[Path]:
    """Existing files named anywhere in ``cfg.resolved()``, outside the step's own folder."""
    own = Path(out).resolve()
    files = set()
    for text in _strings(cfg.resolved()):
        if "\n" in text or len(text) > 4096:
            continue
        p = Path(text)
        try:
            if not p.is_file():
                continue
        except OSError:
            continue
        p = p.resolve()
        if own not in p.parents:
            files.add(p)
    return sorted(files)


def is_done(out: Path, cfg: Any, marker: str) -> bool:
    """``marker`` exists, the saved config equals ``cfg``'s and the inputs are unchanged."""
    out = Path(out)
    saved, record = out / "config_resolved.yaml", out / INPUTS
    if not ((out / marker).exists() and saved.exists() and record.exists()):
        return False
    if yaml.safe_load(saved.read_text()) != cfg.resolved():
        return False
    recorded = json.loads(record.read_text())
    if sorted(r["path"] for r in recorded) != [str(p) for p in input_files(cfg, out)]:
        return False
    return all(fingerprint_matches(r) for r in recorded)


def mark_done(out: Path, cfg: Any) -> None:
    """Record the inputs' fingerprints; call after the step has written its outputs."""
    write_json(Path(out) / INPUTS, [fingerprint(p) for p in input_files(cfg, out)])


def run_once(cfg: Any, marker: str, fn: Callable[[Any], T],
             out: Path | None = None) -> T | dict[str, Any]:
    """``fn(cfg)``, or the JSON ``marker`` of an earlier run with the same config and
    inputs."""
    out = Path(out if out is not None else cfg.output_dir)
    if is_done(out, cfg, marker):
        return json.loads((out / marker).read_text())
    result = fn(cfg)
    mark_done(out, cfg)
    return result


def forget_state_of_other_options(out: Path, cfg: Any, state: Path,
                                  ignore: tuple[str, ...] = ()) -> None:
    """Delete the resume state folder ``state`` of a step finished in ``out`` with options
    other than ``cfg``'s (its saved ``config_resolved.yaml`` differs outside ``ignore``), so
    that the step trains again from the start. An unfinished state (no saved config) is
    left alone: the trainer refuses one written with other options, naming them, rather
    than discard what may be hours of work."""
    saved = Path(out) / "config_resolved.yaml"
    if not (state.exists() and saved.exists()):
        return
    old = {k: v for k, v in (yaml.safe_load(saved.read_text()) or {}).items()
           if k not in ignore}
    if old != {k: v for k, v in cfg.resolved().items() if k not in ignore}:
        log.info("%s was trained with other options; training it again", out)
        shutil.rmtree(state)
