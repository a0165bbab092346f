"""Verdicts on the study's hypotheses, from the ablation's rows, with effect sizes and
paired tests, judged by one **primary metric** (2-way identification by default, as the
NSD-Imagery benchmark and MindEye judge; cosine and retrieval are reported beside it).

* **H1** (transfer): the imagery/vision ratio of the direct decoder (chance subtracted,
  repetitions matched) lies in the seeds' 0.6-0.8 band.
* **H2** (mixed training): adding imagery trials to training raises imagery scores at a
  small perception cost.
* **H3** (adapter vs full fine-tuning): a small adapter does as well as fine-tuning every
  weight, in a fraction of the training time.
* **Methods**: which transfer method, with which loss, gains over direct transfer *beyond
  its matched control* (the same training on the session's vision trials of the same
  targets, or the conditioned adapter with shuffled domain labels).

Cosine to the target is high for any prediction near the mean target, and pulling
predictions toward it raises cosine while identification falls. So a row whose imagery
cosine rises over direct transfer while its 2-way or top-1 falls significantly is
flagged as a **shift toward the mean target** and never counted as a gain, whatever the
primary metric; and each subject's **mean-target control** (the mean training target as
the prediction for every item) is scored beside the methods.

Per subject, methods are compared on the same scored targets (imagery) or test images
(perception): mean paired difference, bootstrap CI, sign-flip p and Cohen's d_z. Across
subjects the same test runs on the subject means (4 subjects: exact, smallest two-sided
p = 0.125, so an across-subject "significant" needs more subjects; the per-subject tests
carry the evidence).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from fmri2img.eval.stats import bootstrap_ci, paired_difference_test

PrimaryMetric = Literal["two_way", "retrieval_top1", "cosine", "cosine_centred"]
BAND = (0.6, 0.8)
ALPHA = 0.05
IDENTIFICATION = ("two_way", "retrieval_top1")
COMPARED = ("cosine", "two_way", "retrieval_top1")
MEAN_TARGET_CONTROLS = ("mean_target", "mean_target_fold")
NAMES = {"two_way": "2-way identification", "retrieval_top1": "top-1 retrieval",
         "cosine": "cosine", "cosine_centred": "centred cosine"}


def paired(a: dict[str, float] | None, b: dict[str, float] | None, n_resamples: int,
            seed: int, strata: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Paired comparison over the shared keys; ``strata`` (key -> stimulus set) makes the
    CI a stratified bootstrap, as the targets were dealt by set."""
    if not a or not b:
        return None
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    labels = [str(strata.get(k)) for k in keys] if strata else None
    r = paired_difference_test([a[k] for k in keys], [b[k] for k in keys],
                               n_resamples=n_resamples, seed=seed, strata=labels)
    return {"mean_difference": r.mean_difference, "ci": list(r.ci), "p_value": r.p_value,
            "cohens_dz": None if not np.isfinite(r.cohens_dz) else r.cohens_dz, "n": r.n}


def _find(rows: list[dict[str, Any]], subject: str, method: str | None
          ) -> dict[str, Any] | None:
    return next((r for r in rows if r["subject"] == subject and r["method"] == method
                 and r["fraction"] >= 1.0), None)


def _sig(c: dict[str, Any] | None, sign: int = 1) -> bool:
    """The 95% CI of the paired difference excludes 0 on the side of ``sign``."""
    return c is not None and (c["ci"][0] > 0 if sign > 0 else c["ci"][1] < 0)


def _p(c: dict[str, Any] | None, sign: int = 1) -> bool:
    """The sign-flip test rejects 0 as well (stricter with few, uneven targets)."""
    return _sig(c, sign) and c is not None and c["p_value"] < ALPHA


def _value(r: dict[str, Any], block: str, metric: str) -> float | None:
    entry = (r.get(block) or {}).get(metric)
    return None if entry is None else entry.get("value")


