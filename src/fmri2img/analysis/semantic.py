"""Semantic survival: how much of a target's identification survives imagery, per target
and per stimulus set, and does the semantic part of the decoded embedding survive better
than the rest?

Per-trial scores are 2-way identification against the gallery of the session's targets
(chance 0.5); each trial is one repetition in both domains, so vision and imagery are
compared at matched repetitions. A target's vision (imagery) identification is the mean
of its vision (imagery) trials' scores; a group of targets' is the mean over its targets;
the preservation ratio is ``(imagery - 0.5) / (vision - 0.5)`` (NaN where vision is not
above chance). CIs: bootstrap of trials within each (target, domain) cell.

Decomposition: the semantic subspace is the span of a table of embeddings of category
words or captions in the targets' space, reduced to the orthonormal basis of its leading
singular vectors that hold a share ``energy`` of the table's energy (sum of squared
singular values of the uncentred table: the span, not the spread around the words'
mean). Predictions and gallery are projected onto the subspace (the semantic part) and
onto its orthogonal complement (the rest), each part is scored on its own, and the
difference of the parts' preservation ratios (semantic - rest) is tested with
:func:`fmri2img.analysis.dissociation.dissociation_test` (the rest as the "structural"
family, so its SSI is exactly ratio(semantic) - ratio(rest)): bootstrap CI within cells,
permutation p swapping domain labels within target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmri2img.analysis.dissociation import Cells, preservation_ratio
from fmri2img.eval.metrics import two_way_per_item


@dataclass
class Basis:
    vectors: np.ndarray  # (D, k) orthonormal columns spanning the semantic subspace
    energy: np.ndarray  # (r,) each singular direction's share of the table's energy
    kept_energy: float  # share held by the k kept directions
    capped: bool  # True when max_rank, not the energy target, set k


def semantic_basis(table: np.ndarray, energy: float = 0.99,
                   max_rank: int | None = None) -> Basis:
    """Orthonormal basis of the leading singular directions of ``table`` (m, D) holding
    at least ``energy`` of its energy, at most ``max_rank`` of them (and fewer than D,
    so that the complement is not empty)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] < 1:
        raise ValueError(f"the semantic table must be (m, D) with m >= 1, got {t.shape}")
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    _, s, vt = np.linalg.svd(t, full_matrices=False)
    share = s**2 / np.sum(s**2)
    # the first k whose cumulative share reaches the target (float slack at 1.0)
    k = int(np.searchsorted(np.cumsum(share), energy - 1e-12) + 1)
    k = min(k, int(np.sum(s > s[0] * 1e-10)), t.shape[1] - 1)
    capped = max_rank is not None and k > max_rank
    if capped:
        k = int(max_rank)  # type: ignore[arg-type]
    return Basis(vt[:k].T.copy(), share, float(share[:k].sum()), capped)


def split(x: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(semantic part, rest) of rows ``x`` (n, D): the orthogonal projections onto the
    span of ``basis`` (D, k, orthonormal) and onto its complement; they sum to ``x``."""
    x = np.asarray(x, dtype=np.float64)
    sem = (x @ basis) @ basis.T
    return sem, x - sem


def part_scores(pred: np.ndarray, gallery: np.ndarray, true_index: np.ndarray,
                basis: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-trial 2-way scores of the full predictions and, with a basis, of their
    semantic part and the rest (predictions and gallery projected alike)."""
    out = {"full": two_way_per_item(pred, gallery, true_index)}
    if basis is not None:
        p_sem, p_rest = split(pred, basis)
        g_sem, g_rest = split(gallery, basis)
        out["semantic"] = two_way_per_item(p_sem, g_sem, true_index)
        out["rest"] = two_way_per_item(p_rest, g_rest, true_index)
    return out


def _interval(x: np.ndarray, confidence: float, axis: int = -1) -> np.ndarray:
    """Percentile interval along ``axis`` ignoring NaN (NaN where nothing is left)."""
    a = (1.0 - confidence) / 2.0
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.full((*x.shape[:-1], 2), np.nan)
    flat, res = x.reshape(-1, x.shape[-1]), out.reshape(-1, 2)
    for i, row in enumerate(flat):
        row = row[np.isfinite(row)]
        if row.size:
            res[i] = np.quantile(row, [a, 1.0 - a])
    return out


@dataclass
class Preservation:
    targets: list  # target labels, in Cells order
    vision: np.ndarray  # (T,) per target
    imagery: np.ndarray  # (T,)
    ratio: np.ndarray  # (T,)
    ratio_ci: np.ndarray  # (T, 2)
    n_vision: np.ndarray  # (T,) trials
    n_imagery: np.ndarray  # (T,)
    groups: dict  # group label -> {vision, imagery, ratio, ci, targets}


def preservation(scores: np.ndarray, target: np.ndarray, imagery: np.ndarray,
                 groups: dict[str, Sequence] | None = None, *, n_bootstrap: int = 1000,
                 seed: int = 0, confidence: float = 0.95) -> Preservation:
    """Per-target and per-group (``groups``: label -> its targets) vision and imagery
    identification and preservation ratio, with bootstrap CIs (trials resampled within
    each (target, domain) cell)."""
    s = np.asarray(scores, dtype=np.float64)[None, :]
    target = np.asarray(target)
    cells = Cells.of(target, imagery)
    # every target of Cells has trials in both cells: its first vision trial names it
    labels = [target[cells.order[cells.starts[2 * k]]] for k in range(cells.n_targets)]
    draws = cells.bootstrap_draws(n_bootstrap, np.random.default_rng(seed))

    def cell_means(idx: np.ndarray) -> np.ndarray:  # (D, C)
        return np.add.reduceat(s[0][idx], cells.starts, axis=1) / cells.sizes

    obs = cell_means(cells.order[None, :])[0]
    boot = cell_means(draws)
    vis, img = obs[0::2], obs[1::2]  # Cells alternates vision, imagery per target
    bvis, bimg = boot[:, 0::2], boot[:, 1::2]
    ratio = preservation_ratio(vis, img)
    ratio_ci = _interval(preservation_ratio(bvis, bimg), confidence, axis=0)
    out_groups = {}
    for name, members in (groups or {}).items():
        sel = np.isin(np.array(labels, dtype=object), list(members))
        if not sel.any():
            continue
        v, i = vis[sel].mean(), img[sel].mean()
        b = preservation_ratio(bvis[:, sel].mean(axis=1), bimg[:, sel].mean(axis=1))
        out_groups[name] = {"vision": float(v), "imagery": float(i),
                            "ratio": float(preservation_ratio(v, i)),
                            "ci": tuple(_interval(b, confidence)),
                            "n_targets": int(sel.sum())}
    return Preservation(labels, vis, img, ratio, ratio_ci, cells.sizes[0::2],
                        cells.sizes[1::2], out_groups)
