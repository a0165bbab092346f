"""Resampling statistics for evaluation results (arrays in, numbers out; no I/O).

* :func:`bootstrap_ci`: percentile or BCa bootstrap over items, or over whole groups
  (cluster bootstrap: single trials of one target are not independent evidence).
* :func:`ratio_ci`: CI of a ratio of means, e.g. imagery / perception transfer.
* :func:`paired_difference_test`: compare two methods scored on the same units.

Everything is deterministic given ``seed`` (``numpy.random.default_rng``). Sign-flip
p-values use ``(1 + #{null >= observed}) / (1 + n_permutations)``, which is never 0 and
is valid (conservative) for a random subset of permutations.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri

FloatArray = NDArray[np.float64]
Statistic = Callable[..., Any]

PERMUTATION_CHUNK = 256
"""Sign flips (or permutations) generated per block: bounds memory, fixes the stream."""



def tolerance(observed: float) -> float:
    """Slack when comparing null statistics with the observed one.

    The same value summed in another order can differ in the last bits; without slack, a
    null draw that equals the observed statistic could be missed (scipy does the same).
    """
    return 1e-12 * max(1.0, abs(observed))


def _as_vector(x: ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def check_count(value: int, name: str) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _accepts_axis(statistic: Statistic) -> bool:
    try:
        params = inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False
    return "axis" in params


def _rowwise(statistic: Statistic, samples: FloatArray) -> FloatArray:
    """Apply ``statistic`` to each row, vectorised when it takes ``axis`` like numpy's."""
    if _accepts_axis(statistic):
        out = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
        if out.shape == (samples.shape[0],):
            return out
    return np.array([float(statistic(row)) for row in samples], dtype=np.float64)


def _row_counts(draws: NDArray[np.int64], n_units: int) -> NDArray[np.int64]:
    """(B, n_units) multiplicity of each unit in each row of ``draws``."""
    b = draws.shape[0]
    flat = (draws + n_units * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_units).reshape(b, n_units)


class _Units:
    """Resampling units: the items themselves, or groups of items (cluster bootstrap)."""

    def __init__(self, n: int, groups: ArrayLike | None,
                 strata: ArrayLike | None = None) -> None:
        self.n = n
        self.strata: list[NDArray[np.int64]] | None = None
        if strata is not None:
            if groups is not None:
                raise ValueError("give groups or strata, not both")
            s = np.asarray(strata)
            if s.shape != (n,):
                raise ValueError(f"strata must have one label per value ({n}), got {s.shape}")
            _, codes = np.unique(s, return_inverse=True)
            self.strata = [np.flatnonzero(codes.ravel() == k) for k in range(codes.max() + 1)]
        if groups is None:
            self.codes: NDArray[np.int64] | None = None
            self.count = n
            return
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have one label per value ({n}), got {g.shape}")
        _, codes = np.unique(g, return_inverse=True)
        self.codes = codes.astype(np.int64).ravel()
        self.count = int(self.codes.max()) + 1

    def draw(self, rng: np.random.Generator, n_resamples: int) -> NDArray[np.int64]:
        if self.strata is not None:
            # Each stratum keeps its size: the design fixed it (e.g. 6 simple and 6
            # complex targets), so resamples must not mix the strata in other proportions.
            return np.concatenate(
                [members[rng.integers(0, members.size, size=(n_resamples, members.size))]
                 for members in self.strata], axis=1)
        return rng.integers(0, self.count, size=(n_resamples, self.count))

    def statistics(
        self, values: FloatArray, draws: NDArray[np.int64], statistic: Statistic
    ) -> FloatArray:
        """Statistic of each resample (rows of unit draws)."""
        if self.codes is None:
            if statistic is np.mean:
                return values[draws].mean(axis=1)
            return _rowwise(statistic, values[draws])
        counts = _row_counts(draws, self.count)  # (B, groups): times each group is drawn
        if statistic is np.mean:
            sums = np.bincount(self.codes, weights=values, minlength=self.count)
            sizes = np.bincount(self.codes, minlength=self.count).astype(np.float64)
            return (counts @ sums) / (counts @ sizes)
        return np.array(
            [float(statistic(np.repeat(values, c[self.codes]))) for c in counts],
            dtype=np.float64,
        )

    def jackknife(self, values: FloatArray, statistic: Statistic) -> FloatArray:
        """Leave-one-unit-out statistics (for the BCa acceleration)."""
        if self.codes is None:
            if statistic is np.mean:
                return (values.sum() - values) / (self.n - 1)
            return np.array(
                [float(statistic(np.delete(values, i))) for i in range(self.n)],
                dtype=np.float64,
            )
        return np.array(
            [float(statistic(values[self.codes != u])) for u in range(self.count)],
            dtype=np.float64,
        )


