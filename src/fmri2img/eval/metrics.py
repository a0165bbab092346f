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

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from fmri2img.eval.similarity import (
    TIE_TOLERANCE,
    FloatArray,
    IntArray,
    as_index,
    as_matrix,
    check_ks,
    check_paired,
    check_same_dims,
    cosine_matrix,
    cosine_sims,
    counts_against,
    expected_hit,
    pearson_matrix,
    pearson_sims,
    unit_rows,
)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)
"""Top-k values reported by MindEye-style retrieval tables."""

DEFAULT_POOL_SIZE = 300
"""Candidates per retrieval pool (MindEye 300-way protocol)."""

DEFAULT_N_POOLS = 30
"""Random pools averaged per item (MindEye protocol)."""

# the similarity matrices and the tie tolerance are part of this module's face
__all__ = [
    "DEFAULT_KS",
    "DEFAULT_N_POOLS",
    "DEFAULT_POOL_SIZE",
    "TIE_TOLERANCE",
    "brain_retrieval_hits",
    "centred_cosine_per_item",
    "chance_levels",
    "cosine_matrix",
    "cosine_per_item",
    "pearson_matrix",
    "retrieval_hits",
    "score_all",
    "two_way_per_item",
]


def cosine_per_item(pred: ArrayLike, target: ArrayLike) -> FloatArray:
    """Cosine similarity of each prediction with its own target row: shape (n,).

    There is no fixed chance level: for isotropic random predictions it is 0, but real
    embedding spaces (CLIP) have a shared mean direction, so even unrelated pairs score
    well above 0. Compare against a permutation null instead.
    """
    p = as_matrix(pred, "pred")
    t = as_matrix(target, "target")
    check_paired(p, t, ("pred", "target"))
    return np.clip(np.einsum("ij,ij->i", unit_rows(p), unit_rows(t)), -1.0, 1.0)


def centred_cosine_per_item(pred: ArrayLike, target: ArrayLike, centre: ArrayLike) -> FloatArray:
    """Cosine of ``pred - centre`` with ``target - centre``, row by row: shape (n,).

    ``centre`` is the mean of the decoder's training targets, one (d,) vector or one row
    per prediction. Plain cosine credits any prediction near the mean target, since every
    target shares that direction; after centring, the mean-target prediction itself
    scores 0 (a zero vector has no direction) and only what a prediction says about its
    own target's departure from the mean counts.
    """
    p = as_matrix(pred, "pred")
    t = as_matrix(target, "target")
    check_paired(p, t, ("pred", "target"))
    c = np.asarray(centre, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] != p.shape[1] or c.shape[0] not in (1, p.shape[0]):
        raise ValueError(f"centre must have shape ({p.shape[1]},) or ({p.shape[0]}, "
                         f"{p.shape[1]}), got {np.shape(centre)}")
    dp, dt = p - c, t - c
    # a prediction at the centre up to rounding has no direction (score 0, not noise)
    scale = np.linalg.norm(c, axis=1, keepdims=True)
    for d in (dp, dt):
        d[np.linalg.norm(d, axis=1) <= 1e-6 * scale[:, 0]] = 0.0
    return np.clip(np.einsum("ij,ij->i", unit_rows(dp), unit_rows(dt)), -1.0, 1.0)


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
    return {k: expected_hit(drawn_greater, drawn_ties, k).mean(axis=0) for k in ks}


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
    p = as_matrix(pred, "pred")
    g = as_matrix(gallery, "gallery")
    check_same_dims(p, g, ("pred", "gallery"))
    idx = as_index(true_index, p.shape[0], g.shape[0])
    ks_t = check_ks(ks)
    return _retrieval_from_sims(cosine_sims(p, g), idx, ks_t, pool_size, n_pools, seed)


