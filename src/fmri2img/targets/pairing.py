"""Pairs of images from two stimulus sets (THINGS and NSD) by embedding similarity, and
cluster labels of those pairs (pure numerics: arrays in, arrays out).

The EEG-fMRI alignment needs pairs of images that look alike, one seen in EEG, one in
fMRI. :func:`greedy_pairs` matches them one-to-one: the most similar pair first, then the
most similar pair among images not used yet, and so on. The full similarity matrix of the
real sets (16,740 x 10,000 in float64: 1.3 GB) is never held at once; it is scored block by
block and only the best ``n_pairs * candidate_factor`` scores are kept, which is all a
greedy match of ``n_pairs`` can use unless the best images are shared by very many
candidates (then fewer pairs come back, never wrong ones).

:func:`cluster_labels` gives each pair the K-means cluster of its first member, computed
on both members' raw embeddings (as Brain2Image did), for the prototype loss.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.cluster import KMeans

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _matrix(x: ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (items, dims) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _unit(a: FloatArray) -> FloatArray:
    # a zero row has no direction: cosine 0 with everything, rather than NaN
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def _keep_top(scores: FloatArray, ia: IntArray, ib: IntArray, c: int
              ) -> tuple[FloatArray, IntArray, IntArray]:
    """The ``c`` best candidates by (score descending, ia, ib ascending).

    Ties at the cut are decided by the indices, not by argpartition's internal order, so
    the kept set is the same whichever blocks the candidates came from.
    """
    if scores.size <= c:
        return scores, ia, ib
    cut = scores[np.argpartition(-scores, c - 1)[c - 1]]
    above = scores > cut
    tied = np.flatnonzero(scores == cut)
    tied = tied[np.lexsort((ib[tied], ia[tied]))][: c - int(above.sum())]
    keep = np.concatenate([np.flatnonzero(above), tied])
    return scores[keep], ia[keep], ib[keep]


def top_candidates(a: ArrayLike, b: ArrayLike, n_keep: int, block: int = 4096
                   ) -> tuple[IntArray, IntArray, FloatArray]:
    """(ia, ib, score) of the ``n_keep`` highest cosines between rows of ``a`` and ``b``,
    best first (ties by ia, then ib), scored ``block`` rows of ``a`` at a time."""
    am, bm = _matrix(a, "a"), _matrix(b, "b")
    if am.shape[1] != bm.shape[1]:
        raise ValueError(f"a has {am.shape[1]} dims but b has {bm.shape[1]}")
    if n_keep < 1 or block < 1:
        raise ValueError(f"n_keep and block must be >= 1, got {n_keep} and {block}")
    au, bu = _unit(am), _unit(bm)
    m = bu.shape[0]
    kept_s = np.empty(0, dtype=np.float64)
    kept_a = np.empty(0, dtype=np.int64)
    kept_b = np.empty(0, dtype=np.int64)
    for start in range(0, au.shape[0], block):
        sims = au[start:start + block] @ bu.T
        flat = sims.ravel()
        if kept_s.size >= n_keep:
            # only entries reaching the current cut can enter the list; testing them
            # first avoids a partition of the whole block in most blocks
            idx = np.flatnonzero(flat >= kept_s.min())
        elif flat.size > n_keep:
            cut = np.partition(flat, flat.size - n_keep)[flat.size - n_keep]
            idx = np.flatnonzero(flat >= cut)
        else:
            idx = np.arange(flat.size)
        rows, cols = np.divmod(idx, m)
        kept_s, kept_a, kept_b = _keep_top(
            np.concatenate([kept_s, flat[idx]]),
            np.concatenate([kept_a, rows.astype(np.int64) + start]),
            np.concatenate([kept_b, cols.astype(np.int64)]), n_keep)
    order = np.lexsort((kept_b, kept_a, -kept_s))
    return kept_a[order], kept_b[order], kept_s[order]


def greedy_pairs(a: ArrayLike, b: ArrayLike, n_pairs: int, candidate_factor: int = 20,
                 block: int = 4096) -> tuple[IntArray, IntArray, FloatArray]:
    """One-to-one pairs ``(ia, ib, scores)`` of rows of ``a`` and ``b``, most similar first.

    Candidates are the ``n_pairs * candidate_factor`` highest cosines overall; they are
    taken in descending order (ties by row of ``a``, then of ``b``) and a pair is kept only
    when neither member has been used. Stops at ``n_pairs``; fewer come back when the
    candidates run out (a small ``candidate_factor`` with hub images that are everyone's
    nearest neighbour).
    """
    if int(n_pairs) != n_pairs or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs}")
    if int(candidate_factor) != candidate_factor or candidate_factor < 1:
        raise ValueError(f"candidate_factor must be a positive integer, got {candidate_factor}")
    n_pairs = int(n_pairs)
    ca, cb, cs = top_candidates(a, b, n_pairs * int(candidate_factor), block)
    used_a = np.zeros(int(ca.max()) + 1, dtype=bool)
    used_b = np.zeros(int(cb.max()) + 1, dtype=bool)
    keep: list[int] = []
    for k, (i, j) in enumerate(zip(ca.tolist(), cb.tolist(), strict=True)):
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        keep.append(k)
        if len(keep) == n_pairs:
            break
    if len(keep) < n_pairs:
        logger.warning("greedy_pairs: only %d of %d pairs from %d candidates; raise "
                       "candidate_factor for more", len(keep), n_pairs, ca.size)
    sel = np.asarray(keep, dtype=np.int64)
    return ca[sel], cb[sel], cs[sel]


def cluster_labels(a_emb: ArrayLike, b_emb: ArrayLike, k: int, seed: int) -> IntArray:
    """K-means cluster of each pair's ``a`` member, fitted on both members' embeddings.

    ``a_emb[i]`` and ``b_emb[i]`` are the raw embeddings of pair i's two images. Both
    members go into the fit (2n rows) so that the clusters describe the content of the
    pairs, not of one stimulus set; the label follows the ``a`` member, as Brain2Image
    did (the members of a pair are similar, so they mostly agree).
    """
    am, bm = _matrix(a_emb, "a_emb"), _matrix(b_emb, "b_emb")
    if am.shape != bm.shape:
        raise ValueError(f"a_emb and b_emb must hold one row per pair each, got shapes "
                         f"{am.shape} and {bm.shape}")
    n = am.shape[0]
    if int(k) != k or not 1 <= k <= 2 * n:
        raise ValueError(f"k must be an integer in [1, {2 * n}] (2 x pairs), got {k}")
    km = KMeans(n_clusters=int(k), random_state=int(seed), n_init=10)
    labels = km.fit_predict(np.vstack([am, bm]))
    return labels[:n].astype(np.int64)
