"""Per-item evaluation metrics for decoded embeddings (arrays in, arrays out; no I/O).

Every metric returns one value per prediction so that callers can average, bootstrap
over items, or group single trials by target without re-deriving anything. Inputs are
converted to float64 so results do not depend on the dtype a decoder happened to emit.

Conventions, following the field (see ``docs/REFERENCE.md`` of the shared notes):

* **Retrieval** (MindEye1/2) uses cosine similarity. Forward ("image retrieval"): is a
  brain prediction's own target among the top-k of a pool of candidate targets?
  Backward ("brain retrieval"): is a target's own brain prediction among the top-k of a
  pool of predictions? Pools hold 300 candidates and results are averaged over 30 random
  pools; chance for top-k is ``min(k, pool) / pool``.
* **2-way identification** (MindEye, NSD-Imagery, MIRAGE) uses Pearson correlation: the
  score of prediction i is the fraction of the other N-1 candidates j with
  ``corr(pred_i, target_j) < corr(pred_i, target_i)``; chance 0.5.
* **Ties** are resolved by their expectation under random tie-breaking (a tie counts
  half in 2-way; in top-k the hit probability is spread over the tied ranks), so
  degenerate predictions (e.g. all zeros) score exactly chance rather than 0 or 1 by the
  accident of a sort order. Two similarities closer than :data:`TIE_TOLERANCE` count as
  tied, which makes results robust to the last-bit noise of matrix products.
* A zero vector (cosine) or a constant vector (Pearson) has no direction; it is given
  similarity 0 to everything, i.e. it is uninformative rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)
"""Top-k values reported by MindEye-style retrieval tables."""

DEFAULT_POOL_SIZE = 300
"""Candidates per retrieval pool (MindEye 300-way protocol)."""

DEFAULT_N_POOLS = 30
"""Random pools averaged per item (MindEye protocol)."""

TIE_TOLERANCE = 1e-10
"""Similarities (cosine or Pearson, both in [-1, 1]) closer than this count as tied."""

# A row whose centred norm is below this fraction of its raw norm is treated as constant:
# centring a constant float row can leave rounding residue that would otherwise be
# normalised into a spurious random direction.
_CONSTANT_ROW_RTOL = 1e-12


# ----------------------------------------------------------------------------- helpers


def _as_matrix(x: ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items x dims), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_same_dims(a: FloatArray, b: FloatArray, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} has {a.shape[1]} dims but {names[1]} has {b.shape[1]}"
        )


def _check_paired(a: FloatArray, b: FloatArray, names: tuple[str, str]) -> None:
    _check_same_dims(a, b, names)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"paired inputs need one {names[1]} row per {names[0]} row; "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def _as_index(index: ArrayLike, n: int, m: int) -> IntArray:
    idx = np.asarray(index)
    if idx.shape != (n,):
        raise ValueError(f"true_index must have shape ({n},), got {idx.shape}")
    if idx.dtype.kind not in "iu":
        if idx.dtype.kind == "f" and np.all(idx == np.round(idx)):
            idx = idx.astype(np.int64)
        else:
            raise ValueError(f"true_index must hold integer row numbers, got {idx.dtype}")
    idx = idx.astype(np.int64)
    if n and (idx.min() < 0 or idx.max() >= m):
        raise ValueError(f"true_index values must lie in [0, {m}) (the gallery rows)")
    return idx


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    return out


def _unit_rows(a: FloatArray) -> FloatArray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def _centred_unit_rows(a: FloatArray) -> FloatArray:
    centred = a - a.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    raw = np.linalg.norm(a, axis=1, keepdims=True)
    ok = norms > _CONSTANT_ROW_RTOL * raw
    return np.divide(centred, norms, out=np.zeros_like(a), where=ok & (norms > 0))


def _counts_against(scores: FloatArray, ref: FloatArray) -> tuple[IntArray, IntArray]:
    """Per row i: how many entries are below ``ref[i]`` and how many are at most it.

    "Below" and "at most" use :data:`TIE_TOLERANCE`, so ``at_most - below`` counts the
    entries tied with ``ref[i]`` (the reference entry itself included).
    """
    lo = (ref - TIE_TOLERANCE)[:, None]
    hi = (ref + TIE_TOLERANCE)[:, None]
    below = np.count_nonzero(scores < lo, axis=1).astype(np.int64)
    at_most = np.count_nonzero(scores <= hi, axis=1).astype(np.int64)
    return below, at_most


def _pair_counts(scores: FloatArray) -> tuple[IntArray, IntArray]:
    """:func:`_counts_against` for every entry of every row at once (sort + search).

    Entry (i, j) gives the counts row i would have if column j were its true target.
    The thresholds are computed with the same floating-point operations as
    :func:`_counts_against`, so the diagonal agrees with it exactly.
    """
    n, m = scores.shape
    below = np.empty((n, m), dtype=np.int64)
    at_most = np.empty((n, m), dtype=np.int64)
    for i in range(n):
        row = scores[i]
        ordered = np.sort(row)
        below[i] = np.searchsorted(ordered, row - TIE_TOLERANCE, side="left")
        at_most[i] = np.searchsorted(ordered, row + TIE_TOLERANCE, side="right")
    return below, at_most


def _expected_hit(greater: ArrayLike, ties: ArrayLike, k: int) -> FloatArray:
    """P(true candidate ranks in the top k) when its ties are broken uniformly at random.

    With ``greater`` candidates strictly better and ``ties`` others tied, the true
    candidate's 0-based rank is uniform on ``greater .. greater + ties``.
    """
    g = np.asarray(greater, dtype=np.float64)
    t = np.asarray(ties, dtype=np.float64)
    return np.clip((k - g) / (t + 1.0), 0.0, 1.0)


# --------------------------------------------------------------------- similarity


def _cosine_sims(a: FloatArray, b: FloatArray) -> FloatArray:
    out = _unit_rows(a) @ _unit_rows(b).T
    return np.clip(out, -1.0, 1.0, out=out)


def _pearson_sims(a: FloatArray, b: FloatArray) -> FloatArray:
    out = _centred_unit_rows(a) @ _centred_unit_rows(b).T
    return np.clip(out, -1.0, 1.0, out=out)


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: shape (len a, len b).

    Zero rows have similarity 0 with everything.
    """
    am = _as_matrix(a, "a")
    bm = _as_matrix(b, "b")
    _check_same_dims(am, bm, ("a", "b"))
    return _cosine_sims(am, bm)


