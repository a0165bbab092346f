"""The field's image metrics for reconstructions (arrays in, arrays out; no I/O, no models).

Every function returns one value per item (reconstruction ``i`` against stimulus ``i``),
so a table's number is ``.mean()`` and a bootstrap over items gives its interval
(:mod:`fmri2img.eval.image_scores`).

=========================  ==============================================================  ======
metric                     definition                                                      better
=========================  ==============================================================  ======
:func:`pixcorr`            Pearson r between the flattened RGB pixels, both images         higher
                           resized to 512 x 512 (MindEye's PixCorr); constant image: NaN
:func:`ssim`               mean SSIM of the grayscale images (skimage's rgb2gray weights)  higher
                           at 512 x 512: Gaussian windows (sigma 1.5, truncate 3.5, 11
                           taps), population covariances, data range 1, K1 0.01, K2 0.03,
                           mean over the map cropped by the filter radius (as skimage)
:func:`psnr`               ``10 log10(1 / MSE)`` of the RGB pixels in [0, 1]; identical    higher
                           images give ``inf``
:func:`two_way`            2-way identification of feature vectors (AlexNet, Inception,    higher
                           CLIP): chance 0.5, perfect 1
:func:`correlation_distance`  ``1 - r`` between the features of a pair (EffNet-B1, SwAV)    lower
=========================  ==============================================================  ======

2-way, MindEye2's definition: with ``r[i, j] = corr(real_i, pred_j)``, prediction ``j``
scores ``#{i : r[i, j] < r[j, j]} / (N - 1)``: the fraction of the other stimuli that
correlate less with it than its own stimulus does (ties are failures). The mean over
predictions is MindEye2's number exactly. MIRAGE's evaluation code subtracts one more
success per prediction, ``(count - 1) / (N - 1)``, so its figures read exactly
``1 / (N - 1)`` lower (0.001 for N = 1000); ``convention="mirage"`` reproduces them, and a
table mixing the two is off by that much.

Images go in as uint8 ``(n, H, W, 3)``, float ``(n, H, W, 3)`` in [0, 1], or grayscale
``(n, H, W)``. Reconstructions and stimuli may differ in size: both are resized
(bilinear, antialiased, no crop) to the metric's common size, as the field does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

FloatArray = NDArray[np.float64]

GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
"""skimage's rgb2gray (ITU-R BT.709 luma) weights, which the published SSIM figures use."""

SSIM_TRUNCATE = 3.5
"""With sigma 1.5 this gives the 11-tap window of Wang et al. (2004), as in skimage."""

_CHUNK_IMAGES = 32
"""Images resized at a time: 1000 stimuli at 512 px in float64 would need 6 GB at once."""

_CHUNK_FEATURES = 4096
"""Feature columns converted to float64 at a time in the correlation metrics."""

_RANGE_SLACK = 1e-6
"""Float images may overshoot [0, 1] by rounding (a decoder's output cast to float32)."""


# ----------------------------------------------------------------------------- images
def _check_images(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images)
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (1, 3))):
        raise ValueError(f"images must be (n, H, W, 3) RGB or (n, H, W) grayscale, got shape "
                         f"{a.shape}")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {a.dtype} "
                         f"(shape {a.shape})")
    if min(a.shape[:3]) < 1:
        raise ValueError(f"images must not be empty, got shape {a.shape}")
    return a


