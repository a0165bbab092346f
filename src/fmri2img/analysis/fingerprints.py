"""Individual imagery fingerprints: is a subject's pattern of imagery degradation its own?

A subject's **degradation profile** is a vector of elements, each comparing imagery with
vision identification on one part of the data: one element per ROI (that ROI's decoder,
all targets) and one per target (the whole-cortex decoder, that target's trials). Inputs
are per-trial 2-way scores ``scores`` (rows, n) of the decoders, each trial's target and
domain; an element is a (row, target or all targets) pair.

Element statistics, from the cell means (mean trial score of a target in a domain;
targets weigh alike within an ROI element):

* ``ratio``: the transfer ratio ``(imagery - 0.5) / (vision - 0.5)``;
* ``pooled``: ``(imagery - vision) / (pooled - 0.5)``, the label-free denominator being
  the mean over all of the element's trials, both domains. With equal per-trial variance
  the difference of the domain means is uncorrelated with the grand mean, so this is
  centred on 0 whenever imagery and vision trials are exchangeable, for every element:
  unlike the ratio, whose noisy denominator biases each element by an amount set by how
  decodable it is (a stable, subject-specific pattern that would look like a fingerprint
  under the null). It is an increasing function of the ratio (0 at ratio 1), the same
  function for every element while the domains' trial counts are in the same proportion,
  so rank correlations of ``pooled`` profiles compare the ratios' orderings.

**Split-half reliability**: each split draws random halves of each target's vision trials
and, independently, of its imagery trials (equal halves; an odd trial out is left out),
so the two half-profiles share no trial and no denominator; Spearman's rho between them
(over the elements defined in both), averaged over splits, Spearman-Brown corrected;
permutation p from swapping domain labels within target and redoing the splits (exact
when the domains are exchangeable; an element shuffle would not be: elements at the 2-way
ceiling are 0 in both halves and the scores' skew puts them off the middle rank, so they
agree between halves under any null).

**Identification** (across subjects): in every split each subject's half-A profile is
matched to the half-B profile it correlates with most (both directions), optionally after
removing the mean profile over subjects (what is shared by everyone cannot identify
anyone); accuracy averaged over splits against chance ``1 / n_subjects``; permutation p
from relabelling the subjects of half B (one relabelling for all splits; every
relabelling when there are few subjects). The same draws give the differential
identifiability (mean self - mean other correlation). **Second-order similarity**: the
Spearman correlation between the subjects' full-data profiles (its null, in the runner:
each subject's profile recomputed with domain labels swapped within target).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np

CHANCE = 0.5
STATISTICS = ("pooled", "ratio")


def element_values(vision: np.ndarray, imagery: np.ndarray, pooled: np.ndarray,
                   statistic: str, chance: float = CHANCE) -> np.ndarray:
    """The profile statistic of each element (module docstring); NaN where its
    denominator is not above chance."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    num = imagery - chance if statistic == "ratio" else imagery - vision
    den = (vision if statistic == "ratio" else pooled) - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass(frozen=True)
