"""``fmri2img simulate``'s options: a preset, what to vary in it, any generative parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from fmri2img.config import StrictModel
from fmri2img.data.simulate.config import PRESETS, Format, Scale, SimulationConfig


class SimulateOptions(StrictModel):
    """Options of ``fmri2img simulate``: a preset (``scale``), what to vary in it, and any
    generative parameter of :class:`SimulationConfig` (``parameters``; in a ``--config``
    YAML file they may also stand at the top level, as in the ``simulation_config.yaml``
    every simulation writes)."""

    out: Path = Field(description="output folder (an NSD root)")
    scale: Scale = Field("default", description="preset size")
    seed: int = Field(0, ge=0)
    null: bool = Field(False, description="imagery statistically identical to perception "
                                          "(false-positive checks)")
    subjects: list[int] | None = Field(None, description="NSD subjects, distinct values of 1..8 "
                                                        "(default: 1 2 5 7)")
    sessions: int | None = Field(None, ge=1,
                                 description="sessions per subject (default: the scale's)")
    formats: list[Format] | None = Field(None, description="beta file formats")
    images: bool = Field(True, description="render the stimulus images")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="generative parameters over the preset "
                                          "(NAME=VALUE; the fields of ground_truth.json's "
                                          "config, e.g. noise_sd=14)")

    @model_validator(mode="before")
    @classmethod
    def _gather(cls, data: Any) -> Any:
        """Top-level generative parameters (a simulation_config.yaml) into ``parameters``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        own = set(cls.model_fields)
        moved = {k: data.pop(k) for k in list(data)
                 if k not in own and k in SimulationConfig.model_fields}
        if moved:
            data["parameters"] = {**moved, **(data.get("parameters") or {})}
        return data

    @model_validator(mode="after")
    def _check_parameters(self) -> SimulateOptions:
        unknown = sorted(set(self.parameters) - set(SimulationConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown simulator parameters {unknown}; see the config of "
                             "ground_truth.json for the names")
        self.simulation()  # every value and combination checked before any work
        return self

    def simulation(self) -> SimulationConfig:
        values: dict[str, Any] = {k: v for k, v in self.parameters.items() if k != "scale"}
        explicit = self.model_fields_set
        for name, key, value in (("seed", "seed", self.seed), ("null", "null", self.null),
                                 ("images", "write_images", self.images),
                                 ("subjects", "subjects", self.subjects),
                                 ("sessions", "n_sessions", self.sessions),
                                 ("formats", "formats", self.formats)):
            if value is not None and (name in explicit or key not in values):
                values[key] = tuple(value) if isinstance(value, list) else value
        scale = self.scale if "scale" in explicit else self.parameters.get("scale", self.scale)
        if scale not in PRESETS:
            scale = self.scale
        return SimulationConfig.from_scale(scale, **values)