def _retrieval_from_sims(
    sims: FloatArray,
    idx: IntArray,
    ks: tuple[int, ...],
    pool_size: int,
    n_pools: int,
    seed: int,
) -> dict[int, FloatArray]:
    """:func:`retrieval_hits` from a precomputed (queries x candidates) similarity matrix."""
    below, at_most = counts_against(sims, sims[np.arange(sims.shape[0]), idx])
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
    p = as_matrix(pred, "pred")
    t = as_matrix(targets, "targets")
    check_paired(p, t, ("pred", "targets"))
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
    p = as_matrix(pred, "pred")
    t = as_matrix(targets, "targets")
    check_same_dims(p, t, ("pred", "targets"))
    if true_index is None:
        check_paired(p, t, ("pred", "targets"))
        idx = np.arange(p.shape[0])
    else:
        idx = as_index(true_index, p.shape[0], t.shape[0])
    m = t.shape[0]
    if m < 2:
        raise ValueError("2-way identification needs at least 2 targets")
    return _two_way_from_corr(pearson_sims(p, t), idx)


def _two_way_from_corr(corr: FloatArray, idx: IntArray) -> FloatArray:
    below, at_most = counts_against(corr, corr[np.arange(corr.shape[0]), idx])
    ties = at_most - below - 1  # the true target itself is not a competitor
    return (below + 0.5 * ties) / (corr.shape[1] - 1)


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
    ks_t = check_ks(ks)
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")

    def effective(cap: int | None) -> int:
        return pool_size if cap is None else max(1, min(pool_size, int(cap)))

    forward = effective(gallery_size)
    backward = effective(n_predictions if n_predictions is not None else gallery_size)
    out: dict[str, float | None] = {"cosine": None, "cosine_centred": None}
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
    centre: ArrayLike | None = None,
) -> dict[str, FloatArray]:
    """Every per-item metric for predictions against a gallery of target embeddings.

    Args:
        pred: (n, d) predictions.
        target_rows: (n,) row of ``gallery`` holding each prediction's own target.
        gallery: (m, d) target embeddings; the candidate set for forward retrieval and
            the comparison set for 2-way identification.
        ks, pool_size, n_pools, seed: see :func:`retrieval_hits`.
        centre: the mean of the decoder's training targets ((d,) or (n, d)); adds
            ``cosine_centred`` (:func:`centred_cosine_per_item`).

    Returns:
        ``{name: (n,) array}`` with names ``cosine``, ``retrieval_top{k}`` for each k,
        ``brain_retrieval_top{k}`` for each k, and ``two_way`` (and ``cosine_centred``).

    ``brain_retrieval_top{k}`` is included only when ``target_rows`` are all distinct
    (the paired case). Backward retrieval asks which prediction belongs to a target, which
    has no single answer when several predictions (single trials) share a target. Its
    candidates are the n predictions, so its pool is capped at n, not m. ``two_way`` uses
    the whole gallery as the comparison set (its m-1 other rows); it needs m >= 2.
    Chance levels: :func:`chance_levels`.
    """
    p = as_matrix(pred, "pred")
    g = as_matrix(gallery, "gallery")
    check_same_dims(p, g, ("pred", "gallery"))
    idx = as_index(target_rows, p.shape[0], g.shape[0])
    ks_t = check_ks(ks)
    if g.shape[0] < 2:
        raise ValueError("score_all needs a gallery of at least 2 rows (2-way identification)")
    pools = (pool_size, n_pools, seed)
    sims = cosine_sims(p, g)  # one product serves cosine and both retrieval directions
    out: dict[str, FloatArray] = {"cosine": sims[np.arange(p.shape[0]), idx].copy()}
    forward = _retrieval_from_sims(sims, idx, ks_t, *pools)
    out.update({f"retrieval_top{k}": v for k, v in forward.items()})
    if np.unique(idx).size == idx.size:
        # Backward: query = target idx[i], candidates = all predictions, answer = i.
        backward_sims = np.ascontiguousarray(sims[:, idx].T)
        backward = _retrieval_from_sims(backward_sims, np.arange(idx.size), ks_t, *pools)
        out.update({f"brain_retrieval_top{k}": v for k, v in backward.items()})
    out["two_way"] = _two_way_from_corr(pearson_sims(p, g), idx)
    if centre is not None:
        out["cosine_centred"] = centred_cosine_per_item(p, g[idx], centre)
    return out
