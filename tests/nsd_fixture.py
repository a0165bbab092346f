"""A hand-built miniature NSD root, written file by file from NSD_FORMAT.md.

Independent of the simulator on purpose: the readers are checked against files whose
every value the test knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from fmri2img.data.nsd_layout import NSDPaths

SHAPE_XYZ = (6, 7, 5)
N_SESSIONS = 2
TRIALS = 750 * N_SESSIONS
N_IMAGES = TRIALS // 3  # every image shown 3 times
N_SHARED = 50
UNIVERSE = 4000


@dataclass
class TinyNSD:
    root: Path
    masterordering: np.ndarray  # (TRIALS,) 1-based
    subjectim: np.ndarray  # (8, N_IMAGES) 1-based
    betas: dict[int, np.ndarray]  # session -> (X, Y, Z, 750) int16 stored values
    nsdgeneral: np.ndarray  # (X, Y, Z) int in {-1, 0, 1}
    streams: np.ndarray


def write_tiny_nsd(
    root: Path, subject: int = 1, formats: tuple[str, ...] = ("hdf5",), seed: int = 0,
    hdf5_chunks: str = "voxel",
) -> TinyNSD:
    rng = np.random.default_rng(seed)
    paths = NSDPaths(root)
    # Design: shared images first in subjectim; three presentations of every image.
    ids = rng.choice(np.arange(1, UNIVERSE + 1), size=N_SHARED + 8 * (N_IMAGES - N_SHARED),
                     replace=False)
    shared = ids[:N_SHARED]
    subjectim = np.zeros((8, N_IMAGES), dtype=np.int64)
    for s in range(8):
        own = ids[N_SHARED + s * (N_IMAGES - N_SHARED): N_SHARED + (s + 1) * (N_IMAGES - N_SHARED)]
        subjectim[s] = np.concatenate([shared, own])
    order = np.concatenate([np.arange(1, N_IMAGES + 1)] * 3)
    rng.shuffle(order)
    masterordering = order.astype(np.int64)
    paths.expdesign.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(paths.expdesign, {
        "masterordering": masterordering[None, :].astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": shared[None, :].astype(np.float64),
        "basiccnt": np.zeros((3, 40)),
        "stimpattern": np.zeros((40, 12, 75)),
    })
    # Stim info: 1-based global trial numbers of each presentation.
    info = pd.DataFrame({"cocoId": np.arange(UNIVERSE), "nsdId": np.arange(UNIVERSE),
                         "shared1000": False})
    info.loc[shared - 1, "shared1000"] = True
    for s in range(1, 9):
        seen = np.zeros(UNIVERSE, dtype=np.int64)
        reps = np.zeros((UNIVERSE, 3), dtype=np.int64)
        for g, ten_k in enumerate(masterordering):
            i0 = subjectim[s - 1, ten_k - 1] - 1
            reps[i0, seen[i0]] = g + 1
            seen[i0] += 1
        info[f"subject{s}"] = (seen > 0).astype(int)
        for r in range(3):
            info[f"subject{s}_rep{r}"] = reps[:, r]
    info.to_csv(paths.stim_info)

    # ROIs: brain = inner box; nsdgeneral = posterior half of it.
    x, y, z = np.indices(SHAPE_XYZ)
    brain = (x > 0) & (x < 5) & (y > 0) & (y < 6) & (z > 0) & (z < 4)
    nsdgeneral = np.where(brain, 0, -1).astype(np.int16)
    nsdgeneral[brain & (y <= 3)] = 1
    streams = np.where(brain, 0, -1).astype(np.int16)
    streams[brain & (y <= 1)] = 1
    streams[brain & (y > 1) & (y <= 3) & (z <= 1)] = 5
    streams[brain & (y > 1) & (y <= 3) & (z > 1)] = 6
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    for atlas, vol in (("nsdgeneral", nsdgeneral), ("streams", streams)):
        p = paths.roi(subject, atlas)
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, affine), p)

    betas = {}
    for session in range(1, N_SESSIONS + 1):
        vol = rng.normal(0, 400, size=(*SHAPE_XYZ, 750))
        vol += rng.normal(0, 300, size=(*SHAPE_XYZ, 1))  # per-voxel session offset
        vol = np.where(brain[..., None], np.rint(vol), 0).astype(np.int16)
        betas[session] = vol
        if "hdf5" in formats:
            p = paths.betas_session(subject, session, "hdf5")
            p.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(p, "w") as f:
                data = np.ascontiguousarray(vol.transpose(3, 2, 1, 0))  # (T, Z, Y, X)
                chunks = {"voxel": (750, 1, 1, 1), "none": None, "other": (10, 2, 2, 2)}
                f.create_dataset("betas", data=data, chunks=chunks[hdf5_chunks])
        if "nifti" in formats:
            p = paths.betas_session(subject, session, "nifti")
            p.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), p)
    return TinyNSD(root, masterordering, subjectim, betas, nsdgeneral, streams)


def write_tiny_imagery_betas(tiny: TinyNSD, subject: int = 1, formats: tuple[str, ...] = ("hdf5",),
                             seed: int = 1) -> np.ndarray:
    """A 720-beta NSD-Imagery file on the tiny grid; returns the (X, Y, Z, 720) int16 values."""
    rng = np.random.default_rng(seed)
    paths = NSDPaths(tiny.root)
    brain = tiny.nsdgeneral >= 0
    vol = np.where(brain[..., None], np.rint(rng.normal(0, 300, size=(*SHAPE_XYZ, 720))), 0)
    vol = vol.astype(np.int16)
    for fmt in formats:
        p = paths.imagery_betas(subject, fmt)
        p.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "hdf5":
            with h5py.File(p, "w") as f:
                f.create_dataset("betas", data=np.ascontiguousarray(vol.transpose(3, 2, 1, 0)),
                                 chunks=(720, 1, 1, 1))
        else:
            nib.save(nib.Nifti1Image(vol, np.diag([1.8, 1.8, 1.8, 1.0])), p)
    return vol
