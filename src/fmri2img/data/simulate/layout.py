"""Retinotopic layout: where in the image each stimulus puts its contrast, and the
population receptive fields (pRFs) that read it.

A stimulus's **contrast map** is the absolute deviation of the rendered image's luminance
from its mean, block-averaged on a ``layout_grid`` x ``layout_grid`` grid. It is what
makes a horizontal bar and a vertical bar drive different early-visual voxels, however
similar their other features: the structure real V1-V3 keep in imagery of simple,
high-contrast shapes. A word has no image; its map is the mean of its exemplars' maps,
as its low-level latent is.

A voxel's pRF is an isotropic Gaussian on that grid, centred in the contralateral
hemifield (ventral voxels in the upper field), larger with eccentricity and up the
hierarchy. Imagery reads a *blurred* map: the coarse layout survives, the fine detail
does not.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.render import render_rows
from fmri2img.data.simulate.stimuli import (
    CONCEPT_WORDS,
    Categories,
    StimulusBank,
    concept_members,
)

LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def grid_centres(grid: int) -> np.ndarray:
    """(grid*grid, 2) cell centres (x, y) in image-width units, centre 0, y downwards."""
    c = (np.arange(grid) + 0.5) / grid - 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def contrast_maps(cfg: SimulationConfig, bank: StimulusBank, cats: Categories) -> np.ndarray:
    """(bank.n, grid*grid) float32 contrast map of every stimulus in the bank."""
    grid, px = cfg.layout_grid, cfg.layout_grid * cfg.layout_supersample
    has_image = ~np.isnan(bank.params).any(axis=1)
    rows = np.flatnonzero(has_image)
    out = np.zeros((bank.n, grid * grid), dtype=np.float32)
    step = 4096
    for start in range(0, rows.size, step):
        chunk = rows[start:start + step]
        img = render_rows(bank, cats, chunk, px).astype(np.float32) / 255.0
        lum = img @ LUMINANCE
        dev = np.abs(lum - lum.mean(axis=(1, 2), keepdims=True))
        s = cfg.layout_supersample
        out[chunk] = dev.reshape(len(chunk), grid, s, grid, s).mean(axis=(2, 4)).reshape(
            len(chunk), -1)
    members = concept_members(cats, bank.category[:bank.n_universe],
                              bank.attributes[:bank.n_universe])
    for code, word in CONCEPT_WORDS.items():
        idx = members[word]
        if code in bank.extra_index and idx.size:
            out[bank.row(code)] = out[idx].mean(axis=0)
    return out


def blur(maps: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Each (grid*grid) map low-passed by a Gaussian of ``sigma_cells`` grid cells."""
    maps = np.asarray(maps, dtype=np.float64)
    if sigma_cells <= 0:
        return maps
    grid = round(np.sqrt(maps.shape[-1]))
    m = maps.reshape(-1, grid, grid)
    out = gaussian_filter(m, sigma=(0, sigma_cells, sigma_cells), mode="constant")
    return out.reshape(maps.shape)


def prf_weights(centre: np.ndarray, size: np.ndarray, grid: int) -> np.ndarray:
    """(V, grid*grid) Gaussian pRFs, each summing to 1; ``centre`` (V, 2), ``size`` (V,)
    in image-width units."""
    cells = grid_centres(grid)
    d2 = ((centre[:, None, :] - cells[None, :, :]) ** 2).sum(axis=2)
    w = np.exp(-0.5 * d2 / size[:, None] ** 2)
    return w / w.sum(axis=1, keepdims=True)


def draw_prfs(cfg: SimulationConfig, rng: np.random.Generator, hemi: np.ndarray,
              vert: np.ndarray, size_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pRF centres (V, 2) and sizes (V,): eccentricity biased to the fovea, the
    contralateral hemifield, the upper field for ventral voxels."""
    n = hemi.shape[0]
    ecc = cfg.prf_max_eccentricity * rng.random(n) ** 2
    angle = rng.uniform(0.0, np.pi / 2, n)
    centre = np.stack([hemi * ecc * np.cos(angle), vert * ecc * np.sin(angle)], axis=1)
    size = (cfg.prf_size_min + cfg.prf_size_slope * ecc) * size_factor
    return centre, size
