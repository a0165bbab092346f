"""Dimensionality gap (analysis 1): are imagery representations lower-dimensional than
vision ones?

Per subject and representation (the voxel patterns of each ROI in ``rois``, and the
ridge perception decoder's embeddings of the trials): the signal spectrum of the
target-mean patterns from split halves, trial counts matched per target
(:mod:`fmri2img.analysis.dimensionality`), its participation ratio (PR) and the
components for 90% of the signal variance (n90) in each domain, bootstrap CIs, and the
permutation p of the imagery - vision PR difference (domain labels swapped within
target). The group result is the mean difference over subjects of the ``primary``
representation with the pooled permutation p; every representation is reported.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from scipy import stats

from fmri2img.analysis.dimensionality import dimensionality_test, group_difference
from fmri2img.config import StrictModel
from fmri2img.experiments.analyses.base import (
    COARSE_ROIS,
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
from fmri2img.report.analyses.dimensionality import draw

log = logging.getLogger(__name__)

IMAGE_SETS = ("simple", "complex")

DECODED = "decoded"


class Options(StrictModel):
    """Options of the dimensionality analysis."""

    sets: list[Literal["simple", "complex", "conceptual"]] = Field(
        default_factory=lambda: list(IMAGE_SETS),
        description="stimulus sets; the conceptual set (C) is left out by default: its "
                    "vision trials show several exemplar images of a word, its imagery "
                    "trials one concept, so its trials are not exchangeable between "
                    "domains even without an imagery effect (the permutation test "
                    "would be invalid)")
    rois: list[str] = Field(default_factory=lambda: list(COARSE_ROIS),
                            description="ROIs (names of the config's rois) whose voxel "
                                        "patterns are measured")
    decoded: bool = Field(True, description="also measure the ridge decoder's embeddings")
    model: str = Field("ridge", description="decoder model type of the decoded embeddings")
    primary: str = Field("nsdgeneral", description="representation of the group effect "
                                                   "(an ROI of rois, or 'decoded')")
    n_splits: int = Field(4, ge=1, le=64, description="random half splits averaged per "
                                                      "estimate (and per resample)")
    min_targets: int = Field(6, ge=3, description="targets with >= 2 trials per domain "
                                                  "needed to be testable")

    @model_validator(mode="after")
    def _check(self) -> Options:
        names = [*self.rois, *([DECODED] if self.decoded else [])]
        if not names:
            raise ValueError("nothing to measure: give rois or decoded=true")
        if self.primary not in names:
            raise ValueError(f"primary must be one of {names}, got {self.primary!r}")
        if len(set(self.rois)) != len(self.rois):
            raise ValueError(f"rois must be distinct, got {self.rois}")
        return self


def needs(options: Options) -> list[str]:
    return [f"checkpoint:{options.model}"] if options.decoded else []


def _gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    rows = pd.concat([inputs.trials(VISION), inputs.trials(IMAGERY)])
    # the sets filtered here, not through trials(sets=...), as dissociation does
    rows = rows[rows["stimulus_set"].isin(options.sets)]
    target = rows["target_code"].astype(str).to_numpy()
    imagery = (rows["domain"] == IMAGERY).to_numpy()
    both = [t for t in np.unique(target)
            if (target[imagery] == t).sum() >= 4 and (target[~imagery] == t).sum() >= 4]
    if len(both) < options.min_targets:
        return not_testable(f"{len(both)} targets have >= 4 vision and >= 4 imagery "
                            f"trials (four parts; min_targets={options.min_targets})")
    missing = [r for r in options.rois if r not in inputs.rois]
    if missing:
        return not_testable(f"ROIs {missing} are not in the config's rois")
    grams: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    if options.rois:
        x = inputs.betas(rows)
        for name, mask in inputs.roi_masks(options.rois).items():
            if mask.sum() < 2:
                continue
            grams[name], sizes[name] = _gram(x[:, mask]), int(mask.sum())
    if options.decoded:
        d = inputs.decoded(options.model, rows)
        grams[DECODED], sizes[DECODED] = _gram(d), int(d.shape[1])
    if options.primary not in grams:
        return not_testable(f"the primary representation {options.primary} has < 2 voxels")
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    out: dict[str, Any] = {}
    for k, (name, K) in enumerate(grams.items()):
        r = dimensionality_test(K, target, imagery, n_splits=options.n_splits,
                                n_bootstrap=common.n_bootstrap,
                                n_permutations=common.n_permutations,
                                seed=common.seed + 1000 * subject_no + k,
                                confidence=1 - common.alpha)
        if not np.isfinite(r.difference):
            out[name] = {"n_features": sizes[name], "pr_vision": num(r.pr_vision),
                         "pr_imagery": num(r.pr_imagery), "difference": None,
                         "why": "no measurable signal variance in a domain"}
            continue
        out[name] = {
            "n_features": sizes[name], "pr_vision": r.pr_vision, "pr_imagery": r.pr_imagery,
            "pr_vision_ci": [num(c) for c in r.ci_vision],
            "pr_imagery_ci": [num(c) for c in r.ci_imagery],
            "difference": num(r.difference),
            "difference_ci": [num(c) for c in r.ci_difference], "p": r.p,
            "pr_clipped_vision": num(r.pr_clipped_vision),
            "pr_clipped_imagery": num(r.pr_clipped_imagery),
            "n90_vision": num(r.n90_vision), "n90_imagery": num(r.n90_imagery),
            "spectrum_vision": draws(r.spectrum_vision),
            "spectrum_imagery": draws(r.spectrum_imagery),
            "bootstrap": draws(r.bootstrap), "null": draws(r.null)}
        log.info("dimensionality %s %s: PR vision %.2f imagery %.2f (p %.3g)",
                 inputs.subject, name, r.pr_vision, r.pr_imagery, r.p)
    return {"testable": True, "primary": options.primary, "representations": out,
            "n_targets": r.n_targets, "trials_per_part": r.trials_per_part,
            "n_trials": {"vision": int((~imagery).sum()), "imagery": int(imagery.sum())}}


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    if not ok:
        why = "; ".join(f"{s}: {r.get('why')}" for s, r in per_subject.items())
        return {"finding": f"not testable in any subject ({why})",
                "effect": None, "significant": None}

    def arr(x: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in x], dtype=np.float64)

    names = [n for n in next(iter(ok.values()))["representations"]
             if all(r["representations"].get(n, {}).get("difference") is not None
                    for r in ok.values())]
    group: dict[str, Any] = {}
    for name in names:
        reps = [r["representations"][name] for r in ok.values()]
        mean, ci, p = group_difference([x["difference"] for x in reps],
                                       [arr(x["bootstrap"]) for x in reps],
                                       [arr(x["null"]) for x in reps],
                                       confidence=1 - common.alpha)
        # The trial bootstrap of a ratio of unbiased terms is heavy-tailed where a
        # domain's signal is weak (imagery): one draw with a near-zero tr(S^2) estimate
        # sets the upper bound. Across >= 3 subjects the group CI is the random-effects
        # t interval of the subjects' differences; the trial-bootstrap CI is kept beside.
        diffs = np.array([x["difference"] for x in reps], dtype=np.float64)
        if len(diffs) >= 3:
            half = stats.t.ppf(1 - common.alpha / 2, len(diffs) - 1) \
                * diffs.std(ddof=1) / np.sqrt(len(diffs))
            ci_group = [float(mean - half), float(mean + half)]
        else:
            ci_group = list(ci)
        group[name] = {"difference": mean, "ci": ci_group, "ci_trials": list(ci), "p": p,
                       "pr_vision": float(np.mean([x["pr_vision"] for x in reps])),
                       "pr_imagery": float(np.mean([x["pr_imagery"] for x in reps])),
                       "n90_vision": float(np.mean([x["n90_vision"] for x in reps])),
                       "n90_imagery": float(np.mean([x["n90_imagery"] for x in reps])),
                       "n_lower": int(sum(x["difference"] < 0 for x in reps))}
    prim = group.get(options.primary)
    if prim is None:
        return {"finding": f"{options.primary} not measured in every subject",
                "effect": None, "significant": None, "representations": group}
    significant = bool(prim["p"] < common.alpha)
    kind = ("imagery is lower-dimensional than vision" if prim["difference"] < 0
            else "imagery is higher-dimensional than vision")
    others = ", ".join(f"{n} {g['difference']:+.2f} (p {g['p']:.2g})"
                       for n, g in group.items() if n != options.primary)
    finding = (f"{options.primary} signal PR imagery - vision "
               f"{prim['difference']:+.2f} [{prim['ci'][0]:+.2f}, {prim['ci'][1]:+.2f}] "
               f"(vision {prim['pr_vision']:.2f}, imagery {prim['pr_imagery']:.2f}; clipped-"
               f"spectrum n90 {prim['n90_vision']:.1f} vs {prim['n90_imagery']:.1f}), "
               f"CI across subjects, pooled "
               f"permutation p = {prim['p']:.3g}, {len(ok)} subjects "
               f"({prim['n_lower']} lower): "
               + (kind if significant else "no significant dimensionality gap")
               + (f"; other representations {others}" if others else ""))
    finding += f"; sets {', '.join(options.sets)}"
    return {"finding": finding,
            "effect": effect(f"PR difference imagery - vision ({options.primary})",
                             prim["difference"], prim["ci"], prim["p"]),
            "significant": significant, "n_subjects": len(ok), "primary": options.primary,
            "representations": group,
            "not_testable": {s: r.get("why") for s, r in per_subject.items()
                             if not r.get("testable")}}


ANALYSIS = Analysis(
    name="dimensionality",
    title="Dimensionality gap",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
