"""Semantic-structural dissociation: which target families does imagery keep?

A multi-target decoder predicts several target families of one trial (a semantic
embedding; structural ones: downsampled pixels, low-level image features, autoencoder
latents). Each family is scored on single trials by 2-way identification against the
gallery of the session's targets (chance 0.5): ``scores`` (F, n). For each family:

* vision and imagery identification: the mean over targets of each target's mean trial
  score in that domain (targets weigh alike, whatever their trial counts; each trial is
  one repetition in both domains, so repetitions are matched);
* the preservation ratio ``(imagery - 0.5) / (vision - 0.5)`` and the imagery gap
  ``1 - ratio``;

and the **semantic-structural index** ``SSI = mean gap of the structural families - mean
gap of the semantic ones``: positive when imagery loses more of an image's structure than
of its meaning, negative when it keeps structure better.

Uncertainty: a bootstrap that resamples trials with replacement within each (target,
domain) cell (percentile CI of the SSI), and a permutation test that, within each target,
swaps the domain labels of its trials (the counts per domain kept). Under that null a
target's vision and imagery trials are exchangeable and every family's gap is 0 up to
noise. The permuted statistic is not the SSI itself: swapping labels mixes imagery trials
into the vision mean, which shrinks the ratio's denominator ``vision - 0.5`` by a factor
of about three and inflates the null spread of the SSI far beyond its sampling spread
(a valid but powerless test). The test statistic ``T`` is the SSI with each family's
denominator replaced by a label-free one, the family's mean score over all of a target's
trials (both domains) minus chance, averaged over targets: it does not change under the
permutation, so observed and permuted statistics share one scale, the test stays exact,
and ``T`` has the SSI's sign (each family's term ``(vision - imagery) / (pooled - 0.5)``
is a decreasing function of its ratio, 0 at ratio 1). The SSI's own permutation p is
reported too (``p_ssi``). Both only re-average the per-trial scores (the gallery does
not depend on the labels), so thousands of draws take milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmri2img.eval.stats import tolerance

CHANCE = 0.5


@dataclass(frozen=True)
class Cells:
    """Trials sorted target-major into (target, vision) and (target, imagery) cells.

    ``order`` lists trial indices cell after cell (each target's vision trials, then its
    imagery trials); ``starts``/``sizes`` delimit the cells; ``is_imagery`` (C,) says
    which cells are imagery ones."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    is_imagery: np.ndarray
    n_targets: int

    @classmethod
    def of(cls, target: np.ndarray, imagery: np.ndarray) -> Cells:
        target = np.asarray(target)
        imagery = np.asarray(imagery, dtype=bool)
        if target.shape != imagery.shape or target.ndim != 1:
            raise ValueError("target and imagery must be 1-D arrays of one length")
        order, starts, sizes, kinds = [], [], [], []
        pos = 0
        targets = [t for t in np.unique(target)
                   if (imagery[target == t]).any() and (~imagery[target == t]).any()]
        if len(targets) < 2:
            raise ValueError("need at least 2 targets with both vision and imagery trials")
        for t in targets:
            for kind in (False, True):
                idx = np.flatnonzero((target == t) & (imagery == kind))
                order.append(idx)
                starts.append(pos)
                sizes.append(idx.size)
                kinds.append(kind)
                pos += idx.size
        return cls(np.concatenate(order), np.array(starts), np.array(sizes),
                   np.array(kinds), len(targets))

    def domain_means(self, scores: np.ndarray, draws: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(vision, imagery) identification per family, (F,) for the observed trials or
        (F, D) for ``draws`` (D, n_cells_trials) of trial indices laid out as ``order``."""
        s = np.asarray(scores, dtype=np.float64)
        idx = self.order[None, :] if draws is None else draws
        cell_sums = np.add.reduceat(s[:, idx], self.starts, axis=2)  # (F, D, C)
        cell_means = cell_sums / self.sizes
        vis = cell_means[:, :, ~self.is_imagery].mean(axis=2)
        img = cell_means[:, :, self.is_imagery].mean(axis=2)
        return (vis[:, 0], img[:, 0]) if draws is None else (vis, img)

    def pooled_means(self, scores: np.ndarray) -> np.ndarray:
        """(F,) each family's mean over targets of the mean of all of a target's trials,
        both domains: unchanged when domain labels are swapped within targets."""
        s = np.asarray(scores, dtype=np.float64)
        sums = np.add.reduceat(s[:, self.order], self.starts, axis=1)  # (F, C)
        per_target = (sums[:, 0::2] + sums[:, 1::2]) / (self.sizes[0::2] + self.sizes[1::2])
        return per_target.mean(axis=1)

    def bootstrap_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, len(order)) trial indices resampled with replacement within each cell."""
        out = np.empty((n, self.order.size), dtype=np.int64)
        for start, size in zip(self.starts, self.sizes, strict=True):
            members = self.order[start:start + size]
            out[:, start:start + size] = members[rng.integers(0, size, (n, size))]
        return out

    def permutation_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, len(order)) trial indices with each target's trials shuffled across its
        two cells (domain labels swapped within target, counts kept)."""
        out = np.empty((n, self.order.size), dtype=np.int64)
        for k in range(self.n_targets):
            start = self.starts[2 * k]
            size = self.sizes[2 * k] + self.sizes[2 * k + 1]
            block = np.tile(self.order[start:start + size], (n, 1))
            out[:, start:start + size] = rng.permuted(block, axis=1)
        return out


def preservation_ratio(vision: np.ndarray, imagery: np.ndarray,
                       chance: float = CHANCE) -> np.ndarray:
    """``(imagery - chance) / (vision - chance)``; NaN where vision is not above chance
    (the ratio of two noise terms means nothing)."""
    vis = np.asarray(vision, dtype=np.float64) - chance
    img = np.asarray(imagery, dtype=np.float64) - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(vis > 0, img / vis, np.nan)


def ssi_of(vision: np.ndarray, imagery: np.ndarray, structural: Sequence[bool],
           chance: float = CHANCE) -> np.ndarray:
    """SSI from per-family vision and imagery scores, (F,) or (F, D) -> scalar or (D,)."""
    mask = np.asarray(structural, dtype=bool)
    if not mask.any() or mask.all():
        raise ValueError("the SSI needs at least one structural and one semantic family")
    gap = 1.0 - preservation_ratio(vision, imagery, chance)
    return gap[mask].mean(axis=0) - gap[~mask].mean(axis=0)


def contrast_statistic(vision: np.ndarray, imagery: np.ndarray, pooled: np.ndarray,
                       structural: Sequence[bool], chance: float = CHANCE) -> np.ndarray:
    """The permutation test's ``T``: the SSI with label-free denominators (module
    docstring); ``vision``/``imagery`` (F,) or (F, D), ``pooled`` (F,)."""
    mask = np.asarray(structural, dtype=bool)
    den = np.asarray(pooled, dtype=np.float64) - chance
    if vision.ndim == 2:
        den = den[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(den > 0, (vision - imagery) / den, np.nan)
    return term[mask].mean(axis=0) - term[~mask].mean(axis=0)


@dataclass
class Dissociation:
    families: list[str]
    structural: np.ndarray  # (F,) bool
    vision: np.ndarray  # (F,)
    imagery: np.ndarray  # (F,)
    ratio: np.ndarray  # (F,)
    gap: np.ndarray  # (F,)
    gap_ci: np.ndarray  # (F, 2)
    ssi: float
    ci: tuple[float, float]
    p: float  # permutation p of T
    t: float  # the test statistic T
    p_ssi: float  # permutation p of the SSI itself (conservative)
    bootstrap: np.ndarray  # (B,) SSI draws (NaN where a family's vision fell to chance)
    null: np.ndarray  # (P,) T under domain-label permutation
    n_targets: int
    n_vision: int
    n_imagery: int


def _nan_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """Two-sided: (1 + #{|null| >= |observed|}) / (1 + P); a null draw without a value
    (vision at chance) counts as extreme, which can only make p larger."""
    extreme = ~np.isfinite(null) | (np.abs(null) >= abs(observed) - tolerance(observed))
    return float((1 + extreme.sum()) / (1 + null.size))


def dissociation_test(scores: np.ndarray, target: np.ndarray, imagery: np.ndarray,
                      families: Sequence[str], structural: Sequence[bool], *,
                      n_bootstrap: int = 1000, n_permutations: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> Dissociation:
    """Per-family identification, ratios and gaps, and the SSI with its bootstrap CI and
    permutation p (module docstring). ``scores`` (F, n) per-trial 2-way scores,
    ``target`` (n,) target labels, ``imagery`` (n,) True for imagery trials."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(families) or len(structural) != len(families):
        raise ValueError(f"scores must be (F={len(families)}, n), got {s.shape}")
    cells = Cells.of(target, imagery)
    mask = np.asarray(structural, dtype=bool)
    vis, img = cells.domain_means(s)
    ratio = preservation_ratio(vis, img)
    observed = float(ssi_of(vis, img, mask))
    rng = np.random.default_rng(seed)
    bvis, bimg = cells.domain_means(s, cells.bootstrap_draws(n_bootstrap, rng))
    bgap = 1.0 - preservation_ratio(bvis, bimg)
    boot = bgap[mask].mean(axis=0) - bgap[~mask].mean(axis=0)
    pvis, pimg = cells.domain_means(s, cells.permutation_draws(n_permutations, rng))
    pooled = cells.pooled_means(s)
    t = float(contrast_statistic(vis, img, pooled, mask))
    null = contrast_statistic(pvis, pimg, pooled, mask)
    n_img = int(cells.sizes[cells.is_imagery].sum())
    return Dissociation(
        families=list(families), structural=mask, vision=vis, imagery=img, ratio=ratio,
        gap=1.0 - ratio, gap_ci=np.array([_nan_interval(g, confidence) for g in bgap]),
        ssi=observed, ci=_nan_interval(boot, confidence), p=permutation_p(t, null), t=t,
        p_ssi=permutation_p(observed, ssi_of(pvis, pimg, mask)), bootstrap=boot, null=null,
        n_targets=cells.n_targets,
        n_vision=int(cells.order.size - n_img), n_imagery=n_img)


def group_ssi(values: Sequence[float], bootstraps: Sequence[np.ndarray],
              statistics: Sequence[float], nulls: Sequence[np.ndarray],
              confidence: float = 0.95) -> tuple[float, tuple[float, float], float]:
    """Mean SSI over subjects, its CI (percentiles of the mean of the subjects' bootstrap
    draws: trial sampling within subjects, the subjects fixed) and the pooled permutation
    p (the mean of the subjects' test statistics ``T`` against the mean of their
    independent null draws)."""
    if not values or len(values) != len(statistics):
        raise ValueError("need one SSI and one T per subject")
    mean = float(np.mean(values))
    n_b = min(len(b) for b in bootstraps)
    n_p = min(len(n) for n in nulls)
    boot = np.mean([np.asarray(b[:n_b], dtype=np.float64) for b in bootstraps], axis=0)
    null = np.mean([np.asarray(n[:n_p], dtype=np.float64) for n in nulls], axis=0)
    return mean, _nan_interval(boot, confidence), permutation_p(float(np.mean(statistics)),
                                                                null)
