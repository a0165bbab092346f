"""Reconstructions scored against their stimuli: per-item values, means and bootstrap CIs
(arrays in, a JSON-able dict out; no model loading, no I/O).

Pixel metrics (PixCorr, SSIM, PSNR) come from the images; the feature metrics from the
features the caller computed with :mod:`fmri2img.targets.feature_nets`. Intervals are
percentile bootstraps of the mean over items (:func:`fmri2img.eval.stats.bootstrap_ci`).
Items whose value is not finite (PSNR ``inf`` for an identical pair, PixCorr ``NaN`` for
a constant image) appear as ``None`` in ``per_item``; mean and CI are then over the
finite items, and ``n_infinite`` / ``n_nan`` say how many were left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from fmri2img.eval.image_metrics import correlation_distance, pixcorr, psnr, ssim, two_way
from fmri2img.eval.stats import bootstrap_ci

Convention = Literal["mindeye2", "mirage"]

FEATURE_METRICS = ("two_way", "distance")


def summarise(values: np.ndarray, *, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """``mean``, percentile ``ci`` and ``per_item`` of per-item values, JSON-able."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    kept = v[finite]
    mean = float(kept.mean()) if kept.size else None
    ci = None
    if kept.size and n_bootstrap > 0:
        ci = list(bootstrap_ci(kept, n_resamples=n_bootstrap, seed=seed))
    return {
        "mean": mean,
        "ci": ci,
        "per_item": [float(x) if ok else None for x, ok in zip(v, finite, strict=True)],
        "n_infinite": int(np.isinf(v).sum()),
        "n_nan": int(np.isnan(v).sum()),
    }


def score_images(
    real: np.ndarray,
    recon: np.ndarray,
    features: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
    *,
    pixel_size: int = 512,
    two_way_convention: Convention = "mindeye2",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of ``recon`` against ``real`` (paired by index).

    Args:
        real, recon: (n, H, W, 3) uint8 or [0, 1] float images (sizes may differ; the
            pixel metrics resize both to ``pixel_size``).
        features: ``name -> (real_feats, recon_feats, metric)`` with ``metric`` one of
            ``"two_way"`` (higher is better, chance 0.5) or ``"distance"`` (correlation
            distance, lower is better).
        two_way_convention: ``"mindeye2"`` or ``"mirage"`` (reads 1/(N-1) lower, and so
            does its chance level, ``0.5 - 1/(N-1)``).
        n_bootstrap: bootstrap resamples of each CI; 0 leaves the CIs out (``None``).
        seed: bootstrap seed (the same for every metric, so their resamples match).

    Returns:
        ``{"pixcorr", "ssim", "psnr", <net>...: {"mean", "ci", "per_item", ...},
        "n_items": n}``.
    """
    if two_way_convention not in ("mindeye2", "mirage"):
        raise ValueError(f"two_way_convention must be 'mindeye2' or 'mirage', got "
                         f"{two_way_convention!r}")
    if int(n_bootstrap) < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    n = int(np.shape(real)[0])

    def summary(values: np.ndarray) -> dict[str, Any]:
        return summarise(values, n_bootstrap=int(n_bootstrap), seed=seed)

    out: dict[str, Any] = {
        "pixcorr": {**summary(pixcorr(real, recon, size=pixel_size)),
                    "metric": "pixcorr", "higher_is_better": True},
        "ssim": {**summary(ssim(real, recon, size=pixel_size)),
                 "metric": "ssim", "higher_is_better": True},
        "psnr": {**summary(psnr(real, recon, size=pixel_size)),
                 "metric": "psnr", "higher_is_better": True, "unit": "dB"},
    }
    for name, (real_feats, recon_feats, metric) in features.items():
        if name in out or name == "n_items":
            raise ValueError(f"feature network name {name!r} clashes with a pixel metric")
        if metric not in FEATURE_METRICS:
            raise ValueError(f"{name}: metric must be one of {FEATURE_METRICS}, got {metric!r}")
        if np.shape(real_feats)[0] != n or np.shape(recon_feats)[0] != n:
            raise ValueError(f"{name}: features of {np.shape(real_feats)[0]} and "
                             f"{np.shape(recon_feats)[0]} items for {n} images")
        if metric == "two_way":
            values = two_way(real_feats, recon_feats, convention=two_way_convention)
            # MIRAGE's one extra failure per prediction lowers chance by 1/(N-1) too
            chance = 0.5 if two_way_convention == "mindeye2" else 0.5 - 1.0 / (n - 1)
            extra = {"chance": chance, "convention": two_way_convention,
                     "higher_is_better": True}
        else:
            values = correlation_distance(real_feats, recon_feats)
            extra = {"chance": None, "convention": None, "higher_is_better": False}
        out[name] = {"metric": metric, **summary(values), **extra}
    out["n_items"] = n
    return out
