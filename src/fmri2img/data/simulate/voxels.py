"""The voxel model: how each nsdgeneral voxel responds to a seen or imagined stimulus.

Perception (PSC)::

    evoked_v + gain_v * ( sqrt(l_v) * ( sqrt(1 - r_v) * w_low_v . z_low
                                        + sqrt(r_v) * prf_v . (m - m0) / s_v )
                          + sqrt(1 - l_v) * w_sem_v . (z_sem - c) )

with ``l_v`` the voxel's low-level share (high in early cortex, low in ventral/lateral),
``r_v`` the part of it read through the voxel's pRF from the stimulus's contrast map
``m`` (:mod:`.layout`; ``m0`` the universe mean, ``s_v`` the response sd) and weights
scaled to unit variance over the stimulus universe, so ``gain_v`` is about the sd of the
stimulus-driven response. Imagery reuses the same weights on a degraded stimulus::

    evoked_v + offset_v + vivid_t * part_v * gain_v * (
        sqrt(l_v) * ( sqrt(1 - r_v) * (g_fine * w_fine_v . z_fine + g_s * w_coarse_v . z_coarse)
                      + sqrt(r_v) * g_s * prf_v . B(m - m0) / s_v )
        + sqrt(1 - l_v) * g_sem * w_sem_v . P (z_sem - c) )

where ``z_coarse`` are the coarse low-level features (position, size, orientation) and
``z_fine`` the rest, ``B`` blurs the contrast map (the coarse layout survives, fine detail
does not), ``P`` projects on a low-rank (category-level) subspace, ``g_fine``, ``g_sem``
and the structure gain ``g_s`` (larger for simple shapes than for natural images) are the
subject's imagery gains, ``part_v`` says whether the voxel takes part in imagery
and ``vivid_t`` is the trial's vividness gain. Trial noise is larger in imagery. Sessions
add a per-voxel offset and gain jitter; every trial adds voxel noise and a global
fluctuation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from fmri2img.data.nsd_layout import BETA_SCALE
from fmri2img.data.simulate.anatomy import Anatomy
from fmri2img.data.simulate.config import STREAM_NAMES, SimulationConfig
from fmri2img.data.simulate.layout import blur, draw_prfs, prf_weights
from fmri2img.data.simulate.seeding import stream
from fmri2img.data.simulate.stimuli import COARSE_FEATURES, LOW_FEATURES, StimulusBank

INT16_MAX = np.iinfo(np.int16).max
_TRIALS_PER_CHUNK_VOXELS = 15_000_000  # trials x brain voxels per synthesis chunk


@dataclass
class VoxelModel:
    """Tuning of one subject's nsdgeneral voxels, in the order of ``vol[nsdgeneral == 1]``."""

    subject: int
    xyz: np.ndarray  # (V, 3) voxel coordinates (x, y, z)
    stream: np.ndarray  # (V,) streams label 1..7
    prf: np.ndarray  # (V,) prf-visualrois label 0..7
    low_share: np.ndarray  # (V,) l_v
    layout_share: np.ndarray  # (V,) r_v
    prf_centre: np.ndarray  # (V, 2) image-width units, y downwards
    prf_size: np.ndarray  # (V,) Gaussian sd, image-width units
    layout_centre: np.ndarray  # (grid*grid,) m0, the universe's mean contrast map
    layout_scale: np.ndarray  # (V,) s_v, sd of prf_v . (m - m0) over the universe
    gain: np.ndarray  # (V,) sd of the stimulus-driven response, PSC
    w_low: np.ndarray  # (V, d_low), unit response variance over the universe
    w_sem: np.ndarray  # (V, d_sem)
    evoked: np.ndarray  # (V,) mean evoked response, PSC
    noise_sd: np.ndarray  # (V,) trial noise sd, PSC
    sem_centre: np.ndarray  # (d_sem,) c
    imagery_basis: np.ndarray  # (d_sem, k) orthonormal; k = d_sem (identity) under null
    imagery_low_gain: float  # fine low-level features
    imagery_coarse_gain: float  # coarse features and layout of natural images
    imagery_simple_gain: float  # coarse features and layout of simple shapes
    coarse_features: np.ndarray  # (d_low,) bool
    imagery_layout_blur: float  # grid cells
    imagery_sem_gain: float
    imagery_noise_factor: float
    imagery_participation: np.ndarray  # (V,) 0/1
    imagery_offset: np.ndarray  # (V,) PSC

    @property
    def n_voxels(self) -> int:
        return int(self.xyz.shape[0])

    @cached_property
    def receptive_fields(self) -> np.ndarray:
        """(V, grid*grid) pRF weights (computed once: every synthesis chunk reads them)."""
        grid = round(np.sqrt(self.layout_centre.shape[0]))
        return prf_weights(self.prf_centre, self.prf_size, grid)

    def _layout(self, layout: np.ndarray, blur_cells: float = 0.0) -> np.ndarray:
        m = np.asarray(layout, dtype=np.float64) - self.layout_centre
        return blur(m, blur_cells) @ self.receptive_fields.T / self.layout_scale

    def perception_signal(self, z_low: np.ndarray, z_sem: np.ndarray, layout: np.ndarray
                          ) -> np.ndarray:
        """Noise-free perception response, (n, V) PSC; ``layout`` (n, grid*grid) holds
        the stimuli's contrast maps."""
        lo = np.asarray(z_low, dtype=np.float64) @ self.w_low.T
        se = (np.asarray(z_sem, dtype=np.float64) - self.sem_centre) @ self.w_sem.T
        a = self.gain * np.sqrt(self.low_share)
        b = self.gain * np.sqrt(1.0 - self.low_share)
        r = self.layout_share
        return self.evoked + a * (np.sqrt(1 - r) * lo + np.sqrt(r) * self._layout(layout)) \
            + b * se

    def imagery_signal(
        self, z_low: np.ndarray, z_sem: np.ndarray, layout: np.ndarray, simple: np.ndarray,
        vividness_gain: np.ndarray | None = None,
    ) -> np.ndarray:
        """Noise-free imagery response, (n, V) PSC. ``simple`` (n,) marks simple shapes,
        whose coarse structure imagery keeps better; vividness_gain (n,) defaults to 1."""
        zs = np.asarray(z_sem, dtype=np.float64) - self.sem_centre
        zs = (zs @ self.imagery_basis) @ self.imagery_basis.T
        zl = np.asarray(z_low, dtype=np.float64)
        structure = np.where(np.asarray(simple, dtype=bool), self.imagery_simple_gain,
                             self.imagery_coarse_gain)[:, None]
        coarse = self.coarse_features.astype(bool)
        lo = self.imagery_low_gain * (zl[:, ~coarse] @ self.w_low[:, ~coarse].T) \
            + structure * (zl[:, coarse] @ self.w_low[:, coarse].T)
        la = structure * self._layout(layout, self.imagery_layout_blur)
        se = zs @ self.w_sem.T
        r = self.layout_share
        a = self.gain * np.sqrt(self.low_share)
        b = self.gain * np.sqrt(1.0 - self.low_share) * self.imagery_sem_gain
        driven = self.imagery_participation * (a * (np.sqrt(1 - r) * lo + np.sqrt(r) * la)
                                               + b * se)
        if vividness_gain is not None:
            driven = driven * np.asarray(vividness_gain, dtype=np.float64)[:, None]
        return self.evoked + self.imagery_offset + driven

    def save(self, path: Path, **extra: np.ndarray) -> None:
        arrays = {k: np.asarray(v) for k, v in asdict(self).items()}
        np.savez_compressed(path, **arrays, **extra)

    @classmethod
    def load(cls, path: Path) -> VoxelModel:
        with np.load(path) as data:
            values = {}
            for f in fields(cls):
                v = data[f.name]
                values[f.name] = v.item() if v.ndim == 0 else v
        values["subject"] = int(values["subject"])
        return cls(**values)