def _to_float(a: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) float32 in [0, 1] from an array that passed :func:`_check_images`."""
    if a.dtype == np.uint8:
        out = a.astype(np.float32) / np.float32(255.0)
    else:
        out = a.astype(np.float32, copy=True)
        lo, hi = float(np.min(out)), float(np.max(out))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"float images contain NaN or infinite values (shape {a.shape})")
        if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
            raise ValueError(f"float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                             f"(shape {a.shape}); pass uint8 for 0-255 images")
        np.clip(out, 0.0, 1.0, out=out)
    if out.ndim == 3:
        out = out[..., None]
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


def as_float_images(images: np.ndarray) -> np.ndarray:
    """float32 ``(n, H, W, 3)`` in [0, 1] from uint8, float in [0, 1] or grayscale images."""
    return _to_float(_check_images(images))


def _resize_float(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[1] == size and x.shape[2] == size:
        return x  # interpolating to the same grid would only add rounding
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=True)
    # bilinear weights are non-negative and sum to 1, so only rounding can leave [0, 1]
    return t.clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous().numpy()


def _check_size(size: int) -> int:
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return int(size)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """float32 ``(n, size, size, 3)``: the whole image, bilinear with antialias, no crop."""
    size = _check_size(size)
    return _resize_float(as_float_images(images), size)


def _pairs(real: np.ndarray, recon: np.ndarray,
           size: int | None) -> tuple[np.ndarray, np.ndarray]:
    r = _check_images(real)
    p = _check_images(recon)
    if r.shape[0] != p.shape[0]:
        raise ValueError(f"real and recon must pair up, got {r.shape[0]} and {p.shape[0]} "
                         "images")
    if size is None and r.shape[1:3] != p.shape[1:3]:
        raise ValueError(f"real {r.shape} and recon {p.shape} differ in size; give size= to "
                         "resize both")
    return r, p


def _batches(real: np.ndarray, recon: np.ndarray,
             size: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """float64 (b, S, S, 3) pairs, a chunk of images at a time to bound memory."""
    for start in range(0, real.shape[0], _CHUNK_IMAGES):
        a = _to_float(real[start:start + _CHUNK_IMAGES])
        b = _to_float(recon[start:start + _CHUNK_IMAGES])
        if size is not None:
            a, b = _resize_float(a, size), _resize_float(b, size)
        yield a.astype(np.float64), b.astype(np.float64)


def _rowwise_pearson(a: FloatArray, b: FloatArray) -> FloatArray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.einsum("ij,ij->i", a, b) / np.sqrt(
            np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))


def pixcorr(real: np.ndarray, recon: np.ndarray, size: int = 512) -> FloatArray:
    """(n,) Pearson r of the flattened RGB pixels at ``size`` px; NaN for a constant image."""
    r, p = _pairs(real, recon, _check_size(size))
    out = [_rowwise_pearson(a.reshape(len(a), -1), b.reshape(len(b), -1))
           for a, b in _batches(r, p, size)]
    return np.concatenate(out)


def _gray(x: FloatArray) -> FloatArray:
    w = np.asarray(GRAY_WEIGHTS, dtype=np.float64)
    return x @ w


def _ssim_gray(g1: FloatArray, g2: FloatArray, sigma: float) -> FloatArray:
    """(b,) SSIM of (b, H, W) grayscale stacks, skimage's formula with Gaussian windows."""
    radius = int(SSIM_TRUNCATE * sigma + 0.5)  # ndimage's radius: the window skimage crops
    win = 2 * radius + 1
    if min(g1.shape[1:]) < win:
        raise ValueError(f"images of {g1.shape[1]}x{g1.shape[2]} px are smaller than the "
                         f"{win}-px SSIM window")
    # sigma 0 on the batch axis: each image is filtered on its own
    sig = (0.0, float(sigma), float(sigma))

    def blur(x: FloatArray) -> FloatArray:
        return gaussian_filter(x, sigma=sig, mode="reflect", truncate=SSIM_TRUNCATE)

    ux, uy = blur(g1), blur(g2)
    vx = blur(g1 * g1) - ux * ux
    vy = blur(g2 * g2) - uy * uy
    vxy = blur(g1 * g2) - ux * uy
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s[:, radius:s.shape[1] - radius, radius:s.shape[2] - radius].mean(axis=(1, 2))


def ssim(real: np.ndarray, recon: np.ndarray, size: int = 512,
         sigma: float = 1.5) -> FloatArray:
    """(n,) grayscale SSIM at ``size`` px (equals skimage's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``)."""
    r, p = _pairs(real, recon, _check_size(size))
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    out = [_ssim_gray(_gray(a), _gray(b), sigma) for a, b in _batches(r, p, size)]
    return np.concatenate(out)


def psnr(real: np.ndarray, recon: np.ndarray, size: int | None = None) -> FloatArray:
    """(n,) PSNR in dB of the RGB pixels (data range 1); ``inf`` for identical images.

    ``size=None`` compares the images as given (they must be the same size).
    """
    r, p = _pairs(real, recon, None if size is None else _check_size(size))
    out = []
    for a, b in _batches(r, p, size):
        mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
        with np.errstate(divide="ignore"):
            out.append(10.0 * np.log10(1.0 / mse))
    return np.concatenate(out)


