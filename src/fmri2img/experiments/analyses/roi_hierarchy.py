"""ROI hierarchy profile (analysis 7): where along the visual hierarchy does imagery lose
most of what vision carries?

Per subject: one ridge perception decoder per hierarchy ROI (the shared stage
:mod:`~fmri2img.experiments.analyses.roi_decoding`), each NSD-Imagery vision and imagery
trial scored by 2-way identification; per ROI the transfer ratio ``(imagery - 0.5) /
(vision - 0.5)`` at matched (single-trial) repetitions with a bootstrap CI; the trend of
the ratio along the hierarchy (slope against hierarchy position) and the contrast of the
``high`` ROIs against the ``low`` ones, with permutation p's (domain labels swapped within
target, one permutation for all ROIs) (:mod:`fmri2img.analysis.hierarchy`); over all
targets and per stimulus set. Group: the mean ratio per ROI and the mean slope and
contrast over subjects, CIs from the subjects' bootstrap draws, pooled permutation p's.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from fmri2img.analysis.dissociation import Cells, preservation_ratio
from fmri2img.analysis.hierarchy import HierarchyProfile, group_mean, hierarchy_test, pooled_p
from fmri2img.config import StrictModel
from fmri2img.experiments.analyses.base import (
    Analysis,
    Common,
    SubjectInputs,
    draws,
    effect,
    not_testable,
    num,
)
from fmri2img.experiments.analyses.roi_decoding import WHOLE, roi_scores
from fmri2img.report.analyses.roi_hierarchy import draw

log = logging.getLogger(__name__)

SETS = ("simple", "complex", "conceptual")
OVERALL = "all"


class Options(StrictModel):
    """Options of the ROI hierarchy profile."""

    high: list[str] = Field(default_factory=lambda: ["ventral", "lateral"],
                            min_length=1, description="ROIs at the top of the contrast")
    low: list[str] = Field(default_factory=lambda: ["V1"], min_length=1,
                           description="ROIs at the bottom of the contrast")
    sets: list[Literal["simple", "complex", "conceptual"]] = Field(
        default_factory=lambda: list(SETS), min_length=1,
        description="stimulus sets of the overall profile (every set is also reported "
                    "on its own). All three by default: without the conceptual set's "
                    "exemplar images early ROIs barely identify anything in vision (the "
                    "simple shapes are at chance there in the small simulation) and "
                    "leave the trend; its vision trials show exemplars, not the imagined "
                    "concept, a difference shared by every ROI")
    min_voxels: int = Field(10, ge=1, description="ROIs with fewer voxels are not tested")
    alphas: list[float] | None = Field(None, min_length=1, description="ridge alpha grid "
                                       "of the ROI decoders (None: the package's default)")
    min_signal: float = Field(0.02, ge=0, lt=0.5, description="ROIs whose mean 2-way "
                              "score over both domains is less than this above chance are "
                              "left out of the trend (a ratio of noise)")

    @model_validator(mode="after")
    def _check(self) -> Options:
        if set(self.high) & set(self.low):
            raise ValueError(f"high and low share ROIs: {set(self.high) & set(self.low)}")
        if self.alphas is not None and any(a <= 0 for a in self.alphas):
            raise ValueError(f"alphas must be positive, got {self.alphas}")
        return self


def needs(options: Options) -> list[str]:
    return ["perception_index"]


def _part(r: HierarchyProfile, with_roi_draws: bool) -> dict[str, Any]:
    rois = {name: {"position": float(p), "vision": float(v), "imagery": float(i),
                   "pooled": float(q), "ratio": num(t), "ratio_ci": [num(c) for c in ci],
                   "used": bool(u)}
            for name, p, v, i, q, t, ci, u in zip(
                r.rois, r.positions, r.vision, r.imagery, r.pooled, r.ratio, r.ratio_ci,
                r.used, strict=True)}
    out: dict[str, Any] = {
        "rois": rois, "n_used": int(r.used.sum()), "slope": num(r.slope),
        "slope_ci": [num(c) for c in r.slope_ci], "t_slope": num(r.t_slope),
        "p": num(r.p), "p_ratio": num(r.p_ratio), "contrast": num(r.contrast),
        "contrast_ci": [num(c) for c in r.contrast_ci], "t_contrast": num(r.t_contrast),
        "p_contrast": num(r.p_contrast), "n_targets": r.n_targets,
        "n_trials": {"vision": r.n_vision, "imagery": r.n_imagery},
        "bootstrap_slope": draws(r.bootstrap_slope), "null_slope": draws(r.null_slope),
        "bootstrap_contrast": draws(r.bootstrap_contrast),
        "null_contrast": draws(r.null_contrast)}
    if with_roi_draws:
        out["bootstrap_ratio"] = {n: draws(b) for n, b in
                                  zip(r.rois, r.bootstrap_ratio, strict=True)}
    return out


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    stage = roi_scores(inputs, min_voxels=options.min_voxels, alphas=options.alphas,
                       seed=common.seed)
    rois = [r for r in inputs.hierarchy if r in stage.rois]
    base = {"n_voxels": stage.n_voxels, "not_testable_rois": stage.not_testable,
            "fit": stage.fit, "hierarchy": list(inputs.hierarchy)}
    if len(rois) < 2:
        return not_testable(f"{len(rois)} hierarchy ROIs have >= {options.min_voxels} "
                            f"voxels ({stage.not_testable})", **base)
    positions = [float(inputs.hierarchy.index(r)) for r in rois]
    scores = np.stack([stage.of(r) for r in rois])
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    parts: dict[str, dict[str, Any]] = {}
    for k, name in enumerate((OVERALL, *SETS)):
        mask = np.isin(stage.stimulus_set, options.sets if name == OVERALL else [name])
        if len(set(stage.target[mask])) < 2:
            continue
        r = hierarchy_test(scores[:, mask], stage.target[mask], stage.imagery[mask], rois,
                           positions, options.high, options.low,
                           min_signal=options.min_signal, n_bootstrap=common.n_bootstrap,
                           n_permutations=common.n_permutations,
                           seed=common.seed + 1000 * subject_no + k,
                           confidence=1 - common.alpha)
        parts[name] = _part(r, with_roi_draws=name == OVERALL)
        log.info("roi_hierarchy %s %s: slope %s (p %s), contrast %s", inputs.subject,
                 name, parts[name]["slope"], parts[name]["p"], parts[name]["contrast"])
    whole = None
    if WHOLE in stage.rois:
        mask = np.isin(stage.stimulus_set, options.sets)
        cells = Cells.of(stage.target[mask], stage.imagery[mask])
        v, i = cells.domain_means(stage.of(WHOLE)[None, mask])
        whole = {"vision": float(v[0]), "imagery": float(i[0]),
                 "ratio": num(preservation_ratio(v, i)[0])}
    overall = parts.get(OVERALL)
    if overall is None:
        return not_testable(f"fewer than 2 targets of sets {options.sets}", **base)
    if overall["slope"] is None:
        return not_testable(f"{overall['n_used']} hierarchy ROIs have decodable signal "
                            f"(min_signal={options.min_signal}): no trend to measure",
                            **base, overall=overall)
    return {"testable": True, **base, "rois": rois, "positions": positions,
            "sets": list(options.sets),
            "overall": overall, "by_set": {s: parts[s] for s in SETS if s in parts},
            "whole": whole}


def _arr(x: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=np.float64)


def _group_part(parts: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stat, t, boot, null in (("slope", "t_slope", "bootstrap_slope", "null_slope"),
                                ("contrast", "t_contrast", "bootstrap_contrast",
                                 "null_contrast")):
        have = [p for p in parts if p[stat] is not None and p[t] is not None]
        if not have:
            out[stat] = {"value": None, "ci": None, "p": None, "n": 0}
            continue
        mean, ci = group_mean([p[stat] for p in have], [_arr(p[boot]) for p in have],
                              confidence)
        out[stat] = {"value": mean, "ci": [num(c) for c in ci],
                     "p": pooled_p([p[t] for p in have], [_arr(p[null]) for p in have]),
                     "n": len(have), "n_positive": int(sum(p[stat] > 0 for p in have))}
    positions = {n: e["position"] for p in parts for n, e in p["rois"].items()}
    rois = {}
    for n in sorted(positions, key=positions.__getitem__):
        vals = [p["rois"][n] for p in parts if n in p["rois"] and p["rois"][n]["used"]
                and p["rois"][n]["ratio"] is not None]
        entry: dict[str, Any] = {
            "position": positions[n],
            "ratio": num(np.mean([v["ratio"] for v in vals])) if vals else None,
            "vision": num(np.mean([v["vision"] for v in vals])) if vals else None,
            "imagery": num(np.mean([v["imagery"] for v in vals])) if vals else None,
            "n": len(vals), "ci": None}
        boots = [_arr(p["bootstrap_ratio"][n]) for p in parts
                 if "bootstrap_ratio" in p and n in p["rois"] and p["rois"][n]["used"]
                 and p["rois"][n]["ratio"] is not None]
        if boots and len(boots) == len(vals):
            entry["ci"] = [num(c) for c in group_mean([v["ratio"] for v in vals], boots,
                                                        confidence)[1]]
        rois[n] = entry
    out["rois"] = rois
    return out


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    not_ok = {s: r.get("why") for s, r in per_subject.items() if not r.get("testable")}
    if not ok:
        why = "; ".join(f"{s}: {w}" for s, w in not_ok.items())
        return {"finding": f"not testable in any subject ({why})", "effect": None,
                "significant": None, "not_testable": not_ok}
    confidence = 1 - common.alpha
    overall = _group_part([r["overall"] for r in ok.values()], confidence)
    by_set = {}
    for name in SETS:
        parts = [r["by_set"][name] for r in ok.values() if name in r.get("by_set", {})]
        if parts:
            by_set[name] = _group_part(parts, confidence)
    sl, ct = overall["slope"], overall["contrast"]
    significant = bool(sl["p"] < common.alpha)
    direction = ("imagery keeps more of vision higher up the hierarchy" if sl["value"] > 0
                 else "imagery keeps less of vision higher up the hierarchy")
    ratios = ", ".join(f"{n} {e['ratio']:.2f}" for n, e in overall["rois"].items()
                       if e["ratio"] is not None)
    sets = ", ".join(f"{n} {g['slope']['value']:+.3f} (p {g['slope']['p']:.2g}, "
                     f"{sum(e['ratio'] is not None for e in g['rois'].values())} ROIs)"
                     for n, g in by_set.items() if g["slope"]["value"] is not None)
    contrast_text = (f"; contrast {'+'.join(options.high)} - {'+'.join(options.low)} "
                     f"{ct['value']:+.2f} [{_fmt(ct['ci'][0])}, {_fmt(ct['ci'][1])}] "
                     f"(p {ct['p']:.3g})" if ct["value"] is not None else "")
    finding = (f"transfer-ratio slope along the hierarchy {sl['value']:+.3f} per ROI "
               f"[{_fmt(sl['ci'][0])}, {_fmt(sl['ci'][1])}], pooled permutation p = "
               f"{sl['p']:.3g}, {len(ok)} subjects ({sl['n_positive']} positive): "
               + (direction if significant else "no significant hierarchy trend")
               + contrast_text + f"; sets {'+'.join(options.sets)}, mean ratios {ratios}"
               + (f"; per-set slopes {sets}" if sets else ""))
    return {"finding": finding,
            "effect": effect("transfer-ratio slope per hierarchy step", sl["value"],
                             sl["ci"], sl["p"]),
            "significant": significant, "n_subjects": len(ok),
            "hierarchy": next(iter(ok.values()))["hierarchy"], "high": options.high,
            "low": options.low, "overall": overall, "by_set": by_set,
            "not_testable": not_ok}


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:+.3f}"


ANALYSIS = Analysis(
    name="roi_hierarchy",
    title="ROI hierarchy profile",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