def pearson_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Pearson correlation of every row of ``a`` with every row of ``b`` (across dims).

    Constant rows have correlation 0 with everything.
    """
    am = _as_matrix(a, "a")
    bm = _as_matrix(b, "b")
    _check_same_dims(am, bm, ("a", "b"))
    return _pearson_sims(am, bm)


def cosine_per_item(pred: ArrayLike, target: ArrayLike) -> FloatArray:
    """Cosine similarity of each prediction with its own target row: shape (n,).

    There is no fixed chance level: for isotropic random predictions it is 0, but real
    embedding spaces (CLIP) have a shared mean direction, so even unrelated pairs score
    well above 0. Compare against a permutation null instead.
    """
    p = _as_matrix(pred, "pred")
    t = _as_matrix(target, "target")
    _check_paired(p, t, ("pred", "target"))
    return np.clip(np.einsum("ij,ij->i", _unit_rows(p), _unit_rows(t)), -1.0, 1.0)


# ---------------------------------------------------------------------- retrieval


def _pooled_hits(
    greater: IntArray,
    ties: IntArray,
    n_candidates: int,
    ks: tuple[int, ...],
    pool_size: int,
    n_pools: int,
    seed: int,
) -> dict[int, FloatArray]:
    """Average top-k hit over random pools, sampling only what decides the outcome.

    A pool is the true candidate plus ``pool - 1`` distractors drawn uniformly without
    replacement from the other ``n_candidates - 1``. Whether the true candidate is in
    the pool's top k depends only on how many of the drawn distractors beat it and how
    many tie with it, and those counts follow a (sequential multivariate)
    hypergeometric law. Drawing the counts is exactly equivalent in distribution to
    drawing explicit pools, and costs O(n_pools * n) instead of O(n_pools * n * pool).
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    if n_pools < 1:
        raise ValueError(f"n_pools must be >= 1, got {n_pools}")
    pool = min(int(pool_size), n_candidates)
    n_distractors = pool - 1
    others = n_candidates - 1
    rng = np.random.default_rng(seed)
    shape = (int(n_pools), greater.shape[0])
    drawn_greater = rng.hypergeometric(greater, others - greater, n_distractors, size=shape)
    drawn_ties = rng.hypergeometric(
        np.broadcast_to(ties, shape),
        np.broadcast_to(others - greater - ties, shape),
        n_distractors - drawn_greater,
    )
    return {k: _expected_hit(drawn_greater, drawn_ties, k).mean(axis=0) for k in ks}


