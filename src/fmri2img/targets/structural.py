"""Structural target families of stimulus images: pure functions of (H, W, 3) uint8 arrays.

Three families describe what an image looks like rather than what it shows:

* ``pixels``: the image downsampled to ``size`` x ``size`` RGB by area averaging (PIL's
  box filter), values in [0, 1]; ``size**2 * 3`` dims (192 at 8 px).
* ``lowlevel``: a few dozen hand-made features (:func:`lowlevel_names` lists them):
  the first three colour moments of each RGB channel (mean, sd, skewness; 9), the mean
  luminance and its RMS contrast (the sd of luminance; 2), and the gradient-orientation
  energy on a coarse grid: the image resized to ``size`` px, luminance gradients by
  central differences, each pixel's squared gradient magnitude put in the orientation bin
  (of ``n_orientations`` bins centred at 0, 180/K, ... degrees, orientation taken modulo
  180) of its gradient direction (0 degrees: intensity changing along x, i.e. vertical
  edges; angles grow towards +y, image rows downwards), averaged over each of ``grid``
  x ``grid`` cells and square-rooted (an amplitude, not a power: fewer heavy tails); ``grid**2 *
  n_orientations`` dims (64 at 4 x 4 cells and 4 orientations; 75 in all).
* ``autoencoder``: the posterior mean of a diffusers ``AutoencoderKL``'s latent
  distribution, flattened, for the image resized to ``size`` px and scaled to [-1, 1]
  (the range Stable Diffusion's VAE was trained on).

:class:`Standardizer` z-scores a family per dimension with statistics of a reference set
(the perception training stimuli), so that families of different units and sizes weigh
alike in a multi-target loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmri2img.errors import DataError

log = logging.getLogger(__name__)

PIXELS, LOWLEVEL, AUTOENCODER = "pixels", "lowlevel", "autoencoder"
STRUCTURAL_FAMILIES = (PIXELS, LOWLEVEL, AUTOENCODER)
# ITU-R BT.601 luma weights
LUMA = np.array([0.299, 0.587, 0.114])
CHANNELS = ("r", "g", "b")


def resized(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(n, size, size, 3) float32 in [0, 1]: area averaging when shrinking (no aliasing),
    bicubic when enlarging."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, im in enumerate(images):
        arr = np.asarray(im)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"images must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
        x = arr.astype(np.float32) / 255.0
        h, w = x.shape[:2]
        if (h, w) == (size, size):
            out[i] = x
        elif h % size == 0 and w % size == 0:
            # an integer factor: the exact block mean (what the box filter computes)
            out[i] = x.reshape(size, h // size, size, w // size, 3).mean(axis=(1, 3))
        else:
            # per channel in PIL's float mode: no rounding to 8 bits on the way
            method = (Image.Resampling.BOX if h >= size and w >= size
                      else Image.Resampling.BICUBIC)
            out[i] = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c]))
                                          .resize((size, size), method))
                               for c in range(3)], axis=-1)
    return out


def downsampled_pixels(images: Sequence[np.ndarray], size: int = 8) -> np.ndarray:
    """(n, size * size * 3) float32: each image at ``size`` px, RGB in [0, 1], row-major
    (y, x, channel)."""
    return resized(images, size).reshape(len(images), -1)


def lowlevel_names(grid: int = 4, n_orientations: int = 4) -> list[str]:
    """The names of :func:`lowlevel_features`' columns, in order."""
    names = [f"{c}_{m}" for c in CHANNELS for m in ("mean", "sd", "skew")]
    names += ["luminance_mean", "luminance_contrast"]
    degrees = [round(180.0 * k / n_orientations, 1) for k in range(n_orientations)]
    names += [f"energy_y{gy}_x{gx}_o{d:g}" for gy in range(grid) for gx in range(grid)
              for d in degrees]
    return names


def _skewness(x: np.ndarray) -> np.ndarray:
    """Biased sample skewness along the last axis (scipy.stats.skew's default); 0 where
    the values are constant."""
    d = x - x.mean(axis=-1, keepdims=True)
    m2 = (d**2).mean(axis=-1)
    m3 = (d**3).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = m3 / m2**1.5
    # constant up to rounding: the ratio of two rounding errors means nothing
    return np.where(m2 > 1e-12, s, 0.0)


