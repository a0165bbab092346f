"""What every perception-vs-imagery analysis is given and must return.

An analysis is a :class:`Analysis`: per subject, ``run(inputs, options, common)`` turns
one subject's :class:`SubjectInputs` into a JSON-able result; ``combine`` turns the
subjects' results into the group result with its one-line ``finding``; ``draw`` makes the
figure from the saved result alone (so ``fmri2img figures`` can redraw it).

Result conventions (checked by :func:`check_subject_result`, :func:`check_group_result`):

- a subject result holds ``testable`` (bool) and, when false, ``why`` (a sentence: what
  is missing, e.g. "vividness is 1 on all 288 imagery trials"); a not-testable analysis
  never reports a number in place of its effect;
- a group result holds ``finding`` (one line with the statistics), ``effect`` (``name``,
  ``value``, ``ci`` [lo, hi], ``p``; ``None`` where nothing was testable) and
  ``significant`` (``p < alpha``, or ``None``).

The numerics live in :mod:`fmri2img.analysis` (arrays in, arrays out); this floor reads
inputs and shapes results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from fmri2img.config import StrictModel
from fmri2img.data.trials import IndexData, Targets
from fmri2img.errors import DataError
from fmri2img.experiments.imagery_rsa import roi_masks
from fmri2img.models.pipeline import DecoderPipeline

# NSD-Imagery's domains as the index names them: vision trials are "perception"
VISION, IMAGERY = "perception", "imagery"
# The public NSD-Imagery analysis' ROIs (as imagery-rsa), and the visual hierarchy from
# V1 to the ventral, lateral and parietal streams (the ROI hierarchy profile).
COARSE_ROIS = {
    "early_visual": "prf-visualrois:V1v,V1d,V2v,V2d,V3v,V3d",
    "higher_visual": "streams:ventral,lateral,parietal",
    "nsdgeneral": "nsdgeneral",
}
HIERARCHY_ROIS = {
    "V1": "prf-visualrois:V1v,V1d",
    "V2": "prf-visualrois:V2v,V2d",
    "V3": "prf-visualrois:V3v,V3d",
    "hV4": "prf-visualrois:hV4",
    "ventral": "streams:ventral",
    "lateral": "streams:lateral",
    "parietal": "streams:parietal",
}


class Common(StrictModel):
    """Statistics options shared by every analysis."""

    seed: int = Field(0, ge=0)
    n_bootstrap: int = Field(1000, ge=100, description="bootstrap resamples per CI")
    n_permutations: int = Field(1000, ge=100, description="permutations per p-value")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the findings")


@dataclass
class SubjectInputs:
    """One subject's data, opened lazily from the paths of the analyze config."""

    subject: str
    imagery_index: Path
    perception_index: Path | None
    targets_path: Path
    checkpoints: dict[str, Path]  # decoder model type -> checkpoint (existing ones only)
    rois: dict[str, str]  # ROI name -> selection (ATLAS or ATLAS:NAME,...)
    hierarchy: list[str]  # ROI names, low to high
    work_dir: Path  # this subject's folder for intermediate products (decoders, caches)
    semantic_table: Path | None = None
    image_autoencoder: Path | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def imagery(self) -> IndexData:
        if "imagery" not in self._cache:
            data = IndexData.open(self.imagery_index)
            if str(data.frame["dataset"].iloc[0]) != "nsd-imagery":
                raise DataError("not an NSD-Imagery index (dataset "
                                f"{data.frame['dataset'].iloc[0]!r})", self.imagery_index)
            self._cache["imagery"] = data
        return self._cache["imagery"]

    @property
    def perception(self) -> IndexData:
        if self.perception_index is None:
            raise DataError("this analysis needs the NSD perception index "
                            "(perception_index)")
        if "perception" not in self._cache:
            self._cache["perception"] = IndexData.open(self.perception_index)
        return self._cache["perception"]

    @property
    def targets(self) -> Targets:
        if "targets" not in self._cache:
            self._cache["targets"] = Targets.open(self.targets_path)
        return self._cache["targets"]

    def trials(self, domain: str, sets: Sequence[str] | None = None,
               with_targets: bool = True) -> pd.DataFrame:
        """Scored NSD-Imagery trials of a domain (``VISION`` or ``IMAGERY``): not excluded,
        with a target; ``sets`` filters the stimulus set (simple, complex, conceptual);
        ``with_targets`` keeps only trials whose stimulus is in the embedding table."""
        df = self.imagery.frame
        keep = ((df["domain"] == domain) & (df["split"] != "excluded")
                & df["target_code"].notna())
        if sets is not None:
            keep = keep & df["stimulus_set"].isin(list(sets))
        rows = df[keep.to_numpy()]
        if with_targets:
            known = set(self.targets.keys)
            rows = rows[rows["stimulus"].isin(known)]
        return rows

    def roi_masks(self, names: Sequence[str] | None = None,
                  data: IndexData | None = None) -> dict[str, np.ndarray]:
        """Boolean voxel masks of the named ROIs over an index's voxels (the imagery
        index by default)."""
        data = data or self.imagery
        chosen = {n: self.rois[n] for n in (names if names is not None else self.rois)}
        manifest = data.cache.manifest
        return roi_masks(data.cache.voxels(), (manifest.get("mask") or {}).get("atlases")
                         or {}, chosen, data.path)

    def betas(self, rows: pd.DataFrame, mask: np.ndarray | None = None,
              data: IndexData | None = None) -> np.ndarray:
        x = (data or self.imagery).betas(rows)
        return x if mask is None else x[:, mask]

    def decoder(self, model_type: str) -> DecoderPipeline:
        """A perception decoder named in the config's ``checkpoints``."""
        if model_type not in self.checkpoints:
            raise DataError(f"no {model_type} checkpoint for {self.subject} (checkpoints: "
                            f"{sorted(self.checkpoints) or 'none'})")
        key = f"decoder:{model_type}"
        if key not in self._cache:
            self._cache[key] = DecoderPipeline.load(self.checkpoints[model_type])[0]
        return self._cache[key]

    def decoded(self, model_type: str, rows: pd.DataFrame) -> np.ndarray:
        """The perception decoder's predictions of NSD-Imagery rows, (n, dim)."""
        pipe = self.decoder(model_type)
        x = self.betas(rows)
        if x.shape[1] != pipe.n_inputs:
            raise DataError(f"the {model_type} decoder takes {pipe.n_inputs} voxels, the "
                            f"imagery index has {x.shape[1]}; build both indices with the "
                            "same ROI", self.checkpoints[model_type])
        return pipe.predict(x)