class Elements:
    """Which score row and which target (or -1: all targets) each element reads."""

    names: list[str]
    row: np.ndarray  # (E,) int
    target: np.ndarray  # (E,) int index into the target codes, -1 for all targets

    def measure(self, scores: np.ndarray, tidx: np.ndarray, imagery: np.ndarray,
                groups: np.ndarray, n_targets: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vision, imagery, pooled), each (G, E), from each of the trial subsets
        ``groups`` (G, n) bool; an element with a target missing a domain is NaN."""
        code = 2 * np.asarray(tidx) + np.asarray(imagery, dtype=np.int64)
        onehot = np.zeros((code.size, 2 * n_targets))
        onehot[np.arange(code.size), code] = 1.0
        g = np.asarray(groups, dtype=np.float64)
        s = np.asarray(scores, dtype=np.float64)
        # (G, R, 2T) cell sums as one matrix product (the nulls call this thousands of
        # times)
        sums = ((g[:, None, :] * s[None]).reshape(-1, code.size) @ onehot).reshape(
            g.shape[0], s.shape[0], -1)
        counts = (g @ onehot)[:, None, :]  # (G, 1, 2T)
        with np.errstate(divide="ignore", invalid="ignore"):
            vis = sums[..., 0::2] / counts[..., 0::2]  # (G, R, T)
            img = sums[..., 1::2] / counts[..., 1::2]
            pool = (sums[..., 0::2] + sums[..., 1::2]) / (counts[..., 0::2]
                                                          + counts[..., 1::2])
        out = []
        for m in (vis, img, pool):
            rows = m[:, self.row]  # (G, E, T)
            one = rows[:, np.arange(len(self.row)), np.maximum(self.target, 0)]
            out.append(np.where(self.target >= 0, one, rows.mean(axis=2)))
        return out[0], out[1], out[2]

    def profile(self, scores: np.ndarray, tidx: np.ndarray, imagery: np.ndarray,
                groups: np.ndarray, n_targets: int, statistic: str) -> np.ndarray:
        """(G, E) profile values of each trial subset."""
        return element_values(*self.measure(scores, tidx, imagery, groups, n_targets),
                              statistic)


def half_labels(target: np.ndarray, imagery: np.ndarray, n_splits: int,
                rng: np.random.Generator) -> np.ndarray:
    """(n_splits, n) labels 0 / 1 (the two halves) or -1 (left out): each (target,
    domain) cell split into two equal random halves, every cell independently."""
    target = np.asarray(target)
    imagery = np.asarray(imagery, dtype=bool)
    out = np.full((n_splits, target.size), -1, dtype=np.int8)
    for t in np.unique(target):
        for kind in (False, True):
            idx = np.flatnonzero((target == t) & (imagery == kind))
            h = idx.size // 2
            if h == 0:
                continue
            for s in range(n_splits):
                perm = rng.permutation(idx)
                out[s, perm[:h]] = 0
                out[s, perm[h:2 * h]] = 1
    return out


def half_profiles(elements: Elements, scores: np.ndarray, tidx: np.ndarray,
                  imagery: np.ndarray, labels: np.ndarray, n_targets: int,
                  statistic: str) -> np.ndarray:
    """(S, 2, E) the two half-profiles of every split of ``labels`` (S, n)."""
    groups = np.concatenate([labels == 0, labels == 1])  # (2S, n)
    values = elements.profile(scores, tidx, imagery, groups, n_targets, statistic)
    n_s = labels.shape[0]
    return np.stack([values[:n_s], values[n_s:]], axis=1)


def within_target_permutations(tidx: np.ndarray, n: int, rng: np.random.Generator
                               ) -> np.ndarray:
    """(n, trials) index arrays, each shuffling the trials within every target: applied
    to the scores, it swaps domain labels within target (the counts kept)."""
    tidx = np.asarray(tidx)
    out = np.tile(np.arange(tidx.size), (n, 1))
    for t in np.unique(tidx):
        idx = np.flatnonzero(tidx == t)
        out[:, idx] = rng.permuted(np.tile(idx, (n, 1)), axis=1)
    return out


def _ranked(x: np.ndarray) -> np.ndarray:
    """Centred average ranks (ties share their mean rank), as scipy's rankdata but a
    fraction of its per-call cost: the permutation nulls rank thousands of short
    vectors."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    r = ((ends - counts + ends + 1) / 2.0)[inverse]
    return r - r.mean()


def rank_correlation(a: np.ndarray, b: np.ndarray, min_elements: int = 3) -> float:
    """Spearman's rho over the elements finite in both (NaN if fewer than
    ``min_elements`` or either is constant there)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < min_elements:
        return float("nan")
    ra, rb = _ranked(a[ok]), _ranked(b[ok])
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def spearman_brown(r: float | np.ndarray) -> float | np.ndarray:
    """Reliability of the full data from the correlation of its two halves."""
    return 2 * r / (1 + r)


@dataclass
class Reliability:
    r_half: float  # mean over splits of the half-half rho
    r_full: float  # Spearman-Brown corrected
    p: float  # permutation p (one-sided: rho > 0), domains swapped within target
    per_split: np.ndarray  # (S,)
    null: np.ndarray  # (P,) mean half-half rho of the permuted data
    halves: np.ndarray  # (S, 2, E) the observed half profiles


def mean_half_correlation(halves: np.ndarray) -> tuple[float, np.ndarray]:
    per_split = np.array([rank_correlation(h[0], h[1]) for h in halves])
    finite = per_split[np.isfinite(per_split)]
    return (float(finite.mean()) if finite.size else float("nan")), per_split


def split_half_reliability(elements: Elements, scores: np.ndarray, tidx: np.ndarray,
                           imagery: np.ndarray, labels: np.ndarray, n_targets: int,
                           statistic: str, n_permutations: int,
                           rng: np.random.Generator) -> Reliability:
    """Split-half reliability of the profile and its permutation p.

    The null shuffles each target's trials across its vision and imagery slots (domain
    labels swapped within target), then splits and correlates exactly as observed: it
    keeps everything about the elements that does not depend on the labels (ceilings,
    ties, skew of the scores) that an element shuffle would break."""
    halves = half_profiles(elements, scores, tidx, imagery, labels, n_targets, statistic)
    r_half, per_split = mean_half_correlation(halves)
    perms = within_target_permutations(tidx, n_permutations, rng)
    null = np.array([mean_half_correlation(half_profiles(
        elements, scores[:, perm], tidx, imagery, labels, n_targets, statistic))[0]
        for perm in perms])
    p = float((1 + np.sum(~np.isfinite(null) | (null >= r_half))) / (1 + n_permutations)) \
        if np.isfinite(r_half) else float("nan")
    return Reliability(r_half, float(spearman_brown(r_half)), p, per_split, null, halves)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, n) rank correlation of every row of ``a`` with every row of ``b``."""
    return np.array([[rank_correlation(x, y) for y in b] for x in a])