# ----------------------------------------------------------------------------- rows
def control_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per subject and mean-target control, from the cells that scored it (the
    decoder's mean training target from the direct cell; the imagery fold's from the
    first cell that trained on folds), laid out like a method's row."""
    out = []
    for s in dict.fromkeys(r["subject"] for r in rows):
        for name in MEAN_TARGET_CONTROLS:
            source = next((r for r in rows if r["subject"] == s and r["fraction"] >= 1.0
                           and name in (r.get("controls") or {})), None)
            if source is None:
                continue
            c = source["controls"][name]
            out.append({
                "subject": s, "method": name, "strategy": "bound", "fraction": 1.0,
                "loss": None, "control": None, "control_of": None,
                "protocol": source["protocol"], "prediction": c["prediction"],
                "imagery": c["imagery"], "perception": c.get("perception"),
                "vision": c.get("vision"), "per_target": c["per_target"],
                "per_target_set": source.get("per_target_set"), "by_set": {},
                "perception_per_item": None, "transfer_ratios": {}, "train_seconds": None,
                "n_params": None, "chance": source.get("chance"),
                "n_items": source.get("n_items")})
    return out


def add_comparisons(rows: list[dict[str, Any]], primary: PrimaryMetric = "two_way",
                    n_resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """The method rows plus the mean-target control rows (:func:`control_rows`), each
    gaining, per compared metric (the primary one, cosine, 2-way, top-1):

    * ``vs_direct`` / ``vs_control``: its imagery score minus the direct decoder's / its
      matched control's, paired over the scored targets;
    * ``mean_shift``: cosine up over direct transfer while 2-way or top-1 falls
      significantly (a pull toward the mean target, never an imagery gain);
    * ``cosine_below``: the mean-target controls whose imagery cosine exceeds this row's;
    * ``gain``, ``transfer_ratio``: the primary metric's ``vs_direct`` and transfer ratio,
      for the tables.
    """
    metrics = list(dict.fromkeys([primary, *COMPARED]))
    all_rows = [r for r in rows if r["method"] not in MEAN_TARGET_CONTROLS]
    all_rows += control_rows(all_rows)
    out = []
    for r in all_rows:
        r = dict(r)
        direct = _find(all_rows, r["subject"], "direct")
        control = _find(all_rows, r["subject"], r.get("control"))
        sets = r.get("per_target_set")
        pt = r.get("per_target") or {}

        def vs(other: dict[str, Any] | None, pt: dict = pt, sets: Any = sets,
               method: str = r["method"]) -> dict[str, Any] | None:
            if other is None or other["method"] == method:
                return None
            res = {m: paired(pt.get(m), other["per_target"].get(m), n_resamples, seed, sets)
                   for m in metrics}
            return {m: v for m, v in res.items() if v is not None} or None

        r["primary"] = primary
        r["vs_direct"] = None if r["method"] == "direct" else vs(direct)
        r["vs_control"] = vs(control)
        d = r["vs_direct"] or {}
        r["mean_shift"] = bool(d.get("cosine") and d["cosine"]["mean_difference"] > 0
                               and any(_sig(d.get(m), -1) for m in IDENTIFICATION))
        cos = _value(r, "imagery", "cosine")
        r["cosine_below"] = sorted(
            c["method"] for c in all_rows if c["subject"] == r["subject"]
            and c["method"] in MEAN_TARGET_CONTROLS and c["method"] != r["method"]
            and cos is not None
            and (_value(c, "imagery", "cosine") or -np.inf) > cos)
        r["gain"] = d.get(primary)
        r["transfer_ratio"] = (r.get("transfer_ratios") or {}).get(primary)
        out.append(r)
    return out


def _gain(r: dict[str, Any] | None, key: str = "vs_direct") -> bool:
    """A significant primary-metric gain that is not a shift toward the mean target."""
    return (r is not None and not r.get("mean_shift")
            and _sig((r.get(key) or {}).get(r["primary"])))


def _loss(r: dict[str, Any] | None, key: str = "vs_direct") -> bool:
    return r is not None and _sig((r.get(key) or {}).get(r["primary"]), -1)


# ----------------------------------------------------------------------------- verdicts
def h1(rows: list[dict[str, Any]], primary: PrimaryMetric, n_resamples: int,
       seed: int) -> dict[str, Any]:
    direct = [r for r in rows if r["method"] == "direct"]
    per = {r["subject"]: {**(r["transfer_ratios"].get(primary) or {"value": None, "ci": None}),
                          "cosine": r["transfer_ratios"].get("cosine")} for r in direct}
    out: dict[str, Any] = {"band": list(BAND), "metric": primary, "per_subject": per}
    vals = np.array([v["value"] for v in per.values() if v.get("value") is not None])
    if len(vals) == 0:
        return {**out, "verdict": "no direct-transfer result"}
    mean = float(vals.mean())
    only = next(iter(per.values()))
    ci = ([float(x) for x in bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)]
          if len(vals) > 1 else [only["ci"][0], only["ci"][1]])
    in_band = [s for s, v in per.items() if v.get("value") is not None
               and BAND[0] <= v["value"] <= BAND[1]]
    if BAND[0] <= ci[0] and ci[1] <= BAND[1]:
        verdict = "supported: the ratio and its CI lie inside the 0.6-0.8 band"
    elif ci[1] < BAND[0] or ci[0] > BAND[1]:
        verdict = (f"not supported: the CI [{ci[0]:.2f}, {ci[1]:.2f}] lies outside the "
                   "0.6-0.8 band")
    else:
        verdict = (f"undecided: mean {mean:.2f} with CI [{ci[0]:.2f}, {ci[1]:.2f}] overlaps "
                   "the band without lying inside it")
    cos = [v["cosine"]["value"] for v in per.values()
           if v.get("cosine") and v["cosine"].get("value") is not None]
    return {**out, "effect": f"mean imagery/vision ratio ({NAMES[primary]}) over subjects",
            "mean_ratio": mean, "ci": ci, "subjects_in_band": in_band,
            "mean_ratio_cosine": float(np.mean(cos)) if cos else None,
            "verdict": f"{verdict} ({NAMES[primary]})"}


