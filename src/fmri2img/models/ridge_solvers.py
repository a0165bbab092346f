"""Numerics of the ridge decoder: grouped K-fold CV over a grid of alphas, then an exact refit.

Arrays in, arrays out; nothing here knows about configs or checkpoints. Two forms:

* **dual** (kernel, for ``n < p``): the centred kernel ``K = Xc Xc^T`` is built once (one
  pass over ``X`` in column chunks, lower block triangle only). Every fold's validation
  residuals then come from the *full-data* solution through the exact leave-block-out
  identity of linear smoothers: with ``H`` the hat matrix of the fit on all rows and ``v``
  a fold, the residual of the fit *without* fold ``v`` on fold ``v`` is
  ``(I - H)_vv^{-1} (y - H y)_v``. For ridge ``I - H = alpha (K + alpha I)^{-1}`` (plus a
  rank-one term for the intercept), so one factorisation of ``K + alpha I`` scores every fold
  at that alpha, and the same factorisation *is* the refit on all rows: the dual
  coefficients of the chosen alpha are kept while scoring, so no second pass is needed.
  The factorisation is either one eigendecomposition of ``K`` shared by all alphas
  (``"eigh"``) or one Cholesky factor per alpha (``"cholesky"``). The eigendecomposition is
  bound by memory bandwidth (its tridiagonal reduction is matrix-vector work), the Cholesky
  route is all matrix-matrix work, so for a handful of alphas Cholesky is faster; ``"auto"``
  compares the two costs.
* **primal** (for ``n >= p``): per fold, the training Gram ``Xt^T Xt`` is the full Gram
  minus the fold's own (a downdate, not a new product over the training rows), and one
  eigendecomposition of it scores every alpha; the refit is one eigendecomposition of the
  full Gram, targets grouped by their alpha.

Both give, up to rounding, exactly what fitting ``sklearn.linear_model.Ridge`` on every
training fold for every alpha would give. Either runs on numpy/scipy or on torch (CPU or
CUDA) through the small :class:`_Ops` layer, so the algorithm is written once.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.linalg

log = logging.getLogger(__name__)

Solver = Literal["auto", "primal", "dual"]
Factorization = Literal["auto", "eigh", "cholesky"]
Scoring = Literal["r2", "neg_mse"]

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


# ------------------------------------------------------------------------------------------
# folds
# ------------------------------------------------------------------------------------------
def grouped_folds(groups: np.ndarray | None, n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) of each of ``n`` rows; all rows of one group share a fold.

    Groups are shuffled with ``seed`` and then dealt, largest first, to whichever fold has
    the fewest rows so far, so folds are balanced in rows even when groups differ in size
    (e.g. an image shown 3 times next to one shown once). ``groups=None`` makes every row
    its own group. Deterministic given ``(groups, n_folds, seed)``.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if groups is None:
        codes = np.arange(n)
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        if groups.dtype.kind == "f" and not np.isfinite(groups).all():
            raise ValueError("groups contains NaN or infinite values")
        _, codes = np.unique(groups, return_inverse=True)
        codes = codes.reshape(-1)
    sizes = np.bincount(codes)
    n_groups = sizes.size
    if n_groups < n_folds:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds} groups, "
            f"got {n_groups}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    if sizes.min() == sizes.max():
        # equal sizes: the greedy rule below reduces to dealing round-robin
        fold_of_group[order] = np.arange(n_groups) % n_folds
    else:
        load = [0] * n_folds
        for g in order:
            f = min(range(n_folds), key=load.__getitem__)
            fold_of_group[g] = f
            load[f] += int(sizes[g])
    return fold_of_group[codes]


# ------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------
class _Ops(abc.ABC):
    """The few array operations the solvers need, for one backend, dtype and device."""

    name: str
    np_dtype: np.dtype

    @abc.abstractmethod
    def asarray(self, a: np.ndarray) -> Any:
        ...

    @abc.abstractmethod
    def numpy(self, a: Any) -> np.ndarray:
        ...

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...]) -> Any:
        ...

    @abc.abstractmethod
    def eye(self, n: int) -> Any:
        ...

    @abc.abstractmethod
    def copy(self, a: Any) -> Any:
        ...

    @abc.abstractmethod
    def add_diag_(self, a: Any, value: float) -> None:
        ...

    @abc.abstractmethod
    def clip_min(self, a: Any, value: float) -> Any:
        ...

    @abc.abstractmethod
    def tril(self, a: Any) -> Any:
        """Lower triangle of ``a`` as a new array (a factor's other triangle is not zero)."""

    @abc.abstractmethod
    def addmm_(self, out: Any, a: Any, b: Any) -> None:
        """``out += a @ b`` in place (``out`` may be a view)."""

    @abc.abstractmethod
    def eigh(self, a: Any) -> tuple[Any, Any]:
        ...

    @abc.abstractmethod
    def cholesky(self, a: Any) -> Any | None:
        """Lower Cholesky factor of ``a`` (may overwrite it), or None if not positive definite."""

    @abc.abstractmethod
    def factor_buffer(self, a: Any) -> Any:
        """Scratch space for :meth:`cholesky_shifted` of matrices shaped like ``a``."""

    @abc.abstractmethod
    def cholesky_shifted(self, a: Any, shift: float, buffer: Any) -> Any | None:
        """Lower Cholesky factor of ``a + shift I`` computed in ``buffer`` (no allocation
        of an n x n matrix per call), or None if it is not positive definite."""

    @abc.abstractmethod
    def cho_solve(self, chol: Any, b: Any) -> Any:
        ...

    @abc.abstractmethod
    def solve_lower(self, chol: Any, b: Any) -> Any:
        ...

    def spd_solve(self, a: Any, b: Any) -> Any:
        """``a^{-1} b`` for symmetric positive definite ``a`` (a symmetric solve if its
        Cholesky factorisation fails, i.e. ``a`` is not numerically positive definite)."""
        chol = self.cholesky(self.copy(a))
        if chol is not None:
            return self.cho_solve(chol, b)
        return self._sym_solve(a, b)

    @abc.abstractmethod
    def _sym_solve(self, a: Any, b: Any) -> Any:
        ...

    def index(self, idx: np.ndarray) -> Any:
        """An index usable to select columns or rows of this backend's arrays."""
        return idx

    def sync(self) -> None:
        """Wait for queued device work, so that timings mean something."""
        return None  # CPU backends run synchronously; the torch backend overrides this


class _NumpyOps(_Ops):
    name = "numpy"

    def __init__(self, dtype: np.dtype):
        self.np_dtype = np.dtype(dtype)

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=self.np_dtype)

    def numpy(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=self.np_dtype)

    def eye(self, n: int) -> np.ndarray:
        return np.eye(n, dtype=self.np_dtype)

    def copy(self, a: np.ndarray) -> np.ndarray:
        return a.copy()

    def add_diag_(self, a: np.ndarray, value: float) -> None:
        n = min(a.shape)
        a[np.arange(n), np.arange(n)] += value

    def clip_min(self, a: np.ndarray, value: float) -> np.ndarray:
        return np.maximum(a, value)

    def tril(self, a: np.ndarray) -> np.ndarray:
        return np.tril(a)

    def addmm_(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        out += a @ b

    def eigh(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scipy.linalg.eigh(a, driver="evd", check_finite=False)

    def cholesky(self, a: np.ndarray) -> np.ndarray | None:
        try:
            return scipy.linalg.cholesky(a, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None

    def factor_buffer(self, a: np.ndarray) -> np.ndarray:
        return np.empty(a.shape, dtype=self.np_dtype, order="F")  # LAPACK factors F in place

    def cholesky_shifted(self, a: np.ndarray, shift: float,
                         buffer: np.ndarray) -> np.ndarray | None:
        buffer.T[...] = a  # a is symmetric: a plain copy, not a transposing one
        self.add_diag_(buffer, shift)
        return self.cholesky(buffer)

    def cho_solve(self, chol: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve((chol, True), b, check_finite=False)

    def solve_lower(self, chol: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.solve_triangular(chol, b, lower=True, check_finite=False)

    def _sym_solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.solve(a, b, assume_a="sym", check_finite=False)


class _TorchOps(_Ops):
    name = "torch"

    def __init__(self, dtype: np.dtype, device: str):
        import torch

        self.torch = torch
        self.np_dtype = np.dtype(dtype)
        self.dtype = {np.dtype(np.float32): torch.float32,
                      np.dtype(np.float64): torch.float64}[self.np_dtype]
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"invalid torch device {device!r}: {exc}") from exc
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} requested but CUDA is not available")
            if self.device.index is not None and self.device.index >= torch.cuda.device_count():
                raise ValueError(
                    f"device {device!r} requested but only {torch.cuda.device_count()} "
                    "CUDA device(s) are visible"
                )

    def asarray(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a, dtype=self.np_dtype)
        if not a.flags.writeable:  # torch.from_numpy warns on read-only memory
            a = a.copy()
        return self.torch.from_numpy(a).to(self.device)

    def numpy(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def eye(self, n: int) -> Any:
        return self.torch.eye(n, dtype=self.dtype, device=self.device)

    def copy(self, a: Any) -> Any:
        return a.clone()

    def add_diag_(self, a: Any, value: float) -> None:
        a.diagonal().add_(value)

    def clip_min(self, a: Any, value: float) -> Any:
        return a.clamp(min=value)

    def tril(self, a: Any) -> Any:
        return self.torch.tril(a)

    def addmm_(self, out: Any, a: Any, b: Any) -> None:
        out.addmm_(a, b)

    def eigh(self, a: Any) -> tuple[Any, Any]:
        return self.torch.linalg.eigh(a)

    def cholesky(self, a: Any) -> Any | None:
        chol, info = self.torch.linalg.cholesky_ex(a)
        return chol if int(info) == 0 else None

    def factor_buffer(self, a: Any) -> Any:
        # column-major, the layout LAPACK/cuSOLVER factor in place: no hidden copies in
        # the Cholesky and the triangular solves that follow
        n = a.shape[0]
        return self.torch.empty_strided((n, n), (1, n), dtype=self.dtype, device=self.device)

    def cholesky_shifted(self, a: Any, shift: float, buffer: Any) -> Any | None:
        buffer.mT.copy_(a)  # a is symmetric: a plain copy, not a transposing one
        buffer.diagonal().add_(shift)
        info = self.torch.empty((), dtype=self.torch.int32, device=self.device)
        self.torch.linalg.cholesky_ex(buffer, out=(buffer, info))
        return buffer if int(info) == 0 else None

    def cho_solve(self, chol: Any, b: Any) -> Any:
        return self.torch.cholesky_solve(b, chol)

    def solve_lower(self, chol: Any, b: Any) -> Any:
        return self.torch.linalg.solve_triangular(chol, b, upper=False)

    def _sym_solve(self, a: Any, b: Any) -> Any:
        return self.torch.linalg.solve(a, b)

    def index(self, idx: np.ndarray) -> Any:
        return self.torch.as_tensor(idx, device=self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def make_ops(backend: str, dtype: str, device: str = "cpu") -> _Ops:
    """The operations layer for ``backend`` ("numpy" or "torch") in ``dtype`` on ``device``."""
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if backend == "numpy":
        if device != "cpu":
            raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}")
        return _NumpyOps(np_dtype)
    if backend == "torch":
        return _TorchOps(np_dtype, device)
    raise ValueError(f"unknown backend {backend!r}; expected 'numpy' or 'torch'")


# ------------------------------------------------------------------------------------------
# results and bookkeeping
# ------------------------------------------------------------------------------------------
@dataclass
class RidgeCVResult:
    """What a CV fit produces; arrays are numpy."""

    coef: np.ndarray  # (p, k), working dtype
    intercept: np.ndarray  # (k,), working dtype
    alpha: np.ndarray  # (k,), float64
    cv_scores: np.ndarray  # (n_alphas, k), float64: mean over folds of each fold's score
    info: dict[str, Any] = field(default_factory=dict)


class _Flops:
    """Nominal flop count of the operations performed (for the benchmark's efficiency)."""

    def __init__(self) -> None:
        self.total = 0.0

    def gemm(self, m: int, n: int, k: int) -> None:
        self.total += 2.0 * m * n * k


class _Best:
    """Running arg-max over alphas of the CV score, keeping the dual/primal solution of the
    winner so the refit costs nothing extra. Strict ``>`` keeps the first of equal scores,
    which is what ``argmax`` over the grid gives."""

    def __init__(self, ops: _Ops, per_target: bool, k: int):
        self.ops = ops
        self.per_target = per_target
        self.score = np.full(k, -np.inf)
        self.mean = -np.inf
        self.alpha_index = np.zeros(k, dtype=np.int64)
        self.solution: Any = None

    def update(self, a_idx: int, score: np.ndarray, solution: Any) -> None:
        score = np.where(np.isnan(score), -np.inf, score)
        if self.per_target:
            better = score > self.score
            if self.solution is None:
                self.solution = self.ops.copy(solution)
            elif better.any():
                cols = self.ops.index(np.flatnonzero(better))
                self.solution[:, cols] = solution[:, cols]
            self.score = np.where(better, score, self.score)
            self.alpha_index[better] = a_idx
        else:
            mean = float(np.mean(score))
            if self.solution is None or mean > self.mean:
                self.solution = self.ops.copy(solution)
                self.mean = mean
                self.alpha_index[:] = a_idx


def _fold_score(sse: np.ndarray, sst: np.ndarray, n_rows: int, scoring: str) -> np.ndarray:
    """Score of one fold per target. R^2 of a target that is constant on the fold is
    undefined; it scores 0 for every alpha so it does not sway the choice."""
    if scoring == "neg_mse":
        return -sse / n_rows
    out = np.zeros_like(sse)
    ok = sst > 0
    out[ok] = 1.0 - sse[ok] / sst[ok]
    return out


def _fold_sst(Y: np.ndarray, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Total sum of squares of each fold's targets about the fold's own mean (float64)."""
    out = []
    for r in rows:
        yv = np.asarray(Y[r], dtype=np.float64)
        out.append(((yv - yv.mean(axis=0)) ** 2).sum(axis=0))
    return out


def _chunk_width(n_rows: int, itemsize: int) -> int:
    return max(256, CHUNK_BYTES // max(1, n_rows * itemsize))


def _centred_columns(
    X: np.ndarray, mu: np.ndarray | None, ops: _Ops,
) -> Iterator[tuple[slice, Any]]:
    """Column chunks of ``X - mu`` in the working dtype on the working device.

    Chunks keep the memory needed beyond ``X`` itself to a few tens of MB (``X`` is never
    modified), and centring happens in the wider of ``X``'s dtype and the working dtype,
    before any rounding, in the same pass as the copy.
    """
    n, p = X.shape
    width = _chunk_width(n, ops.np_dtype.itemsize)
    wide = np.result_type(X.dtype, ops.np_dtype)
    for j0 in range(0, p, width):
        j1 = min(p, j0 + width)
        if mu is not None:
            block = np.subtract(X[:, j0:j1], mu[j0:j1].astype(wide), dtype=wide)
        else:
            block = X[:, j0:j1]
        yield slice(j0, j1), ops.asarray(block)


def _row_blocks(n: int, rows: int = 1024) -> np.ndarray:
    """Bounds of the row blocks used to build a symmetric product from its lower triangle:
    at least ``rows`` rows each (still large enough for full GEMM speed), at most 8 blocks
    (36 of 64 block products, ~56% of the flops of the full product)."""
    n_blocks = int(min(8, max(1, n // rows)))
    return np.linspace(0, n, n_blocks + 1).astype(np.int64)


def _gram(ops: _Ops, A: Any, flops: _Flops, out: Any = None) -> Any:
    """``out + A A^T`` (``out`` defaults to zeros), from the lower block triangle only."""
    if out is None:
        out = ops.zeros((A.shape[0], A.shape[0]))
    bounds = _row_blocks(A.shape[0], rows=448)
    _add_outer_lower(ops, out, A, bounds, flops)
    _mirror_lower(out, bounds)
    return out


def _add_outer_lower(ops: _Ops, K: Any, C: Any, bounds: np.ndarray, flops: _Flops) -> None:
    """``K += C C^T`` on the lower block triangle of ``K`` only."""
    nb = len(bounds) - 1
    for i in range(nb):
        i0, i1 = int(bounds[i]), int(bounds[i + 1])
        for j in range(i + 1):
            j0, j1 = int(bounds[j]), int(bounds[j + 1])
            ops.addmm_(K[i0:i1, j0:j1], C[i0:i1], C[j0:j1].T)
            flops.gemm(i1 - i0, j1 - j0, C.shape[1])


def _mirror_lower(K: Any, bounds: np.ndarray) -> None:
    """Copy the lower off-diagonal blocks of ``K`` to the upper ones."""
    nb = len(bounds) - 1
    for i in range(nb):
        i0, i1 = int(bounds[i]), int(bounds[i + 1])
        for j in range(i):
            j0, j1 = int(bounds[j]), int(bounds[j + 1])
            K[j0:j1, i0:i1] = K[i0:i1, j0:j1].T


# ------------------------------------------------------------------------------------------
# the dual (kernel) form
# ------------------------------------------------------------------------------------------
class _EighFactor:
    """``M = (K + alpha I)^{-1}`` for every alpha from one eigendecomposition of ``K``."""

    def __init__(self, ops: _Ops, K: Any, Yc: Any, flops: _Flops):
        n = K.shape[0]
        t0 = time.perf_counter()
        lam, Q = ops.eigh(K)
        ops.sync()
        log.info("ridge: eigendecomposition of the %d x %d kernel in %.1f s", n, n,
                 time.perf_counter() - t0)
        flops.total += EIGH_FLOPS_PER_N3 * n**3
        self.ops, self.flops = ops, flops
        self.lam = ops.clip_min(lam, 0.0)  # K is PSD; rounding may leave tiny negatives
        self.Q = Q
        self.QtY = Q.T @ Yc
        flops.gemm(n, Yc.shape[1], n)
        self.w: Any = None
        self.sqrt_w: Any = None

    def solve(self, alpha: float) -> Any:
        """Dual coefficients ``M Yc`` at ``alpha`` (and remember alpha for the folds)."""
        n, k = self.QtY.shape
        self.w = 1.0 / (self.lam + alpha)
        self.sqrt_w = self.w**0.5
        self.flops.gemm(n, k, n)
        return self.Q @ (self.w[:, None] * self.QtY)

    def residuals(self, lo: int, hi: int, c: Any, gamma: float) -> Any:
        """``(M_vv - gamma 11^T)^{-1} c_v`` for the fold of rows ``lo:hi``."""
        Qv = self.Q[lo:hi]
        M = _gram(self.ops, Qv * self.sqrt_w, self.flops)  # Q_v diag(w) Q_v^T
        if gamma:
            M -= gamma
        nv, k = hi - lo, c.shape[1]
        self.flops.total += nv**3 / 3.0 + 2.0 * nv * nv * k
        return self.ops.spd_solve(M, c[lo:hi])


class _CholeskyFactor:
    """``M = (K + alpha I)^{-1}`` for one alpha at a time from a Cholesky factor ``L``.

    Rows are in fold order. For the fold ``v`` of rows ``lo:hi``, with ``r`` the rows after
    it, ``L^{-1} E_v = [0; L_vv^{-1}; -G L_vv^{-1}]`` where ``G = L_rr^{-1} L_rv``, so
    ``M_vv = L_vv^{-T} (I + G^T G) L_vv^{-1}``: one triangular solve with the rows *after*
    the fold (not from the fold on, which would also invert ``L_vv`` explicitly) gives it,
    and ``L_vv`` itself is never inverted.
    """

    def __init__(self, ops: _Ops, K: Any, Yc: Any, flops: _Flops):
        self.ops, self.K, self.Yc, self.flops = ops, K, Yc, flops
        self.L: Any = None
        self._buffer = ops.factor_buffer(K)  # one n x n buffer, refactored per alpha

    def solve(self, alpha: float) -> Any | None:
        """Dual coefficients ``M Yc`` at ``alpha``, or None if ``K + alpha I`` is not
        numerically positive definite."""
        n, k = self.Yc.shape
        self.L = self.ops.cholesky_shifted(self.K, alpha, self._buffer)
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
            B = _gram(ops, G.T, self.flops, out=B)
        if gamma:
            u = Lvv.sum(0)  # L_vv^T 1
            B -= gamma * (u[:, None] * u[None, :])
        z = ops.spd_solve(B, Lvv.T @ c[lo:hi])
        self.flops.total += nv**3 / 3.0 + 2.0 * nv * nv * k
        self.flops.gemm(nv, k, nv)
        self.flops.gemm(nv, k, nv)
        return Lvv @ z


def choose_factorization(n: int, k: int, fold_sizes: np.ndarray, n_alphas: int) -> str:
    """"eigh" or "cholesky" for the dual form: whichever the cost model predicts faster.

    Costs are in units of "time of one GEMM flop": each operation's flops divided by the
    share of the GEMM rate it reaches, measured with MKL (torch) on the 2-core AVX-512 VM
    the benchmark runs on, float32, n = 9000: Cholesky factor and solves ~60%, triangular
    solves with many right-hand sides ~75%, the fold GEMMs ~75%, and the eigendecomposition
    as a whole ``EIGH_COST_PER_N3 * n^3``. The model puts the break-even at ~20 alphas for
    the benchmark's shape (measured: 37 s + 1.35 s per alpha against 3.3 s per alpha).
    """
    sizes = np.asarray(fold_sizes, dtype=np.float64)
    after = float(n) - np.cumsum(sizes)  # rows after each fold
    n3 = float(n) ** 3
    small = float(np.sum(sizes**3 / 3.0 + 6.0 * sizes**2 * k)) / 0.75  # per-fold solves
    eigh_per_alpha = (1.2 * float(np.sum(sizes**2)) * n + 2.0 * n * n * k) / 0.75 + small
    eigh_cost = EIGH_COST_PER_N3 * n3 + 2.0 * n * n * k + n_alphas * eigh_per_alpha
    chol_per_alpha = ((n3 / 3.0 + 2.0 * n * n * k) / 0.6 + float(np.sum(after**2 * sizes)) / 0.75
                      + 1.2 * float(np.sum(sizes**2 * after)) + small)
    return "cholesky" if n_alphas * chol_per_alpha < eigh_cost else "eigh"


def _cv_dual(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, factorization: str, scoring: str, ops: _Ops,
    flops: _Flops,
) -> RidgeCVResult:
    n, p = X.shape
    k = Y.shape[1]
    n_folds = int(fold_ids.max()) + 1
    perm = np.argsort(fold_ids, kind="stable")  # rows in fold order
    sizes = np.bincount(fold_ids, minlength=n_folds)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    fold_rows = [perm[bounds[v]:bounds[v + 1]] for v in range(n_folds)]

    mu = X.mean(axis=0, dtype=np.float64) if fit_intercept else None
    ybar = Y.mean(axis=0, dtype=np.float64) if fit_intercept else np.zeros(k)

    t0 = time.perf_counter()
    K = ops.zeros((n, n))
    rb = _row_blocks(n)
    for _, C in _centred_columns(X, mu, ops):
        _add_outer_lower(ops, K, C, rb, flops)
    _mirror_lower(K, rb)
    idx = ops.index(perm)  # rows and columns in fold order; rebinding K frees each copy
    K = K[idx]
    K = K[:, idx]
    ops.sync()
    log.info("ridge: %d x %d kernel from %d features in %.1f s", n, n, p,
             time.perf_counter() - t0)

    Yc = ops.asarray(np.asarray(Y[perm], dtype=np.float64) - ybar)
    if fit_intercept:
        # Put the constant direction, a null vector of the centred kernel, at the kernel's
        # mean eigenvalue: (K + alpha I) stays well conditioned for tiny alphas and nothing
        # else changes (Yc is orthogonal to it; the rank-one term below restores I - H).
        shift = float(ops.numpy(K.diagonal()).astype(np.float64).sum()) / n or 1.0
        K += shift / n
    else:
        shift = 0.0

    if factorization == "auto":
        factorization = choose_factorization(n, k, sizes, len(alphas))
    log.info("ridge: dual form, %d folds, %d alphas, factorization %s", n_folds, len(alphas),
             factorization)
    eig: _EighFactor | None = None
    chol: _CholeskyFactor | None = None
    if factorization == "eigh":
        eig = _EighFactor(ops, K, Yc, flops)
    else:
        chol = _CholeskyFactor(ops, K, Yc, flops)  # keeps K: one factor per alpha
    del K

    sst = _fold_sst(Y, fold_rows)
    scores = np.zeros((len(alphas), k))
    best = _Best(ops, per_target, k)
    used = set()
    t0 = time.perf_counter()
    for a_idx, alpha in enumerate(alphas):
        factor: _EighFactor | _CholeskyFactor
        c = None
        if chol is not None:
            c = chol.solve(float(alpha))
            factor = chol
        if c is None:
            if eig is None:
                log.info("ridge: Cholesky failed at alpha=%g; using an eigendecomposition",
                         alpha)
                eig = _EighFactor(ops, chol.K, Yc, flops)
            c = eig.solve(float(alpha))
            factor = eig
            used.add("eigh")
        else:
            used.add("cholesky")
        # I - H = alpha * (M - gamma 11^T), M = (K + alpha I)^{-1}: the rank-one term undoes
        # the shift of the constant direction (and is the intercept's leverage).
        gamma = 1.0 / (n * (shift + alpha)) if fit_intercept else 0.0
        for v in range(n_folds):
            lo, hi = int(bounds[v]), int(bounds[v + 1])
            e = factor.residuals(lo, hi, c, gamma)  # of the fit without fold v, on fold v
            sse = ops.numpy((e * e).sum(0)).astype(np.float64)
            scores[a_idx] += _fold_score(sse, sst[v], hi - lo, scoring)
        scores[a_idx] /= n_folds
        best.update(a_idx, scores[a_idx], c)
        log.debug("ridge: alpha=%g mean score %.4f", alpha, scores[a_idx].mean())
    ops.sync()
    log.info("ridge: scored %d alphas in %.1f s", len(alphas), time.perf_counter() - t0)
    del eig, chol, factor, c, Yc  # free the n x n factors before the last pass over X

    # coef = Xc^T c, from the same centred chunks
    t0 = time.perf_counter()
    dual = best.solution[ops.index(np.argsort(perm))]  # back to the rows' own order
    alpha_index = best.alpha_index
    del best
    coef = np.empty((p, k), dtype=ops.np_dtype)
    for cols, C in _centred_columns(X, mu, ops):
        coef[cols] = ops.numpy(C.T @ dual)
        flops.gemm(C.shape[1], k, n)
    log.info("ridge: primal weights in %.1f s", time.perf_counter() - t0)
    intercept = _intercept(ybar, mu, coef, ops.np_dtype)
    return RidgeCVResult(
        coef=coef, intercept=intercept, alpha=alphas[alpha_index].astype(np.float64),
        cv_scores=scores,
        info={"solver": "dual", "factorization": "+".join(sorted(used)),
              "n_folds": n_folds, "flops": flops.total},
    )


def _intercept(ybar: np.ndarray, mu: np.ndarray | None, coef: np.ndarray,
               dtype: np.dtype) -> np.ndarray:
    if mu is None:
        return np.zeros(coef.shape[1], dtype=dtype)
    return (ybar - mu @ coef.astype(np.float64)).astype(dtype)


# ------------------------------------------------------------------------------------------
# the primal form
# ------------------------------------------------------------------------------------------
def _cv_primal(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, scoring: str, ops: _Ops, flops: _Flops,
) -> RidgeCVResult:
    n, p = X.shape
    k = Y.shape[1]
    n_folds = int(fold_ids.max()) + 1
    fold_rows = [np.flatnonzero(fold_ids == v) for v in range(n_folds)]
    mu = X.mean(axis=0, dtype=np.float64) if fit_intercept else None
    ybar = Y.mean(axis=0, dtype=np.float64) if fit_intercept else np.zeros(k)
    Yg = np.asarray(Y, dtype=np.float64) - ybar  # globally centred targets

    def centred_rows(rows: np.ndarray) -> Any:
        block = np.take(X, rows, axis=0)
        if mu is not None:
            block = block.astype(np.result_type(block.dtype, ops.np_dtype), copy=False)
            block -= mu.astype(block.dtype)
        return ops.asarray(block)

    # Global Gram and cross-products, accumulated fold by fold.
    t0 = time.perf_counter()
    G = ops.zeros((p, p))
    XtY = ops.zeros((p, k))
    for rows in fold_rows:
        Xv = centred_rows(rows)
        ops.addmm_(G, Xv.T, Xv)
        ops.addmm_(XtY, Xv.T, ops.asarray(Yg[rows]))
        flops.gemm(p, p + k, len(rows))
    ops.sync()
    log.info("ridge: %d x %d Gram from %d rows in %.1f s", p, p, n, time.perf_counter() - t0)

    sst = _fold_sst(Y, fold_rows)
    scores = np.zeros((len(alphas), k))
    t0 = time.perf_counter()
    for v, rows in enumerate(fold_rows):
        nv = len(rows)
        nt = n - nv
        Xv = centred_rows(rows)
        Yv = ops.asarray(Yg[rows])
        Gt = G - Xv.T @ Xv
        Ct = XtY - Xv.T @ Yv
        flops.gemm(p, p + k, nv)
        if fit_intercept:
            # training means in globally centred coordinates (all rows sum to zero)
            mt = Xv.mean(0) * (-nv / nt)
            ymt = Yv.mean(0) * (-nv / nt)
            Gt -= nt * (mt[:, None] * mt[None, :])
            Ct -= nt * (mt[:, None] * ymt[None, :])
            Xv = Xv - mt
            Yv = Yv - ymt
        s, V = ops.eigh(Gt)
        flops.total += EIGH_FLOPS_PER_N3 * p**3
        s = ops.clip_min(s, 0.0)
        B = V.T @ Ct
        U = Xv @ V
        flops.gemm(p, k, p)
        flops.gemm(nv, p, p)
        for a_idx, alpha in enumerate(alphas):
            e = Yv - U @ (B / (s + float(alpha))[:, None])
            flops.gemm(nv, k, p)
            sse = ops.numpy((e * e).sum(0)).astype(np.float64)
            scores[a_idx] += _fold_score(sse, sst[v], nv, scoring)
    scores /= n_folds
    ops.sync()
    log.info("ridge: primal form, %d folds x %d alphas scored in %.1f s", n_folds, len(alphas),
             time.perf_counter() - t0)

    safe = np.where(np.isnan(scores), -np.inf, scores)
    if per_target:
        alpha_index = np.argmax(safe, axis=0)
    else:
        alpha_index = np.full(k, int(np.argmax(safe.mean(axis=1))))

    # Refit: one eigendecomposition of the full Gram, targets grouped by their alpha.
    t0 = time.perf_counter()
    s, V = ops.eigh(G)
    flops.total += EIGH_FLOPS_PER_N3 * p**3
    s = ops.clip_min(s, 0.0)
    B = V.T @ XtY
    flops.gemm(p, k, p)
    coef = np.empty((p, k), dtype=ops.np_dtype)
    for a_idx in np.unique(alpha_index):
        cols = np.flatnonzero(alpha_index == a_idx)
        idx = ops.index(cols)
        coef[:, cols] = ops.numpy(V @ (B[:, idx] / (s + float(alphas[a_idx]))[:, None]))
        flops.gemm(p, len(cols), p)
    log.info("ridge: refit on %d rows in %.1f s", n, time.perf_counter() - t0)
    intercept = _intercept(ybar, mu, coef, ops.np_dtype)
    return RidgeCVResult(
        coef=coef, intercept=intercept, alpha=alphas[alpha_index].astype(np.float64),
        cv_scores=scores,
        info={"solver": "primal", "factorization": "eigh", "n_folds": n_folds,
              "flops": flops.total},
    )


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------
def ridge_cv(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    alpha_per_target: bool = True, fit_intercept: bool = True, solver: Solver = "auto",
    factorization: Factorization = "auto", scoring: Scoring = "r2", dtype: str = "float32",
    backend: str = "numpy", device: str = "cpu",
) -> RidgeCVResult:
    """Ridge with the alpha chosen by K-fold CV over ``fold_ids``, refitted on all rows.

    ``X`` (n, p) and ``Y`` (n, k) must be finite; ``fold_ids`` (n,) numbers the folds
    0..K-1 (see :func:`grouped_folds`). Per target (``alpha_per_target``) or for all
    targets at once, the alpha with the best mean validation score wins; ties go to the
    earlier alpha in ``alphas``. ``solver="auto"`` takes the dual form when ``n < p``.
    """
    n, p = X.shape
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be finite and positive, got {alphas.tolist()}")
    if solver == "auto":
        solver = "dual" if n < p else "primal"
    ops = make_ops(backend, dtype, device)
    flops = _Flops()
    fold_ids = np.asarray(fold_ids, dtype=np.int64)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(per_target=alpha_per_target, fit_intercept=fit_intercept,
                                  scoring=scoring, ops=ops, flops=flops)
    if solver == "dual":
        result = _cv_dual(X, Y, fold_ids, alphas, factorization=factorization, **kwargs)
    elif solver == "primal":
        result = _cv_primal(X, Y, fold_ids, alphas, **kwargs)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    result.info.update(backend=ops.name, dtype=ops.np_dtype.name, device=device,
                       seconds=time.perf_counter() - t0)
    if not (np.all(np.isfinite(result.coef)) and np.all(np.isfinite(result.intercept))):
        raise FloatingPointError(
            "ridge produced non-finite weights; the problem is too ill-conditioned for "
            f"{ops.np_dtype.name} at the chosen alphas (try dtype='float64' or larger alphas)"
        )
    log.info("ridge: %s form done in %.1f s (%.3g nominal GFLOP)", solver,
             result.info["seconds"], flops.total / 1e9)
    return result
