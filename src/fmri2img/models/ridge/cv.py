"""Numerics of the ridge decoder: grouped K-fold CV over a grid of alphas, then an exact refit.

Arrays in, arrays out; nothing here knows about configs or checkpoints. Two forms, each
with exact routes chosen by a cost model:

* **dual** (kernel, for ``n < p``, :mod:`.dual`): one kernel, every fold scored from the
  full-data solution by the leave-block-out identity; one eigendecomposition for all
  alphas or one Cholesky factor per alpha;
* **primal** (for ``n >= p``, :mod:`.primal`): one Gram of all rows, downdated per fold;
  one Cholesky factor per fold and alpha, one eigendecomposition per fold, or one
  eigendecomposition of the full Gram with the leave-block-out identity.

Both give, up to rounding, exactly what fitting ``sklearn.linear_model.Ridge`` on every
training fold for every alpha would give. Targets are solved in blocks against shared
factorisations, and the weights can go to a memory-mapped file (:mod:`.targets`), so a
grid of 197,376 targets fits in memory. Either form runs on numpy/scipy or on torch (CPU
or CUDA) through the small operations layer of :mod:`.backends`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmri2img.models.ridge.backends import make_ops
from fmri2img.models.ridge.dual import cv_dual
from fmri2img.models.ridge.linalg import Flops
from fmri2img.models.ridge.primal import cv_primal
from fmri2img.models.ridge.results import RidgeCVResult
from fmri2img.models.ridge.targets import (
    MEMORY_SHARE,
    CoefStore,
    FileCoefStore,
    auto_target_block,
    available_memory,
)

log = logging.getLogger(__name__)

Solver = Literal["auto", "primal", "dual"]
Factorization = Literal["auto", "eigh", "cholesky", "eigh_full"]
Scoring = Literal["r2", "neg_mse"]
CoefStorage = Literal["auto", "memory", "file"]

__all__ = ["RidgeCVResult", "block_plan", "ridge_cv"]


def block_plan(n: int, p: int, k: int, solver: str, itemsize: int,
               target_block: int | None, coef_storage: str, n_alphas: int = 10
               ) -> tuple[int, str]:
    """(targets per block, "memory" or "file") for a problem of ``n`` rows, ``p``
    features and ``k`` targets.

    Automatic choices plan for a share of the available memory: the weights go to a file
    when ``p x k`` of them would take more than that share, and a block's temporaries
    (targets, solutions, residuals and its weights: about ``4 n + 3 p`` values per target
    in the dual form, ``3 n / folds + 4 p`` in the primal) take at most that share of
    what is left after the factorisations (two ``n x n`` or three ``p x p``, and in the
    dual form with several blocks one ``n x n`` fold operator per alpha).
    """
    coef_bytes = p * k * itemsize
    if coef_storage == "auto":
        coef_storage = "file" if coef_bytes > MEMORY_SHARE * available_memory() else "memory"
    if target_block is None:
        if solver == "dual":
            reserved, per_target = 2 * n * n * itemsize, (4 * n + 3 * p) * itemsize + 8 * n
        else:
            reserved, per_target = 3 * p * p * itemsize, (n + 4 * p) * itemsize + 8 * n
        if coef_storage == "memory":
            reserved += coef_bytes
        target_block = auto_target_block(k, per_target, reserved)
        if solver == "dual" and target_block < k:
            target_block = auto_target_block(
                k, per_target, reserved + n_alphas * n * n * itemsize)
    return int(min(k, target_block)), coef_storage


def ridge_cv(
    X: np.ndarray, Y: np.ndarray, fold_ids: np.ndarray, alphas: np.ndarray, *,
    alpha_per_target: bool = True, fit_intercept: bool = True, solver: Solver = "auto",
    factorization: Factorization = "auto", scoring: Scoring = "r2", dtype: str = "float32",
    backend: str = "numpy", device: str = "cpu", target_block: int | None = None,
    coef_storage: CoefStorage = "memory", coef_dir: str | Path | None = None,
) -> RidgeCVResult:
    """Ridge with the alpha chosen by K-fold CV over ``fold_ids``, refitted on all rows.

    ``X`` (n, p) and ``Y`` (n, k) must be finite; ``fold_ids`` (n,) numbers the folds
    0..K-1 (see :func:`fmri2img.data.splits.grouped_folds`). Per target
    (``alpha_per_target``) or for all targets at once, the alpha with the best mean
    validation score wins; ties go to the earlier alpha in ``alphas``. ``solver="auto"``
    takes the dual form when ``n < p``; ``factorization="auto"`` the route the cost model
    predicts fastest. ``target_block`` targets are solved at a time (None: from the
    available memory); ``coef_storage="file"`` writes the weights to a ``.npy`` file in
    ``coef_dir`` (default: the temporary directory) and returns them memory-mapped.
    """
    n, p = X.shape
    k = Y.shape[1]
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be finite and positive, got {alphas.tolist()}")
    if target_block is not None and target_block < 1:
        raise ValueError(f"target_block must be >= 1, got {target_block}")
    if solver == "auto":
        solver = "dual" if n < p else "primal"
    if solver not in ("dual", "primal"):
        raise ValueError(f"unknown solver {solver!r}")
    ops = make_ops(backend, dtype, device)
    block, storage = block_plan(n, p, k, solver, ops.np_dtype.itemsize, target_block,
                                coef_storage, len(alphas))
    store = (FileCoefStore(p, k, ops.np_dtype, coef_dir or tempfile.gettempdir())
             if storage == "file" else CoefStore(p, k, ops.np_dtype))
    flops = Flops()
    fold_ids = np.asarray(fold_ids, dtype=np.int64)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(per_target=alpha_per_target, fit_intercept=fit_intercept,
                                  factorization=factorization, scoring=scoring, ops=ops,
                                  flops=flops, block=block, store=store)
    form = cv_dual if solver == "dual" else cv_primal
    result = form(X, Y, fold_ids, alphas, **kwargs)
    result.info.update(backend=ops.name, dtype=ops.np_dtype.name, device=device,
                       coef_storage=storage, seconds=time.perf_counter() - t0)
    _check_finite(result, store, ops.np_dtype.name)
    log.info("ridge: %s form done in %.1f s (%.3g nominal GFLOP)", solver,
             result.info["seconds"], flops.total / 1e9)
    return result


def _check_finite(result: RidgeCVResult, store: CoefStore, dtype: str) -> None:
    if not (store.finite and np.all(np.isfinite(result.intercept))):
        raise FloatingPointError(
            "ridge produced non-finite weights; the problem is too ill-conditioned for "
            f"{dtype} at the chosen alphas (try dtype='float64' or larger alphas)"
        )