def _shift_note(flagged: int, n: int) -> str:
    return (f"; a shift toward the mean target (cosine up, identification significantly "
            f"down) in {flagged}/{n} subjects, not an imagery gain") if flagged else ""


def h2(rows: list[dict[str, Any]], primary: PrimaryMetric, n_resamples: int,
       seed: int) -> dict[str, Any]:
    per = {}
    for s in sorted({r["subject"] for r in rows}):
        mixed, direct = _find(rows, s, "mixed"), _find(rows, s, "direct")
        if mixed is None or direct is None:
            continue
        cost = None
        pm, pd_ = mixed.get("perception_per_item"), direct.get("perception_per_item")
        if pm and pd_:
            cost = paired(pm.get(primary), pd_.get(primary), n_resamples, seed)
        per[s] = {"imagery_gain": (mixed.get("vs_direct") or {}).get(primary),
                  "imagery_gain_cosine": (mixed.get("vs_direct") or {}).get("cosine"),
                  "vs_control": (mixed.get("vs_control") or {}).get(primary),
                  "control": mixed.get("control"), "mean_shift": mixed["mean_shift"],
                  "gain": _gain(mixed), "beyond_control": _gain(mixed) and _gain(mixed,
                                                                              "vs_control"),
                  "perception_change": cost}
    if not per:
        return {"verdict": "mixed training was not run"}
    n = len(per)
    n_gain = sum(v["gain"] for v in per.values())
    n_beyond = sum(v["beyond_control"] for v in per.values())
    n_loss = sum(_sig(v["imagery_gain"], -1) for v in per.values())
    n_shift = sum(v["mean_shift"] for v in per.values())
    costs = [v["perception_change"] for v in per.values() if v["perception_change"]]
    n_cost = sum(_sig(c, -1) for c in costs)
    name = NAMES[primary]
    if n_gain > n / 2:
        verdict = f"imagery gain ({name}) in {n_gain}/{n} subjects, beyond the control in " \
                  f"{n_beyond}/{n}"
    elif n_loss > n / 2:
        verdict = f"not supported: mixed training lowers imagery {name} in {n_loss}/{n} " \
                  "subjects"
    else:
        verdict = f"not supported: significant imagery gain ({name}) in {n_gain}/{n} subjects"
    verdict += _shift_note(n_shift, n)
    verdict += f"; perception {name} significantly lower in {n_cost}/{len(costs)} subjects"
    across = _across(rows, "mixed", "direct", lambda r: _value(r, "imagery", primary),
                     n_resamples, seed)
    return {"effect": f"imagery {name}, mixed - direct (paired over held-out targets); "
                      f"perception {name}, mixed - direct (paired over test images)",
            "per_subject": per, "across_subjects": across, "verdict": verdict,
            "note": "mixed training sees more data on the imagery target set; its control "
                    "(mixed_vision) sees the session's vision trials of the same targets "
                    "instead, so only a gain beyond it is specific to imagery"}