def orientation_energy(luminance: np.ndarray, grid: int = 4,
                       n_orientations: int = 4) -> np.ndarray:
    """(n, grid, grid, n_orientations): root mean squared gradient magnitude per cell and
    orientation bin of (n, S, S) luminance images (S divisible by ``grid``)."""
    n, s, s2 = luminance.shape
    if s != s2 or s % grid:
        raise ValueError(f"luminance images must be square with a side divisible by "
                         f"grid={grid}, got {luminance.shape[1:]}")
    gy, gx = np.gradient(luminance.astype(np.float64), axis=(1, 2))
    energy = gx**2 + gy**2
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    width = np.pi / n_orientations
    bins = np.floor((theta + width / 2) / width).astype(np.int64) % n_orientations
    onehot = energy[..., None] * (bins[..., None] == np.arange(n_orientations))
    cell = s // grid
    per_cell = onehot.reshape(n, grid, cell, grid, cell, n_orientations).mean(axis=(2, 4))
    return np.sqrt(per_cell)


def lowlevel_features(images: Sequence[np.ndarray], size: int = 64, grid: int = 4,
                      n_orientations: int = 4) -> np.ndarray:
    """(n, 11 + grid**2 * n_orientations) float32 low-level features (module docstring;
    :func:`lowlevel_names` names the columns)."""
    if size % grid:
        raise ValueError(f"size={size} must be divisible by grid={grid}")
    x = resized(images, size).astype(np.float64)
    n = x.shape[0]
    chans = x.reshape(n, -1, 3).transpose(0, 2, 1)  # (n, 3, pixels)
    moments = np.stack([chans.mean(axis=-1), chans.std(axis=-1), _skewness(chans)],
                       axis=-1).reshape(n, 9)  # (r mean, r sd, r skew, g ...)
    lum = x @ LUMA  # (n, size, size)
    flat = lum.reshape(n, -1)
    lum_stats = np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1)
    energy = orientation_energy(lum, grid, n_orientations).reshape(n, -1)
    return np.concatenate([moments, lum_stats, energy], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- autoencoder
def load_autoencoder(folder: str | Path) -> Any:
    """A diffusers ``AutoencoderKL`` from a local folder (``save_pretrained``'s layout),
    in eval mode on the CPU."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise DataError("not a diffusers model folder (no config.json)", folder)
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:  # an optional dependency (the embed extra)
        raise DataError("image autoencoder latents need diffusers: pip install "
                        "'fmri2img[embed]' (or diffusers)", folder) from exc
    model = AutoencoderKL.from_pretrained(folder)
    model.eval()
    return model


def autoencoder_latents(images: Sequence[np.ndarray], model: Any, size: int = 64,
                        batch_size: int = 16) -> np.ndarray:
    """(n, latent_channels * h * w) float32: the posterior mean of ``model`` (an
    ``AutoencoderKL``) for each image resized to ``size`` px, in [-1, 1]."""
    import torch

    x = resized(images, size) * 2.0 - 1.0
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(
                x[start:start + batch_size].transpose(0, 3, 1, 2))).to(device)
            mean = model.encode(xb).latent_dist.mean
            out.append(mean.float().cpu().numpy().reshape(xb.shape[0], -1))
    if not out:
        raise ValueError("no images given")
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------- families
def structural_family(name: str, images: Sequence[np.ndarray], *, pixel_size: int = 8,
                      lowlevel_size: int = 64, grid: int = 4, n_orientations: int = 4,
                      autoencoder: Any = None, autoencoder_size: int = 64) -> np.ndarray:
    """One structural family of ``images`` by name (``pixels``, ``lowlevel`` or
    ``autoencoder``; the last needs ``autoencoder``, a loaded ``AutoencoderKL``)."""
    if name == PIXELS:
        return downsampled_pixels(images, pixel_size)
    if name == LOWLEVEL:
        return lowlevel_features(images, lowlevel_size, grid, n_orientations)
    if name == AUTOENCODER:
        if autoencoder is None:
            raise ValueError("the autoencoder family needs a loaded autoencoder")
        return autoencoder_latents(images, autoencoder, autoencoder_size)
    raise ValueError(f"unknown structural family {name!r}; known: {STRUCTURAL_FAMILIES}")


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension z-scoring with a reference set's mean and sd (sd 0 -> 1: a constant
    dimension is centred, not blown up)."""

    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, reference: np.ndarray) -> Standardizer:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < 2:
            raise ValueError(f"need (n >= 2, d) reference rows, got {ref.shape}")
        sd = ref.std(axis=0)
        return cls(ref.mean(axis=0), np.where(sd > 1e-12 * max(1.0, float(np.abs(ref).max())),
                                              sd, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.sd).astype(np.float32)
