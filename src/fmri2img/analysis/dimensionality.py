"""Dimensionality of vision and imagery representations from their signal spectrum.

Trial-level PCA of fMRI patterns measures mostly noise, and more of it the fewer trials
are averaged (NSD-Imagery has 8 vision but 16 imagery trials per target). The signal
spectrum avoids both:

* trial counts are matched per target across domains (imagery subsampled to the vision
  count, seeded), and each target's trials of a domain split into two equal halves;
* the target-mean patterns of each half, ``A`` and ``B`` (T x V), are centred over
  targets; trial noise is independent between halves, so the symmetrised
  cross-covariance ``(A^T B + B^T A) / 2`` is an unbiased estimate of the (scaled)
  covariance of the target signal. Its eigenvalues (negatives, which are noise, clipped
  to 0) are the signal spectrum; it is averaged over ``n_splits`` random splits.

The spectrum comes from the small matrices only: with ``X = [A; B]`` (2T x V),
``A^T B + B^T A = X^T P X`` (``P`` swaps the two halves), whose non-zero eigenvalues are
those of ``G^(1/2) P G^(1/2)`` with ``G = X X^T``; and ``G`` is a weighted block sum of
the trial Gram matrix ``K`` (n x n), computed once. Every split, bootstrap resample and
permutation is then a gather from ``K`` and a (2T x 2T) eigendecomposition.

From the spectrum ``l``: the participation ratio ``PR = (sum l)^2 / sum l^2`` and
``n90``, the components needed for 90% of ``sum l``. But the cross-covariance is
unbiased, not its clipped eigenvalues: the positive noise eigenvalues survive the
clipping, and a weak signal's spectrum looks flat, so the PR of the clipped spectrum is
biased upwards -- the more so, the weaker the domain's signal (imagery). The PR tested
is therefore a ratio of unbiased terms (:func:`pr_terms`): each target's matched trials
are cut into four disjoint parts, and with ``S_ab`` the symmetrised cross-covariance of
parts a and b, ``tr S_ab tr S_cd`` and ``tr(S_ab S_cd)`` are unbiased for
``(tr S)^2 = (sum l)^2`` and ``tr(S^2) = sum l^2`` of the signal covariance ``S``
(averaged over the three pairings and ``n_splits`` random cuts). The clipped spectrum,
its PR and n90 are reported as descriptions.

Uncertainty: a bootstrap that, after one random split per draw, resamples ``h - 1`` of
each part's ``h`` trials with replacement (matching the variance of a part's mean; a
trial never lands in two parts, which would bias the cross-products; the split's own
noise makes the CI err wide), and a permutation test that
swaps the domain labels of each target's trials (counts kept): under the null that
vision and imagery trials of a target are exchangeable the imagery - vision difference
is 0 up to noise.

The draw machinery (:class:`TrialCells`, :func:`draw_halves`, :func:`half_grams`) is
shared with :mod:`fmri2img.analysis.topology` (cross-validated distances).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmri2img.eval.stats import tolerance

VARIANCE_SHARE = 0.9
_CHUNK_ELEMENTS = 4_000_000  # gathered Gram entries per block (bounds memory)


@dataclass(frozen=True)
class TrialCells:
    """Each target's vision and imagery trial indices (targets with >= 2 of each)."""

    targets: np.ndarray  # (T,) target labels, sorted
    vision: list[np.ndarray]
    imagery: list[np.ndarray]

    @classmethod
    def of(cls, target: np.ndarray, imagery: np.ndarray, min_trials: int = 2
           ) -> TrialCells:
        target = np.asarray(target)
        imagery = np.asarray(imagery, dtype=bool)
        if target.shape != imagery.shape or target.ndim != 1:
            raise ValueError("target and imagery must be 1-D arrays of one length")
        keep, vis, img = [], [], []
        for t in np.unique(target):
            v = np.flatnonzero((target == t) & ~imagery)
            i = np.flatnonzero((target == t) & imagery)
            if v.size >= min_trials and i.size >= min_trials:
                keep.append(t)
                vis.append(v)
                img.append(i)
        if len(keep) < 3:
            raise ValueError(f"need at least 3 targets with >= {min_trials} vision and "
                             f"imagery trials, got {len(keep)}")
        return cls(np.array(keep), vis, img)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def half_sizes(self, matched: bool, n_parts: int = 2
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Trials per part per target, (vision, imagery): with ``matched`` both domains
        use ``min(count) // n_parts``, else each its own ``count // n_parts``."""
        nv = np.array([v.size for v in self.vision])
        ni = np.array([i.size for i in self.imagery])
        if matched:
            h = np.minimum(nv, ni) // n_parts
            return h, h
        return nv // n_parts, ni // n_parts


def part_weights(h: np.ndarray, n_parts: int, bootstrap: bool = False) -> np.ndarray:
    """(n_parts, T, hmax) averaging weights of the padded part slots: ``1/m`` on a
    target's first ``m`` slots, 0 on the rest, with ``m = h``, or ``m = h - 1`` for a
    bootstrap draw (resampling ``h - 1`` of ``h`` trials gives the resampled mean the
    variance ``sigma^2 / h`` of the original one; resampling ``h`` would shrink it by
    ``(h - 1) / h``, a half for the pairs of NSD-Imagery's quarters)."""
    hmax = int(h.max())
    m = np.maximum(h - 1, 1) if bootstrap else h
    w = (np.arange(hmax)[None, :] < m[:, None]) / m[:, None]
    return np.broadcast_to(w, (n_parts, *w.shape)).copy()


def draw_parts(cells: TrialCells, n_draws: int, n_splits: int, rng: np.random.Generator,
               *, n_parts: int = 2, permute: bool = False, bootstrap: bool = False,
               matched: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Trial indices of the parts, (vision, imagery), each (n_draws, n_splits, n_parts,
    T, hmax) (slots past a target's size repeat a real trial and weigh 0, see
    :func:`part_weights`).

    Each split is a random choice of ``n_parts * h`` of the domain's trials (a subsample
    when counts are matched) cut into ``n_parts`` disjoint parts of ``h``; ``permute``
    first swaps the domain labels of each target's trials (counts kept), the same labels
    for the ``n_splits`` splits of a draw; ``bootstrap`` then resamples ``h - 1`` trials
    of each part with replacement (weights from ``part_weights(bootstrap=True)``), so a
    trial never lands in two parts."""
    hv, hi = cells.half_sizes(matched, n_parts)
    out = [np.zeros((n_draws, n_splits, n_parts, cells.n_targets, int(h.max())),
                    dtype=np.int64) for h in (hv, hi)]
    for t in range(cells.n_targets):
        vis, img = cells.vision[t], cells.imagery[t]
        if permute:
            pooled = rng.permuted(np.tile(np.concatenate([vis, img]), (n_draws, 1)), axis=1)
            pools = (pooled[:, :vis.size], pooled[:, vis.size:])
        else:
            pools = (np.tile(vis, (n_draws, 1)), np.tile(img, (n_draws, 1)))
        for d, (pool, h) in enumerate(zip(pools, (hv[t], hi[t]), strict=True)):
            block = np.repeat(pool[:, None, :], n_splits, axis=1)
            chosen = rng.permuted(block, axis=2)[:, :, :n_parts * h].reshape(
                n_draws, n_splits, n_parts, h)
            if bootstrap:
                pos = rng.integers(0, h, chosen.shape)
                chosen = np.take_along_axis(chosen, pos, axis=3)
            out[d][:, :, :, t, :h] = chosen
            out[d][:, :, :, t, h:] = chosen[..., :1]
    return out[0], out[1]


def part_grams(K: np.ndarray, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gram matrix of the parts' target means, centred over targets within each part:
    ``idx`` (..., P, T, hmax) from :func:`draw_parts`, ``weights`` (P, T, hmax) ->
    (..., PT, PT) (rows: part 1's targets, then part 2's, ...)."""
    lead = idx.shape[:-3]
    P, T, hmax = idx.shape[-3:]
    L = P * T * hmax
    flat = idx.reshape(-1, L)
    w = weights.reshape(L)
    ww = (w[:, None] * w[None, :])
    out = np.empty((flat.shape[0], P * T, P * T))
    step = max(1, _CHUNK_ELEMENTS // (L * L))
    for s in range(0, flat.shape[0], step):
        f = flat[s:s + step]
        sub = K[f[:, :, None], f[:, None, :]] * ww
        out[s:s + step] = sub.reshape(-1, P * T, hmax, P * T, hmax).sum(axis=(2, 4))
    # centring each part's target means: G <- H G H, H = blockdiag(I - 1/T, ...)
    g = out.reshape(-1, P, T, P, T)
    g = g - g.mean(axis=2, keepdims=True)
    g = g - g.mean(axis=4, keepdims=True)
    return g.reshape(*lead, P * T, P * T)


def half_grams(K: np.ndarray, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`part_grams` of two halves: (..., 2T, 2T)."""
    return part_grams(K, idx, weights)


def pr_terms(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased estimates of ``(tr S)^2`` and ``tr(S^2)`` of the signal covariance ``S``
    from the Gram matrix of four disjoint parts' centred target means (..., 4T, 4T),
    averaged over the three pairings of the parts: for the pairing (ab | cd), with
    ``S_ab = (Q_a^T Q_b + Q_b^T Q_a) / 2`` unbiased for ``S`` and independent of
    ``S_cd``, ``tr S_ab tr S_cd`` and ``tr(S_ab S_cd) = (<G_bc, G_ad> + <G_bd, G_ac>) / 2``
    (``<,>`` the entrywise inner product)."""
    T = G.shape[-1] // 4

    def blk(i: int, j: int) -> np.ndarray:
        return G[..., i * T:(i + 1) * T, j * T:(j + 1) * T]

    def tr(i: int, j: int) -> np.ndarray:
        return np.trace(blk(i, j), axis1=-2, axis2=-1)

    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x * y).sum(axis=(-2, -1))

    num, den = 0.0, 0.0
    for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
        num = num + tr(a, b) * tr(c, d)
        den = den + (dot(blk(b, c), blk(a, d)) + dot(blk(b, d), blk(a, c))) / 2.0
    return num / 3.0, den / 3.0


def ratio_pr(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where both are positive (no measurable signal otherwise: NaN)."""
    ok = (num > 0) & (den > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def signal_spectrum(G: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``(A^T B + B^T A) / 2`` from ``G = [A; B][A; B]^T`` (..., 2T, 2T),
    negatives clipped to 0, sorted descending (..., 2T)."""
    T = G.shape[-1] // 2
    s, U = np.linalg.eigh(G)
    root = (U * np.sqrt(np.clip(s, 0.0, None))[..., None, :]) @ np.swapaxes(U, -1, -2)
    # root P root / 2, with P swapping the halves: P root is root's row blocks swapped
    swapped = np.concatenate([root[..., T:, :], root[..., :T, :]], axis=-2)
    M = root @ swapped / 2.0
    lam = np.linalg.eigvalsh((M + np.swapaxes(M, -1, -2)) / 2.0)
    return np.clip(lam, 0.0, None)[..., ::-1]


def spectrum_direct(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Reference: the same spectrum from the (V x V) matrix (for tests; small V only)."""
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    lam = np.linalg.eigvalsh((A.T @ B + B.T @ A) / 2.0)
    return np.clip(lam, 0.0, None)[::-1]


def participation_ratio(lam: np.ndarray) -> np.ndarray:
    """``(sum l)^2 / sum l^2`` over the last axis; NaN where the spectrum is all 0."""
    lam = np.asarray(lam, dtype=np.float64)
    s1, s2 = lam.sum(axis=-1), (lam**2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s2 > 0, s1**2 / np.where(s2 > 0, s2, 1.0), np.nan)


def n_components(lam: np.ndarray, share: float = VARIANCE_SHARE) -> np.ndarray:
    """Components (of a descending spectrum) needed for ``share`` of its sum; NaN where
    the spectrum is all 0."""
    lam = np.asarray(lam, dtype=np.float64)
    total = lam.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.cumsum(lam, axis=-1) / total
    n = (frac < share - 1e-12).sum(axis=-1) + 1.0
    return np.where(total[..., 0] > 0, n, np.nan)


@dataclass
class Dimensionality:
    """One representation's vision vs imagery signal dimensionality."""

    pr_vision: float
    pr_imagery: float
    pr_clipped_vision: float  # PR of the clipped half-split spectrum (biased upwards)
    pr_clipped_imagery: float
    n90_vision: float  # of the clipped half-split spectrum
    n90_imagery: float
    spectrum_vision: np.ndarray  # (2T,) mean normalised clipped spectrum (sums to 1)
    spectrum_imagery: np.ndarray
    difference: float  # PR imagery - vision
    ci_vision: tuple[float, float]
    ci_imagery: tuple[float, float]
    ci_difference: tuple[float, float]
    p: float  # two-sided permutation p of the PR difference
    bootstrap: np.ndarray  # (B,) PR difference draws
    null: np.ndarray  # (P,) PR difference under domain-label permutation
    n_targets: int
    trials_per_part: int  # the smallest matched quarter


def interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite draws (NaN, NaN when there are none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """Two-sided ``(1 + #{|null| >= |observed|}) / (1 + P)``; a draw without a value
    counts as extreme (only ever makes p larger)."""
    null = np.asarray(null, dtype=np.float64)
    extreme = ~np.isfinite(null) | (np.abs(null) >= abs(observed) - tolerance(observed))
    return float((1 + extreme.sum()) / (1 + null.size))


def _pr(K: np.ndarray, idx: tuple[np.ndarray, np.ndarray], w: np.ndarray) -> np.ndarray:
    """(2, D): unbiased-terms PR of vision and imagery per draw (terms averaged over the
    draw's splits before the ratio, which steadies it)."""
    out = []
    for i in idx:
        num, den = pr_terms(part_grams(K, i, w))  # (D, S)
        out.append(ratio_pr(num.mean(axis=1), den.mean(axis=1)))
    return np.stack(out)


def clipped_spectrum(K: np.ndarray, target: np.ndarray, imagery: np.ndarray,
                     n_splits: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Descriptive: the clipped half-split signal spectrum of each domain (matched
    counts), normalised and averaged over splits, with its PR and n90. Clipping the
    negative (noise) eigenvalues leaves the positive noise ones, so a weak signal looks
    flat: PR and n90 of this spectrum are biased upwards, more so for the weaker
    domain."""
    cells = TrialCells.of(target, imagery)
    h, _ = cells.half_sizes(matched=True)
    w = part_weights(h, 2)
    idx = draw_parts(cells, 1, n_splits, np.random.default_rng(seed))
    out: dict[str, np.ndarray] = {}
    for name, i in zip(("vision", "imagery"), idx, strict=True):
        lam = signal_spectrum(half_grams(K, i, w))[0]  # (S, 2T)
        total = lam.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"spectrum_{name}"] = np.nanmean(np.where(total > 0, lam / total, np.nan),
                                                 axis=0)
        out[f"pr_{name}"] = np.nanmean(participation_ratio(lam))
        out[f"n90_{name}"] = np.nanmean(n_components(lam))
    return out


def dimensionality_test(K: np.ndarray, target: np.ndarray, imagery: np.ndarray, *,
                        n_splits: int = 4, n_bootstrap: int = 1000,
                        n_permutations: int = 1000, seed: int = 0,
                        confidence: float = 0.95) -> Dimensionality:
    """Vision and imagery signal PR with bootstrap CIs and the permutation p of the
    imagery - vision difference (module docstring). ``K`` (n, n) trial Gram matrix of
    the patterns (``X X^T``), ``target`` (n,), ``imagery`` (n,) True for imagery; needs
    >= 4 trials per target and domain (four parts)."""
    K = np.asarray(K, dtype=np.float64)
    cells = TrialCells.of(target, imagery, min_trials=4)
    h, _ = cells.half_sizes(matched=True, n_parts=4)
    rng = np.random.default_rng(seed)
    pr = _pr(K, draw_parts(cells, 1, n_splits, rng, n_parts=4), part_weights(h, 4))
    # one split per bootstrap draw: averaging splits that each resample anew would
    # average the resampling noise away too (CIs several times too narrow); a single
    # split adds the split noise instead, so the CI errs wide
    bpr = _pr(K, draw_parts(cells, n_bootstrap, 1, rng, n_parts=4, bootstrap=True),
              part_weights(h, 4, bootstrap=True))
    ppr = _pr(K, draw_parts(cells, n_permutations, n_splits, rng, n_parts=4,
                            permute=True), part_weights(h, 4))
    diff = float(pr[1, 0] - pr[0, 0])
    null = ppr[1] - ppr[0]
    boot = bpr[1] - bpr[0]
    clip = clipped_spectrum(K, target, imagery, n_splits, seed)
    return Dimensionality(
        pr_vision=float(pr[0, 0]), pr_imagery=float(pr[1, 0]),
        pr_clipped_vision=float(clip["pr_vision"]),
        pr_clipped_imagery=float(clip["pr_imagery"]),
        n90_vision=float(clip["n90_vision"]), n90_imagery=float(clip["n90_imagery"]),
        spectrum_vision=clip["spectrum_vision"], spectrum_imagery=clip["spectrum_imagery"],
        difference=diff, ci_vision=interval(bpr[0], confidence),
        ci_imagery=interval(bpr[1], confidence), ci_difference=interval(boot, confidence),
        p=permutation_p(diff, null) if np.isfinite(diff) else float("nan"),
        bootstrap=boot, null=null, n_targets=cells.n_targets,
        trials_per_part=int(h.min()))


def group_difference(values: Sequence[float], bootstraps: Sequence[np.ndarray],
                     nulls: Sequence[np.ndarray], confidence: float = 0.95
                     ) -> tuple[float, tuple[float, float], float]:
    """Mean over subjects, its CI (percentiles of the mean of the subjects' bootstrap
    draws: trials resampled within subjects, the subjects fixed) and the pooled
    permutation p (the mean of the subjects' independent null draws against the observed
    mean: a valid null of the mean, which can reach 1/(1+P) with any number of
    subjects)."""
    if not values:
        raise ValueError("no subjects")
    n_b = min(len(b) for b in bootstraps)
    n_p = min(len(n) for n in nulls)
    boot = np.mean([np.asarray(b[:n_b], dtype=np.float64) for b in bootstraps], axis=0)
    null = np.mean([np.asarray(n[:n_p], dtype=np.float64) for n in nulls], axis=0)
    mean = float(np.mean(values))
    return mean, interval(boot, confidence), permutation_p(mean, null)
