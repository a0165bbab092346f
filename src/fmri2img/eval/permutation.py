"""Permutation test against chance: does a decoder beat chance? Shuffle which target each
prediction is paired with and recompute the metric (arrays in, numbers out).

p-values are ``(1 + #{null >= observed}) / (1 + n_permutations)``, never 0 and valid
(conservative) for a random subset of permutations; deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fmri2img.eval.stats import PERMUTATION_CHUNK, FloatArray, check_count, tolerance


@runtime_checkable
class PairDecomposable(Protocol):
    """A metric that also exposes its (n, n) pair-score matrix.

    ``pair_scores(pred, targets)[i, j]`` is prediction i's score if target j were its
    own, and the metric of a pairing ``pi`` is ``mean_i S[i, pi(i)]``. Such metrics (see
    :class:`fmri2img.eval.pairwise.PairwiseMetric`) are permutation-tested in O(n) per
    permutation instead of re-running the metric.
    """

    def pair_scores(self, pred: ArrayLike, targets: ArrayLike) -> FloatArray: ...

    def __call__(self, pred: ArrayLike, targets: ArrayLike) -> float: ...


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test_vs_chance`.

    ``null`` holds the metric under each random re-pairing; its mean estimates the
    chance level empirically (useful for metrics such as cosine that have no
    theoretical one).
    """

    observed: float
    p_value: float
    null: FloatArray

    @property
    def null_mean(self) -> float:
        """Empirical chance level: the mean of the null distribution."""
        return float(self.null.mean())


def _permutation_blocks(
    rng: np.random.Generator, n: int, n_permutations: int
) -> Iterator[NDArray[np.int64]]:
    done = 0
    base = np.arange(n, dtype=np.int64)
    while done < n_permutations:
        size = min(PERMUTATION_CHUNK, n_permutations - done)
        yield rng.permuted(np.tile(base, (size, 1)), axis=1)
        done += size


def permutation_test_vs_chance(
    metric: Callable[[Any, Any], float],
    pred: ArrayLike,
    targets: ArrayLike,
    n_permutations: int = 1000,
    seed: int = 0,
    alternative: Literal["greater", "less"] = "greater",
) -> PermutationResult:
    """Permutation test that a decoder's metric beats chance.

    The null hypothesis is that predictions carry no information about *which* target
    they belong to. It is simulated by re-pairing: target rows are permuted, the metric
    is recomputed, and ``p = (1 + #{null >= observed}) / (1 + n_permutations)``
    (``<=`` with ``alternative="less"``, for lower-is-better metrics such as distances).

    Args:
        metric: ``metric(pred, targets) -> float``, row i of ``pred`` paired with row i
            of ``targets``. If it also has ``pair_scores`` (:class:`PairDecomposable`,
            e.g. ``metrics.two_way_metric``, ``metrics.cosine_metric``,
            ``metrics.top_k_metric(k)``), the pair-score matrix is computed once and
            each permutation costs O(n); the observed value is then ``mean(diag S)``.
        pred: (n, ...) predictions.
        targets: (n, ...) targets; rows are permuted along axis 0. Rows may repeat
            (single trials sharing a target); permuting them is still the right null.
        n_permutations: random permutations (the identity may be among them, which is
            allowed by the ``1 +`` form of the p-value).
        seed: random seed; both code paths draw the same permutations for a seed.
        alternative: ``"greater"`` (higher is better) or ``"less"``.
    """
    n_permutations = check_count(n_permutations, "n_permutations")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    p_arr = np.asarray(pred)
    t_arr = np.asarray(targets)
    n = p_arr.shape[0] if p_arr.ndim else 0
    if n < 2 or t_arr.ndim == 0 or t_arr.shape[0] != n:
        raise ValueError(
            f"pred and targets need the same number (>= 2) of rows; "
            f"got {p_arr.shape} and {t_arr.shape}"
        )
    rng = np.random.default_rng(seed)
    chunks: list[FloatArray] = []
    pair_fn = getattr(metric, "pair_scores", None)
    if callable(pair_fn):
        scores = np.asarray(pair_fn(p_arr, t_arr), dtype=np.float64)
        if scores.shape != (n, n):
            raise ValueError(f"pair_scores must return shape ({n}, {n}), got {scores.shape}")
        observed = float(np.mean(np.diagonal(scores)))
        rows = np.arange(n)[None, :]
        for perms in _permutation_blocks(rng, n, n_permutations):
            chunks.append(scores[rows, perms].mean(axis=1))
    else:
        observed = float(metric(p_arr, t_arr))
        for perms in _permutation_blocks(rng, n, n_permutations):
            chunks.append(np.array([float(metric(p_arr, t_arr[pi])) for pi in perms]))
    null = np.concatenate(chunks)
    tol = tolerance(observed)
    if alternative == "greater":
        extreme = np.count_nonzero(null >= observed - tol)
    else:
        extreme = np.count_nonzero(null <= observed + tol)
    p_value = (1.0 + extreme) / (1.0 + n_permutations)
    return PermutationResult(observed=observed, p_value=p_value, null=null)
