"""Shared linear algebra of the ridge solvers: symmetric products built from their lower
triangle, column chunks of centred data, and the two factorisations of ``K + alpha I``
(one eigendecomposition for all alphas, or one Cholesky factor per alpha) with the cost
model that chooses between them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from fmri2img.models.ridge.backends import Ops

log = logging.getLogger(__name__)

# Time of a symmetric eigendecomposition with eigenvectors, in GEMM flops per n^3. Its
# tridiagonal reduction does half its work as matrix-vector products that stream the whole
# matrix from memory: on the 2-core AVX-512 VM of the benchmark (MKL, float32, n = 9000) it
# took 37 s, the time of ~13.6 n^3 GEMM flops. Only used to choose "eigh" or "cholesky".
EIGH_COST_PER_N3 = 13.6
# Nominal flop count of the same operation (tridiagonal reduction 4/3 n^3, back
# transformation 2 n^3, divide and conquer ~ n^3), reported in the flop estimate.
EIGH_FLOPS_PER_N3 = 13.0 / 3.0
# Bytes per chunk of X handled at once (centred, in the working dtype).
CHUNK_BYTES = 64 * 2**20


class Flops:
    """Nominal flop count of the operations performed (for the benchmark's efficiency)."""

    def __init__(self) -> None:
        self.total = 0.0

    def gemm(self, m: int, n: int, k: int) -> None:
        self.total += 2.0 * m * n * k


def chunk_width(n_rows: int, itemsize: int) -> int:
    return max(256, CHUNK_BYTES // max(1, n_rows * itemsize))


def centred_columns(
    X: np.ndarray, mu: np.ndarray | None, ops: Ops,
) -> Iterator[tuple[slice, Any]]:
    """Column chunks of ``X - mu`` in the working dtype on the working device.

    Chunks keep the memory needed beyond ``X`` itself to a few tens of MB (``X`` is never
    modified), and centring happens in the wider of ``X``'s dtype and the working dtype,
    before any rounding, in the same pass as the copy.
    """
    n, p = X.shape
    width = chunk_width(n, ops.np_dtype.itemsize)
    wide = np.result_type(X.dtype, ops.np_dtype)
    for j0 in range(0, p, width):
        j1 = min(p, j0 + width)
        if mu is not None:
            block = np.subtract(X[:, j0:j1], mu[j0:j1].astype(wide), dtype=wide)
        else:
            block = X[:, j0:j1]
        yield slice(j0, j1), ops.asarray(block)


def row_blocks(n: int, rows: int = 1024) -> np.ndarray:
    """Bounds of the row blocks used to build a symmetric product from its lower triangle:
    at least ``rows`` rows each (still large enough for full GEMM speed), at most 8 blocks
    (36 of 64 block products, ~56% of the flops of the full product)."""
    n_blocks = int(min(8, max(1, n // rows)))
    return np.linspace(0, n, n_blocks + 1).astype(np.int64)


def gram(ops: Ops, A: Any, flops: Flops, out: Any = None) -> Any:
    """``out + A A^T`` (``out`` defaults to zeros), from the lower block triangle only."""
    if out is None:
        out = ops.zeros((A.shape[0], A.shape[0]))
    bounds = row_blocks(A.shape[0], rows=448)
    add_outer_lower(ops, out, A, bounds, flops)
    mirror_lower(out, bounds)
    return out


def add_outer_lower(ops: Ops, K: Any, C: Any, bounds: np.ndarray, flops: Flops,
                    sign: float = 1.0) -> None:
    """``K += sign * C C^T`` on the lower block triangle of ``K`` only."""
    nb = len(bounds) - 1
    for i in range(nb):
        i0, i1 = int(bounds[i]), int(bounds[i + 1])
        for j in range(i + 1):
            j0, j1 = int(bounds[j]), int(bounds[j + 1])
            ops.addmm_(K[i0:i1, j0:j1], C[i0:i1], C[j0:j1].T, alpha=sign)
            flops.gemm(i1 - i0, j1 - j0, C.shape[1])


def mirror_lower(K: Any, bounds: np.ndarray) -> None:
    """Copy the lower off-diagonal blocks of ``K`` to the upper ones."""
    nb = len(bounds) - 1
    for i in range(nb):
        i0, i1 = int(bounds[i]), int(bounds[i + 1])
        for j in range(i):
            j0, j1 = int(bounds[j]), int(bounds[j + 1])
            K[j0:j1, i0:i1] = K[i0:i1, j0:j1].T


class EighFactor:
    """``M = (K + alpha I)^{-1}`` for every alpha from one eigendecomposition of ``K``."""

    def __init__(self, ops: Ops, K: Any, flops: Flops, overwrite: bool = False):
        n = K.shape[0]
        t0 = time.perf_counter()
        lam, Q = ops.eigh(K, overwrite=overwrite)  # overwrite: K is not needed after
        ops.sync()
        log.info("ridge: eigendecomposition of the %d x %d kernel in %.1f s", n, n,
                 time.perf_counter() - t0)
        flops.total += EIGH_FLOPS_PER_N3 * n**3
        self.ops, self.flops = ops, flops
        self.lam = ops.clip_min(lam, 0.0)  # K is PSD; rounding may leave tiny negatives
        self.Q = Q
        self.QtY: Any = None
        self.w: Any = None
        self.sqrt_w: Any = None
        self.alpha = 0.0

    def targets(self, Yc: Any) -> None:
        """Set the (block of) centred targets the next solves are for."""
        self.QtY = self.Q.T @ Yc
        self.flops.gemm(self.Q.shape[0], Yc.shape[1], self.Q.shape[0])

    def solutions(self, alphas: np.ndarray, alpha_index: np.ndarray) -> Any:
        """Dual coefficients of every target at its own alpha ``alphas[alpha_index]``."""
        n, k = self.QtY.shape
        out = self.ops.zeros((n, k))
        for a_idx in np.unique(alpha_index):
            cols = self.ops.index(np.flatnonzero(alpha_index == a_idx))
            w = 1.0 / (self.lam + float(alphas[a_idx]))
            out[:, cols] = self.Q @ (w[:, None] * self.QtY[:, cols])
            self.flops.gemm(n, len(cols), n)
        return out

    def solve(self, alpha: float) -> Any:
        """Dual coefficients ``M Yc`` at ``alpha`` (and remember alpha for the folds)."""
        n, k = self.QtY.shape
        self.alpha = alpha
        self.w = 1.0 / (self.lam + alpha)
        self.sqrt_w = self.w**0.5
        self.flops.gemm(n, k, n)
        return self.Q @ (self.w[:, None] * self.QtY)

    def residuals(self, lo: int, hi: int, c: Any, gamma: float) -> Any:
        """``(M_vv - gamma 11^T)^{-1} c_v`` for the fold of rows ``lo:hi``."""
        Qv = self.Q[lo:hi]
        M = gram(self.ops, Qv * self.sqrt_w, self.flops)  # Q_v diag(w) Q_v^T
        if gamma:
            M -= gamma
        nv, k = hi - lo, c.shape[1]
        self.flops.total += nv**3 / 3.0 + 2.0 * nv * nv * k
        return self.ops.spd_solve(M, c[lo:hi])

    def fold_operator(self, alpha: float, bounds: np.ndarray, gamma: float) -> Any:
        """``T`` (n x n, rows in fold order) with ``T @ QtY`` = every fold's residuals at
        ``alpha``: ``T_v = (M_vv - gamma 11^T)^{-1} Q_v diag(w)``, since ``c_v = Q_v diag(w)
        Q^T Yc``. Built once per alpha, it turns each block's fold solves and dual
        coefficients into one matrix product."""
        n = self.Q.shape[0]
        w = 1.0 / (self.lam + alpha)
        sqrt_w = w**0.5
        T = self.ops.zeros((n, n))
        for v in range(len(bounds) - 1):
            lo, hi = int(bounds[v]), int(bounds[v + 1])
            Qv = self.Q[lo:hi]
            M = gram(self.ops, Qv * sqrt_w, self.flops)
            if gamma:
                M -= gamma
            T[lo:hi] = self.ops.spd_solver(M)(Qv * w)
            self.flops.total += (hi - lo) ** 3 / 3.0 + 2.0 * (hi - lo) ** 2 * n
        return T


class CholeskyFactor:
    """``M = (K + alpha I)^{-1}`` for one alpha at a time from a Cholesky factor ``L``.

    Rows are in fold order. For the fold ``v`` of rows ``lo:hi``, with ``r`` the rows after
    it, ``L^{-1} E_v = [0; L_vv^{-1}; -G L_vv^{-1}]`` where ``G = L_rr^{-1} L_rv``, so
    ``M_vv = L_vv^{-T} (I + G^T G) L_vv^{-1}``: one triangular solve with the rows *after*
    the fold (not from the fold on, which would also invert ``L_vv`` explicitly) gives it,
    and ``L_vv`` itself is never inverted.
    """

    def __init__(self, ops: Ops, K: Any, flops: Flops):
        self.ops, self.K, self.flops = ops, K, flops
        self.Yc: Any = None
        self.L: Any = None
        self.alpha: float | None = None
        self._buffer = ops.factor_buffer(K)  # one n x n buffer, refactored per alpha

    def targets(self, Yc: Any) -> None:
        """Set the (block of) centred targets the next solves are for."""
        self.Yc = Yc

    def solve(self, alpha: float) -> Any | None:
        """Dual coefficients ``M Yc`` at ``alpha``, or None if ``K + alpha I`` is not
        numerically positive definite. The factor of the last alpha is reused."""
        n, k = self.Yc.shape
        if self.alpha != alpha:
            self.L = self.ops.cholesky_shifted(self.K, alpha, self._buffer)
            self.alpha = alpha
            self.flops.total += n**3 / 3.0
        if self.L is None:
            return None
        self.flops.total += 2.0 * n * n * k
        return self.ops.cho_solve(self.L, self.Yc)

    def residuals(self, lo: int, hi: int, c: Any, gamma: float) -> Any:
        """``(M_vv - gamma 11^T)^{-1} c_v = L_vv (I + G^T G - gamma u u^T)^{-1} L_vv^T c_v``
        with ``u = L_vv^T 1``."""
        ops, L = self.ops, self.L
        n, nv, k = L.shape[0], hi - lo, c.shape[1]
        Lvv = ops.tril(L[lo:hi, lo:hi])
        B = ops.eye(nv)
        if hi < n:
            G = ops.solve_lower(L[hi:, hi:], L[hi:, lo:hi])
            self.flops.total += float(n - hi) ** 2 * nv
            B = gram(ops, G.T, self.flops, out=B)
        if gamma:
            u = Lvv.sum(0)  # L_vv^T 1
            B -= gamma * (u[:, None] * u[None, :])
        z = ops.spd_solve(B, Lvv.T @ c[lo:hi])
        self.flops.total += nv**3 / 3.0 + 2.0 * nv * nv * k
        self.flops.gemm(nv, k, nv)
        self.flops.gemm(nv, k, nv)
        return Lvv @ z


def choose_factorization(n: int, k: int, fold_sizes: np.ndarray, n_alphas: int,
                         n_blocks: int = 1) -> str:
    """"eigh" or "cholesky" for the dual form: whichever the cost model predicts faster.

    Costs are in units of "time of one GEMM flop": each operation's flops divided by the
    share of the GEMM rate it reaches, measured with MKL (torch) on the 2-core AVX-512 VM
    the benchmark runs on, float32, n = 9000: Cholesky factor and solves ~60%, triangular
    solves with many right-hand sides ~75%, the fold GEMMs ~75%, and the eigendecomposition
    as a whole ``EIGH_COST_PER_N3 * n^3``. The model puts the break-even at ~20 alphas for
    the benchmark's shape (measured: 37 s + 1.35 s per alpha against 3.3 s per alpha).
    With targets in ``n_blocks`` blocks the eigendecomposition is shared by every block
    while the Cholesky factors are recomputed for each (keeping one per alpha would cost
    ``n_alphas`` kernels of memory), so blocks tilt the choice to "eigh".
    """
    sizes = np.asarray(fold_sizes, dtype=np.float64)
    after = float(n) - np.cumsum(sizes)  # rows after each fold
    n3 = float(n) ** 3
    small = float(np.sum(sizes**3 / 3.0 + 6.0 * sizes**2 * k)) / 0.75  # per-fold solves
    eigh_per_alpha = (1.2 * float(np.sum(sizes**2)) * n + 2.0 * n * n * k) / 0.75 + small
    eigh_cost = EIGH_COST_PER_N3 * n3 + 2.0 * n * n * k + n_alphas * eigh_per_alpha
    chol_per_alpha = ((n_blocks * n3 / 3.0 + 2.0 * n * n * k) / 0.6
                      + n_blocks * float(np.sum(after**2 * sizes)) / 0.75
                      + 1.2 * float(np.sum(sizes**2 * after)) + small)
    return "cholesky" if n_alphas * chol_per_alpha < eigh_cost else "eigh"


# Shares of the GEMM rate reached by the primal form's operations (torch + MKL, float32,
# 2 cores, p = 15724; see choose_primal_factorization).
GEMM_SHARE = 0.85  # large products, the lower block triangle of a Gram
CHOLESKY_SHARE = 0.75  # a Cholesky factorisation of a large matrix
TRSM_SHARE = 0.45  # the two triangular solves of cho_solve with a few hundred targets


def primal_costs(n: int, p: int, k: int, fold_sizes: np.ndarray, n_alphas: int,
                 n_blocks: int = 1) -> dict[str, float]:
    """Predicted time (in GEMM flops) of each exact route of the primal form, the Gram of
    all rows (common to all) left out, refit included.

    * ``"eigh"``: per fold, the downdated Gram's eigendecomposition scores every alpha
      (cheap per alpha: the fold's predictions), then the refit;
    * ``"cholesky"``: per fold and alpha, one Cholesky factor of the downdated Gram plus
      ``alpha I``, its solves and the fold's predictions, then the refit;
    * ``"eigh_full"``: one eigendecomposition of the full Gram; every fold's residuals of
      the fit without it come from the leave-block-out identity (a fold-sized system per
      fold and alpha), and the refit is free.

    The refit of the first two is whichever is cheaper: one eigendecomposition of the full
    Gram, or one Cholesky factor per distinct chosen alpha (at most ``n_alphas``). With
    several target blocks, ``X^T Y`` is not held for all targets and is recomputed from
    the rows wherever a block needs it.
    """
    sizes = np.asarray(fold_sizes, dtype=np.float64)
    n, p, k = float(n), float(p), float(k)
    eigh = EIGH_COST_PER_N3 * p**3
    chol = p**3 / 3.0 / CHOLESKY_SHARE
    multi = n_blocks > 1
    downdate = float(np.sum(1.12 * sizes * p * p)) / GEMM_SHARE  # lower triangle only
    cross = 2.0 * n * p * k / GEMM_SHARE  # X^T Y for every target, recomputed
    fold_pred = float(np.sum(2.0 * sizes * p * k)) / GEMM_SHARE  # all folds, one alpha
    d = float(min(n_alphas, k))
    refit = min(eigh + 4.0 * p * p * k / GEMM_SHARE + (cross if multi else 0.0),
                d * chol + 2.0 * p * p * k / TRSM_SHARE + (d * cross if multi else 0.0))
    n_folds = len(sizes)
    per_fold_eigh = (downdate + n_folds * eigh + float(np.sum(2.0 * sizes * p * p)) / GEMM_SHARE
                     + n_folds * 2.0 * p * p * k / GEMM_SHARE + n_alphas * fold_pred
                     + (n_folds * cross if multi else 0.0) + refit)
    per_alpha = (n_folds * chol + n_folds * 2.0 * p * p * k / TRSM_SHARE + fold_pred
                 + (n_folds * cross if multi else 0.0))
    cholesky = downdate + n_alphas * per_alpha + refit
    lbo_per_alpha = float(np.sum(1.12 * sizes**2 * p / GEMM_SHARE + sizes**3 / 3.0 / CHOLESKY_SHARE
                                 + 2.0 * sizes**2 * k / TRSM_SHARE)) + fold_pred
    if multi:  # V^T X^T Y is not held: recomputed for each fold, alpha and block
        lbo_per_alpha += n_folds * (cross + 2.0 * p * p * k / GEMM_SHARE)
    eigh_full = (eigh + float(np.sum(2.0 * sizes * p * p)) / GEMM_SHARE
                 + 4.0 * p * p * k / GEMM_SHARE + n_alphas * lbo_per_alpha)
    return {"eigh": per_fold_eigh, "cholesky": cholesky, "eigh_full": eigh_full}


def refit_factorization(p: int, k: int, n_distinct: int) -> str:
    """"eigh" or "cholesky" for the primal refit on all rows: one eigendecomposition of
    the Gram for every alpha, or one Cholesky factor per distinct chosen alpha."""
    eigh = EIGH_COST_PER_N3 * float(p) ** 3 + 4.0 * p * p * k / GEMM_SHARE
    chol = n_distinct * float(p) ** 3 / 3.0 / CHOLESKY_SHARE + 2.0 * p * p * k / TRSM_SHARE
    return "cholesky" if chol < eigh else "eigh"


def choose_primal_factorization(n: int, p: int, k: int, fold_sizes: np.ndarray,
                                n_alphas: int, n_blocks: int = 1) -> str:
    """The primal route :func:`primal_costs` predicts fastest."""
    costs = primal_costs(n, p, k, fold_sizes, n_alphas, n_blocks)
    return min(costs, key=costs.__getitem__)