def retrieval_hits(
    pred: ArrayLike,
    gallery: ArrayLike,
    true_index: ArrayLike,
    ks: Sequence[int] = DEFAULT_KS,
    pool_size: int = DEFAULT_POOL_SIZE,
    n_pools: int = DEFAULT_N_POOLS,
    seed: int = 0,
) -> dict[int, FloatArray]:
    """Forward (image) retrieval: per-item top-k hit rate over random candidate pools.

    Args:
        pred: (n, d) brain predictions, the queries.
        gallery: (m, d) candidate targets. It may be larger than ``n`` and several
            predictions may share a target (e.g. single trials), hence ``true_index``.
        true_index: (n,) row of ``gallery`` that is each prediction's own target.
        ks: top-k values to report.
        pool_size: candidates per pool, the true target included; capped at ``m``.
        n_pools: random pools per item.
        seed: seeds the pool draws; same inputs and seed give the same result.

    Returns:
        ``{k: (n,) array}``: for each item, the fraction of its pools in which its true
        target is among the k candidates most cosine-similar to the prediction.

    Every item is scored in every pool draw: a pool for item i is its own target plus
    ``pool - 1`` distractors drawn uniformly from the other gallery rows, independently
    per item. This gives the same per-item expectation as MindEye's protocol (random
    subsets of the test set, each member scored against the others), but no item is
    left unscored by chance and the Monte Carlo noise is lower. When the pool is the
    whole gallery every pool is identical and the result is deterministic. Top-k with
    ``k >= pool`` is always 1. Chance is ``min(k, pool) / pool``.
    """
    p = _as_matrix(pred, "pred")
    g = _as_matrix(gallery, "gallery")
    _check_same_dims(p, g, ("pred", "gallery"))
    idx = _as_index(true_index, p.shape[0], g.shape[0])
    ks_t = _check_ks(ks)
    return _retrieval_from_sims(_cosine_sims(p, g), idx, ks_t, pool_size, n_pools, seed)


def _retrieval_from_sims(
    sims: FloatArray,
    idx: IntArray,
    ks: tuple[int, ...],
    pool_size: int,
    n_pools: int,
    seed: int,
) -> dict[int, FloatArray]:
    """:func:`retrieval_hits` from a precomputed (queries x candidates) similarity matrix."""
    below, at_most = _counts_against(sims, sims[np.arange(sims.shape[0]), idx])
    greater = sims.shape[1] - at_most
    ties = at_most - below - 1  # the true candidate itself is not a competitor
    return _pooled_hits(greater, ties, sims.shape[1], ks, pool_size, n_pools, seed)


def brain_retrieval_hits(
    pred: ArrayLike,
    targets: ArrayLike,
    ks: Sequence[int] = DEFAULT_KS,
    pool_size: int = DEFAULT_POOL_SIZE,
    n_pools: int = DEFAULT_N_POOLS,
    seed: int = 0,
) -> dict[int, FloatArray]:
    """Backward (brain) retrieval for the paired case: row i of ``pred`` pairs with row i
    of ``targets``, and the n targets are distinct (e.g. repetition-averaged test betas).

    Each target embedding is the query and the n predictions are the candidates; it is
    :func:`retrieval_hits` with the roles swapped, so the pool is capped at ``n`` and
    chance is ``min(k, pool) / pool``. Returns ``{k: (n,) array}`` indexed by pair.
    Undefined when several predictions share a target (which one is "its own"?), so it
    is not offered for single trials.
    """
    p = _as_matrix(pred, "pred")
    t = _as_matrix(targets, "targets")
    _check_paired(p, t, ("pred", "targets"))
    return retrieval_hits(t, p, np.arange(p.shape[0]), ks, pool_size, n_pools, seed)