def _across(rows: list[dict[str, Any]], a: str, b: str, getter: Any, n_resamples: int,
            seed: int) -> dict[str, Any] | None:
    pa, pb = {}, {}
    for s in sorted({r["subject"] for r in rows}):
        ra, rb = _find(rows, s, a), _find(rows, s, b)
        if ra is not None and rb is not None and getter(ra) is not None \
                and getter(rb) is not None:
            pa[s], pb[s] = getter(ra), getter(rb)
    return paired(pa, pb, n_resamples, seed)


def h3(rows: list[dict[str, Any]], primary: PrimaryMetric, n_resamples: int, seed: int,
       adapter: str = "adapter_mlp") -> dict[str, Any]:
    per = {}
    times = []
    for s in sorted({r["subject"] for r in rows}):
        a, f = _find(rows, s, adapter), _find(rows, s, "finetune")
        if a is None or f is None:
            continue
        per[s] = {"difference": paired(a["per_target"].get(primary),
                                        f["per_target"].get(primary), n_resamples, seed,
                                        a.get("per_target_set")),
                  "difference_cosine": paired(a["per_target"].get("cosine"),
                                               f["per_target"].get("cosine"), n_resamples,
                                               seed, a.get("per_target_set")),
                  "adapter_seconds": a["train_seconds"], "finetune_seconds": f["train_seconds"],
                  "adapter_params": a["n_params"], "finetune_params": f["n_params"]}
        if a["train_seconds"] and f["train_seconds"]:
            times.append(a["train_seconds"] / f["train_seconds"])
    if not per:
        return {"verdict": "adapter or fine-tuning was not run"}
    diffs = [v["difference"] for v in per.values()]
    better = sum(_sig(d) for d in diffs)
    worse = sum(_sig(d, -1) for d in diffs)
    ratio = float(np.mean(times)) if times else None
    if worse == 0 and better > 0:
        verdict = f"supported: the adapter beats fine-tuning in {better}/{len(per)} subjects"
    elif worse == 0:
        verdict = f"supported: no significant difference in {len(per)} subjects"
    else:
        verdict = f"not supported: fine-tuning beats the adapter in {worse}/{len(per)} subjects"
    verdict += f" ({NAMES[primary]})"
    if ratio is not None:
        verdict += f"; adapter training time = {ratio:.2f} x fine-tuning's"
    return {"effect": f"imagery {NAMES[primary]}, {adapter} - finetune (paired over "
                      "held-out targets)",
            "per_subject": per, "time_ratio": ratio,
            "across_subjects": _across(rows, adapter, "finetune",
                                       lambda r: _value(r, "imagery", primary),
                                       n_resamples, seed),
            "verdict": verdict}


