"""Individual imagery fingerprints (analysis 5): does each subject degrade in imagery in
its own way?

Per subject: the per-ROI ridge decoders of the shared stage
(:mod:`~fmri2img.experiments.analyses.roi_decoding`) score every NSD-Imagery vision and
imagery trial; the **degradation profile** has one element per hierarchy ROI (that ROI's
decoder, all targets) and one per target (the ``nsdgeneral`` decoder), each comparing
imagery with vision identification (``statistic``: ``pooled``, the imagery - vision
difference over the label-free pooled score, or the plain ``ratio``; see
:mod:`fmri2img.analysis.fingerprints` for why ``pooled`` is the default). ``n_splits``
random split halves, drawn independently for vision and imagery trials within each
target, give two half-profiles per split (stored in the result) and the split-half
reliability (Spearman-Brown corrected; permutation p with domain labels swapped within
target). Sets ``simple`` and ``complex`` by default: the conceptual set's vision trials
show exemplar images, not the imagined concept, and in the null simulation (imagery =
perception) two of its targets score +0.24 higher in imagery than in vision, a stable
per-target difference that would pass for a fingerprint.

Group (``combine``, at least ``min_subjects`` testable subjects): fingerprint
identification (each subject's half-A profile matched to every subject's half-B profile),
accuracy against chance ``1 / n`` with the permutation p of relabelled halves, the
differential identifiability (self - other correlation), the mean reliability with a
pooled p, and the second-order similarity of the subjects' full profiles (permutation p
against profiles recomputed with domain labels swapped within target).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field

from fmri2img.analysis.fingerprints import (
    Elements,
    correlation_matrix,
    element_values,
    half_labels,
    identify,
    split_half_reliability,
    within_target_permutations,
)
from fmri2img.analysis.hierarchy import interval
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
from fmri2img.experiments.analyses.roi_decoding import IMAGE_SETS, WHOLE, roi_scores
from fmri2img.report.analyses.fingerprints import draw

log = logging.getLogger(__name__)

_NULL_PROFILES = 500  # domain-permuted full profiles kept per subject
ROI, TARGET = "roi:", "target:"


class Options(StrictModel):
    """Options of the imagery fingerprints."""

    n_splits: int = Field(20, ge=2, le=500, description="random split halves")
    statistic: Literal["pooled", "ratio"] = Field(
        "pooled", description="profile element: (imagery - vision) / (pooled - 0.5), "
                              "unbiased under exchangeable domains, or the plain ratio")
    centre: bool = Field(True, description="remove the mean profile over subjects before "
                                           "matching halves")
    elements: list[Literal["rois", "targets"]] = Field(
        default_factory=lambda: ["rois", "targets"], min_length=1,
        description="profile elements: per hierarchy ROI and/or per target")
    min_voxels: int = Field(10, ge=1, description="ROIs with fewer voxels are left out")
    alphas: list[float] | None = Field(None, min_length=1, description="ridge alpha grid "
                                       "of the ROI decoders (None: the package's default)")
    sets: list[Literal["simple", "complex", "conceptual"]] = Field(
        default_factory=lambda: list(IMAGE_SETS), min_length=1,
        description="stimulus sets of the profile; the conceptual set's vision trials "
                    "show exemplar images, not the imagined concept, so its vision and "
                    "imagery trials differ even where imagery equals perception")
    min_subjects: int = Field(3, ge=3, description="testable subjects needed for the "
                                                   "group tests")
    min_elements: int = Field(5, ge=3, description="finite profile elements needed")


def needs(options: Options) -> list[str]:
    return ["perception_index"]


def _arr(x: Any) -> np.ndarray:
    return np.array(x, dtype=np.float64)  # None (a value not defined) becomes NaN


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    stage = roi_scores(inputs, min_voxels=options.min_voxels, alphas=options.alphas,
                       seed=common.seed)
    base = {"n_voxels": stage.n_voxels, "not_testable_rois": stage.not_testable,
            "statistic": options.statistic, "sets": list(options.sets)}
    in_sets = np.isin(stage.stimulus_set, options.sets)
    target, imagery = stage.target[in_sets], stage.imagery[in_sets]
    codes = sorted(t for t in set(target) if (target[imagery] == t).sum() >= 2
                   and (target[~imagery] == t).sum() >= 2)
    if len(codes) < 2:
        return not_testable(f"{len(codes)} targets have >= 2 vision and >= 2 imagery "
                            "trials (one per half)", **base)
    keep = np.isin(target, codes)
    tidx = np.searchsorted(codes, target[keep])
    rows, names, row, tgt = [], [], [], []
    if "rois" in options.elements:
        for r in inputs.hierarchy:
            if r in stage.rois:
                names.append(f"{ROI}{r}")
                row.append(len(rows))
                tgt.append(-1)
                rows.append(stage.of(r)[in_sets][keep])
    if "targets" in options.elements and WHOLE in stage.rois:
        whole = len(rows)
        rows.append(stage.of(WHOLE)[in_sets][keep])
        for k, c in enumerate(codes):
            names.append(f"{TARGET}{c}")
            row.append(whole)
            tgt.append(k)
    if not names:
        return not_testable("no profile element: no testable ROI decoder", **base)
    elements = Elements(names, np.array(row), np.array(tgt))
    scores = np.stack(rows)
    img = imagery[keep]
    vis_e, img_e, pool_e = (x[0] for x in elements.measure(
        scores, tidx, img, np.ones((1, img.size), bool), len(codes)))
    values = element_values(vis_e, img_e, pool_e, options.statistic)
    ratios = element_values(vis_e, img_e, pool_e, "ratio")
    n_finite = int(np.isfinite(values).sum())
    profile = {n: {"vision": float(v), "imagery": float(i), "pooled": float(q),
                   "ratio": num(r), "value": num(x)}
               for n, v, i, q, r, x in zip(names, vis_e, img_e, pool_e, ratios, values,
                                           strict=True)}
    if n_finite < options.min_elements:
        return not_testable(f"{n_finite} profile elements have identification above "
                            f"chance (min_elements={options.min_elements})",
                            **base, profile=profile)
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    rng = np.random.default_rng(common.seed + 1000 * subject_no + 5)
    labels = half_labels(target[keep], img, options.n_splits, rng)
    rel = split_half_reliability(elements, scores, tidx, img, labels, len(codes),
                                 options.statistic, common.n_permutations, rng)
    halves = rel.halves
    # full profiles with domains swapped within target: the null of the between-subject
    # similarity (an element shuffle would break the ceiling elements' shared zeros)
    perms = within_target_permutations(tidx, min(common.n_permutations, _NULL_PROFILES),
                                       rng)
    everything = np.ones((1, img.size), bool)
    null_profiles = np.stack([elements.profile(scores[:, p], tidx, img, everything,
                                               len(codes), options.statistic)[0]
                              for p in perms])
    log.info("fingerprints %s: %d elements, split-half rho %.3f (SB %.3f, p %.3g)",
             inputs.subject, len(names), rel.r_half, rel.r_full, rel.p)
    return {"testable": True, **base, "elements": names, "profile": profile,
            "n_targets": len(codes),
            "n_trials": {"vision": int((~img).sum()), "imagery": int(img.sum())},
            "reliability": {"r_half": num(rel.r_half), "r_full": num(rel.r_full),
                            "p": num(rel.p), "per_split": draws(rel.per_split),
                            "null": draws(rel.null)},
            "halves": [[draws(h) for h in split] for split in halves],
            "null_profiles": [draws(x) for x in null_profiles]}


def _aligned(ok: dict[str, dict[str, Any]]
             ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Element names (union, first-seen order), full profiles (n, E), half profiles
    (n, S, 2, E) and null full profiles (n, P, E), NaN where a subject lacks an
    element."""
    names = list(dict.fromkeys(n for r in ok.values() for n in r["elements"]))
    pos = {n: k for k, n in enumerate(names)}
    n_s = min(len(r["halves"]) for r in ok.values())
    n_p = min(len(r["null_profiles"]) for r in ok.values())
    full = np.full((len(ok), len(names)), np.nan)
    halves = np.full((len(ok), n_s, 2, len(names)), np.nan)
    nulls = np.full((len(ok), n_p, len(names)), np.nan)
    for k, r in enumerate(ok.values()):
        cols = [pos[n] for n in r["elements"]]
        full[k, cols] = _arr([r["profile"][n]["value"] for n in r["elements"]])
        halves[k][..., cols] = _arr(r["halves"])[:n_s]
        nulls[k][:, cols] = _arr(r["null_profiles"])[:n_p]
    return names, full, halves, nulls


