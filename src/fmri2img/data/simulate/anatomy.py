"""Per-subject anatomy: brain mask, nsdgeneral, visual streams and pRF visual areas.

Volumes are (X, Y, Z) in RAS orientation (x: left->right, y: posterior->anterior,
z: inferior->superior), 1.8-mm voxels. Regions are cut from smooth coordinates, so their
borders are smooth and subject-specific: nsdgeneral is the most posterior cortex; along
a hierarchy coordinate (distance from the occipital poles) come early, then mid-level,
then high-level streams; ventral streams lie inferior, parietal superior, lateral between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from fmri2img.data.nsd_layout import ROI_LABELS
from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.seeding import stream
from fmri2img.errors import DataError

VOXEL_MM = 1.8
CORTEX_DEPTH = 0.8  # nsdgeneral prefers this normalised radius: cortex, not white matter
POLE_QUANTILE = 0.02  # the most posterior share of nsdgeneral defines the occipital poles


@dataclass(frozen=True)
class Anatomy:
    subject: int
    shape: tuple[int, int, int]
    affine: np.ndarray
    brain: np.ndarray  # bool (X,Y,Z)
    nsdgeneral: np.ndarray  # int16 (X,Y,Z): -1 outside brain, 0, 1
    streams: np.ndarray  # int16: -1, 0, 1..7
    prf: np.ndarray  # int16: -1, 0, 1..7 (V1v..hV4)
    hierarchy: np.ndarray  # float32 (X,Y,Z): distance from the occipital poles

    @property
    def visual(self) -> np.ndarray:
        return self.nsdgeneral == 1

    def roi_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for atlas, vol in (("nsdgeneral", self.nsdgeneral), ("prf-visualrois", self.prf),
                           ("streams", self.streams)):
            out[atlas] = {name: int((vol == k).sum()) for k, name in ROI_LABELS[atlas].items()}
        return out


def _split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts summing to n, in the given proportions."""
    edges = np.rint(np.cumsum(fractions) / np.sum(fractions) * n).astype(int)
    return np.diff(np.concatenate([[0], edges]))


def _assign_by_rank(key: np.ndarray, labels: list[int], fractions: list[float]) -> np.ndarray:
    """Label the items in ascending order of key, in consecutive groups of given shares."""
    counts = _split_counts(key.size, np.asarray(fractions, dtype=float))
    out = np.empty(key.size, dtype=np.int16)
    out[np.argsort(key, kind="stable")] = np.repeat(labels, counts)
    return out


def affine_for(shape: tuple[int, int, int]) -> np.ndarray:
    aff = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    aff[:3, 3] = -VOXEL_MM * (np.asarray(shape) - 1) / 2.0
    return aff


def make_anatomy(cfg: SimulationConfig, subject: int) -> Anatomy:
    shape = cfg.volume_shape_for(subject)
    n_general = cfg.nsdgeneral_voxels_for(subject)
    rng = stream(cfg.seed, "anatomy", subject)
    sigma = cfg.roi_field_sigma * min(shape)
    amp = cfg.roi_field_amplitude

    def smooth_field() -> np.ndarray:
        f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
        return (f - f.mean()) / (f.std() + 1e-12)

    axes = [(np.arange(n) - (n - 1) / 2.0) / (n / 2.0) for n in shape]
    cx, cy, cz = np.meshgrid(*axes, indexing="ij")
    rho = np.sqrt(cx**2 + cy**2 + cz**2) / cfg.brain_radius_fraction
    brain = rho + amp * smooth_field() < 1.0
    n_brain = int(brain.sum())
    if n_general >= n_brain:
        raise DataError(
            f"subject {subject}: {n_general} nsdgeneral voxels do not fit a brain of "
            f"{n_brain} voxels in a {shape} volume"
        )

    # nsdgeneral: the most posterior cortex (exactly n_general voxels).
    score = -cy - np.abs(rho - CORTEX_DEPTH) + amp * smooth_field()
    brain_idx = np.flatnonzero(brain)
    chosen = brain_idx[np.argsort(-score.ravel()[brain_idx], kind="stable")[:n_general]]
    general = np.where(brain, 0, -1).astype(np.int16)
    general.ravel()[chosen] = 1

    # Hierarchy: distance from the nearer occipital pole (one per hemisphere).
    gx, gy, gz = np.abs(cx.ravel()[chosen]), cy.ravel()[chosen], cz.ravel()[chosen]
    posterior = gy <= np.quantile(gy, POLE_QUANTILE)
    pole = np.array([gx[posterior].mean(), gy[posterior].mean(), gz[posterior].mean()])
    dist = np.sqrt((gx - pole[0]) ** 2 + (gy - pole[1]) ** 2 + (gz - pole[2]) ** 2)
    h = dist + 0.5 * amp * dist.std() * smooth_field().ravel()[chosen]
    level = _assign_by_rank(
        h, [0, 1, 2], [cfg.early_fraction, cfg.mid_fraction,
                       1 - cfg.early_fraction - cfg.mid_fraction]
    )
    # Dorsal-ventral angle: inferior -> ventral, lateral -> lateral, superior -> parietal.
    z_centre = np.median(gz)
    phi = np.arctan2(gz - z_centre, gx + 1e-6) + amp * smooth_field().ravel()[chosen]
    stream_lab = np.ones(chosen.size, dtype=np.int16)  # early = 1
    for lev, split, first in ((1, cfg.mid_split, 2), (2, cfg.high_split, 5)):
        sel = level == lev
        stream_lab[sel] = _assign_by_rank(phi[sel], [first, first + 1, first + 2], list(split))
    streams = np.where(brain, 0, -1).astype(np.int16)
    streams.ravel()[chosen] = stream_lab

    # pRF areas: V1, V2, V3 in bands of the early stream, ventral below the pole; hV4 in
    # the nearest part of midventral.
    prf_lab = np.zeros(chosen.size, dtype=np.int16)
    early = np.flatnonzero(stream_lab == 1)
    n_cov = round(cfg.prf_coverage * early.size)
    ranked = early[np.argsort(h[early], kind="stable")][:n_cov]
    band = _assign_by_rank(h[ranked], [0, 1, 2], [1, 1, 1])
    dorsal = gz[ranked] >= pole[2]
    prf_lab[ranked] = 1 + 2 * band + dorsal.astype(np.int16)
    midventral = np.flatnonzero(stream_lab == 2)
    n_v4 = round(cfg.hv4_fraction * midventral.size)
    prf_lab[midventral[np.argsort(h[midventral], kind="stable")][:n_v4]] = 7
    prf = np.where(brain, 0, -1).astype(np.int16)
    prf.ravel()[chosen] = prf_lab

    hierarchy = np.full(shape, np.nan, dtype=np.float32)
    hierarchy.ravel()[chosen] = h
    return Anatomy(subject, shape, affine_for(shape), brain, general, streams, prf, hierarchy)
