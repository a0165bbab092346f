"""Vision-imagery representational similarity: how much of the geometry of seen targets an
ROI keeps when the same targets are imagined.

Per subject, ROI and task (as in the public analysis of the NSD-Imagery betas this
reproduces): each voxel's betas are z-scored within run, repetitions are averaged per
target, the targets' patterns give a correlation-distance RDM (1 - Pearson r across
voxels), and the **alignment** is Spearman's rho between the vision and the imagery RDM's
off-diagonal distances (15 for six targets). Across subjects, each group mean is tested
against 0 with an exact sign-flip test, and so are the contrasts that define the
stimulus-by-region crossover.

Pure numerics: arrays in, arrays and plain numbers out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fmri2img.eval.stats import paired_difference_test


def zscore_within(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each column z-scored over the rows of each group (ddof 0); a column constant within
    a group becomes 0 there."""
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray(groups)
    if groups.shape != (x.shape[0],):
        raise ValueError(f"groups must have one label per row ({x.shape[0]}), got "
                         f"{groups.shape}")
    out = np.empty_like(x)
    for g in np.unique(groups):
        rows = groups == g
        block = x[rows]
        sd = block.std(axis=0)
        sd[sd == 0] = 1.0
        out[rows] = (block - block.mean(axis=0)) / sd
    return out


def condition_means(x: np.ndarray, labels: np.ndarray, conditions: Sequence[Any]
                    ) -> np.ndarray:
    """(len(conditions), columns): the mean row of each condition, in the order given."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.empty((len(conditions), x.shape[1]))
    for i, c in enumerate(conditions):
        rows = labels == c
        if not rows.any():
            raise ValueError(f"condition {c!r} has no rows")
        out[i] = x[rows].mean(axis=0)
    return out


def correlation_rdm(patterns: np.ndarray) -> np.ndarray:
    """(k, k) correlation distance 1 - Pearson r between the rows (across columns); rows
    without variance give NaN distances."""
    p = np.asarray(patterns, dtype=np.float64)
    c = p - p.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = c / norm[:, None]
        r = np.clip(u @ u.T, -1.0, 1.0)
    d = 1.0 - r
    np.fill_diagonal(d, 0.0)
    bad = ~(norm > 0)
    d[bad, :] = np.nan
    d[:, bad] = np.nan
    return d


def upper(rdm: np.ndarray) -> np.ndarray:
    """The k(k-1)/2 distances above the diagonal, row by row."""
    rdm = np.asarray(rdm)
    return rdm[np.triu_indices(rdm.shape[0], k=1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties ranked by their average); NaN if either is constant or has a
    NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    if a.size < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def rdm_alignment(rdm_a: np.ndarray, rdm_b: np.ndarray) -> float:
    """Second-order similarity of two RDMs over the same conditions: Spearman's rho of
    their off-diagonal distances."""
    return spearman(upper(rdm_a), upper(rdm_b))


@dataclass(frozen=True)
class Alignment:
    """One subject, ROI and stimulus set."""

    rho: float
    vision_rdm: np.ndarray
    imagery_rdm: np.ndarray
    n_vision: int  # trials averaged
    n_imagery: int
    n_voxels: int

    def as_dict(self) -> dict[str, Any]:
        return {"rho": None if not np.isfinite(self.rho) else self.rho,
                "n_vision": self.n_vision, "n_imagery": self.n_imagery,
                "n_voxels": self.n_voxels,
                "vision_rdm": _nan_to_none(self.vision_rdm),
                "imagery_rdm": _nan_to_none(self.imagery_rdm)}


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def vision_imagery_alignment(
    betas: np.ndarray,
    runs: np.ndarray,
    task: np.ndarray,
    target: np.ndarray,
    targets: Sequence[Any],
    roi: np.ndarray,
) -> Alignment:
    """Alignment of the vision and the imagery RDM of ``targets`` in one ROI.

    ``betas`` (trials, voxels) holds every beta of the runs involved (z-scoring uses all
    of a run's betas, scored or not); ``runs``, ``task`` ("vision" / "imagery", anything
    else is only z-scored) and ``target`` label its rows; ``roi`` is a boolean mask over
    the voxels.
    """
    roi = np.asarray(roi, dtype=bool)
    if roi.shape != (betas.shape[1],):
        raise ValueError(f"roi mask must have one value per voxel ({betas.shape[1]})")
    if not roi.any():
        raise ValueError("the ROI mask selects no voxels")
    z = zscore_within(np.asarray(betas)[:, roi], runs)
    task = np.asarray(task)
    target = np.asarray(target)
    rdms = {}
    counts = {}
    for t in ("vision", "imagery"):
        rows = (task == t) & np.isin(target, list(targets))
        counts[t] = int(rows.sum())
        rdms[t] = correlation_rdm(condition_means(z[rows], target[rows], targets))
    return Alignment(rdm_alignment(rdms["vision"], rdms["imagery"]), rdms["vision"],
                     rdms["imagery"], counts["vision"], counts["imagery"], int(roi.sum()))


# ----------------------------------------------------------------------------- group
def sign_flip(values: Sequence[float], n_resamples: int = 2000, seed: int = 0
              ) -> dict[str, Any]:
    """Mean over subjects with a bootstrap CI and the sign-flip p of "mean = 0"
    (two-sided; exact, enumerating all 2**n sign patterns, up to 2**16 subjects' worth)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    out: dict[str, Any] = {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
                           "sd": float(v.std(ddof=1)) if v.size > 1 else None,
                           "ci": None, "p_value": None, "exact": None}
    if v.size >= 2:
        r = paired_difference_test(v, np.zeros_like(v), n_resamples=n_resamples,
                                   n_permutations=max(2**v.size, 10_000)
                                   if v.size <= 16 else 10_000, seed=seed)
        out.update(ci=list(r.ci), p_value=r.p_value, exact=r.exact)
    return out


def crossover_contrasts(
    rho: Mapping[str, Mapping[str, Mapping[str, float]]],
    low: str, high: str, simple: str, complex_: str,
) -> dict[str, dict[str, float]]:
    """Per-subject contrasts of the stimulus-by-region crossover, from
    ``rho[subject][set][roi]``: the simple set's ``low - high`` ROI, the complex set's
    ``high - low`` ROI, and the interaction (their sum). Subjects lacking a value are left
    out of that contrast."""
    out: dict[str, dict[str, float]] = {"simple_low_minus_high": {},
                                        "complex_high_minus_low": {}, "interaction": {}}
    for subject, by_set in rho.items():
        try:
            a = by_set[simple][low] - by_set[simple][high]
            b = by_set[complex_][high] - by_set[complex_][low]
        except (KeyError, TypeError):
            continue
        if np.isfinite(a) and np.isfinite(b):
            out["simple_low_minus_high"][subject] = float(a)
            out["complex_high_minus_low"][subject] = float(b)
            out["interaction"][subject] = float(a + b)
    return out
