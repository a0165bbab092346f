"""ROI hierarchy profile: how much of each ROI's vision identification survives imagery,
from early visual cortex to the ventral, lateral and parietal streams.

Input: per-trial 2-way identification scores of one decoder per ROI, ``scores`` (R, n),
with each trial's target and domain. Per ROI (as in :mod:`fmri2img.analysis.dissociation`,
whose :class:`~fmri2img.analysis.dissociation.Cells` this reuses): vision and imagery
identification, the mean over targets of each target's mean trial score in that domain
(single trials in both domains, so repetitions are matched), and the **transfer ratio**
``(imagery - 0.5) / (vision - 0.5)``.

The **trend** along the hierarchy: the least-squares slope of the ratio against each
ROI's hierarchy position, and the **contrast** of the mean ratio of the high ROIs (e.g.
ventral, lateral) minus that of the low ones (V1). Only ROIs with decodable signal enter
(their mean score over both domains at least ``min_signal`` above chance: a label-free
criterion, so the selection does not change under the permutation below).

Uncertainty: a bootstrap that resamples trials within (target, domain) cells (percentile
CIs of each ratio, the slope and the contrast), and a permutation test that swaps domain
labels within target, one permutation for all ROIs (their trials are the same trials).
As in the dissociation test, the permuted statistics are not the ratios themselves
(swapping labels pulls vision towards imagery and shrinks the ratio's denominator, which
inflates the null spread): each ROI's term is ``(imagery - vision) / (pooled - 0.5)`` with
the label-free denominator ``pooled`` (the ROI's mean score over all of a target's
trials, averaged over targets). With the same trial counts in every ROI the term is an
increasing function of the ratio alone, 0 at ratio 1, so its slope and contrast carry the
ratio's trend; their permutation p's are exact under exchangeable domains. The ratio
slope's own permutation p is reported too (``p_ratio``, conservative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmri2img.analysis.dissociation import CHANCE, Cells, permutation_p, preservation_ratio


def interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite draws (NaN, NaN when there are none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def slope(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``y`` (R,) or (R, D) against ``x`` (R,); NaN where a used
    value is NaN or fewer than two ROIs (or one distinct position) remain."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    one = y.ndim == 1
    y = y[:, None] if one else y
    if x.size < 2 or np.ptp(x) == 0:
        out = np.full(y.shape[1], np.nan)
    else:
        xc = x - x.mean()
        out = (xc @ (y - y.mean(axis=0))) / (xc @ xc)  # NaN propagates
    return out[0] if one else out


def contrast(y: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Mean of ``y`` over the ``high`` rows minus over the ``low`` rows, (R,[D]) -> [D]."""
    y = np.asarray(y, dtype=np.float64)
    if not high.any() or not low.any():
        return np.full(y.shape[1:], np.nan) if y.ndim == 2 else np.float64(np.nan)
    return y[high].mean(axis=0) - y[low].mean(axis=0)


def pooled_term(vision: np.ndarray, imagery: np.ndarray, pooled: np.ndarray,
                chance: float = CHANCE) -> np.ndarray:
    """``(imagery - vision) / (pooled - chance)``: (R,) or (R, D) with ``pooled`` (R,);
    NaN where the pooled score is not above chance."""
    den = np.asarray(pooled, dtype=np.float64) - chance
    if np.ndim(vision) == 2:
        den = den[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (imagery - vision) / den, np.nan)


@dataclass
class HierarchyProfile:
    rois: list[str]
    positions: np.ndarray  # (R,)
    vision: np.ndarray  # (R,)
    imagery: np.ndarray  # (R,)
    pooled: np.ndarray  # (R,)
    ratio: np.ndarray  # (R,)
    ratio_ci: np.ndarray  # (R, 2)
    used: np.ndarray  # (R,) bool: in the trend (decodable signal)
    slope: float
    slope_ci: tuple[float, float]
    t_slope: float  # slope of the pooled terms (the permutation statistic)
    p: float  # permutation p of t_slope
    p_ratio: float  # permutation p of the ratio slope itself
    contrast: float  # mean ratio(high) - mean ratio(low)
    contrast_ci: tuple[float, float]
    t_contrast: float
    p_contrast: float
    bootstrap_ratio: np.ndarray  # (R, B)
    bootstrap_slope: np.ndarray  # (B,)
    bootstrap_contrast: np.ndarray  # (B,)
    null_slope: np.ndarray  # (P,) t_slope under permutation
    null_contrast: np.ndarray  # (P,)
    n_targets: int
    n_vision: int
    n_imagery: int


