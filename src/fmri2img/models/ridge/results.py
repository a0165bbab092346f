"""What the ridge solvers share: the result record, fold scores and the running best."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmri2img.models.ridge.backends import Ops


@dataclass
class RidgeCVResult:
    """What a CV fit produces; arrays are numpy (``coef`` may be a read-only memory map
    of a file, see :mod:`.targets`)."""

    coef: np.ndarray  # (p, k), working dtype
    intercept: np.ndarray  # (k,), working dtype
    alpha: np.ndarray  # (k,), float64
    cv_scores: np.ndarray  # (n_alphas, k), float64: mean over folds of each fold's score
    info: dict[str, Any] = field(default_factory=dict)


class Best:
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


def choose_alphas(scores: np.ndarray, per_target: bool) -> np.ndarray:
    """Index of the best alpha per target (first of equal scores; NaN never wins); one
    shared index when not ``per_target`` (best mean over targets)."""
    safe = np.where(np.isnan(scores), -np.inf, scores)
    if per_target:
        return np.argmax(safe, axis=0)
    return np.full(scores.shape[1], int(np.argmax(safe.mean(axis=1))))


def fold_score(sse: np.ndarray, sst: np.ndarray, n_rows: int, scoring: str) -> np.ndarray:
    """Score of one fold per target. R^2 of a target that is constant on the fold is
    undefined; it scores 0 for every alpha so it does not sway the choice."""
    if scoring == "neg_mse":
        return -sse / n_rows
    out = np.zeros_like(sse)
    ok = sst > 0
    out[ok] = 1.0 - sse[ok] / sst[ok]
    return out


def fold_sst(Y: np.ndarray, rows: list[np.ndarray], cols: slice = slice(None)
             ) -> list[np.ndarray]:
    """Total sum of squares of each fold's targets ``cols`` about the fold's own mean
    (float64)."""
    out = []
    for r in rows:
        yv = np.asarray(Y[r, cols], dtype=np.float64)
        out.append(((yv - yv.mean(axis=0)) ** 2).sum(axis=0))
    return out


def sse(ops: Ops, e: Any) -> np.ndarray:
    """Per-column sum of squares of residuals ``e``, as float64 numpy."""
    return ops.numpy((e * e).sum(0)).astype(np.float64)


def intercept(ybar: np.ndarray, mu: np.ndarray | None, coef: np.ndarray,
              dtype: np.dtype) -> np.ndarray:
    if mu is None:
        return np.zeros(coef.shape[1], dtype=dtype)
    return (ybar - mu @ coef.astype(np.float64)).astype(dtype)