def _percentile_interval(
    boot: FloatArray, confidence: float
) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: ArrayLike | None = None,
    method: Literal["percentile", "bca"] = "percentile",
    strata: ArrayLike | None = None,
) -> tuple[float, float]:
    """Two-sided bootstrap confidence interval of ``statistic(values)``.

    Args:
        values: (n,) per-item values (e.g. per-item hit rates from
            :mod:`fmri2img.eval.metrics`).
        statistic: maps a 1-D sample to a number. Functions taking ``axis`` (numpy
            reductions) are evaluated on all resamples at once; ``np.mean`` has a
            dedicated fast path. It must not depend on the order of the items.
        n_resamples: bootstrap resamples.
        confidence: coverage of the interval.
        seed: random seed; the same inputs and seed give the same interval.
        groups: optional (n,) labels. Whole groups are resampled with replacement
            (cluster bootstrap), as needed when items are not independent, e.g. single
            trials grouped by target or items grouped by subject. Groups may differ in
            size; the statistic is computed on the pooled items of the drawn groups.
        strata: optional (n,) labels of a stratified design (e.g. the stimulus set of
            each target). Items are resampled within their stratum, which keeps each
            stratum's size fixed, as the design did (stratified bootstrap). Not combinable
            with ``groups``.
        method: ``"percentile"`` (the plain quantiles of the resampled statistic) or
            ``"bca"`` (bias-corrected and accelerated, Efron 1987; the acceleration uses
            a leave-one-unit-out jackknife). BCa corrects skew and bias, which matters
            for bounded metrics near 0 or 1 with few items.

    Returns:
        ``(low, high)``.
    """
    x = _as_vector(values, "values")
    n_resamples = check_count(n_resamples, "n_resamples")
    confidence = _check_confidence(confidence)
    units = _Units(x.size, groups, strata)
    rng = np.random.default_rng(seed)
    boot = units.statistics(x, units.draw(rng, n_resamples), statistic)
    if method == "percentile":
        return _percentile_interval(boot, confidence)
    if method != "bca":
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    if units.count < 2:
        raise ValueError("BCa needs at least 2 resampling units")
    theta = float(statistic(x))
    # Bias correction: where the observed statistic sits in the bootstrap distribution
    # (ties count half, as in scipy, so a constant statistic gives z0 = 0).
    frac = (np.count_nonzero(boot < theta) + np.count_nonzero(boot <= theta)) / (2 * boot.size)
    if frac <= 0.0 or frac >= 1.0:
        warnings.warn(
            "BCa interval is degenerate (observed statistic outside the bootstrap "
            "distribution); returning the percentile interval",
            RuntimeWarning,
            stacklevel=2,
        )
        return _percentile_interval(boot, confidence)
    z0 = float(ndtri(frac))
    jack = units.jackknife(x, statistic)
    dev = jack.mean() - jack
    denom = 6.0 * float(np.sum(dev**2)) ** 1.5
    accel = float(np.sum(dev**3)) / denom if denom > 0 else 0.0
    alpha = (1.0 - confidence) / 2.0
    z = ndtri(np.array([alpha, 1.0 - alpha]))
    levels = ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    if not np.all(np.isfinite(levels)):
        warnings.warn(
            "BCa interval is degenerate (observed statistic outside the bootstrap "
            "distribution); returning the percentile interval",
            RuntimeWarning,
            stacklevel=2,
        )
        return _percentile_interval(boot, confidence)
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


# -------------------------------------------------------------------------- ratio


class RatioCI(NamedTuple):
    """Point estimate of a ratio of means and its bootstrap interval ``(low, high)``."""

    estimate: float
    ci: tuple[float, float]