DRAW_DIGITS = 5  # bootstrap and null draws kept in a result, for the group statistics


def num(x: Any) -> float | None:
    """A JSON number: None for missing or non-finite values."""
    return None if x is None or not np.isfinite(x) else float(x)


def draws(x: np.ndarray) -> list[float | None]:
    """Resampling draws as JSON numbers, rounded (they feed group statistics only)."""
    return [num(round(float(v), DRAW_DIGITS)) for v in np.ravel(x)]


def not_testable(why: str, **extra: Any) -> dict[str, Any]:
    return {"testable": False, "why": why, **extra}


def effect(name: str, value: float | None, ci: Sequence[float] | None,
           p: float | None) -> dict[str, Any]:
    return {"name": name, "value": num(value),
            "ci": None if ci is None else [num(ci[0]), num(ci[1])], "p": num(p)}


def check_subject_result(name: str, result: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(result.get("testable"), bool):
        raise TypeError(f"{name}: a subject result must say whether it was testable")
    if not result["testable"] and not result.get("why"):
        raise TypeError(f"{name}: a not-testable result must say why")
    return result


def check_group_result(name: str, result: dict[str, Any]) -> dict[str, Any]:
    missing = {"finding", "effect", "significant"} - set(result)
    if missing:
        raise TypeError(f"{name}: group result lacks {sorted(missing)}")
    return result


@dataclass(frozen=True)
class Analysis:
    name: str
    title: str
    Options: type[StrictModel]
    run: Callable[[SubjectInputs, Any, Common], dict[str, Any]]
    combine: Callable[[dict[str, dict[str, Any]], Any, Common], dict[str, Any]]
    draw: Callable[[dict[str, Any], Path], list[Path]]
    # what a subject needs beyond the imagery index and the targets: "perception_index",
    # "checkpoint:<model type>", "semantic_table"
    needs: Callable[[Any], list[str]] = lambda options: []
