"""Semantic survival (analysis 3): what part of a target's decoded meaning survives
imagery?

Per subject: the perception decoder (``model``, default ridge) predicts the embedding of
every scored NSD-Imagery vision and imagery trial; each trial is scored by 2-way
identification against the session's 18 target embeddings (one per target code: the
key its imagery trials carry; the conceptual targets' vision trials show exemplar images
and are scored against their word's embedding). Per target, per stimulus set (simple,
complex, conceptual), per ``category`` when the index has that column, and over all
targets: vision and imagery identification and the preservation ratio ``(imagery -
0.5) / (vision - 0.5)`` at matched (single-trial) repetitions, with bootstrap CIs
(:mod:`fmri2img.analysis.semantic`).

Decomposition, with a ``semantic_table`` (embeddings of category words or captions in the
targets' space): predictions and gallery are split into their projection on the table's
span (``semantic_energy`` of its energy, at most ``max_rank`` directions) and the rest;
each part's preservation ratio, and their difference (semantic - rest) with a bootstrap
CI and a domain-permutation p within target. The group difference is the subjects' mean
with the pooled permutation p.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.analysis.dissociation import dissociation_test, group_ssi
from fmri2img.analysis.rsa import sign_flip
from fmri2img.analysis.semantic import Preservation, part_scores, preservation, semantic_basis
from fmri2img.config import StrictModel
from fmri2img.data.trials import Targets
from fmri2img.errors import DataError
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
from fmri2img.experiments.analyses.uncertainty import gallery_of
from fmri2img.report.analyses.semantic_survival import draw

log = logging.getLogger(__name__)
SETS = ("simple", "complex", "conceptual")
PARTS = ("semantic", "rest")


class Options(StrictModel):
    """Options of the semantic survival analysis."""

    model: str = Field("ridge", description="perception decoder (checkpoint) whose "
                                            "predictions are scored")
    semantic_energy: float = Field(0.99, gt=0, le=1, description="share of the semantic "
                                   "table's energy its basis keeps")
    max_rank: int | None = Field(None, ge=1, description="most directions of the semantic "
                                                         "subspace (None: no cap)")
    decomposition_sets: list[Literal["simple", "complex", "conceptual"]] = Field(
        default_factory=lambda: ["simple", "complex"],
        description="stimulus sets pooled in the semantic - rest test; the conceptual set "
                    "is reported apart by default: its vision trials show exemplar "
                    "images, not the target word, so vision and imagery trials are not "
                    "exchangeable within target and the permutation null does not hold")
    min_vision: float = Field(0.55, gt=0.5, lt=1, description="a part whose vision "
                              "identification is below this has no meaningful ratio: the "
                              "decomposition is then not testable")

    @field_validator("decomposition_sets")
    @classmethod
    def _sets(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"decomposition_sets must be distinct sets, got {v}")
        return v


def needs(options: Options) -> list[str]:
    return [f"checkpoint:{options.model}", "semantic_table"]


def _groups(rows: pd.DataFrame, column: str) -> dict[str, list[str]]:
    if column not in rows:
        return {}
    return {str(g): sorted(set(d["target_code"])) for g, d in rows.groupby(column)
            if pd.notna(g)}


def _preservation_dict(p: Preservation, keys: dict[str, str]) -> dict[str, Any]:
    return {"targets": {str(t): {"stimulus": keys.get(str(t)), "vision": num(v),
                                 "imagery": num(i), "ratio": num(r),
                                 "ci": [num(c) for c in ci], "n_vision": int(nv),
                                 "n_imagery": int(ni)}
                        for t, v, i, r, ci, nv, ni in zip(
                            p.targets, p.vision, p.imagery, p.ratio, p.ratio_ci,
                            p.n_vision, p.n_imagery, strict=True)},
            "groups": {g: {**d, "ratio": num(d["ratio"]), "ci": [num(c) for c in d["ci"]]}
                       for g, d in p.groups.items()}}


def _semantic_table(inputs: SubjectInputs) -> Targets | None:
    if inputs.semantic_table is None:
        return None
    table = Targets.open(inputs.semantic_table)
    if table.dim != inputs.targets.dim:
        raise DataError(f"the semantic table has {table.dim}-dimensional embeddings, the "
                        f"targets {inputs.targets.dim}: they must share one space",
                        inputs.semantic_table)
    return table


def _decomposition(scores: dict[str, np.ndarray], target: np.ndarray,
                   imagery: np.ndarray, groups: dict[str, list[str]], options: Options,
                   common: Common, seed: int) -> dict[str, Any]:
    s = np.stack([scores[p] for p in PARTS])

    def test(mask: np.ndarray, offset: int) -> Any:
        return dissociation_test(s[:, mask], target[mask], imagery[mask], list(PARTS),
                                 [False, True], n_bootstrap=common.n_bootstrap,
                                 n_permutations=common.n_permutations,
                                 seed=seed + offset, confidence=1 - common.alpha)

    chosen = [t for name in options.decomposition_sets for t in groups.get(name, [])]
    pooled = np.isin(target, chosen)
    if len(set(target[pooled])) < 2:
        return not_testable(f"fewer than 2 targets in the sets {options.decomposition_sets}")
    res = test(pooled, 0)
    parts = {p: {"vision": float(v), "imagery": float(i), "ratio": num(r),
                 "ci": [num(1 - c) for c in ci[::-1]]}
             for p, v, i, r, ci in zip(PARTS, res.vision, res.imagery, res.ratio,
                                       res.gap_ci, strict=True)}
    low = [p for p, v in zip(PARTS, res.vision, strict=True) if v < options.min_vision]
    if low:
        return not_testable(f"vision identification of the {' and '.join(low)} part "
                            f"below min_vision={options.min_vision}: its preservation "
                            "ratio would divide by noise", parts=parts)
    by_set = {}
    for k, (name, members) in enumerate(groups.items()):
        mask = np.isin(target, members)
        if len(set(target[mask])) < 2:
            continue
        r = test(mask, 1 + k)
        by_set[name] = {"difference": num(r.ssi), "ci": [num(c) for c in r.ci], "p": r.p,
                        "pooled": name in options.decomposition_sets,
                        **{f"ratio_{p}": num(x) for p, x in zip(PARTS, r.ratio,
                                                                 strict=True)}}
    return {"testable": True, "sets": list(options.decomposition_sets),
            "n_targets": res.n_targets, "parts": parts, "difference": num(res.ssi),
            "ci": [num(c) for c in res.ci], "p": res.p, "p_direct": res.p_ssi,
            "t": res.t, "by_set": by_set, "bootstrap": draws(res.bootstrap),
            "null_t": draws(res.null)}


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    vis, img = inputs.trials(VISION), inputs.trials(IMAGERY)
    both = sorted(set(vis["target_code"]) & set(img["target_code"]))
    if len(both) < 2:
        return not_testable(f"{len(both)} targets have both vision and imagery trials")
    keys, _ = gallery_of(img)
    rows = pd.concat([vis, img])
    rows = rows[rows["target_code"].isin(both)]
    codes = sorted(set(img["target_code"]))
    true = rows["target_code"].map({c: i for i, c in enumerate(codes)}).to_numpy(np.int64)
    gallery = inputs.targets.rows(keys)
    pred = inputs.decoded(options.model, rows)
    table = _semantic_table(inputs)
    basis = None if table is None else semantic_basis(table.embeddings,
                                                      options.semantic_energy,
                                                      options.max_rank)
    scores = part_scores(pred, gallery, true, None if basis is None else basis.vectors)
    target = rows["target_code"].to_numpy().astype(str)
    imagery = (rows["domain"] == IMAGERY).to_numpy()
    sets = {s: m for s, m in _groups(rows, "stimulus_set").items() if s in SETS}
    groups = {**sets, "all": both}
    categories = _groups(rows, "category")
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    seed = common.seed + 1000 * subject_no
    kw = dict(n_bootstrap=common.n_bootstrap, confidence=1 - common.alpha)
    key_of = dict(zip(codes, keys, strict=True))
    full = preservation(scores["full"], target, imagery, {**groups, **{
        f"category:{c}": m for c, m in categories.items()}}, seed=seed, **kw)
    out: dict[str, Any] = {
        "testable": True, "model": options.model, "n_targets": len(both),
        "n_trials": {"vision": int((~imagery).sum()), "imagery": int(imagery.sum())},
        "full": _preservation_dict(full, key_of)}
    if basis is None:
        out["decomposition"] = not_testable(
            "no semantic_table (embeddings of category words or captions in the targets' "
            "space) given: no semantic subspace to project on")
        return out
    out["subspace"] = {"table": str(inputs.semantic_table), "n_rows": len(table.keys),
                       "rank": int(basis.vectors.shape[1]), "dim": int(table.dim),
                       "kept_energy": basis.kept_energy, "capped": basis.capped}
    for k, part in enumerate(PARTS):
        p = preservation(scores[part], target, imagery, groups, seed=seed + 1 + k, **kw)
        out[part] = {"groups": _preservation_dict(p, key_of)["groups"]}
    out["decomposition"] = _decomposition(scores, target, imagery, sets, options, common,
                                          seed + 10)
    return out


def _arr(x: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=np.float64)


def _group_ratios(ok: dict[str, dict[str, Any]], block: str, common: Common
                  ) -> dict[str, Any]:
    """Per group of targets: the subjects' mean ratio, its CI over subjects and the
    sign-flip p of "ratio = 0" (imagery at chance)."""
    names = dict.fromkeys(g for r in ok.values() for g in r[block]["groups"])
    out = {}
    for g in names:
        vals = [r[block]["groups"][g]["ratio"] for r in ok.values()
                if g in r[block]["groups"]]
        sf = sign_flip([v for v in vals if v is not None], n_resamples=common.n_bootstrap,
                       seed=common.seed)
        out[g] = {"ratio": sf["mean"], "ci": sf["ci"], "p_vs_chance": sf["p_value"],
                  "n_subjects": sf["n"]}
    return out


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    not_ok = {s: r.get("why") for s, r in per_subject.items() if not r.get("testable")}
    if not ok:
        why = "; ".join(f"{s}: {w}" for s, w in not_ok.items())
        return {"finding": f"not testable in any subject ({why})", "effect": None,
                "significant": None, "not_testable": not_ok}
    ratios = {b: _group_ratios(ok, b, common) for b in ("full", *PARTS)
              if all(b in r for r in ok.values())}
    sets_text = ", ".join(f"{g} {d['ratio']:.2f}" for g, d in ratios["full"].items()
                          if d["ratio"] is not None and g != "all")
    overall = ratios["full"].get("all", {})
    dec = {s: r["decomposition"] for s, r in ok.items()
           if r.get("decomposition", {}).get("testable")}
    for s, r in ok.items():
        if not r.get("decomposition", {}).get("testable"):
            not_ok[f"{s} (decomposition)"] = r.get("decomposition", {}).get("why")
    base = {"ratios": ratios, "n_subjects": len(ok), "not_testable": not_ok}
    all_ratio = overall.get("ratio")
    ratio_text = ("imagery/vision preservation ratio "
                  f"{np.nan if all_ratio is None else all_ratio:.2f} over all targets "
                  f"({sets_text})")
    if not dec:
        why = "; ".join(f"{s}: {w}" for s, w in not_ok.items())
        return {"finding": f"{ratio_text}, {len(ok)} subjects; semantic/rest "
                           f"decomposition not testable ({why})",
                "effect": None, "significant": None, **base}
    mean, ci, p = group_ssi([r["difference"] for r in dec.values()],
                            [_arr(r["bootstrap"]) for r in dec.values()],
                            [r["t"] for r in dec.values()],
                            [_arr(r["null_t"]) for r in dec.values()],
                            confidence=1 - common.alpha)
    part_ratio = {p_: float(np.nanmean([num(r["parts"][p_]["ratio"]) or np.nan
                                        for r in dec.values()])) for p_ in PARTS}
    by_set = {}
    for name in SETS:
        vals = [r["by_set"][name]["difference"] for r in dec.values()
                if name in r["by_set"] and r["by_set"][name]["difference"] is not None]
        if vals:
            by_set[name] = float(np.mean(vals))
    significant = bool(p < common.alpha)
    kind = ("the semantic part survives imagery better than the rest" if mean > 0
            else "the rest survives imagery better than the semantic part")
    finding = (f"{ratio_text}; semantic - rest preservation {mean:+.3f} "
               f"[{ci[0]:+.3f}, {ci[1]:+.3f}], pooled permutation p = {p:.3g}, "
               f"{len(dec)} subjects ({sum(r['difference'] > 0 for r in dec.values())} "
               f"positive): " + (kind if significant else "no significant difference")
               + f" (sets {'+'.join(options.decomposition_sets)}; ratios: semantic "
               f"{part_ratio['semantic']:.2f}, rest {part_ratio['rest']:.2f}; by set "
               + ", ".join(f"{k} {v:+.2f}" for k, v in by_set.items()) + ")")
    return {"finding": finding,
            "effect": effect("semantic - rest preservation ratio", mean, ci, p),
            "significant": significant, "part_ratio": part_ratio,
            "difference_by_set": by_set, "n_decomposed": len(dec),
            "per_subject": {s: r["difference"] for s, r in dec.items()}, **base}


ANALYSIS = Analysis(
    name="semantic_survival",
    title="Semantic survival",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
