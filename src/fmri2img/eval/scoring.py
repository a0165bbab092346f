"""Scoring a set of predictions: per-item metrics, their summary (means, bootstrap CIs,
chance levels, permutation p-values) and reference bounds, with every parameter explicit.

Arrays in, dicts of arrays or numbers out; no files, no configs. :class:`Scoring` holds
the protocol's numbers (retrieval ``ks``, pool size and count, resamples, seed) so that
the same protocol scores every block of an evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmri2img.eval import metrics as M
from fmri2img.eval import stats as S
from fmri2img.eval.pairwise import cosine_metric, top_k_metric, two_way_metric
from fmri2img.eval.permutation import permutation_test_vs_chance


@dataclass(frozen=True)
class Scoring:
    """The scoring protocol: MindEye-style retrieval (``ks`` in pools of ``pool_size``,
    ``n_pools`` random pools), 2-way identification and cosine; ``n_bootstrap`` resamples
    for CIs, ``n_permutations`` for p-values, everything seeded by ``seed``."""

    ks: Sequence[int] = M.DEFAULT_KS
    pool_size: int = M.DEFAULT_POOL_SIZE
    n_pools: int = M.DEFAULT_N_POOLS
    n_bootstrap: int = 2000
    n_permutations: int = 1000
    seed: int = 0

    def items(self, pred: np.ndarray, targets: np.ndarray, gallery: np.ndarray | None = None,
              target_rows: np.ndarray | None = None, centre: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
        """Per-item metrics; paired (row i's target is ``targets[i]``) unless a gallery is
        given with ``target_rows``. ``centre`` (the decoder's mean training target) adds
        the centred cosine."""
        if gallery is None:
            gallery, target_rows = targets, np.arange(len(targets))
        return M.score_all(pred, target_rows, gallery, ks=self.ks, pool_size=self.pool_size,
                           n_pools=self.n_pools, seed=self.seed, centre=centre)

    def chance(self, gallery_size: int, n_predictions: int) -> dict[str, float]:
        return M.chance_levels(self.ks, self.pool_size, gallery_size=gallery_size,
                               n_predictions=n_predictions)

    def summarize(self, per_item: dict[str, np.ndarray], pred: np.ndarray,
                  gallery: np.ndarray, target_rows: np.ndarray, *, with_p: bool = True,
                  groups: np.ndarray | None = None,
                  centre: np.ndarray | None = None) -> dict[str, Any]:
        """overall means, bootstrap CIs over items (over ``groups`` when rows of one
        stimulus are not independent), chance levels and permutation p-values (``centre``
        as given to :meth:`items`)."""
        overall = {k: float(np.mean(v)) for k, v in per_item.items()}
        ci = {k: [float(x) for x in S.bootstrap_ci(v, n_resamples=self.n_bootstrap,
                                                  seed=self.seed, groups=groups)]
              for k, v in per_item.items()}
        chance = self.chance(len(gallery), len(pred))
        out: dict[str, Any] = {"overall": overall, "ci": ci,
                               "chance": {k: chance.get(k) for k in per_item},
                               "n_items": len(pred), "gallery_size": len(gallery)}
        if with_p:
            out["p_vs_chance"] = self.p_values(pred, gallery, target_rows, overall, centre)
        return out

    def p_values(self, pred: np.ndarray, gallery: np.ndarray, target_rows: np.ndarray,
                 observed: dict[str, float], centre: np.ndarray | None = None
                 ) -> dict[str, float]:
        """One-sided p of each metric against chance: the items' target assignments are
        shuffled, keeping predictions and gallery fixed.

        Paired items (one distinct target each) use the pair-score matrices, computed
        once; retrieval is tested with its whole-gallery n-way form (a valid statistic for
        the same null, without the pools' Monte Carlo noise). The centred cosine is
        tested when every item shares one centre (it is then the cosine of centred
        arrays); with per-item centres it gets no p-value.
        """
        paired = len(gallery) == len(pred) and np.array_equal(target_rows,
                                                               np.arange(len(pred)))
        if paired:
            out: dict[str, float] = {}
            shared = _shared_centre(centre)
            for k in observed:
                if k == "cosine":
                    metric, a, b = cosine_metric, pred, gallery
                elif k == "cosine_centred":
                    if shared is None:
                        continue
                    metric, a, b = cosine_metric, pred - shared, gallery - shared
                elif k == "two_way":
                    metric, a, b = two_way_metric, pred, gallery
                elif k.startswith("brain_retrieval_top"):
                    metric, a, b = top_k_metric(int(k.rsplit("top", 1)[1])), gallery, pred
                elif k.startswith("retrieval_top"):
                    metric, a, b = top_k_metric(int(k.rsplit("top", 1)[1])), pred, gallery
                else:
                    continue
                res = permutation_test_vs_chance(metric, a, b,
                                                 n_permutations=self.n_permutations,
                                                 seed=self.seed)
                out[k] = float(res.p_value)
            return out
        # several items share a target (single trials): recompute everything per
        # permutation, retrieval over the whole gallery on both sides of the comparison
        full = M.score_all(pred, target_rows, gallery, ks=self.ks, pool_size=len(gallery),
                           n_pools=1, seed=self.seed, centre=centre)
        observed = {k: float(np.mean(v)) for k, v in full.items() if k in observed}
        rng = np.random.default_rng(self.seed + 7919)
        exceed = dict.fromkeys(observed, 0)
        for _ in range(self.n_permutations):
            perm = rng.permutation(target_rows)
            scores = M.score_all(pred, perm, gallery, ks=self.ks, pool_size=len(gallery),
                                 n_pools=1, seed=self.seed, centre=centre)
            for k in observed:
                if k in scores and np.mean(scores[k]) >= observed[k]:
                    exceed[k] += 1
        return {k: (1 + exceed[k]) / (1 + self.n_permutations) for k in observed}

    def bounds(self, targets: np.ndarray) -> dict[str, dict[str, float]]:
        """Reference bounds with the same scoring: true targets as predictions (upper),
        targets shuffled across items and random Gaussian vectors (lower)."""
        rng = np.random.default_rng(self.seed + 1)
        shuffled = targets[rng.permutation(len(targets))]
        random = rng.standard_normal(targets.shape).astype(np.float32)
        return {name: {k: float(np.mean(v)) for k, v in self.items(pred, targets).items()}
                for name, pred in (("upper_true_targets", targets),
                                   ("lower_shuffled_targets", shuffled),
                                   ("lower_random", random))}


def _shared_centre(centre: np.ndarray | None) -> np.ndarray | None:
    """The one centre every item shares, or None (none given, or per-item centres)."""
    if centre is None:
        return None
    c = np.asarray(centre, dtype=np.float64)
    if c.ndim == 1:
        return c
    return c[0] if np.all(c == c[0]) else None


def mean_target_control(scoring: Scoring, centre_rows: np.ndarray, targets: np.ndarray,
                        centre: np.ndarray | None = None) -> dict[str, Any]:
    """The prediction that knows nothing about the item: each item predicted by the mean
    of the training targets of the model that scores it (``centre_rows``, (n, d) or
    (d,)), scored like a decoder (bootstrap CIs, no p-values).

    Its cosine is high, because every target shares the mean direction, and its 2-way
    identification is at chance (a constant prediction ranks each pair one way); a method
    whose cosine falls below this row's has learnt less than the mean target."""
    rows = np.broadcast_to(np.asarray(centre_rows, dtype=np.float32),
                           targets.shape).copy()
    per_item = scoring.items(rows, targets, centre=centre)
    return {**scoring.summarize(per_item, rows, targets, np.arange(len(targets)),
                                with_p=False), "per_item": per_item}


def trial_scores(pred: np.ndarray, item_targets: np.ndarray, item_of_trial: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Single-trial predictions against the scored items' targets: cosine to their own
    target, 2-way identification, and the rank of their own target (1 = best) among all
    the items' targets."""
    idx = np.asarray(item_of_trial)
    sims = M.cosine_matrix(pred, item_targets)
    return {"cosine": M.cosine_per_item(pred, item_targets[idx]),
            "two_way": M.two_way_per_item(pred, item_targets, idx),
            "retrieval_rank": 1 + (sims > sims[np.arange(len(idx)), idx][:, None]).sum(axis=1)}


def by_group(per_item: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    """Each metric's mean within each label (labels in order of first appearance)."""
    out = {}
    labels = np.asarray(labels)
    for lab in dict.fromkeys(labels.tolist()):
        sel = labels == lab
        out[str(lab)] = {"n_items": int(sel.sum()),
                         **{k: float(np.mean(v[sel])) for k, v in per_item.items()}}
    return out
