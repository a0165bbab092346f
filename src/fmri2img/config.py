"""Validated configuration: pydantic models, YAML on disk, unknown keys rejected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fmri2img.errors import DataError
from fmri2img.io.atomic import write_yaml

M = TypeVar("M", bound="StrictModel")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.resolved())

    @classmethod
    def from_yaml(cls: type[M], path: str | Path, **overrides: Any) -> M:
        """The config in the YAML file ``path``, with ``overrides`` on top; a mapping given
        in both is merged key by key."""
        data = read_yaml(path)
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                value = {**data[key], **value}
            data[key] = value
        try:
            return cls(**data)
        except ValidationError as exc:
            raise DataError(f"invalid configuration:\n{errors_text(exc)}", path) from None


def errors_text(exc: ValidationError, name: Callable[[str], str] = str) -> str:
    """One line per invalid option: its name (``name`` turns a field into what the user
    typed, e.g. its flag), the value given and what is allowed; pydantic's message without
    its documentation link."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(x) for x in err.get("loc", ())]
        where = name(loc[0]) + (f" {'.'.join(loc[1:])}" if len(loc) > 1 else "") if loc \
            else "options"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" {value!r}:"
        lines.append(f"  {where}:{shown} {err['msg']}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of option: value in a YAML config file."""
    path = Path(path)
    if not path.exists():
        raise DataError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"not readable as YAML: {exc}", path) from exc
    if not isinstance(data, dict):
        raise DataError("config file must hold a mapping of option: value", path)
    return data