def ratio_ci(
    num_values: ArrayLike,
    den_values: ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = True,
    baseline: float = 0.0,
) -> RatioCI:
    """Bootstrap CI of ``(mean(num) - baseline) / (mean(den) - baseline)``.

    Built for the imagery/perception transfer ratio: ``num_values`` are per-item imagery
    scores, ``den_values`` per-item perception scores. Pass the metric's chance level as
    ``baseline`` to get the ratio of above-chance performance (e.g. 0.5 for 2-way), so
    that 0 means "imagery at chance" and 1 means "imagery as good as perception".

    ``paired=True`` (same items, e.g. the same targets scored in both conditions):
    items are resampled jointly, keeping their covariance, which usually narrows the
    interval. ``paired=False``: the two samples are resampled independently (different
    items or sizes). Percentile interval.

    If the resampled denominator reaches zero the ratio is unbounded; a RuntimeWarning
    says so and the interval should not be trusted.
    """
    num = _as_vector(num_values, "num_values")
    den = _as_vector(den_values, "den_values")
    n_resamples = check_count(n_resamples, "n_resamples")
    confidence = _check_confidence(confidence)
    if paired and num.size != den.size:
        raise ValueError(
            f"paired=True needs equal lengths, got {num.size} and {den.size}"
        )
    den_mean = den.mean() - baseline
    if den_mean == 0:
        raise ValueError("the denominator's mean equals the baseline; the ratio is undefined")
    estimate = float((num.mean() - baseline) / den_mean)
    rng = np.random.default_rng(seed)
    if paired:
        draws = rng.integers(0, num.size, size=(n_resamples, num.size))
        num_b = num[draws].mean(axis=1)
        den_b = den[draws].mean(axis=1)
    else:
        num_b = num[rng.integers(0, num.size, size=(n_resamples, num.size))].mean(axis=1)
        den_b = den[rng.integers(0, den.size, size=(n_resamples, den.size))].mean(axis=1)
    den_b = den_b - baseline
    if np.any(np.sign(den_b) != np.sign(den_mean)):
        warnings.warn(
            "bootstrap denominator crosses the baseline; the ratio CI is unbounded",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (num_b - baseline) / den_b
    ratios = ratios[np.isfinite(ratios)]
    return RatioCI(estimate=estimate, ci=_percentile_interval(ratios, confidence))


# --------------------------------------------------------------- paired difference


@dataclass(frozen=True)
class PairedDifference:
    """Outcome of :func:`paired_difference_test` (differences are ``a - b``)."""

    mean_difference: float
    ci: tuple[float, float]
    p_value: float
    cohens_dz: float
    n: int
    exact: bool
    """True when the p-value enumerates all 2**n sign patterns."""


def paired_difference_test(
    a: ArrayLike,
    b: ArrayLike,
    n_resamples: int = 2000,
    n_permutations: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
    strata: ArrayLike | None = None,
) -> PairedDifference:
    """Compare two methods scored on the same units (targets, subjects): ``a`` vs ``b``.

    * effect: mean of ``d = a - b``, with a percentile bootstrap CI over units;
    * p-value: sign-flip permutation test of "the mean difference is 0". Under the null
      each difference is as likely to be positive as negative. All ``2**n`` sign
      patterns are enumerated when there are at most ``n_permutations`` of them (exact,
      e.g. 4 subjects give 16 patterns and a smallest possible two-sided p of 1/8);
      otherwise random flips with the ``(1 + count) / (1 + n_permutations)`` form;
    * Cohen's d_z: ``mean(d) / std(d, ddof=1)``, the standardized effect for paired
      data (NaN when every difference is 0, infinite when all are equal and non-zero).

    ``strata`` (one label per unit) makes the CI a stratified bootstrap; the sign-flip
    test needs no change, as flipping each unit's sign is valid within any stratum.
    """
    av = _as_vector(a, "a")
    bv = _as_vector(b, "b")
    if av.size != bv.size:
        raise ValueError(f"a and b must pair up, got {av.size} and {bv.size} values")
    if av.size < 2:
        raise ValueError("need at least 2 paired values")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"unknown alternative {alternative!r}")
    n_permutations = check_count(n_permutations, "n_permutations")
    d = av - bv
    n = d.size
    observed = float(d.mean())
    ci = bootstrap_ci(d, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed,
                      strata=strata)

    def extreme(null: FloatArray) -> int:
        tol = tolerance(observed)
        if alternative == "greater":
            return int(np.count_nonzero(null >= observed - tol))
        if alternative == "less":
            return int(np.count_nonzero(null <= observed + tol))
        return int(np.count_nonzero(np.abs(null) >= abs(observed) - tol))

    exact = n < 63 and 2**n <= n_permutations
    if exact:
        patterns = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (patterns & 1)
        p_value = extreme((signs @ d) / n) / float(2**n)
    else:
        rng = np.random.default_rng(seed)
        count = 0
        done = 0
        while done < n_permutations:
            size = min(PERMUTATION_CHUNK, n_permutations - done)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
            count += extreme((signs @ d) / n)
            done += size
        p_value = (1.0 + count) / (1.0 + n_permutations)
    sd = float(d.std(ddof=1))
    # Rounding can leave a tiny spread among equal differences; treat it as none.
    if sd > 1e-12 * float(np.max(np.abs(d))):
        dz = observed / sd
    else:
        dz = float("nan") if observed == 0 else float(np.copysign(np.inf, observed))
    return PairedDifference(
        mean_difference=observed,
        ci=ci,
        p_value=float(p_value),
        cohens_dz=dz,
        n=n,
        exact=exact,
    )
