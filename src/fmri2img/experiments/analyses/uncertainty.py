"""Uncertainty as vividness (analysis 2): does a neural decoder's MC-dropout uncertainty,
or its accuracy, follow how vividly a trial was imagined?

Per subject and neural perception decoder (``models``, default mlp): the decoder's
network runs ``n_passes`` times on each scored imagery trial's preprocessed betas with
its dropout layers active (:func:`fmri2img.analysis.uncertainty.mc_dropout`); the
trial's uncertainty is the predictive variance, its accuracy the 2-way identification of
the MC mean prediction against the session's 18 target embeddings. Spearman's rho of
each with the trial's vividness answer (1 vivid, 0 not), over the trials with an answer,
with a bootstrap CI (trials resampled within target) and a permutation p (answers
shuffled within target, which keeps target difficulty out of the null); and the
calibration data, accuracy by uncertainty quantile bin. A decoder without dropout, or a
subject whose answers do not vary (on the real NSD-Imagery files subject 7 answered
"vivid" on every answered imagery trial), is not testable, with the reason. The group
result is the mean rho over subjects with a pooled permutation p.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.analysis.uncertainty import (
    Correlation,
    calibration,
    dropout_rates,
    mc_dropout,
    pooled_test,
    spearman_test,
    vividness_problem,
)
from fmri2img.config import StrictModel
from fmri2img.eval.metrics import two_way_per_item
from fmri2img.experiments.analyses.base import (
    IMAGERY,
    Analysis,
    Common,
    SubjectInputs,
    draws,
    effect,
    not_testable,
    num,
)
from fmri2img.report.analyses.uncertainty import draw

log = logging.getLogger(__name__)
MEASURES = ("uncertainty", "accuracy")


class Options(StrictModel):
    """Options of the uncertainty analysis."""

    models: list[str] = Field(default_factory=lambda: ["mlp"],
                              description="neural perception decoders (checkpoints) to "
                                          "probe; the first gives the headline effect")
    n_passes: int = Field(30, ge=2, le=10_000, description="MC-dropout forward passes T")
    n_bins: int = Field(5, ge=2, le=50, description="uncertainty quantile bins of the "
                                                    "calibration plot")
    min_answers: int = Field(20, ge=3, description="fewest imagery trials with a "
                                                   "vividness answer")
    min_each: int = Field(3, ge=1, description="fewest trials with the rarer answer")

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"models must be a non-empty list of distinct names, got {v}")
        return v


def needs(options: Options) -> list[str]:
    return [f"checkpoint:{m}" for m in options.models]


def gallery_of(rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The session's target keys (one per target code: the key its imagery trials
    carry) and each row's index into them."""
    img = rows[rows["domain"] == IMAGERY] if "domain" in rows else rows
    key_of = img.groupby("target_code")["stimulus"].agg(lambda s: s.mode().iat[0])
    codes = sorted(key_of.index)
    keys = [str(key_of[c]) for c in codes]
    pos = {c: i for i, c in enumerate(codes)}
    return keys, rows["target_code"].map(pos).to_numpy(dtype=np.int64)


def _correlation(c: Correlation) -> dict[str, Any]:
    return {"rho": num(c.rho), "ci": [num(x) for x in c.ci], "p": c.p, "n": c.n,
            "bootstrap": draws(c.bootstrap), "null": draws(c.null)}


def _model(inputs: SubjectInputs, model: str, rows: pd.DataFrame, gallery: np.ndarray,
           true: np.ndarray, vivid: np.ndarray, target: np.ndarray, options: Options,
           common: Common, seed: int) -> dict[str, Any]:
    pipe = inputs.decoder(model)
    net = getattr(pipe.decoder, "network_", None)
    if net is None:
        return not_testable(f"{model} is not a neural decoder (no torch network to run "
                            "with dropout)")
    rates = dropout_rates(net)
    if not any(r > 0 for r in rates):
        return not_testable(f"the {model} decoder has no dropout (rates "
                            f"{rates or 'none'}): MC-dropout gives no variance")
    x = pipe.preprocessor.transform(inputs.betas(rows))
    mean, var = mc_dropout(net, x, options.n_passes, seed=seed)
    acc = two_way_per_item(mean, gallery, true)
    kw = dict(n_bootstrap=common.n_bootstrap, n_permutations=common.n_permutations,
              confidence=1 - common.alpha)
    tests = {"uncertainty": spearman_test(var, vivid, target, seed=seed + 1, **kw),
             "accuracy": spearman_test(acc, vivid, target, seed=seed + 2, **kw)}
    cal = calibration(var, acc, options.n_bins)
    answered = np.isfinite(vivid)
    by_answer = {f"{v:g}": {"n": int((vivid == v).sum()),
                            "uncertainty": float(var[vivid == v].mean()),
                            "accuracy": float(acc[vivid == v].mean())}
                 for v in np.unique(vivid[answered])}
    return {"testable": True, "dropout": rates, "n_passes": options.n_passes,
            "mean_uncertainty": float(var.mean()), "mean_accuracy": float(acc.mean()),
            "by_answer": by_answer, **{m: _correlation(t) for m, t in tests.items()},
            "calibration": {"edges": [num(e) for e in cal.edges],
                            "uncertainty": [num(u) for u in cal.uncertainty],
                            "accuracy": [num(a) for a in cal.accuracy],
                            "count": cal.count.tolist()}}


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    rows = inputs.trials(IMAGERY)
    vivid = rows["vividness"].to_numpy(dtype=np.float64)
    answered = np.isfinite(vivid)
    values, counts = np.unique(vivid[answered], return_counts=True)
    base = {"n_trials": int(len(rows)), "n_answered": int(answered.sum()),
            "vividness_counts": {f"{v:g}": int(c) for v, c in zip(values, counts,
                                                                   strict=True)}}
    why = vividness_problem(vivid, options.min_answers, options.min_each)
    if why is not None:
        return not_testable(why, **base)
    keys, true = gallery_of(rows)
    if len(keys) < 2:
        return not_testable(f"{len(keys)} imagery target(s): 2-way identification needs "
                            "two", **base)
    gallery = inputs.targets.rows(keys)
    target = rows["target_code"].to_numpy()
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    models = {}
    for k, model in enumerate(options.models):
        seed = common.seed + 1000 * subject_no + 10 * k
        models[model] = _model(inputs, model, rows, gallery, true, vivid, target, options,
                               common, seed)
    if not any(r["testable"] for r in models.values()):
        return not_testable("; ".join(f"{m}: {r['why']}" for m, r in models.items()),
                            models=models, **base)
    return {"testable": True, **base, "n_targets": len(keys), "models": models}


