"""Pair-decomposable metrics: a metric that is the mean over items of a score of
(prediction i, target j), so that a permutation test computes one matrix and scores each
re-pairing in O(n) (:func:`fmri2img.eval.stats.permutation_test_vs_chance`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fmri2img.eval.similarity import (
    FloatArray,
    as_matrix,
    check_ks,
    check_paired,
    cosine_sims,
    expected_hit,
    pair_counts,
    pearson_sims,
)


@dataclass(frozen=True)
class PairwiseMetric:
    """A scalar metric that is the mean over items of a score of (prediction i, target j).

    ``pair_scores(pred, targets)`` returns the (n, n) matrix ``S`` whose entry (i, j) is
    prediction i's score *if* target j were its own, computed against the same set of
    targets. The metric is ``mean(diag(S))`` and, after re-pairing the targets by a
    permutation ``pi``, ``mean(S[i, pi(i)])``. That lets a permutation test compute one
    matrix and then score each permutation in O(n) (see
    :func:`fmri2img.eval.stats.permutation_test_vs_chance`).
    """

    name: str
    pair_scores: Callable[[ArrayLike, ArrayLike], FloatArray]
    chance: float | None = None

    def __call__(self, pred: ArrayLike, targets: ArrayLike) -> float:
        """The metric for the given pairing (row i with row i)."""
        return float(np.mean(np.diagonal(self.pair_scores(pred, targets))))


def _paired_matrices(pred: ArrayLike, targets: ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = as_matrix(pred, "pred")
    t = as_matrix(targets, "targets")
    check_paired(p, t, ("pred", "targets"))
    return p, t


def _cosine_pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
    p, t = _paired_matrices(pred, targets)
    return cosine_sims(p, t)


def _two_way_pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
    p, t = _paired_matrices(pred, targets)
    n = p.shape[0]
    if n < 2:
        raise ValueError("2-way identification needs at least 2 targets")
    below, at_most = pair_counts(pearson_sims(p, t))
    return (below + 0.5 * (at_most - below - 1)) / (n - 1)


def top_k_metric(k: int) -> PairwiseMetric:
    """Forward top-k retrieval against *all* n paired targets (n-way, no random pools).

    Deterministic, which is what a permutation test wants; chance is ``min(k, n) / n``
    and therefore depends on n, so ``chance`` is left unset.
    """
    (kk,) = check_ks((k,))

    def pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
        p, t = _paired_matrices(pred, targets)
        below, at_most = pair_counts(cosine_sims(p, t))
        return expected_hit(p.shape[0] - at_most, at_most - below - 1, kk)

    return PairwiseMetric(name=f"retrieval_top{kk}_nway", pair_scores=pairs)


cosine_metric = PairwiseMetric(name="cosine", pair_scores=_cosine_pairs)
"""Mean cosine of paired rows; pair-decomposable for fast permutation tests."""

two_way_metric = PairwiseMetric(name="two_way", pair_scores=_two_way_pairs, chance=0.5)
"""Mean paired 2-way identification; pair-decomposable for fast permutation tests."""
