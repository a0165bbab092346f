"""Similarity primitives shared by the metrics: input checks, unit rows, cosine and
Pearson similarity matrices, and tie-aware rank counts (arrays in, arrays out).

Inputs are converted to float64; a zero vector (cosine) or a constant vector (Pearson)
has similarity 0 to everything. Two similarities closer than :data:`TIE_TOLERANCE` count
as tied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

TIE_TOLERANCE = 1e-10
"""Similarities (cosine or Pearson, both in [-1, 1]) closer than this count as tied."""

# A row whose centred norm is below this fraction of its raw norm is treated as constant:
# centring a constant float row can leave rounding residue that would otherwise be
# normalised into a spurious random direction.
_CONSTANT_ROW_RTOL = 1e-12


def as_matrix(x: ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items x dims), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def check_same_dims(a: FloatArray, b: FloatArray, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} has {a.shape[1]} dims but {names[1]} has {b.shape[1]}"
        )


def check_paired(a: FloatArray, b: FloatArray, names: tuple[str, str]) -> None:
    check_same_dims(a, b, names)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"paired inputs need one {names[1]} row per {names[0]} row; "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def as_index(index: ArrayLike, n: int, m: int) -> IntArray:
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


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    return out


def unit_rows(a: FloatArray) -> FloatArray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def centred_unit_rows(a: FloatArray) -> FloatArray:
    centred = a - a.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    raw = np.linalg.norm(a, axis=1, keepdims=True)
    ok = norms > _CONSTANT_ROW_RTOL * raw
    return np.divide(centred, norms, out=np.zeros_like(a), where=ok & (norms > 0))


def counts_against(scores: FloatArray, ref: FloatArray) -> tuple[IntArray, IntArray]:
    """Per row i: how many entries are below ``ref[i]`` and how many are at most it.

    "Below" and "at most" use :data:`TIE_TOLERANCE`, so ``at_most - below`` counts the
    entries tied with ``ref[i]`` (the reference entry itself included).
    """
    lo = (ref - TIE_TOLERANCE)[:, None]
    hi = (ref + TIE_TOLERANCE)[:, None]
    below = np.count_nonzero(scores < lo, axis=1).astype(np.int64)
    at_most = np.count_nonzero(scores <= hi, axis=1).astype(np.int64)
    return below, at_most


def pair_counts(scores: FloatArray) -> tuple[IntArray, IntArray]:
    """:func:`counts_against` for every entry of every row at once (sort + search).

    Entry (i, j) gives the counts row i would have if column j were its true target.
    The thresholds are computed with the same floating-point operations as
    :func:`counts_against`, so the diagonal agrees with it exactly.
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


def expected_hit(greater: ArrayLike, ties: ArrayLike, k: int) -> FloatArray:
    """P(true candidate ranks in the top k) when its ties are broken uniformly at random.

    With ``greater`` candidates strictly better and ``ties`` others tied, the true
    candidate's 0-based rank is uniform on ``greater .. greater + ties``.
    """
    g = np.asarray(greater, dtype=np.float64)
    t = np.asarray(ties, dtype=np.float64)
    return np.clip((k - g) / (t + 1.0), 0.0, 1.0)


# --------------------------------------------------------------------- similarity


def cosine_sims(a: FloatArray, b: FloatArray) -> FloatArray:
    out = unit_rows(a) @ unit_rows(b).T
    return np.clip(out, -1.0, 1.0, out=out)


def pearson_sims(a: FloatArray, b: FloatArray) -> FloatArray:
    out = centred_unit_rows(a) @ centred_unit_rows(b).T
    return np.clip(out, -1.0, 1.0, out=out)


def _two_matrices(a: ArrayLike, b: ArrayLike) -> tuple[FloatArray, FloatArray]:
    am, bm = as_matrix(a, "a"), as_matrix(b, "b")
    check_same_dims(am, bm, ("a", "b"))
    return am, bm


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: shape (len a, len b).

    Zero rows have similarity 0 with everything.
    """
    return cosine_sims(*_two_matrices(a, b))


def pearson_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Pearson correlation of every row of ``a`` with every row of ``b`` (across dims).

    Constant rows have correlation 0 with everything.
    """
    return pearson_sims(*_two_matrices(a, b))