def hierarchy_test(scores: np.ndarray, target: np.ndarray, imagery: np.ndarray,
                   rois: Sequence[str], positions: Sequence[float],
                   high: Sequence[str], low: Sequence[str], *, min_signal: float = 0.02,
                   n_bootstrap: int = 1000, n_permutations: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> HierarchyProfile:
    """Ratios, trend and contrast with bootstrap CIs and permutation p's (module
    docstring). ``scores`` (R, n); ``positions`` (R,) hierarchy positions; ``high`` /
    ``low``: the ROIs of the contrast (those not used are left out of it)."""
    s = np.asarray(scores, dtype=np.float64)
    rois = list(rois)
    pos = np.asarray(positions, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(rois) or pos.shape != (len(rois),):
        raise ValueError(f"scores must be (R={len(rois)}, n) with R positions, got "
                         f"{s.shape} and {pos.shape}")
    cells = Cells.of(target, imagery)
    vis, img = cells.domain_means(s)
    pooled = cells.pooled_means(s)
    used = pooled - CHANCE >= min_signal
    hi = used & np.isin(rois, list(high))
    lo = used & np.isin(rois, list(low))
    ratio = preservation_ratio(vis, img)
    rng = np.random.default_rng(seed)
    bvis, bimg = cells.domain_means(s, cells.bootstrap_draws(n_bootstrap, rng))
    bratio = preservation_ratio(bvis, bimg)
    pvis, pimg = cells.domain_means(s, cells.permutation_draws(n_permutations, rng))
    term, pterm = pooled_term(vis, img, pooled), pooled_term(pvis, pimg, pooled)
    x = pos[used]
    obs_slope = float(slope(ratio[used], x))
    t_slope = float(slope(term[used], x))
    null_slope = slope(pterm[used], x)
    null_ratio_slope = slope(preservation_ratio(pvis, pimg)[used], x)
    t_contrast = float(contrast(term, hi, lo))
    null_contrast = contrast(pterm, hi, lo)
    boot_slope = slope(bratio[used], x)
    boot_contrast = contrast(bratio, hi, lo)
    n_img = int(cells.sizes[cells.is_imagery].sum())

    def p_of(observed: float, null: np.ndarray) -> float:
        return permutation_p(observed, null) if np.isfinite(observed) else float("nan")

    return HierarchyProfile(
        rois=rois, positions=pos, vision=vis, imagery=img, pooled=pooled, ratio=ratio,
        ratio_ci=np.array([interval(b, confidence) for b in bratio]), used=used,
        slope=obs_slope, slope_ci=interval(boot_slope, confidence),
        t_slope=t_slope, p=p_of(t_slope, null_slope),
        p_ratio=p_of(obs_slope, null_ratio_slope),
        contrast=float(contrast(ratio, hi, lo)),
        contrast_ci=interval(boot_contrast, confidence), t_contrast=t_contrast,
        p_contrast=p_of(t_contrast, null_contrast), bootstrap_ratio=bratio,
        bootstrap_slope=boot_slope, bootstrap_contrast=boot_contrast,
        null_slope=null_slope, null_contrast=null_contrast, n_targets=cells.n_targets,
        n_vision=int(cells.order.size - n_img), n_imagery=n_img)


def group_mean(values: Sequence[float], bootstraps: Sequence[np.ndarray],
               confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean over subjects and the percentile CI of the mean of their bootstrap draws
    (trial sampling within subjects; the subjects fixed)."""
    v = np.asarray(values, dtype=np.float64)
    n_b = min(len(b) for b in bootstraps)
    boot = np.mean([np.asarray(b[:n_b], dtype=np.float64) for b in bootstraps], axis=0)
    return float(np.mean(v)), interval(boot, confidence)


def pooled_p(statistics: Sequence[float], nulls: Sequence[np.ndarray]) -> float:
    """Permutation p of the subjects' mean statistic against the mean of their
    independent null draws (each subject's permutations are its own)."""
    n_p = min(len(n) for n in nulls)
    null = np.mean([np.asarray(n[:n_p], dtype=np.float64) for n in nulls], axis=0)
    return permutation_p(float(np.mean(statistics)), null)
