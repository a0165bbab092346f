"""One rule between a config model's fields and command-line flags, used both ways.

The command line builds its options from the config models (:func:`add_fields`), and
anything that records how to rerun a step writes the command from the config that ran
(:func:`command_line`), so a flag's spelling is decided here and nowhere else:

* a field ``n_folds`` is the flag ``--n-folds``; its help is the field's description;
* a boolean that defaults to True is switched off with ``--no-<name>``, one that defaults
  to False is switched on with ``--<name>``;
* a ``Literal`` field offers its values as choices; a list takes one or more values; a
  mapping takes ``KEY=VALUE`` items, repeatable, each value read as YAML;
* an optional field is reset to its null value with ``none``.

Values are handed to the model as given and converted by its validation, so a flag and a
YAML config file (``--config``) are checked by the same rules.
"""

from __future__ import annotations

import argparse
import shlex
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from fmri2img.config import errors_text
from fmri2img.errors import DataError
from fmri2img.io.guard import check_paths

NONE_WORDS = ("none", "null")


def flag(name: str, field: FieldInfo | None = None) -> str:
    """The flag of field ``name`` (``--no-<name>`` for booleans that default to True)."""
    text = name.replace("_", "-")
    if field is not None and _kind(field)[0] == "bool" and field.default is True:
        return f"--no-{text}"
    return f"--{text}"


def _kind(field: FieldInfo) -> tuple[str, tuple[Any, ...]]:
    """(kind, choices) of a field: bool, literal, list, mapping or scalar."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] \
        if _is_union(ann) else [ann]
    base = args[0] if len(args) == 1 else ann
    origin = typing.get_origin(base)
    if base is bool:
        return "bool", ()
    if origin is typing.Literal:
        return "literal", typing.get_args(base)
    if origin in (list, tuple) or base in (list, tuple):
        inner = typing.get_args(base)
        if inner and typing.get_origin(inner[0]) is typing.Literal:
            return "list", typing.get_args(inner[0])
        return "list", ()
    if origin in (dict, Mapping) or base is dict:
        return "mapping", ()
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "model", ()
    return "scalar", ()


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _optional(field: FieldInfo) -> bool:
    return _is_union(field.annotation) and type(None) in typing.get_args(field.annotation)


def _value(text: str) -> Any:
    return None if text.strip().lower() in NONE_WORDS else text


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_fields(parser: argparse.ArgumentParser, *models: type[BaseModel],
               only: Iterable[str] | None = None, skip: Iterable[str] = (),
               extra: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Add one option per field of ``models`` (the union of their fields, first model's
    description first) to ``parser``; returns the field names added.

    ``extra`` gives per-field argparse keywords the rule cannot know (choices drawn from a
    registry, ``nargs="?"`` with a ``const``, aliases under ``"aliases"``).
    """
    wanted = None if only is None else list(only)
    skip, extra = set(skip), dict(extra or {})
    fields: dict[str, list[FieldInfo]] = {}
    for model in models:
        for name, field in model.model_fields.items():
            if name in skip or (wanted is not None and name not in wanted):
                continue
            fields.setdefault(name, []).append(field)
    for name, versions in fields.items():
        field = versions[0]
        kind, choices = _kind(field)
        for other in versions[1:]:  # the same option in several configs: all their values
            choices = tuple(dict.fromkeys(choices + _kind(other)[1]))
        # absent flags leave no attribute, so that a flag given as ``none`` is told apart
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                              "help": field.description}
        if kind == "bool":
            kw["action"] = "store_false" if field.default is True else "store_true"
            if field.default is True and field.description:
                kw["help"] = f"turn off: {field.description}"
        elif kind == "model":
            raise TypeError(f"{name}: nested configs have no flags; flatten the field")
        elif kind == "mapping":
            kw.update(action="append", type=_pair, metavar="KEY=VALUE")
        else:
            kw["type"] = _value if _optional(field) else str
            if kind == "list":
                kw["nargs"] = "+"
            if choices:
                kw["choices"] = list(choices) + ([None] if _optional(field) else [])
                kw["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        options = dict(extra.get(name, {}))
        aliases = list(options.pop("aliases", []))
        kw.update(options)
        parser.add_argument(flag(name, field), *aliases, **kw)
    return list(fields)


def given(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` set on the command line (mappings as dicts)."""
    out = {}
    for name, field in model.model_fields.items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if _kind(field)[0] == "mapping":
            value = dict(value)
        out[name] = value
    return out


def config_from_args(model: type[BaseModel], args: argparse.Namespace,
                     **overrides: Any) -> Any:
    """``model`` from ``--config FILE`` (if given) overlaid with the flags given."""
    values = {**given(args, model), **overrides}
    config = getattr(args, "config", None)
    if config:
        cfg = model.from_yaml(config, **values)  # type: ignore[attr-defined]
    else:
        cfg = model(**values)
    check_paths(cfg)
    return cfg


def _text(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]
    return str(value)


def _yaml_text(value: Any) -> str:
    """``value`` as one line of YAML (what :func:`_pair` reads back)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()


def command_line(command: str, config: BaseModel, skip: Iterable[str] = ()) -> str:
    """The command that reruns ``config``: ``command`` followed by one flag per field
    whose value differs from its default, shell-quoted."""
    skip = set(skip)
    words = command.split()
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if name in skip or value == field.get_default(call_default_factory=True):
            continue
        kind = _kind(field)[0]
        if kind == "model":
            raise DataError(f"{name}: a nested config cannot be written as flags")
        if kind == "bool":
            words.append(flag(name, field))
        elif kind == "mapping":
            for k, v in value.items():
                words += [flag(name), f"{k}={_yaml_text(v)}"]
        elif value is None:
            words += [flag(name), "none"]
        elif kind == "list":
            words += [flag(name), *map(_text, value)]
        else:
            words += [flag(name), _text(value)]
    return " ".join(shlex.quote(w) for w in words)


def option_errors(exc: ValidationError) -> str:
    """One line per invalid option, named by its flag."""
    return errors_text(exc, flag)
