"""ROI selections: which voxels of a subject's grid go into the cache, and their labels.

A selection is written ``ATLAS`` (every label >= 1) or ``ATLAS:NAME[,NAME...]``, with
names from the atlas's ``.ctab`` file (or NSD's known names) or plain label numbers, e.g.
``nsdgeneral``, ``streams:ventral,lateral``, ``prf-visualrois:V1v,V1d``.
Voxels are ordered as every NSD decoding codebase orders them: the C-order flattening
of the (X, Y, Z) mask (``vol[mask]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xxhash

from fmri2img.data.nsd_layout import ROI_LABELS, NSDPaths
from fmri2img.data.volumes import read_label_volume
from fmri2img.errors import DataError

SUMMARY_ATLASES = ("nsdgeneral", "prf-visualrois", "streams")


@dataclass(frozen=True)
class RoiSelection:
    atlas: str
    labels: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> RoiSelection:
        atlas, _, names = text.partition(":")
        atlas = atlas.strip()
        if not atlas:
            raise DataError(f"empty ROI selection {text!r}; expected ATLAS or ATLAS:NAME,...")
        labels = tuple(n.strip() for n in names.split(",") if n.strip())
        return cls(atlas, labels)

    def __str__(self) -> str:
        return self.atlas + (":" + ",".join(self.labels) if self.labels else "")


def read_ctab(path: Path) -> dict[int, str]:
    """FreeSurfer colour table: ``idx name R G B A`` per line."""
    table: dict[int, str] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
            table[int(parts[0])] = parts[1]
    return table


def atlas_names(paths: NSDPaths, subject: int, atlas: str) -> dict[int, str]:
    ctab = paths.roi_ctab(subject, atlas)
    names = read_ctab(ctab) if ctab.exists() else {}
    names = {k: v for k, v in names.items() if k >= 1}
    return names or dict(ROI_LABELS.get(atlas, {}))


def label_ids(selection: RoiSelection, names: dict[int, str], path: Path) -> list[int]:
    """Label numbers of a selection's names (or numbers), checked against the atlas."""
    by_name = {v.lower(): k for k, v in names.items()}
    ids = []
    for label in selection.labels:
        if label.isdigit():
            ids.append(int(label))
        elif label.lower() in by_name:
            ids.append(by_name[label.lower()])
        else:
            raise DataError(
                f"ROI label {label!r} not in atlas {selection.atlas!r}; known labels: "
                + ", ".join(names.values()),
                path,
            )
    return ids


def load_selection(
    paths: NSDPaths, subject: int, selection: RoiSelection
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Return (mask (X,Y,Z) bool, voxel table, mask description for the manifest).

    The voxel table holds x, y, z and the label of every summary atlas present on disk,
    so later analyses can split results by ROI without re-reading volumes.
    """
    roi_path = paths.roi(subject, selection.atlas)
    if not roi_path.exists():
        raise DataError(
            f"ROI atlas {selection.atlas!r} not found; expected a label volume (X, Y, Z) with "
            "-1 outside the brain, 0 unlabelled, >=1 ROI labels",
            roi_path,
        )
    vol = read_label_volume(roi_path)
    names = atlas_names(paths, subject, selection.atlas)
    if selection.labels:
        ids = label_ids(selection, names, roi_path)
        mask = np.isin(vol, ids)
    else:
        ids = sorted(int(v) for v in np.unique(vol) if v >= 1)
        mask = vol >= 1
    if not mask.any():
        raise DataError(f"ROI selection {selection} selects no voxels", roi_path)
    xyz = np.argwhere(mask)  # C order over (X, Y, Z), as vol[mask]
    table = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}).astype(np.int32)
    for atlas in dict.fromkeys((selection.atlas, *SUMMARY_ATLASES)):
        p = paths.roi(subject, atlas)
        if not p.exists():
            continue
        other = vol if atlas == selection.atlas else read_label_volume(p)
        if other.shape != vol.shape:
            raise DataError(
                f"ROI volume shape {other.shape} differs from {selection.atlas} {vol.shape}", p
            )
        table[atlas] = other[mask].astype(np.int16)
    description = {
        "selection": str(selection),
        "atlas_file": str(roi_path),
        "label_ids": ids,
        "label_names": {str(k): names.get(k, str(k)) for k in ids},
        "grid_xyz": list(vol.shape),
        "n_voxels": int(mask.sum()),
        "mask_checksum": "xxh3_128:" + xxhash.xxh3_128(np.packbits(mask).tobytes()).hexdigest(),
        "atlases": {
            atlas: {str(k): v for k, v in atlas_names(paths, subject, atlas).items()}
            for atlas in table.columns[3:]
        },
    }
    return mask, table, description


def roi_voxel_counts(voxels: pd.DataFrame, atlases: dict[str, dict[str, str]]) -> dict[str, int]:
    """Voxels of the selection in each named ROI, from a cache's voxel table and manifest."""
    counts: dict[str, int] = {}
    for atlas, names in atlases.items():
        if atlas not in voxels:
            continue
        values = voxels[atlas].to_numpy()
        for label, name in sorted(names.items(), key=lambda kv: int(kv[0])):
            n = int((values == int(label)).sum())
            if n:
                counts[name] = n
    return counts
