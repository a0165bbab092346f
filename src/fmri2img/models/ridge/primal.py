"""The primal form of grouped-CV ridge, for ``n >= p`` (NSD's ~27,000 single trials).

The Gram of all rows ``G = Xc^T Xc`` is built once (fold by fold, lower block triangle
only). Three exact routes score the alphas, chosen by :func:`.linalg.primal_costs`:

* ``"cholesky"``: per fold, the training Gram is the full Gram *downdated* by the fold's
  own rows (``G - X_v^T X_v``, not a new product over the training rows), and one
  Cholesky factor of it plus ``alpha I`` per alpha gives that fold's weights; all
  matrix-matrix work, the fastest route for a handful of alphas;
* ``"eigh"``: per fold, one eigendecomposition of the downdated Gram scores every alpha
  (best when rows far outnumber features, or for many alphas);
* ``"eigh_full"``: one eigendecomposition of the full Gram; each fold's residuals of the
  fit without it come from the leave-block-out identity ``e_v = (I - H_vv)^{-1}
  (y - H y)_v`` (one fold-sized system per fold and alpha), and the refit is free.

The refit on all rows after the first two factorises once per distinct chosen alpha (or
takes one eigendecomposition of ``G`` when that is cheaper). Targets go in blocks
(:mod:`.targets`) against the same factorisations; with one block ``X^T Y`` is held, with
several it is recomputed from the rows where a block needs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fmri2img.models.ridge.backends import Ops
from fmri2img.models.ridge.linalg import (
    EIGH_FLOPS_PER_N3,
    Flops,
    add_outer_lower,
    choose_primal_factorization,
    mirror_lower,
    refit_factorization,
    row_blocks,
)
from fmri2img.models.ridge.results import (
    RidgeCVResult,
    choose_alphas,
    fold_score,
    fold_sst,
    intercept,
    sse,
)
from fmri2img.models.ridge.targets import CoefStore, target_blocks
from fmri2img.progress import progress

log = logging.getLogger(__name__)


class ShiftedSolver:
    """Solves ``(A + alpha I) W = C`` for one alpha at a time from a Cholesky factor, and
    from one (lazily computed) eigendecomposition of ``A`` for any alpha at which ``A +
    alpha I`` is not numerically positive definite."""

    def __init__(self, ops: Ops, A: Any, flops: Flops, buffer: Any):
        self.ops, self.A, self.flops, self.buffer = ops, A, flops, buffer
        self.L: Any = None
        self.alpha = 0.0
        self.eig: tuple[Any, Any] | None = None
        self.used: set[str] = set()

    def factor(self, alpha: float) -> None:
        p = self.A.shape[0]
        self.alpha = alpha
        self.L = self.ops.cholesky_shifted(self.A, alpha, self.buffer)
        self.flops.total += p**3 / 3.0
        if self.L is None and self.eig is None:
            log.info("ridge: Cholesky failed at alpha=%g; using an eigendecomposition", alpha)
            s, V = self.ops.eigh(self.A)
            self.flops.total += EIGH_FLOPS_PER_N3 * p**3
            self.eig = (self.ops.clip_min(s, 0.0), V)
        self.used.add("cholesky" if self.L is not None else "eigh")

    def solve(self, C: Any) -> Any:
        p, k = C.shape
        if self.L is not None:
            self.flops.total += 2.0 * p * p * k
            return self.ops.cho_solve(self.L, C)
        assert self.eig is not None
        s, V = self.eig
        self.flops.gemm(p, k, p)
        self.flops.gemm(p, k, p)
        return V @ ((V.T @ C) / (s + self.alpha)[:, None])


def cv_primal(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    per_target: bool, fit_intercept: bool, factorization: str, scoring: str, ops: Ops,
    flops: Flops, block: int, store: CoefStore,
) -> RidgeCVResult:
    pr = _Primal(X, Y, fold_ids, alphas, fit_intercept=fit_intercept, scoring=scoring,
                 ops=ops, flops=flops, block=block, store=store)
    n, p, k = pr.n, pr.p, pr.k
    if factorization == "auto":
        factorization = choose_primal_factorization(n, p, k, pr.sizes, len(alphas),
                                                    len(pr.blocks))
    log.info("ridge: primal form, %d folds, %d alphas, %d target block(s), factorization %s",
             pr.n_folds, len(alphas), len(pr.blocks), factorization)
    t0 = time.perf_counter()
    if factorization == "eigh_full":
        alpha_index, used = pr.eigh_full(per_target)
    else:
        used = pr.per_fold(factorization)
        pr.ops.sync()
        log.info("ridge: %d folds x %d alphas scored in %.1f s", pr.n_folds, len(alphas),
                 time.perf_counter() - t0)
        t0 = time.perf_counter()
        alpha_index = choose_alphas(pr.scores, per_target)
        used |= pr.refit(alpha_index)
    pr.ops.sync()
    log.info("ridge: %s in %.1f s", "scored and refitted" if factorization == "eigh_full"
             else "refit on all rows", time.perf_counter() - t0)
    return RidgeCVResult(
        coef=store.result(), intercept=pr.intercepts,
        alpha=alphas[alpha_index].astype(np.float64), cv_scores=pr.scores,
        info={"solver": "primal", "factorization": "+".join(sorted(used)),
              "primal_route": factorization, "n_folds": pr.n_folds, "flops": flops.total,
              "target_block": block, "n_target_blocks": len(pr.blocks)},
    )


class _Primal:
    """One primal problem: the centred rows and targets, the Gram, and the routes."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray,
                 alphas: np.ndarray, *, fit_intercept: bool, scoring: str, ops: Ops,
                 flops: Flops, block: int, store: CoefStore):
        self.X, self.Y, self.alphas, self.scoring = X, Y, alphas, scoring
        self.ops, self.flops, self.store = ops, flops, store
        self.n, self.p = X.shape
        self.k = Y.shape[1]
        self.n_folds = int(fold_ids.max()) + 1
        self.fold_rows = [np.flatnonzero(fold_ids == v) for v in range(self.n_folds)]
        self.sizes = np.array([len(r) for r in self.fold_rows])
        self.blocks = target_blocks(self.k, block)
        self.mu = X.mean(axis=0, dtype=np.float64) if fit_intercept else None
        self.ybar = Y.mean(axis=0, dtype=np.float64) if fit_intercept else np.zeros(self.k)
        self.pb = row_blocks(self.p)
        self.scores = np.zeros((len(alphas), self.k))
        self.intercepts = np.empty(self.k, dtype=ops.np_dtype)

        # Global Gram (lower block triangle) and, for one block of targets, X^T Y.
        t0 = time.perf_counter()
        p = self.p
        self.G = ops.zeros((p, p))
        self.XtY = None if len(self.blocks) > 1 else ops.zeros((p, self.k))
        for rows in self.fold_rows:
            Xv = self.centred_rows(rows)
            add_outer_lower(ops, self.G, Xv.T, self.pb, flops)
            if self.XtY is not None:
                ops.addmm_(self.XtY, Xv.T, self.targets(rows, slice(0, self.k)))
                flops.gemm(p, self.k, len(rows))
            del Xv
        mirror_lower(self.G, self.pb)
        ops.sync()
        log.info("ridge: %d x %d Gram from %d rows in %.1f s", p, p, self.n,
                 time.perf_counter() - t0)

    # -- pieces -----------------------------------------------------------------------
    def centred_rows(self, rows: np.ndarray) -> Any:
        block = np.take(self.X, rows, axis=0)
        if self.mu is not None:
            block = block.astype(np.result_type(block.dtype, self.ops.np_dtype), copy=False)
            block -= self.mu.astype(block.dtype)
        return self.ops.asarray(block)

    def targets(self, rows: np.ndarray, sl: slice) -> Any:
        """Targets ``sl`` of ``rows``, globally centred."""
        return self.ops.asarray(np.asarray(self.Y[rows, sl], dtype=np.float64)
                                - self.ybar[sl])

    def cross(self, sl: slice, without: int | None = None) -> Any:
        """``X^T Y`` (globally centred) for targets ``sl`` over the rows outside fold
        ``without``: sliced from the one held for all targets, or recomputed."""
        if self.XtY is not None and without is None:
            return self.XtY[:, sl]
        out = self.ops.zeros((self.p, sl.stop - sl.start))
        for u, rows in enumerate(self.fold_rows):
            if u != without:
                self.ops.addmm_(out, self.centred_rows(rows).T, self.targets(rows, sl))
                self.flops.gemm(self.p, out.shape[1], len(rows))
        return out

    def fold_cross(self, v: int, Xv: Any, Yv: Any, sl: slice) -> Any:
        """``X_t^T Y_t`` of fold ``v``'s training rows (globally centred), from the held
        ``X^T Y`` minus the fold's own product when it is held."""
        if self.XtY is not None:
            self.flops.gemm(self.p, Yv.shape[1], Xv.shape[0])
            return self.XtY[:, sl] - Xv.T @ Yv
        return self.cross(sl, without=v)

    def fold_targets(self, v: int, Xg: Any, mt: Any, sl: slice) -> tuple[Any, Any]:
        """Fold ``v``'s validation targets ``sl`` and its training ``X_t^T Y_t``, both
        centred by the training means (``mt``, in globally centred coordinates; None
        without an intercept). ``Xg`` is the fold's globally centred rows."""
        rows = self.fold_rows[v]
        nv = len(rows)
        nt = self.n - nv
        Yv = self.targets(rows, sl)
        Ct = self.fold_cross(v, Xg, Yv, sl)
        if mt is not None:
            ymt = Yv.mean(0) * (-nv / nt)
            Ct -= nt * (mt[:, None] * ymt[None, :])
            Yv = Yv - ymt
        return Yv, Ct

    def score(self, a_idx: int, sl: slice, e: Any, sst: np.ndarray) -> None:
        self.scores[a_idx, sl] += fold_score(sse(self.ops, e), sst, e.shape[0],
                                             self.scoring) / self.n_folds

    def write(self, cols: np.ndarray | slice, coef: Any) -> None:
        if not isinstance(coef, np.ndarray):
            coef = self.ops.numpy(coef)
        self.store.write(cols, coef)
        self.intercepts[cols] = intercept(self.ybar[cols], self.mu, coef, self.ops.np_dtype)

    def write_eigen(self, sl: slice, s: Any, V: Any, B: Any, local: np.ndarray) -> None:
        """Weights of block ``sl`` from ``G = V diag(s) V^T`` and ``B = V^T X^T Y``, each
        target at its own alpha (``local`` indexes ``alphas``)."""
        ops, p = self.ops, self.p
        coef = np.empty((p, B.shape[1]), dtype=ops.np_dtype)
        for a_idx in np.unique(local):
            cols = np.flatnonzero(local == a_idx)
            shrink = (s + float(self.alphas[a_idx]))[:, None]
            coef[:, cols] = ops.numpy(V @ (B[:, ops.index(cols)] / shrink))
            self.flops.gemm(p, len(cols), p)
        self.write(sl, coef)

    # -- per-fold routes --------------------------------------------------------------
    def per_fold(self, how: str) -> set[str]:
        """Score every alpha on every fold from the fold's downdated Gram: one
        eigendecomposition per fold (``how="eigh"``) or one Cholesky factor per fold and
        alpha (``"cholesky"``)."""
        ops, flops, p, n = self.ops, self.flops, self.p, self.n
        used: set[str] = set()
        buffer = ops.factor_buffer(self.G) if how == "cholesky" else None
        for v, rows in enumerate(progress(self.fold_rows, "ridge: folds")):
            t0 = time.perf_counter()
            nv = len(rows)
            nt = n - nv
            Xv = self.centred_rows(rows)
            Gt = ops.copy(self.G)
            add_outer_lower(ops, Gt, Xv.T, self.pb, flops, sign=-1.0)
            mirror_lower(Gt, self.pb)
            mt = None
            if self.mu is not None:
                # training means in globally centred coordinates (all rows sum to zero)
                mt = Xv.mean(0) * (-nv / nt)
                Gt -= nt * (mt[:, None] * mt[None, :])

            Xg = Xv  # globally centred, for X_t^T Y_t
            ssts = [fold_sst(self.Y, [rows], sl)[0] for sl in self.blocks]
            if how == "eigh":
                s, V = ops.eigh(Gt, overwrite=True)
                del Gt
                flops.total += EIGH_FLOPS_PER_N3 * p**3
                s = ops.clip_min(s, 0.0)
                U = (Xv - mt if mt is not None else Xv) @ V
                flops.gemm(nv, p, p)
                for sl, sst in zip(self.blocks, ssts, strict=True):
                    Yv, Ct = self.fold_targets(v, Xg, mt, sl)
                    B = V.T @ Ct
                    flops.gemm(p, Ct.shape[1], p)
                    for a_idx, alpha in enumerate(self.alphas):
                        e = Yv - U @ (B / (s + float(alpha))[:, None])
                        flops.gemm(nv, Ct.shape[1], p)
                        self.score(a_idx, sl, e, sst)
                used.add("eigh")
            else:
                solver = ShiftedSolver(ops, Gt, flops, buffer)
                held = (None if len(self.blocks) > 1
                        else self.fold_targets(v, Xg, mt, self.blocks[0]))
                for a_idx, alpha in enumerate(self.alphas):
                    solver.factor(float(alpha))
                    for sl, sst in zip(self.blocks, ssts, strict=True):
                        Yv, Ct = (held if held is not None
                                  else self.fold_targets(v, Xg, mt, sl))
                        W = solver.solve(Ct)
                        # rows centred by the training means: (Xg - mt) W, without a copy
                        e = Yv - Xg @ W
                        if mt is not None:
                            e += mt @ W
                        flops.gemm(nv, Ct.shape[1], p)
                        self.score(a_idx, sl, e, sst)
                used |= solver.used
                del solver, Gt, held
            ops.sync()
            log.info("ridge: fold %d/%d (%d rows) scored in %.1f s", v + 1, self.n_folds, nv,
                     time.perf_counter() - t0)
        return used

    def refit(self, alpha_index: np.ndarray) -> set[str]:
        """Weights on all rows at each target's alpha: one Cholesky factor per distinct
        alpha, or one eigendecomposition of the Gram when that is cheaper."""
        ops, flops, p = self.ops, self.flops, self.p
        distinct = np.unique(alpha_index)
        how = refit_factorization(p, self.k, len(distinct))
        if how == "eigh":
            s, V = ops.eigh(self.G, overwrite=True)  # the last use of G
            del self.G
            flops.total += EIGH_FLOPS_PER_N3 * p**3
            s = ops.clip_min(s, 0.0)
            for sl in self.blocks:
                B = V.T @ self.cross(sl)
                flops.gemm(p, B.shape[1], p)
                self.write_eigen(sl, s, V, B, alpha_index[sl])
            return {"eigh"}
        solver = ShiftedSolver(ops, self.G, flops, ops.factor_buffer(self.G))
        for a_idx in distinct:
            solver.factor(float(self.alphas[a_idx]))
            for sl in self.blocks:
                cols = np.flatnonzero(alpha_index[sl] == a_idx)
                if cols.size:
                    C = self.cross(sl)[:, ops.index(cols)]
                    self.write(cols + sl.start, solver.solve(C))
        return solver.used

    # -- one eigendecomposition, leave-block-out identity -----------------------------
    def eigh_full(self, per_target: bool) -> tuple[np.ndarray, set[str]]:
        """Score every fold and alpha from one eigendecomposition ``G = V diag(s) V^T``:
        with ``U_v = X_v V`` and ``w = 1 / (s + alpha)``, ``H_vv = U_v diag(w) U_v^T``
        (plus ``1/n`` for the intercept) and ``e_v = (I - H_vv)^{-1} (Y_v - U_v diag(w)
        V^T X^T Y)``; then the refit from the same factors."""
        ops, flops, p, n = self.ops, self.flops, self.p, self.n
        s, V = ops.eigh(self.G, overwrite=True)  # the refit needs only V and s
        del self.G
        flops.total += EIGH_FLOPS_PER_N3 * p**3
        s = ops.clip_min(s, 0.0)

        def projected(sl: slice) -> Any:
            B = V.T @ self.cross(sl)
            flops.gemm(p, B.shape[1], p)
            return B

        held = projected(self.blocks[0]) if len(self.blocks) == 1 else None
        for v, rows in enumerate(progress(self.fold_rows, "ridge: folds")):
            t0 = time.perf_counter()
            nv = len(rows)
            U = self.centred_rows(rows) @ V
            flops.gemm(nv, p, p)
            rb = row_blocks(nv, rows=448)
            ssts = [fold_sst(self.Y, [rows], sl)[0] for sl in self.blocks]
            for a_idx, alpha in enumerate(self.alphas):
                w = 1.0 / (s + float(alpha))
                M = ops.eye(nv)
                if self.mu is not None:
                    M -= 1.0 / n
                add_outer_lower(ops, M, U * w**0.5, rb, flops, sign=-1.0)
                mirror_lower(M, rb)
                solve = ops.spd_solver(M)
                flops.total += nv**3 / 3.0
                for sl, sst in zip(self.blocks, ssts, strict=True):
                    B = held if held is not None else projected(sl)
                    r = self.targets(rows, sl) - U @ (w[:, None] * B)
                    flops.gemm(nv, B.shape[1], p)
                    e = solve(r)
                    flops.total += 2.0 * nv * nv * B.shape[1]
                    self.score(a_idx, sl, e, sst)
            ops.sync()
            log.info("ridge: fold %d/%d (%d rows) scored in %.1f s", v + 1, self.n_folds, nv,
                     time.perf_counter() - t0)
        alpha_index = choose_alphas(self.scores, per_target)
        for sl in self.blocks:
            self.write_eigen(sl, s, V, held if held is not None else projected(sl),
                             alpha_index[sl])
        return alpha_index, {"eigh"}