def _pool(per_subject: dict[str, dict[str, Any]], model: str, measure: str,
          common: Common) -> dict[str, Any] | None:
    ok = {s: r["models"][model][measure] for s, r in per_subject.items()
          if r.get("testable") and r["models"].get(model, {}).get("testable")}
    if not ok:
        return None

    def arr(x: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in x], dtype=np.float64)

    rho, ci, p = pooled_test([r["rho"] for r in ok.values()],
                             [arr(r["bootstrap"]) for r in ok.values()],
                             [arr(r["null"]) for r in ok.values()],
                             confidence=1 - common.alpha)
    return {"rho": rho, "ci": list(ci), "p": p, "n_subjects": len(ok),
            "n_positive": sum(r["rho"] > 0 for r in ok.values()),
            "significant": bool(p < common.alpha),
            "per_subject": {s: r["rho"] for s, r in ok.items()}}


def _pooled_calibration(per_subject: dict[str, dict[str, Any]], model: str
                        ) -> dict[str, Any] | None:
    """Per-subject quantile bins pooled bin by bin (count-weighted accuracy): each
    subject's uncertainty has its own scale, its quantiles do not."""
    cals = [r["models"][model]["calibration"] for r in per_subject.values()
            if r.get("testable") and r["models"].get(model, {}).get("testable")]
    if not cals:
        return None
    count = np.sum([c["count"] for c in cals], axis=0).astype(np.float64)
    acc = np.sum([np.nan_to_num(np.array(c["accuracy"], dtype=np.float64)) *
                  np.array(c["count"]) for c in cals], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = acc / count
    return {"accuracy": [num(a) for a in acc], "count": count.astype(int).tolist()}


def _text(name: str, res: dict[str, Any] | None) -> str:
    if res is None:
        return f"{name}: not testable"
    return (f"{name}-vividness rho {res['rho']:+.3f} [{res['ci'][0]:+.3f}, "
            f"{res['ci'][1]:+.3f}], p = {res['p']:.3g}")


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    not_ok = {s: r.get("why") for s, r in per_subject.items() if not r.get("testable")}
    for s, r in per_subject.items():
        for m, mr in (r.get("models") or {}).items():
            if r.get("testable") and not mr.get("testable"):
                not_ok[f"{s} ({m})"] = mr.get("why")
    models = {m: {meas: _pool(per_subject, m, meas, common) for meas in MEASURES}
              | {"calibration": _pooled_calibration(per_subject, m)}
              for m in options.models}
    skipped = "; ".join(f"{s}: {w}" for s, w in not_ok.items())
    head = models[options.models[0]]
    if head["uncertainty"] is None:
        return {"finding": f"not testable in any subject ({skipped})", "effect": None,
                "significant": None, "models": models, "not_testable": not_ok}
    unc, acc = head["uncertainty"], head["accuracy"]
    verdict = ("MC-dropout uncertainty follows vividness" if unc["significant"]
               else "MC-dropout uncertainty does not follow vividness significantly")
    finding = (f"{options.models[0]}, T = {options.n_passes}: {_text('uncertainty', unc)}; "
               f"{_text('accuracy', acc)} (pooled within-target permutations, "
               f"{unc['n_subjects']} subjects): {verdict}; accuracy "
               + ("rises" if acc["rho"] > 0 else "falls") + " with vividness"
               + ("" if acc["significant"] else " (not significant)")
               + (f"; not testable: {skipped}" if skipped else ""))
    return {"finding": finding,
            "effect": effect("uncertainty-vividness Spearman rho", unc["rho"], unc["ci"],
                             unc["p"]),
            "significant": unc["significant"],
            "accuracy_effect": effect("accuracy-vividness Spearman rho", acc["rho"],
                                      acc["ci"], acc["p"]),
            "accuracy_significant": acc["significant"],
            "n_subjects": unc["n_subjects"], "models": models, "not_testable": not_ok}


ANALYSIS = Analysis(
    name="uncertainty",
    title="Uncertainty as vividness",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