def _centre(x: np.ndarray) -> np.ndarray:
    """Each element minus its mean over subjects (an element no subject has stays
    NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN elements
        return x - np.nanmean(x, axis=0)


@dataclass
class Identification:
    accuracy: float  # mean over splits and both directions
    per_split: np.ndarray  # (S,)
    chance: float
    p: float
    i_diff: float  # mean self - mean other correlation
    p_i_diff: float
    null: np.ndarray  # accuracy under relabelling
    null_i_diff: np.ndarray
    exact: bool  # every relabelling enumerated
    self_r: float
    other_r: float
    mean_correlation: np.ndarray  # (n, n) half A x half B, mean over splits


def _relabellings(n: int, n_permutations: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, bool]:
    if math.factorial(n) <= n_permutations:
        return np.array(list(itertools.permutations(range(n)))), True
    return np.argsort(rng.random((n_permutations, n)), axis=1), False


def identify(halves: np.ndarray, *, centre: bool = True, n_permutations: int = 1000,
             seed: int = 0) -> Identification:
    """``halves`` (n_subjects, S, 2, E) half profiles of the same elements ->
    :class:`Identification` (module docstring)."""
    halves = np.asarray(halves, dtype=np.float64)
    n, n_s = halves.shape[:2]
    if n < 2:
        raise ValueError("identification needs at least 2 subjects")
    corr = np.empty((n_s, n, n))
    for s in range(n_s):
        a, b = halves[:, s, 0], halves[:, s, 1]
        if centre:
            a, b = _centre(a), _centre(b)
        corr[s] = correlation_matrix(a, b)
    filled = np.where(np.isfinite(corr), corr, -np.inf)
    a_to_b = filled.argmax(axis=2)  # (S, n): best half-B match of each half-A profile
    b_to_a = filled.argmax(axis=1)  # (S, n): best half-A match of each half-B profile
    ident = np.arange(n)
    perms, exact = _relabellings(n, n_permutations, np.random.default_rng(seed))
    inverse = np.argsort(perms, axis=1)

    def accuracy(pi: np.ndarray, inv: np.ndarray) -> np.ndarray:
        # half-B profile j carries label pi[j]: A_i's correct match is B_inv[i], B_j's is
        # A_pi[j]
        return ((a_to_b == inv[None, :]).mean(axis=1)
                + (b_to_a == pi[None, :]).mean(axis=1)) / 2

    def i_diff(inv: np.ndarray) -> float:
        own = corr[:, ident, inv]  # (S, n)
        total = np.nansum(corr, axis=(1, 2))
        count = np.isfinite(corr).sum(axis=(1, 2))
        own_sum = np.nansum(own, axis=1)
        own_n = np.isfinite(own).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.nanmean(own_sum / own_n - (total - own_sum) / (count - own_n)))

    per_split = accuracy(ident, ident)
    observed = float(per_split.mean())
    null = np.array([accuracy(pi, inv).mean() for pi, inv in zip(perms, inverse,
                                                                  strict=True)])
    obs_diff = i_diff(ident)
    null_diff = np.array([i_diff(inv) for inv in inverse])
    tol = 1e-12

    def p_of(obs: float, nul: np.ndarray) -> float:
        hits = int(np.sum(nul >= obs - tol))
        return hits / nul.size if exact else (1 + hits) / (1 + nul.size)

    own = corr[:, ident, ident]
    off = corr[:, ~np.eye(n, dtype=bool)]
    return Identification(
        accuracy=observed, per_split=per_split, chance=1.0 / n, p=p_of(observed, null),
        i_diff=obs_diff, p_i_diff=p_of(obs_diff, null_diff), null=null,
        null_i_diff=null_diff, exact=exact, self_r=float(np.nanmean(own)),
        other_r=float(np.nanmean(off)), mean_correlation=np.nanmean(corr, axis=0))