# ----------------------------------------------------------------------------- features
def _feature_pair(real_feats: np.ndarray,
                  pred_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(real_feats)
    b = np.asarray(pred_feats)
    if a.ndim < 1 or b.ndim < 1:
        raise ValueError("features need one row per item")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"real and predicted features must pair up, got {a.shape} and "
                         f"{b.shape} (flattened per item)")
    if a.shape[1] < 2:
        raise ValueError(f"correlations need at least 2 features per item, got {a.shape[1]}")
    return a, b


def _blocks(x: np.ndarray, mean: FloatArray) -> Iterator[FloatArray]:
    """Centred float64 column blocks of ``x``.

    A float32 stack of 1000 x 200k features is 0.8 GB; a float64 copy of both stacks
    would be 3.2 GB, so the correlations are accumulated over column blocks instead.
    """
    for s in range(0, x.shape[1], _CHUNK_FEATURES):
        block = x[:, s:s + _CHUNK_FEATURES].astype(np.float64)
        block -= mean[:, None]
        yield block


def _row_stats(x: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Row means and centred sums of squares in float64 (centring first, as numpy does)."""
    total = np.zeros(x.shape[0])
    for s in range(0, x.shape[1], _CHUNK_FEATURES):
        total += x[:, s:s + _CHUNK_FEATURES].sum(axis=1, dtype=np.float64)
    mean = total / x.shape[1]
    sq = np.zeros(x.shape[0])
    for block in _blocks(x, mean):
        sq += np.einsum("ij,ij->i", block, block)
    return mean, sq


def cross_correlations(real_feats: np.ndarray, pred_feats: np.ndarray) -> FloatArray:
    """(N, N) ``r[i, j] = corr(real_i, pred_j)``, i.e. ``np.corrcoef(real, pred)[:N, N:]``,
    from products of centred column blocks, without the (2N, 2N) matrix.

    The arithmetic after the products is corrcoef's, step for step (covariances over
    ``d - 1``, divided by each standard deviation in turn, clipped to [-1, 1]): ties in the
    2-way count then break as in MindEye2's code whenever the products are exact.
    """
    a, b = _feature_pair(real_feats, pred_feats)
    (ma, na), (mb, nb) = _row_stats(a), _row_stats(b)
    r = np.zeros((a.shape[0], b.shape[0]))
    for xa, xb in zip(_blocks(a, ma), _blocks(b, mb), strict=True):
        r += xa @ xb.T
    ddof = a.shape[1] - 1
    r /= ddof
    with np.errstate(divide="ignore", invalid="ignore"):
        # a constant row gives NaN, as in np.corrcoef
        r /= np.sqrt(na / ddof)[:, None]
        r /= np.sqrt(nb / ddof)[None, :]
    return np.clip(r, -1.0, 1.0, out=r)


def two_way(real_feats: np.ndarray, pred_feats: np.ndarray,
            convention: Literal["mindeye2", "mirage"] = "mindeye2") -> FloatArray:
    """(N,) per-prediction 2-way identification; ``.mean()`` is the published number.

    Prediction ``j`` scores ``#{i : r[i, j] < r[j, j]} / (N - 1)`` (MindEye2); MIRAGE's
    convention ``(count - 1) / (N - 1)`` reads exactly ``1 / (N - 1)`` lower.
    """
    if convention not in ("mindeye2", "mirage"):
        raise ValueError(f"convention must be 'mindeye2' or 'mirage', got {convention!r}")
    n = np.asarray(real_feats).shape[0] if np.ndim(real_feats) else 0
    if n < 2:
        raise ValueError(f"2-way identification needs at least 2 items, got {n}")
    r = cross_correlations(real_feats, pred_feats)
    with np.errstate(invalid="ignore"):
        count = (r < np.diagonal(r)[None, :]).sum(axis=0)
    if convention == "mirage":
        count = count - 1
    return count.astype(np.float64) / (n - 1)


def correlation_distance(real_feats: np.ndarray, pred_feats: np.ndarray) -> FloatArray:
    """(n,) ``1 - corr(real_i, pred_i)`` (``scipy.spatial.distance.correlation`` per pair)."""
    a, b = _feature_pair(real_feats, pred_feats)
    (ma, na), (mb, nb) = _row_stats(a), _row_stats(b)
    dot = np.zeros(a.shape[0])
    for xa, xb in zip(_blocks(a, ma), _blocks(b, mb), strict=True):
        dot += np.einsum("ij,ij->i", xa, xb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - dot / np.sqrt(na * nb)
