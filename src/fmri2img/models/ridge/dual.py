"""The dual (kernel) form of grouped-CV ridge, for ``n < p``.

The centred kernel ``K = Xc Xc^T`` is built once (one pass over ``X`` in column chunks,
lower block triangle only). Every fold's validation residuals then come from the
*full-data* solution through the exact leave-block-out identity of linear smoothers: with
``H`` the hat matrix of the fit on all rows and ``v`` a fold, the residual of the fit
*without* fold ``v`` on fold ``v`` is ``(I - H)_vv^{-1} (y - H y)_v``. For ridge
``I - H = alpha (K + alpha I)^{-1}`` (plus a rank-one term for the intercept), so one
factorisation of ``K + alpha I`` scores every fold at that alpha, and the same
factorisation *is* the refit on all rows: the dual coefficients of the chosen alpha are
kept while scoring, so no second pass is needed.

The factorisation is either one eigendecomposition of ``K`` shared by all alphas
(``"eigh"``) or one Cholesky factor per alpha (``"cholesky"``); ``"auto"`` compares the
costs (:func:`.linalg.choose_factorization`). Targets are taken in blocks
(:mod:`.targets`); the eigendecomposition is shared by every block.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fmri2img.models.ridge.backends import Ops
from fmri2img.models.ridge.linalg import (
    CholeskyFactor,
    EighFactor,
    Flops,
    add_outer_lower,
    centred_columns,
    choose_factorization,
    mirror_lower,
    row_blocks,
)
from fmri2img.models.ridge.results import (
    Best,
    RidgeCVResult,
    choose_alphas,
    fold_score,
    fold_sst,
    intercept,
    sse,
)
from fmri2img.models.ridge.targets import (
    MEMORY_SHARE,
    CoefStore,
    available_memory,
    target_blocks,
)
from fmri2img.progress import progress

log = logging.getLogger(__name__)


def cv_dual(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, factorization: str, scoring: str, ops: Ops,
    flops: Flops, block: int, store: CoefStore,
) -> RidgeCVResult:
    n, p = X.shape
    k = Y.shape[1]
    n_folds = int(fold_ids.max()) + 1
    perm = np.argsort(fold_ids, kind="stable")  # rows in fold order
    sizes = np.bincount(fold_ids, minlength=n_folds)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    fold_rows = [perm[bounds[v]:bounds[v + 1]] for v in range(n_folds)]
    blocks = target_blocks(k, block)

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

    if fit_intercept:
        # Put the constant direction, a null vector of the centred kernel, at the kernel's
        # mean eigenvalue: (K + alpha I) stays well conditioned for tiny alphas and nothing
        # else changes (Yc is orthogonal to it; the rank-one term below restores I - H).
        shift = float(ops.numpy(K.diagonal()).astype(np.float64).sum()) / n or 1.0
        K += shift / n
    else:
        shift = 0.0

    if factorization in ("auto", "eigh_full"):
        factorization = "eigh" if factorization == "eigh_full" else choose_factorization(
            n, k, sizes, len(alphas), len(blocks))
    log.info("ridge: dual form, %d folds, %d alphas, %d target block(s), factorization %s",
             n_folds, len(alphas), len(blocks), factorization)
    eig: EighFactor | None = None
    chol: CholeskyFactor | None = None
    if factorization == "eigh":
        eig = EighFactor(ops, K, flops, overwrite=True)
    else:
        chol = CholeskyFactor(ops, K, flops)  # keeps K: one factor per alpha
    del K
    used: set[str] = set()

    def solve(alpha: float) -> tuple[Any, EighFactor | CholeskyFactor]:
        nonlocal eig
        if chol is not None:
            c = chol.solve(alpha)
            if c is not None:
                used.add("cholesky")
                return c, chol
            if eig is None:
                log.info("ridge: Cholesky failed at alpha=%g; using an eigendecomposition",
                         alpha)
                eig = EighFactor(ops, chol.K, flops)
                eig.targets(chol.Yc)
        assert eig is not None
        used.add("eigh")
        return eig.solve(alpha), eig

    def set_targets(sl: slice) -> None:
        Yc = ops.asarray(np.take(Y[:, sl], perm, axis=0).astype(np.float64) - ybar[sl])
        if chol is not None:
            chol.targets(Yc)
        if eig is not None:
            eig.targets(Yc)

    def write(sl: slice, dual: Any) -> None:
        """coef = Xc^T c for the block, from the same centred chunks."""
        dual = dual[ops.index(np.argsort(perm))]  # back to the rows' own order
        coef = np.empty((p, sl.stop - sl.start), dtype=ops.np_dtype)
        for cols, C in centred_columns(X, mu, ops):
            coef[cols] = ops.numpy(C.T @ dual)
            flops.gemm(C.shape[1], coef.shape[1], n)
        store.write(sl, coef)
        intercepts[sl] = intercept(ybar[sl], mu, coef, ops.np_dtype)

    scores = np.zeros((len(alphas), k))
    intercepts = np.empty(k, dtype=ops.np_dtype)
    alpha_index = np.zeros(k, dtype=np.int64)
    # the winner's solution can be kept while scoring unless one alpha is shared by
    # targets of several blocks: then it is known only once every block is scored
    keep = per_target or len(blocks) == 1
    # Several blocks on one eigendecomposition: per alpha, one n x n operator gives every
    # fold's residuals of any block in one product (instead of a fold solve per block),
    # when the operators fit (3.2 GB for 10 alphas at n = 9000; planned for by block_plan).
    operators: list[Any] | None = None
    if (eig is not None and len(blocks) > 1 and len(alphas) * n * n * ops.np_dtype.itemsize
            <= MEMORY_SHARE * available_memory()):
        t_op = time.perf_counter()
        operators = [eig.fold_operator(float(a), bounds, _gamma(float(a), n, shift,
                                                                  fit_intercept))
                     for a in alphas]
        log.info("ridge: %d fold operators in %.1f s", len(alphas),
                 time.perf_counter() - t_op)
    t0 = time.perf_counter()
    for b, sl in enumerate(progress(blocks, "ridge: target blocks")):
        t_block = time.perf_counter()
        set_targets(sl)
        sst = fold_sst(Y, fold_rows, sl)
        if operators is not None and eig is not None:
            used.add("eigh")
            _score_with_operators(eig, operators, bounds, sst, scores, sl, scoring, ops,
                                  flops)
            if keep:
                alpha_index[sl] = choose_alphas(scores[:, sl], per_target)
                write(sl, eig.solutions(alphas, alpha_index[sl]))
            _log_block(b, blocks, t_block)
            continue
        best = Best(ops, per_target, sl.stop - sl.start)
        for a_idx, alpha in enumerate(alphas):
            c, factor = solve(float(alpha))
            # I - H = alpha * (M - gamma 11^T), M = (K + alpha I)^{-1}: the rank-one term
            # undoes the shift of the constant direction (and is the intercept's leverage).
            gamma = _gamma(float(alpha), n, shift, fit_intercept)
            for v in range(n_folds):
                lo, hi = int(bounds[v]), int(bounds[v + 1])
                e = factor.residuals(lo, hi, c, gamma)  # of the fit without fold v, on v
                scores[a_idx, sl] += fold_score(sse(ops, e), sst[v], hi - lo, scoring)
            scores[a_idx, sl] /= n_folds
            if keep:
                best.update(a_idx, scores[a_idx, sl], c)
            log.debug("ridge: alpha=%g mean score %.4f", alpha, scores[a_idx, sl].mean())
        if keep:
            alpha_index[sl] = best.alpha_index
            write(sl, best.solution)
        del best
        _log_block(b, blocks, t_block)
    if not keep:  # one alpha for all targets: solve every block again at that alpha
        alpha_index[:] = choose_alphas(scores, per_target)
        for sl in blocks:
            set_targets(sl)
            write(sl, solve(float(alphas[alpha_index[0]]))[0])
    ops.sync()
    log.info("ridge: scored %d alphas and wrote the weights in %.1f s", len(alphas),
             time.perf_counter() - t0)
    return RidgeCVResult(
        coef=store.result(), intercept=intercepts,
        alpha=alphas[alpha_index].astype(np.float64), cv_scores=scores,
        info={"solver": "dual", "factorization": "+".join(sorted(used)),
              "n_folds": n_folds, "flops": flops.total, "target_block": block,
              "n_target_blocks": len(blocks)},
    )


def _gamma(alpha: float, n: int, shift: float, fit_intercept: bool) -> float:
    """The rank-one correction of ``I - H`` for the intercept (see the scoring loop)."""
    return 1.0 / (n * (shift + alpha)) if fit_intercept else 0.0


def _score_with_operators(eig: EighFactor, operators: list[Any], bounds: np.ndarray,
                          sst: list[np.ndarray], scores: np.ndarray, sl: slice, scoring: str,
                          ops: Ops, flops: Flops) -> None:
    """Every alpha's fold scores for the block of targets ``sl`` set on ``eig``."""
    n, b = eig.QtY.shape
    n_folds = len(bounds) - 1
    for a_idx, T in enumerate(operators):
        E = T @ eig.QtY  # every fold's residuals of the fit without it
        flops.gemm(n, b, n)
        for v in range(n_folds):
            lo, hi = int(bounds[v]), int(bounds[v + 1])
            scores[a_idx, sl] += fold_score(sse(ops, E[lo:hi]), sst[v], hi - lo, scoring)
        scores[a_idx, sl] /= n_folds


def _log_block(b: int, blocks: list[slice], t0: float) -> None:
    if len(blocks) > 1:
        log.info("ridge: target block %d/%d (%d targets) in %.1f s", b + 1, len(blocks),
                 blocks[b].stop - blocks[b].start, time.perf_counter() - t0)
