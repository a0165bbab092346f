"""Ground truth of a simulation: written beside the data, loadable by later analyses.

``<out>/ground_truth.json`` holds every parameter (the resolved config and derived values)
and names the array files under ``<out>/ground_truth/``:

- ``stimuli.npz``: latents of every stimulus (``z_sem``, ``z_low``, the contrast maps
  ``layout``; row = 0-based 73k id
  for NSD images, then the extra rows named in ``extra_names``), categories, attributes,
  physical parameters, prototypes, attribute directions, word latents, imagery basis.
- ``embedding_model.npz``: the CLIP-like map.
- ``subjXX_voxels.npz``: the subject's :class:`VoxelModel` (voxels in ``vol[nsdgeneral==1]``
  order) plus per-session drift of those voxels (``session_offset``, ``session_gain``;
  rows = sessions 1..n, then the imagery session).
- ``subjXX_imagery.npz``: per imagery beta: latent vividness, its gain, the noise factor.
- ``imagery_design.csv``: per imagery beta: run, task, set, trial, condition, cue, frame,
  stimulus key and bank row of what was seen or imagined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.data.keys import parse_key
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.simulate.voxels import VoxelModel
from fmri2img.errors import DataError

GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_DIR = "ground_truth"
CONFIG_YAML = "simulation_config.yaml"
FORMAT_NAME = "fmri2img-simulation-ground-truth"
FORMAT_VERSION = 2


def voxels_file(subject: int) -> str:
    return f"{GROUND_TRUTH_DIR}/{subject_name(subject)}_voxels.npz"


def imagery_file(subject: int) -> str:
    return f"{GROUND_TRUTH_DIR}/{subject_name(subject)}_imagery.npz"


@dataclass
class GroundTruth:
    root: Path
    info: dict[str, Any]
    stimuli: dict[str, np.ndarray] = field(repr=False)

    @property
    def n_universe(self) -> int:
        return int(self.info["derived"]["n_universe"])

    def row(self, key: str) -> int:
        """Row of a stimulus key in the latent arrays."""
        prefix, value = parse_key(key)
        if prefix == "nsd":
            return int(value)
        names = [str(n) for n in self.stimuli["extra_names"]]
        return self.n_universe + names.index(str(value))

    def latents(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z_low, z_sem, layout) of the given stimulus keys: what
        ``VoxelModel.perception_signal`` and ``imagery_signal`` take."""
        rows = [self.row(k) for k in keys]
        return (self.stimuli["z_low"][rows], self.stimuli["z_sem"][rows],
                self.stimuli["layout"][rows])

    def simple(self, keys: list[str]) -> np.ndarray:
        """Whether each stimulus is a simple shape (bar, cross): the flag
        ``VoxelModel.imagery_signal`` takes."""
        return self.stimuli["simple"][[self.row(k) for k in keys]]

    def voxel_model(self, subject: int) -> VoxelModel:
        return VoxelModel.load(self.root / voxels_file(subject))

    def session_drift(self, subject: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / voxels_file(subject)) as data:
            return data["session_offset"], data["session_gain"]

    def imagery_trials(self, subject: int) -> dict[str, np.ndarray]:
        with np.load(self.root / imagery_file(subject)) as data:
            return {k: data[k] for k in data.files}

    def imagery_design(self) -> pd.DataFrame:
        return pd.read_csv(self.root / GROUND_TRUTH_DIR / "imagery_design.csv",
                           keep_default_na=False, na_values=[""])


def load_ground_truth(root: str | Path) -> GroundTruth:
    root = Path(root)
    path = root / GROUND_TRUTH_JSON
    if not path.exists():
        raise DataError("no simulation ground truth here (is this a simulated root?)", path)
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT_NAME:
        raise DataError(f"not a {FORMAT_NAME} file", path)
    with np.load(root / info["arrays"]["stimuli"], allow_pickle=False) as data:
        stimuli = {k: data[k] for k in data.files}
    return GroundTruth(root, info, stimuli)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
