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
CUDA) through the small operations layer of :mod:`.backends`, so the algorithm is written once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fmri2img.models.ridge.backends import Ops, make_ops
from fmri2img.models.ridge.linalg import (
    EIGH_FLOPS_PER_N3,
    CholeskyFactor,
    EighFactor,
    Flops,
    add_outer_lower,
    centred_columns,
    choose_factorization,
    mirror_lower,
    row_blocks,
)

log = logging.getLogger(__name__)

Solver = Literal["auto", "primal", "dual"]
Factorization = Literal["auto", "eigh", "cholesky"]
Scoring = Literal["r2", "neg_mse"]


@dataclass
class RidgeCVResult:
    """What a CV fit produces; arrays are numpy."""

    coef: np.ndarray  # (p, k), working dtype
    intercept: np.ndarray  # (k,), working dtype
    alpha: np.ndarray  # (k,), float64
    cv_scores: np.ndarray  # (n_alphas, k), float64: mean over folds of each fold's score
    info: dict[str, Any] = field(default_factory=dict)


class _Best:
    """Running arg-max over alphas of the CV score, keeping the dual/primal solution of the
    winner so the refit costs nothing extra. Strict ``>`` keeps the first of equal scores,
    which is what ``argmax`` over the grid gives."""

    def __init__(self, ops: Ops, per_target: bool, k: int):
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


# -- the dual (kernel) form --------------------------------------------------------------
def _cv_dual(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, factorization: str, scoring: str, ops: Ops,
    flops: Flops,
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
    rb = row_blocks(n)
    for _, C in centred_columns(X, mu, ops):
        add_outer_lower(ops, K, C, rb, flops)
    mirror_lower(K, rb)
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
    eig: EighFactor | None = None
    chol: CholeskyFactor | None = None
    if factorization == "eigh":
        eig = EighFactor(ops, K, Yc, flops)
    else:
        chol = CholeskyFactor(ops, K, Yc, flops)  # keeps K: one factor per alpha
    del K

    sst = _fold_sst(Y, fold_rows)
    scores = np.zeros((len(alphas), k))
    best = _Best(ops, per_target, k)
    used = set()
    t0 = time.perf_counter()
    for a_idx, alpha in enumerate(alphas):
        factor: EighFactor | CholeskyFactor
        c = None
        if chol is not None:
            c = chol.solve(float(alpha))
            factor = chol
        if c is None:
            if eig is None:
                log.info("ridge: Cholesky failed at alpha=%g; using an eigendecomposition",
                         alpha)
                eig = EighFactor(ops, chol.K, Yc, flops)
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
    for cols, C in centred_columns(X, mu, ops):
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


# -- the primal form --------------------------------------------------------------------
def _cv_primal(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, scoring: str, ops: Ops, flops: Flops,
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


# -- entry point ------------------------------------------------------------------------
def ridge_cv(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    alpha_per_target: bool = True, fit_intercept: bool = True, solver: Solver = "auto",
    factorization: Factorization = "auto", scoring: Scoring = "r2", dtype: str = "float32",
    backend: str = "numpy", device: str = "cpu",
) -> RidgeCVResult:
    """Ridge with the alpha chosen by K-fold CV over ``fold_ids``, refitted on all rows.

    ``X`` (n, p) and ``Y`` (n, k) must be finite; ``fold_ids`` (n,) numbers the folds
    0..K-1 (see :func:`fmri2img.data.splits.grouped_folds`). Per target
    (``alpha_per_target``) or for all targets at once, the alpha with the best mean
    validation score wins; ties go to the earlier alpha in ``alphas``. ``solver="auto"``
    takes the dual form when ``n < p``.
    """
    n, p = X.shape
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be finite and positive, got {alphas.tolist()}")
    if solver == "auto":
        solver = "dual" if n < p else "primal"
    ops = make_ops(backend, dtype, device)
    flops = Flops()
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