# ------------------------------------------------------------------------ two-way


def two_way_per_item(
    pred: ArrayLike, targets: ArrayLike, true_index: ArrayLike | None = None
) -> FloatArray:
    """2-way identification score of each prediction, Pearson-based: shape (n,).

    Paired case (``true_index=None``): ``targets`` has one row per prediction and row i
    is prediction i's true target. Score i is the fraction of the other N-1 targets j
    with ``corr(pred_i, target_j) < corr(pred_i, target_i)``, ties counting half. The
    mean over items is the MindEye / NSD-Imagery / MIRAGE number (theirs counts ties as
    failures, which only matters for degenerate inputs). Chance is 0.5.

    Gallery case: ``targets`` is a gallery of m candidates and ``true_index`` (n,) names
    each prediction's row; the comparison set is the other m-1 gallery rows. Use this for
    single trials that share targets (passing repeated target rows as a paired set would
    make a trial compete against copies of its own target).

    Pearson makes the score invariant to adding a constant to, or positively scaling,
    a prediction (or target) row.
    """
    p = _as_matrix(pred, "pred")
    t = _as_matrix(targets, "targets")
    _check_same_dims(p, t, ("pred", "targets"))
    if true_index is None:
        _check_paired(p, t, ("pred", "targets"))
        idx = np.arange(p.shape[0])
    else:
        idx = _as_index(true_index, p.shape[0], t.shape[0])
    m = t.shape[0]
    if m < 2:
        raise ValueError("2-way identification needs at least 2 targets")
    return _two_way_from_corr(_pearson_sims(p, t), idx)


def _two_way_from_corr(corr: FloatArray, idx: IntArray) -> FloatArray:
    below, at_most = _counts_against(corr, corr[np.arange(corr.shape[0]), idx])
    ties = at_most - below - 1  # the true target itself is not a competitor
    return (below + 0.5 * ties) / (corr.shape[1] - 1)


# ------------------------------------------------------------ pair-decomposable metrics


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
    p = _as_matrix(pred, "pred")
    t = _as_matrix(targets, "targets")
    _check_paired(p, t, ("pred", "targets"))
    return p, t


def _cosine_pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
    p, t = _paired_matrices(pred, targets)
    return _cosine_sims(p, t)


def _two_way_pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
    p, t = _paired_matrices(pred, targets)
    n = p.shape[0]
    if n < 2:
        raise ValueError("2-way identification needs at least 2 targets")
    below, at_most = _pair_counts(_pearson_sims(p, t))
    return (below + 0.5 * (at_most - below - 1)) / (n - 1)


def top_k_metric(k: int) -> PairwiseMetric:
    """Forward top-k retrieval against *all* n paired targets (n-way, no random pools).

    Deterministic, which is what a permutation test wants; chance is ``min(k, n) / n``
    and therefore depends on n, so ``chance`` is left unset.
    """
    (kk,) = _check_ks((k,))

    def pairs(pred: ArrayLike, targets: ArrayLike) -> FloatArray:
        p, t = _paired_matrices(pred, targets)
        below, at_most = _pair_counts(_cosine_sims(p, t))
        return _expected_hit(p.shape[0] - at_most, at_most - below - 1, kk)

    return PairwiseMetric(name=f"retrieval_top{kk}_nway", pair_scores=pairs)


cosine_metric = PairwiseMetric(name="cosine", pair_scores=_cosine_pairs)
"""Mean cosine of paired rows; pair-decomposable for fast permutation tests."""

two_way_metric = PairwiseMetric(name="two_way", pair_scores=_two_way_pairs, chance=0.5)
"""Mean paired 2-way identification; pair-decomposable for fast permutation tests."""


