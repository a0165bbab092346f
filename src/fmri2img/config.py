"""Validated configuration: pydantic models, YAML on disk, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fmri2img.atomic import write_yaml
from fmri2img.errors import DataError

M = TypeVar("M", bound="StrictModel")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.resolved())

    @classmethod
    def from_yaml(cls: type[M], path: str | Path, **overrides: Any) -> M:
        path = Path(path)
        if not path.exists():
            raise DataError("config file not found", path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise DataError("config file must hold a mapping of option: value", path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            raise DataError(f"invalid configuration:\n{exc}", path) from exc