def imagery_basis(cfg: SimulationConfig, bank: StimulusBank) -> np.ndarray:
    """Orthonormal basis of the semantic subspace imagery keeps (top category-level PCs)."""
    rank = cfg.imagery_params().sem_rank
    d = cfg.sem_dim
    if rank is None:
        return np.eye(d)
    protos = bank.prototypes.astype(np.float64)
    centred = protos - protos.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(rank, vt.shape[0])
    return vt[:k].T.copy()


def _unit_variance(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    var = np.einsum("vi,ij,vj->v", w, cov, w)
    return w / np.sqrt(var)[:, None]


def make_voxel_model(
    cfg: SimulationConfig, anat: Anatomy, bank: StimulusBank, basis: np.ndarray,
    layout: np.ndarray,
) -> VoxelModel:
    """``layout``: the bank's contrast maps (:func:`.layout.contrast_maps`)."""
    rng = stream(cfg.seed, "voxel-tuning", anat.subject)
    vis = anat.visual
    xyz = np.argwhere(vis)  # C order over (X, Y, Z): the readers' voxel order
    n = xyz.shape[0]
    stream_lab = anat.streams[vis].astype(np.int16)
    prf_lab = anat.prf[vis].astype(np.int16)
    table = np.array([cfg.low_weight[s] for s in STREAM_NAMES])
    low_share = np.clip(table[stream_lab - 1] + rng.normal(0, cfg.low_weight_jitter, n),
                        0.02, 0.98)

    universe = slice(0, bank.n_universe)
    cov_low = np.cov(bank.z_low[universe].astype(np.float64), rowvar=False)
    cov_sem = np.cov(bank.z_sem[universe].astype(np.float64), rowvar=False)
    w_low = rng.normal(size=(n, len(LOW_FEATURES)))
    # Retinotopy: each hemisphere prefers the opposite half of the image, ventral areas the
    # upper half (image y grows downwards); strongest in early cortex, none in high-level.
    centre_x = (anat.shape[0] - 1) / 2.0
    z_mid = np.median(xyz[:, 2])
    hemi = np.where(xyz[:, 0] < centre_x, 1.0, -1.0)
    vert = np.where(xyz[:, 2] < z_mid, -1.0, 1.0)
    retino = cfg.retinotopy_strength * np.sqrt(len(LOW_FEATURES)) * np.where(
        stream_lab == 1, 1.0, np.where(stream_lab <= 4, 0.5, 0.0)
    )
    w_low[:, LOW_FEATURES.index("pos_x")] += retino * hemi
    w_low[:, LOW_FEATURES.index("pos_y")] += retino * vert
    w_low = _unit_variance(w_low, cov_low)
    w_sem = _unit_variance(rng.normal(size=(n, cfg.sem_dim)), cov_sem)

    rng_p = stream(cfg.seed, "prf", anat.subject)
    size_factor = np.array([cfg.prf_size_factor[s] for s in STREAM_NAMES])[stream_lab - 1]
    prf_centre, prf_size = draw_prfs(cfg, rng_p, hemi, vert, size_factor)
    share = np.array([cfg.layout_share[s] for s in STREAM_NAMES])[stream_lab - 1]
    maps = layout[universe].astype(np.float64)
    layout_centre = maps.mean(axis=0)
    w_prf = prf_weights(prf_centre, prf_size, cfg.layout_grid)
    var = np.einsum("vi,ij,vj->v", w_prf, np.cov(maps, rowvar=False), w_prf)
    layout_scale = np.sqrt(np.where(var > 0, var, 1.0))

    gain = cfg.signal_sd * np.exp(rng.normal(0, cfg.signal_sd_spread, n))
    evoked = rng.normal(cfg.evoked_mean, cfg.evoked_sd, n)
    noise_sd = cfg.noise_sd * np.exp(rng.normal(0, cfg.noise_sd_spread, n))

    p = cfg.imagery_params()
    rng_i = stream(cfg.seed, "imagery-fingerprint", anat.subject)
    g_low = p.low_gain * float(np.exp(rng_i.normal(0, p.subject_gain_sd)))
    g_sem = p.sem_gain * float(np.exp(rng_i.normal(0, p.subject_gain_sd)))
    part_p = np.array([p.participation[s] for s in STREAM_NAMES])[stream_lab - 1]
    participation = (rng_i.random(n) < part_p).astype(np.float64)
    offset = rng_i.normal(p.offset_mean, p.offset_sd, n) if p.offset_sd > 0 else np.full(
        n, p.offset_mean
    )
    g_structure = float(np.exp(rng_i.normal(0, p.subject_gain_sd)))
    return VoxelModel(
        subject=anat.subject,
        xyz=xyz.astype(np.int32),
        stream=stream_lab,
        prf=prf_lab,
        low_share=low_share,
        layout_share=share,
        prf_centre=prf_centre,
        prf_size=prf_size,
        layout_centre=layout_centre,
        layout_scale=layout_scale,
        gain=gain,
        w_low=w_low,
        w_sem=w_sem,
        evoked=evoked,
        noise_sd=noise_sd,
        sem_centre=bank.z_sem[universe].astype(np.float64).mean(axis=0),
        imagery_basis=basis,
        imagery_low_gain=g_low,
        imagery_coarse_gain=p.coarse_gain * g_structure,
        imagery_simple_gain=p.simple_gain * g_structure,
        coarse_features=np.isin(LOW_FEATURES, COARSE_FEATURES),
        imagery_layout_blur=p.layout_blur * cfg.layout_grid,
        imagery_sem_gain=g_sem,
        imagery_noise_factor=p.noise_factor,
        imagery_participation=participation,
        imagery_offset=offset,
    )


@dataclass(frozen=True)
class BrainVoxels:
    """Every brain voxel of a subject: where it goes in the files and how noisy it is."""

    shape: tuple[int, int, int]
    flat_zyx: np.ndarray  # (B,) index into a C-order (Z, Y, X) volume
    visual_pos: np.ndarray  # (V,) position of each nsdgeneral voxel among the B
    noise_sd: np.ndarray  # (B,) float32
    global_loading: np.ndarray  # (B,) float32

    @property
    def n(self) -> int:
        return int(self.flat_zyx.shape[0])


def make_brain_voxels(cfg: SimulationConfig, anat: Anatomy, model: VoxelModel) -> BrainVoxels:
    rng = stream(cfg.seed, "brain-noise", anat.subject)
    xyz = np.argwhere(anat.brain)
    nx, ny, _ = anat.shape
    flat_zyx = xyz[:, 2] * (ny * nx) + xyz[:, 1] * nx + xyz[:, 0]
    flat_xyz = np.ravel_multi_index(tuple(xyz.T), anat.shape)
    vis_flat = np.ravel_multi_index(tuple(model.xyz.T.astype(np.int64)), anat.shape)
    visual_pos = np.searchsorted(flat_xyz, vis_flat)
    b = xyz.shape[0]
    noise = cfg.nonvisual_noise_sd * np.exp(rng.normal(0, cfg.noise_sd_spread, b))
    noise[visual_pos] = model.noise_sd
    loading = rng.normal(1.0, cfg.global_loading_sd, b)
    return BrainVoxels(anat.shape, flat_zyx.astype(np.int64), visual_pos.astype(np.int64),
                       noise.astype(np.float32), loading.astype(np.float32))


@dataclass(frozen=True)
class SessionDrift:
    offset: np.ndarray  # (B,) PSC added to every trial of the session
    gain: np.ndarray  # (V,) multiplies the nsdgeneral voxels' signal


def session_drift(cfg: SimulationConfig, subject: int, session: str | int,
                  brain: BrainVoxels, n_visual: int) -> SessionDrift:
    rng = stream(cfg.seed, "session-drift", subject, str(session))
    offset = rng.normal(0, cfg.session_offset_sd, brain.n).astype(np.float32)
    gain = (1.0 + rng.normal(0, cfg.session_gain_sd, n_visual)).astype(np.float32)
    return SessionDrift(offset, gain)


def synthesize(
    cfg: SimulationConfig,
    brain: BrainVoxels,
    drift: SessionDrift,
    signal: Callable[[int, int], np.ndarray],
    n_trials: int,
    noise_factor: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stored betas of one session: int16 (brain voxels, trials), PSC x 300.

    ``signal(t0, t1)`` gives the noise-free nsdgeneral response of trials t0..t1 (PSC);
    ``noise_factor`` (n_trials,) scales the nsdgeneral voxels' noise per trial. Only brain
    voxels are held (voxel-major, as the HDF5 chunks want them), in chunks of trials.
    """
    out = np.empty((brain.n, n_trials), dtype=np.int16)
    step = max(1, _TRIALS_PER_CHUNK_VOXELS // max(brain.n, 1))
    vis = brain.visual_pos
    for t0 in range(0, n_trials, step):
        t1 = min(n_trials, t0 + step)
        nt = t1 - t0
        vals = rng.standard_normal((nt, brain.n), dtype=np.float32)
        vals *= brain.noise_sd
        vals[:, vis] *= noise_factor[t0:t1, None].astype(np.float32)
        glob = rng.normal(0, cfg.global_noise_sd, nt).astype(np.float32)
        vals += glob[:, None] * brain.global_loading
        vals += drift.offset
        vals[:, vis] += drift.gain * signal(t0, t1).astype(np.float32)
        vals *= BETA_SCALE
        np.rint(vals, out=vals)
        np.clip(vals, -INT16_MAX, INT16_MAX, out=vals)
        out[:, t0:t1] = vals.T
    return out
