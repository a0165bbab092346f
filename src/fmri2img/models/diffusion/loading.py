"""Loading diffusers pipelines: local folders by default, the Hub only when asked.

A source is either a local pipeline folder (what ``save_pretrained`` writes, with its
``model_index.json``) or ``hub:<repo id>``. Nothing is ever downloaded unless the caller
passes ``allow_hub`` (the CLI's ``--allow-hub``), and every failure a person can fix (a
wrong folder, a pipeline of another class, corrupt weights, no network) is a
:class:`fmri2img.errors.DataError` naming what was tried.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fmri2img.devices import resolve_device
from fmri2img.errors import DataError

log = logging.getLogger(__name__)

HUB_PREFIX = "hub:"
SIDECAR = "fmri2img_pipeline.json"
INSTALL_HINT = 'pip install "fmri2img[embed]"'


def hub_id(source: str | Path) -> str | None:
    """The repo id of a ``hub:<repo id>`` source; None for a local folder."""
    text = str(source)
    if not text.startswith(HUB_PREFIX):
        return None
    repo = text[len(HUB_PREFIX):].strip()
    if not repo:
        raise DataError(f"{text!r} names no repository: expected hub:<owner>/<name>")
    return repo


def pipeline_folder(source: str | Path) -> Path:
    """The local pipeline folder ``source`` names, checked to hold ``model_index.json``."""
    folder = Path(source)
    if not folder.exists():
        raise DataError("pipeline folder not found", folder)
    if not folder.is_dir():
        raise DataError("not a diffusers pipeline folder (a file, not a folder)", folder)
    if not (folder / "model_index.json").is_file():
        raise DataError("not a diffusers pipeline folder (no model_index.json)", folder)
    return folder


def folder_class_name(folder: Path) -> str:
    """The class ``model_index.json`` says the folder holds."""
    index = folder / "model_index.json"
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"model_index.json is not readable JSON: {exc}", folder) from exc
    name = data.get("_class_name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise DataError("model_index.json names no pipeline class (_class_name)", folder)
    return name


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise DataError(f"image generation needs diffusers: {INSTALL_HINT}") from exc
    return diffusers


def from_pretrained_kwargs() -> dict[str, Any]:
    """Loading options: without accelerate, diffusers falls back to ordinary loading
    anyway, but warns on every component; asking for it directly keeps logs quiet."""
    return {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the Hub could not be reached or refused": OSError covers
    connection failures and diffusers' own "not found" wrapping."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:
        return tuple(errors)
    errors += [hub_errors.HfHubHTTPError, hub_errors.LocalEntryNotFoundError]
    return tuple(errors)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' per-component progress bars off while a pipeline is
    loaded or saved (they flood logs and CI output); each library's setting is restored."""
    libs = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m)]
    restore = []
    for name in libs:
        logging_mod = importlib.import_module(f"{name}.utils.logging")
        if not logging_mod.is_progress_bar_enabled():
            continue
        logging_mod.disable_progress_bar()
        restore.append(logging_mod)
    try:
        yield
    finally:
        for logging_mod in restore:
            logging_mod.enable_progress_bar()


def load_pipeline(pipeline_class_name: str, source: str | Path, *, device: str,
                  allow_hub: bool) -> Any:
    """The diffusers pipeline of class ``pipeline_class_name`` at ``source``, on
    ``device``, with diffusers' own progress bars off (the caller shows one)."""
    repo = hub_id(source)
    if repo is not None and not allow_hub:
        raise DataError(f"hub:{repo} needs --allow-hub; fmri2img never downloads implicitly")
    # the device is checked before anything is read: a bad name should not cost a load
    target = resolve_device(device)
    diffusers = _diffusers()
    cls = getattr(diffusers, pipeline_class_name, None)
    if cls is None:
        raise DataError(f"this diffusers ({diffusers.__version__}) has no "
                        f"{pipeline_class_name}; {INSTALL_HINT} with a newer diffusers")
    if repo is not None:
        try:
            with quiet_loading():
                pipe = cls.from_pretrained(repo, **from_pretrained_kwargs())
        except _hub_errors() as exc:
            raise DataError(f"could not load {repo} from the Hugging Face Hub (offline?): "
                            f"{exc}") from exc
        found = type(pipe).__name__
        if found != pipeline_class_name:
            raise DataError(f"hub:{repo} holds a {found}, not the {pipeline_class_name} "
                            f"this backend needs")
    else:
        folder = pipeline_folder(source)
        found = folder_class_name(folder)
        if found != pipeline_class_name:
            raise DataError(f"the folder holds a {found}, not the {pipeline_class_name} "
                            f"this backend needs", folder)
        try:
            with quiet_loading():
                pipe = cls.from_pretrained(folder, local_files_only=True,
                                           **from_pretrained_kwargs())
        except Exception as exc:  # any failure reading third-party files is bad data
            raise DataError(f"could not load the {found} pipeline: "
                            f"{type(exc).__name__}: {exc}", folder) from exc
    pipe = pipe.to(target)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def read_sidecar(source: str | Path) -> dict[str, Any]:
    """fmri2img's notes on a pipeline folder (``fmri2img_pipeline.json``): the embedding it
    expects and whether it is an untrained test pipeline. Empty for Hub sources and for
    folders without one."""
    if hub_id(source) is not None:
        return {}
    path = Path(source) / SIDECAR
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"not readable as JSON: {exc}", path) from exc
    if not isinstance(data, dict):
        raise DataError("the sidecar must hold a JSON object", path)
    return data
