"""Topological signatures (analysis 4): is imagery's representational geometry a
contracted, reshaped copy of vision's?

Per subject, on the perception decoder's embeddings of the NSD-Imagery trials
(:mod:`fmri2img.analysis.topology`):

* **persistent homology** (Vietoris-Rips H0, H1) of the vision and the imagery trial
  clouds, trial counts matched per target (imagery subsampled, seeded), and the
  1-Wasserstein distance between the two domains' diagrams per dimension, with a
  permutation p (domain labels swapped within target, then subsampled the same way);
* the **contraction ratio** ``sqrt(mean d2 imagery / mean d2 vision)`` of the
  cross-validated squared distances among target means (split halves, so trial noise
  does not inflate either domain's spread), with a bootstrap CI (one random split per
  draw, trials resampled within each half) and the within-target permutation p;
* **kNN preservation** (topological RSA): the share of each target's ``k`` nearest
  targets that are the same in the vision and imagery geometries (cross-validated),
  against chance ``k / (T - 1)``, p by permuting the imagery geometry's target labels.

The group result: the geometric-mean contraction ratio with a CI (mean of the
subjects' bootstrap log-ratios) and the pooled permutation p (mean of the subjects'
null log-ratios); kNN overlap and diagram distances pooled the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from fmri2img.analysis import topology as topo
from fmri2img.analysis.dimensionality import (
    TrialCells,
    draw_parts,
    group_difference,
    interval,
    part_grams,
    part_weights,
    permutation_p,
)
from fmri2img.config import StrictModel
from fmri2img.experiments.analyses.base import (
    IMAGERY,
    VISION,
    Analysis,
    Common,
    SubjectInputs,
    draws,
    effect,
    not_testable,
    num,
)
from fmri2img.report.analyses.topology import draw

log = logging.getLogger(__name__)

IMAGE_SETS = ("simple", "complex")

DIMS = ("H0", "H1")


class Options(StrictModel):
    """Options of the topology analysis."""

    sets: list[Literal["simple", "complex", "conceptual"]] = Field(
        default_factory=lambda: list(IMAGE_SETS),
        description="stimulus sets; the conceptual set (C) is left out by default: its "
                    "vision trials show several exemplar images of a word, its imagery "
                    "trials one concept, so its trials are not exchangeable between "
                    "domains even without an imagery effect (the permutation test "
                    "would be invalid)")
    model: str = Field("ridge", description="decoder model type of the embeddings")
    k: int = Field(3, ge=1, le=50, description="neighbours of kNN preservation")
    n_splits: int = Field(8, ge=1, le=64, description="random half splits averaged per "
                                                      "cross-validated geometry")
    ph_permutations: int = Field(200, ge=20, le=10_000, description="permutations of the "
                                 "diagram-distance test (two PH computations each)")
    backend: str | None = Field(None, description="persistent-homology library "
                                                  "(giotto-ph, gudhi, ripser; None: "
                                                  "the fastest installed)")
    min_targets: int = Field(6, ge=4, description="targets with >= 2 trials per domain "
                                                  "needed to be testable")


def needs(options: Options) -> list[str]:
    return [f"checkpoint:{options.model}"]


def _log_ratio(K: np.ndarray, idx: tuple[np.ndarray, np.ndarray], w: tuple[np.ndarray, ...]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw: log contraction ratio, and the split-averaged Gram of each domain."""
    gv, gi = (part_grams(K, i, ww).mean(axis=1) for i, ww in zip(idx, w, strict=True))
    ratio = topo.contraction_ratio(topo.mean_sq_distance(gi), topo.mean_sq_distance(gv))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(ratio), gv, gi