def methods_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per transfer method (direct and the mean-target controls excluded): its loss, how
    many subjects show a gain over direct transfer in the primary metric, how many a gain
    over its control too (an *imagery* gain: one that the same training on vision trials,
    or with shuffled domain labels, does not match), how many a shift toward the mean
    target, and the mean gains in the primary metric and in cosine."""
    out = {}
    names = [m for m in dict.fromkeys(r["method"] for r in rows)
             if m != "direct" and m not in MEAN_TARGET_CONTROLS]
    for method in names:
        sel = [r for r in rows if r["method"] == method and r["fraction"] >= 1.0]
        if not sel:
            continue
        primary = sel[0]["primary"]

        def mean_of(key: str, metric: str, sel: list = sel) -> float | None:
            vals = [r[key][metric]["mean_difference"] for r in sel
                    if r.get(key) and r[key].get(metric)]
            return float(np.mean(vals)) if vals else None

        entry: dict[str, Any] = {
            "strategy": sel[0]["strategy"], "loss": sel[0].get("loss"),
            "n_subjects": len(sel),
            "mean_gain_vs_direct": mean_of("vs_direct", primary),
            "mean_cosine_gain_vs_direct": mean_of("vs_direct", "cosine"),
            "significant_gain_vs_direct": sum(_gain(r) for r in sel),
            "significant_gain_vs_direct_p": sum(
                _gain(r) and _p((r.get("vs_direct") or {}).get(primary)) for r in sel),
            "significant_loss_vs_direct": sum(_loss(r) for r in sel),
            "mean_shift": sum(r["mean_shift"] for r in sel),
            "cosine_below_mean_target": sum(bool(r["cosine_below"]) for r in sel)}
        if sel[0].get("control_of"):
            entry["role"] = f"control of {sel[0]['control_of']}"
        if sel[0].get("control"):
            vs = [r.get("vs_control") for r in sel]
            entry.update({
                "control": sel[0]["control"],
                "n_with_control": sum(v is not None for v in vs),
                "mean_gain_vs_control": mean_of("vs_control", primary),
                "significant_gain_vs_control": sum(_gain(r, "vs_control") for r in sel),
                "significant_imagery_gain": sum(_gain(r) and _gain(r, "vs_control")
                                                for r in sel)})
        out[method] = entry
    return out


def methods_verdict(summary: dict[str, Any], primary: PrimaryMetric) -> str:
    """One sentence: which methods (and losses) give an imagery gain beyond their control
    in most subjects; what the other gains were; which methods shift toward the mean."""
    name = NAMES[primary]
    judged = {m: v for m, v in summary.items() if v.get("n_with_control")}
    if not judged:
        return "no method was run with its control"
    wins = [f"{m} ({v['loss']} loss, {v['significant_imagery_gain']}/{v['n_subjects']})"
            for m, v in judged.items() if v["significant_imagery_gain"] > v["n_subjects"] / 2]
    if wins:
        text = f"imagery gain in {name} beyond the control in most subjects: " \
               + ", ".join(wins)
    else:
        text = f"no method, with any loss, shows an imagery gain in {name} beyond its " \
               "control in most subjects"
        gained = [m for m, v in judged.items()
                  if v["significant_gain_vs_direct"] > v["n_subjects"] / 2]
        if gained:
            text += ("; the gains over direct transfer of " + ", ".join(gained) + " are "
                     "matched by their controls (adaptation to the session, its targets and "
                     "the amount of data, not to imagery)")
    shifted = [m for m, v in summary.items() if v["mean_shift"] > v["n_subjects"] / 2]
    if shifted:
        text += ("; shift toward the mean target (cosine up, identification down) in most "
                 "subjects: " + ", ".join(shifted))
    return text


def hypotheses(rows: list[dict[str, Any]], primary: PrimaryMetric = "two_way",
               n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every verdict from the ablation's rows (after :func:`add_comparisons`)."""
    methods = methods_summary(rows)
    return {"primary_metric": primary,
            "H1": h1(rows, primary, n_resamples, seed),
            "H2": h2(rows, primary, n_resamples, seed),
            "H3": h3(rows, primary, n_resamples, seed), "methods": methods,
            "methods_verdict": methods_verdict(methods, primary),
            "mean_target": _mean_target_summary(rows), "alpha": ALPHA}


def _mean_target_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mean-target control: its imagery cosine and 2-way per subject, and which
    methods it beats on cosine."""
    out: dict[str, Any] = {}
    for name in MEAN_TARGET_CONTROLS:
        sel = [r for r in rows if r["method"] == name]
        if not sel:
            continue
        out[name] = {
            "prediction": sel[0].get("prediction"),
            "per_subject": {r["subject"]: {m: r["imagery"].get(m) for m in COMPARED}
                            for r in sel},
            "cosine_above": {r["subject"]: sorted(
                o["method"] for o in rows if o["subject"] == r["subject"]
                and name in o.get("cosine_below", [])) for r in sel}}
    return out