# ------------------------------------------------------------------ chance, all-in-one


def chance_levels(
    ks: Sequence[int] = DEFAULT_KS,
    pool_size: int = DEFAULT_POOL_SIZE,
    gallery_size: int | None = None,
    n_predictions: int | None = None,
) -> dict[str, float | None]:
    """Chance level of each metric :func:`score_all` reports.

    Retrieval top-k: ``min(k, P) / P`` with P the effective pool, i.e. ``pool_size``
    capped at ``gallery_size`` (forward) or at ``n_predictions`` (backward; defaults to
    ``gallery_size``, the paired case). ``None`` sizes mean "at least ``pool_size``".
    2-way: 0.5. Cosine: ``None``, because it has no data-independent chance level
    (see :func:`cosine_per_item`).
    """
    ks_t = _check_ks(ks)
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")

    def effective(cap: int | None) -> int:
        return pool_size if cap is None else max(1, min(pool_size, int(cap)))

    forward = effective(gallery_size)
    backward = effective(n_predictions if n_predictions is not None else gallery_size)
    out: dict[str, float | None] = {"cosine": None}
    out.update({f"retrieval_top{k}": min(k, forward) / forward for k in ks_t})
    out.update({f"brain_retrieval_top{k}": min(k, backward) / backward for k in ks_t})
    out["two_way"] = 0.5
    return out


def score_all(
    pred: ArrayLike,
    target_rows: ArrayLike,
    gallery: ArrayLike,
    ks: Sequence[int] = DEFAULT_KS,
    pool_size: int = DEFAULT_POOL_SIZE,
    n_pools: int = DEFAULT_N_POOLS,
    seed: int = 0,
) -> dict[str, FloatArray]:
    """Every per-item metric for predictions against a gallery of target embeddings.

    Args:
        pred: (n, d) predictions.
        target_rows: (n,) row of ``gallery`` holding each prediction's own target.
        gallery: (m, d) target embeddings; the candidate set for forward retrieval and
            the comparison set for 2-way identification.
        ks, pool_size, n_pools, seed: see :func:`retrieval_hits`.

    Returns:
        ``{name: (n,) array}`` with names ``cosine``, ``retrieval_top{k}`` for each k,
        ``brain_retrieval_top{k}`` for each k, and ``two_way``.

    ``brain_retrieval_top{k}`` is included only when ``target_rows`` are all distinct
    (the paired case). Backward retrieval asks which prediction belongs to a target, which
    has no single answer when several predictions (single trials) share a target. Its
    candidates are the n predictions, so its pool is capped at n, not m. ``two_way`` uses
    the whole gallery as the comparison set (its m-1 other rows); it needs m >= 2.
    Chance levels: :func:`chance_levels`.
    """
    p = _as_matrix(pred, "pred")
    g = _as_matrix(gallery, "gallery")
    _check_same_dims(p, g, ("pred", "gallery"))
    idx = _as_index(target_rows, p.shape[0], g.shape[0])
    ks_t = _check_ks(ks)
    if g.shape[0] < 2:
        raise ValueError("score_all needs a gallery of at least 2 rows (2-way identification)")
    pools = (pool_size, n_pools, seed)
    sims = _cosine_sims(p, g)  # one product serves cosine and both retrieval directions
    out: dict[str, FloatArray] = {"cosine": sims[np.arange(p.shape[0]), idx].copy()}
    forward = _retrieval_from_sims(sims, idx, ks_t, *pools)
    out.update({f"retrieval_top{k}": v for k, v in forward.items()})
    if np.unique(idx).size == idx.size:
        # Backward: query = target idx[i], candidates = all predictions, answer = i.
        backward_sims = np.ascontiguousarray(sims[:, idx].T)
        backward = _retrieval_from_sims(backward_sims, np.arange(idx.size), ks_t, *pools)
        out.update({f"brain_retrieval_top{k}": v for k, v in backward.items()})
    out["two_way"] = _two_way_from_corr(_pearson_sims(p, g), idx)
    return out