def _matched_clouds(cells: TrialCells, rng: np.random.Generator, permute: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Trial indices of matched vision and imagery clouds (min count per target each)."""
    vis, img = [], []
    for v, i in zip(cells.vision, cells.imagery, strict=True):
        m = min(v.size, i.size)
        if permute:
            pooled = rng.permutation(np.concatenate([v, i]))
            v, i = pooled[:v.size], pooled[v.size:]
        vis.append(rng.permutation(v)[:m])
        img.append(rng.permutation(i)[:m])
    return np.concatenate(vis), np.concatenate(img)


def _ph_distances(D: np.ndarray, iv: np.ndarray, ii: np.ndarray, backend: str | None
                  ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    dv = topo.persistence(distances=D[np.ix_(iv, iv)], backend=backend)
    di = topo.persistence(distances=D[np.ix_(ii, ii)], backend=backend)
    return topo.diagram_distances(dv, di, 1.0), dv, di


def _diagram(dgm: np.ndarray) -> list[list[float | None]]:
    return [[num(b), num(d)] for b, d in dgm]


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    rows = pd.concat([inputs.trials(VISION), inputs.trials(IMAGERY)])
    # the sets filtered here, not through trials(sets=...), as dissociation does
    rows = rows[rows["stimulus_set"].isin(options.sets)]
    target = rows["target_code"].astype(str).to_numpy()
    imagery = (rows["domain"] == IMAGERY).to_numpy()
    try:
        cells = TrialCells.of(target, imagery)
    except ValueError as exc:
        return not_testable(str(exc))
    T = cells.n_targets
    if T < max(options.min_targets, options.k + 2):
        return not_testable(f"{T} targets have >= 2 vision and >= 2 imagery trials "
                            f"(min_targets={options.min_targets}, k={options.k})")
    x = inputs.decoded(options.model, rows).astype(np.float64)
    K = x @ x.T
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    rng = np.random.default_rng(common.seed + 1000 * subject_no)
    hv, hi = cells.half_sizes(matched=False)
    w = (part_weights(hv, 2), part_weights(hi, 2))
    wb = (part_weights(hv, 2, bootstrap=True), part_weights(hi, 2, bootstrap=True))
    S = options.n_splits
    obs, gv, gi = _log_ratio(K, draw_parts(cells, 1, S, rng, matched=False), w)
    if not np.isfinite(obs[0]):
        return not_testable("the cross-validated spread of the target means is not "
                            "positive in a domain: no geometry to compare")
    # one split per bootstrap draw (see analysis.dimensionality.dimensionality_test):
    # resampling anew in each of S averaged splits would shrink the CI ~sqrt(S)-fold
    boot, _, _ = _log_ratio(K, draw_parts(cells, common.n_bootstrap, 1, rng,
                                          bootstrap=True, matched=False), wb)
    null, _, _ = _log_ratio(K, draw_parts(cells, common.n_permutations, S, rng,
                                          permute=True, matched=False), w)
    lr = float(obs[0])
    # kNN preservation on the observed cross-validated geometries
    dv, di = topo.cv_geometry(gv[0]), topo.cv_geometry(gi[0])
    overlap, p_knn, null_knn = topo.knn_test(dv, di, options.k, common.n_permutations, rng)
    # persistent homology of matched trial clouds
    D = topo.euclidean_distances(x)
    backend = topo.resolve_backend(options.backend)
    iv, ii = _matched_clouds(cells, rng, permute=False)
    wd, dgm_v, dgm_i = _ph_distances(D, iv, ii, backend)
    null_wd = np.array([_ph_distances(D, *_matched_clouds(cells, rng, permute=True),
                                      backend)[0] for _ in range(options.ph_permutations)])
    p_wd = [float((1 + (null_wd[:, j] >= wd[j] - 1e-12).sum()) / (1 + len(null_wd)))
            for j in range(len(DIMS))]
    log.info("topology %s: contraction %.3f (p %.3g), kNN %.2f (chance %.2f), W1 %s",
             inputs.subject, np.exp(lr), permutation_p(lr, null), overlap,
             options.k / (T - 1), np.round(wd, 3))
    ci = interval(boot, 1 - common.alpha)
    return {
        "testable": True, "n_targets": T, "backend": backend,
        "n_trials": {"vision": int((~imagery).sum()), "imagery": int(imagery.sum()),
                     "cloud": int(iv.size)},
        "contraction": float(np.exp(lr)), "contraction_ci": [num(np.exp(c)) for c in ci],
        "p_contraction": permutation_p(lr, null),
        "spread": {"vision": num(float(topo.mean_sq_distance(gv[0]))),
                   "imagery": num(float(topo.mean_sq_distance(gi[0])))},
        "knn": {"k": options.k, "overlap": overlap, "chance": options.k / (T - 1),
                "p": p_knn, "null": draws(null_knn)},
        "diagram_distance": {d: {"w1": float(wd[j]), "p": p_wd[j],
                                 "null": draws(null_wd[:, j])}
                             for j, d in enumerate(DIMS)},
        "total_persistence": {d: {"vision": topo.total_persistence(dgm_v[j]),
                                  "imagery": topo.total_persistence(dgm_i[j])}
                              for j, d in enumerate(DIMS)},
        "n_h1": {"vision": len(dgm_v[1]), "imagery": len(dgm_i[1])},
        "diagrams": {"vision": {d: _diagram(dgm_v[j]) for j, d in enumerate(DIMS)},
                     "imagery": {d: _diagram(dgm_i[j]) for j, d in enumerate(DIMS)}},
        "bootstrap_log_ratio": draws(boot), "null_log_ratio": draws(null)}


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    if not ok:
        why = "; ".join(f"{s}: {r.get('why')}" for s, r in per_subject.items())
        return {"finding": f"not testable in any subject ({why})",
                "effect": None, "significant": None}

    def arr(x: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in x], dtype=np.float64)

    rs = list(ok.values())
    mean_lr, ci_lr, p = group_difference([np.log(r["contraction"]) for r in rs],
                                         [arr(r["bootstrap_log_ratio"]) for r in rs],
                                         [arr(r["null_log_ratio"]) for r in rs],
                                         confidence=1 - common.alpha)
    ratio, ci = float(np.exp(mean_lr)), [float(np.exp(c)) for c in ci_lr]

    def pooled_upper(values: list[float], nulls: list[np.ndarray]) -> tuple[float, float]:
        n = min(len(x) for x in nulls)
        null = np.mean([x[:n] for x in nulls], axis=0)
        obs = float(np.mean(values))
        return obs, float((1 + (null >= obs - 1e-12).sum()) / (1 + n))

    knn, p_knn = pooled_upper([r["knn"]["overlap"] for r in rs],
                              [arr(r["knn"]["null"]) for r in rs])
    chance = float(np.mean([r["knn"]["chance"] for r in rs]))
    dist = {}
    for d in DIMS:
        v, pd_ = pooled_upper([r["diagram_distance"][d]["w1"] for r in rs],
                              [arr(r["diagram_distance"][d]["null"]) for r in rs])
        dist[d] = {"w1": v, "p": pd_}
    significant = bool(p < common.alpha)
    kind = "imagery geometry is contracted" if ratio < 1 else "imagery geometry is expanded"
    n_below = sum(r["contraction"] < 1 for r in rs)
    finding = (f"contraction ratio (imagery / vision cross-validated distance among target "
               f"means) {ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}], pooled permutation "
               f"p = {p:.3g}, {len(ok)} subjects ({n_below} below 1): "
               + (kind if significant else "no significant contraction")
               + f"; kNN preservation (k={options.k}) {knn:.2f} vs chance {chance:.2f} "
               f"(p = {p_knn:.3g}); diagram W1 H0 {dist['H0']['w1']:.3g} "
               f"(p = {dist['H0']['p']:.3g}), H1 {dist['H1']['w1']:.3g} "
               f"(p = {dist['H1']['p']:.3g})")
    finding += f"; sets {', '.join(options.sets)}"
    return {"finding": finding,
            "effect": effect("contraction ratio imagery / vision", ratio, ci, p),
            "significant": significant, "n_subjects": len(ok), "n_below_one": n_below,
            "knn": {"overlap": knn, "chance": chance, "p": p_knn, "k": options.k},
            "diagram_distance": dist,
            "not_testable": {s: r.get("why") for s, r in per_subject.items()
                             if not r.get("testable")}}


ANALYSIS = Analysis(
    name="topology",
    title="Topological signatures",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