def _mean_between(profiles: np.ndarray) -> float:
    """Mean rank correlation over the pairs of subjects' profiles (n, E)."""
    mat = correlation_matrix(profiles, profiles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no finite pair
        return float(np.nanmean(mat[~np.eye(len(mat), dtype=bool)]))


def _similarity(full: np.ndarray, nulls: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Subjects' full-profile rank correlations, their mean off-diagonal, and its
    two-sided permutation p against the subjects' domain-permuted profiles (each
    subject's permutations its own)."""
    observed = _mean_between(full)
    null = np.array([_mean_between(nulls[:, k]) for k in range(nulls.shape[1])])
    extreme = ~np.isfinite(null) | (np.abs(null) >= abs(observed))
    return correlation_matrix(full, full), observed, float((1 + extreme.sum())
                                                           / (1 + null.size))


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    not_ok = {s: r.get("why") for s, r in per_subject.items() if not r.get("testable")}
    if len(ok) < options.min_subjects:
        why = "; ".join(f"{s}: {w}" for s, w in not_ok.items())
        return {"finding": f"not testable: {len(ok)} testable subjects, fingerprints need "
                           f">= {options.min_subjects}" + (f" ({why})" if why else ""),
                "effect": None, "significant": None, "not_testable": not_ok}
    subjects = list(ok)
    names, full, halves, nulls = _aligned(ok)
    ident = identify(halves, centre=options.centre, n_permutations=common.n_permutations,
                     seed=common.seed + 7)
    mat, between, p_between = _similarity(full, nulls)
    rel = [r["reliability"] for r in ok.values()]
    r_half = float(np.mean([x["r_half"] for x in rel]))
    n_p = min(len(x["null"]) for x in rel)
    null = np.nanmean([_arr(x["null"])[:n_p] for x in rel], axis=0)
    p_rel = float((1 + np.sum(~np.isfinite(null) | (null >= r_half))) / (1 + n_p))
    ci = interval(ident.per_split, 1 - common.alpha)
    significant = bool(ident.p < common.alpha)
    finding = (f"fingerprint identification {ident.accuracy:.2f} (split range "
               f"[{ci[0]:.2f}, {ci[1]:.2f}]; chance {ident.chance:.2f}), permutation "
               f"p = {ident.p:.3g}{' (exact)' if ident.exact else ''}, {len(ok)} subjects: "
               + ("profiles identify their subject" if significant
                  else "no significant individual fingerprint")
               + f"; differential identifiability {ident.i_diff:+.3f} (p {ident.p_i_diff:.3g});"
               f" split-half reliability rho {r_half:.2f} (Spearman-Brown "
               f"{float(np.mean([x['r_full'] for x in rel])):.2f}, pooled p {p_rel:.3g}); "
               f"between-subject profile similarity rho {between:.2f} (p {p_between:.3g}); "
               f"{len(names)} elements ({options.statistic})")
    return {"finding": finding,
            "effect": effect("fingerprint identification accuracy", ident.accuracy, ci,
                             ident.p),
            "significant": significant, "n_subjects": len(ok), "subjects": subjects,
            "chance": ident.chance, "exact": ident.exact,
            "per_split": draws(ident.per_split), "null": draws(ident.null),
            "i_diff": {"value": num(ident.i_diff), "p": num(ident.p_i_diff),
                       "self": num(ident.self_r), "other": num(ident.other_r)},
            "reliability": {"r_half": r_half, "p": p_rel,
                            "r_full": float(np.mean([x["r_full"] for x in rel])),
                            "per_subject": {s: r["reliability"]["r_full"]
                                            for s, r in ok.items()}},
            "similarity": {"mean": num(between), "p": num(p_between),
                           "matrix": [draws(row) for row in mat]},
            "half_correlation": [draws(row) for row in ident.mean_correlation],
            "centred": options.centre,
            "elements": names, "profiles": {s: draws(p) for s, p in zip(subjects, full,
                                                                          strict=True)},
            "not_testable": not_ok}


ANALYSIS = Analysis(
    name="fingerprints",
    title="Individual imagery fingerprints",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
