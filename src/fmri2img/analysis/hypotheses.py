"""Verdicts on the study's hypotheses, from the ablation's rows, with effect sizes and
paired tests.

* **H1** (transfer): the imagery/vision ratio of the direct decoder (cosine, chance
  subtracted, repetitions matched) lies in the seeds' 0.6-0.8 band.
* **H2** (mixed training): adding imagery trials to training raises imagery scores at a
  small perception cost.
* **H3** (adapter vs full fine-tuning): a small adapter does as well as fine-tuning every
  weight, in a fraction of the training time.

Per subject, methods are compared on the same scored targets (imagery) or test images
(perception): mean paired difference, bootstrap CI, sign-flip p and Cohen's d_z. Across
subjects the same test runs on the subject means (4 subjects: exact, smallest two-sided
p = 0.125, so an across-subject "significant" needs more subjects; the per-subject tests
carry the evidence).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fmri2img.eval.stats import bootstrap_ci, paired_difference_test

BAND = (0.6, 0.8)
ALPHA = 0.05
VISION_CONTROL = "adapter_mlp_vision"
# Each adapter's control: the same training without what could make a gain imagery-
# specific. Unconditioned adapters against the mlp adapter trained on the session's vision
# trials (never imagery); the conditioned adapter, which trains on vision *and* imagery
# trials, against itself with the domain labels permuted (same data, no domain).
CONTROLS = {"adapter_linear": VISION_CONTROL, "adapter_mlp": VISION_CONTROL,
            "adapter_mlp_cond": "adapter_mlp_cond_shuffled"}
CONTROL_ROLES = {
    VISION_CONTROL: "control: trained on the session's vision trials, never on imagery",
    "adapter_mlp_cond_shuffled": "control: adapter_mlp_cond's examples with the domain "
                                 "labels permuted"}


def _paired(a: dict[str, float], b: dict[str, float], n_resamples: int,
            seed: int, strata: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Paired comparison over the shared keys; ``strata`` (key -> stimulus set) makes the
    CI a stratified bootstrap, as the targets were dealt by set."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    labels = [str(strata.get(k)) for k in keys] if strata else None
    r = paired_difference_test([a[k] for k in keys], [b[k] for k in keys],
                               n_resamples=n_resamples, seed=seed, strata=labels)
    return {"mean_difference": r.mean_difference, "ci": list(r.ci), "p_value": r.p_value,
            "cohens_dz": None if not np.isfinite(r.cohens_dz) else r.cohens_dz, "n": r.n}


def _find(rows: list[dict[str, Any]], subject: str, method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["subject"] == subject and r["method"] == method
                 and r["fraction"] >= 1.0), None)


def add_comparisons(rows: list[dict[str, Any]], n_resamples: int = 2000,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Each row gains ``vs_direct``: its imagery cosine minus the direct decoder's, paired
    over the scored targets; adapters with a control (:data:`CONTROLS`) also gain
    ``control`` and ``vs_control``, the same difference against that control."""
    out = []
    for r in rows:
        r = dict(r)
        direct = _find(rows, r["subject"], "direct")
        sets = r.get("per_target_set")
        r["vs_direct"] = (None if r["method"] == "direct" or direct is None else
                          _paired(r["per_target_cosine"], direct["per_target_cosine"],
                                  n_resamples, seed, sets))
        name = CONTROLS.get(r["method"])
        control = None if name is None else _find(rows, r["subject"], name)
        r["control"] = name
        r["vs_control"] = (None if control is None else
                           _paired(r["per_target_cosine"], control["per_target_cosine"],
                                   n_resamples, seed, sets))
        out.append(r)
    return out


def _across(rows: list[dict[str, Any]], a: str, b: str, getter: Any, n_resamples: int,
            seed: int) -> dict[str, Any] | None:
    subs = sorted({r["subject"] for r in rows})
    pa, pb = {}, {}
    for s in subs:
        ra, rb = _find(rows, s, a), _find(rows, s, b)
        if ra is not None and rb is not None and getter(ra) is not None \
                and getter(rb) is not None:
            pa[s], pb[s] = getter(ra), getter(rb)
    return _paired(pa, pb, n_resamples, seed)


def _sig(c: dict[str, Any] | None, sign: int = 1) -> bool:
    """The 95% CI of the paired difference excludes 0 on the side of ``sign``."""
    return c is not None and (c["ci"][0] > 0 if sign > 0 else c["ci"][1] < 0)


def _p(c: dict[str, Any] | None, sign: int = 1) -> bool:
    """The sign-flip test rejects 0 as well (stricter with few, uneven targets)."""
    return _sig(c, sign) and c is not None and c["p_value"] < ALPHA


def h1(rows: list[dict[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    per = {r["subject"]: r["transfer_ratio"] for r in rows if r["method"] == "direct"}
    vals = np.array([v["value"] for v in per.values() if v["value"] is not None])
    out: dict[str, Any] = {"band": list(BAND), "per_subject": per}
    if len(vals) == 0:
        return {**out, "verdict": "no direct-transfer result"}
    mean = float(vals.mean())
    ci = [float(x) for x in bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)] \
        if len(vals) > 1 else [per[next(iter(per))]["ci"][0], per[next(iter(per))]["ci"][1]]
    in_band = [s for s, v in per.items() if v["value"] is not None
               and BAND[0] <= v["value"] <= BAND[1]]
    if BAND[0] <= ci[0] and ci[1] <= BAND[1]:
        verdict = "supported: the ratio and its CI lie inside the 0.6-0.8 band"
    elif ci[1] < BAND[0] or ci[0] > BAND[1]:
        verdict = (f"not supported: the CI [{ci[0]:.2f}, {ci[1]:.2f}] lies outside the "
                   "0.6-0.8 band")
    else:
        verdict = (f"undecided: mean {mean:.2f} with CI [{ci[0]:.2f}, {ci[1]:.2f}] overlaps "
                   "the band without lying inside it")
    return {**out, "effect": "mean imagery/vision ratio (cosine) over subjects",
            "mean_ratio": mean, "ci": ci, "subjects_in_band": in_band, "verdict": verdict}


def h2(rows: list[dict[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    per = {}
    for s in sorted({r["subject"] for r in rows}):
        mixed, direct = _find(rows, s, "mixed"), _find(rows, s, "direct")
        if mixed is None or direct is None:
            continue
        cost = None
        if mixed.get("perception_per_item") and direct.get("perception_per_item"):
            cost = _paired(mixed["perception_per_item"], direct["perception_per_item"],
                           n_resamples, seed)
        per[s] = {"imagery_gain": mixed.get("vs_direct"), "perception_change": cost}
    if not per:
        return {"verdict": "mixed training was not run"}
    gains = [v["imagery_gain"] for v in per.values()]
    costs = [v["perception_change"] for v in per.values() if v["perception_change"]]
    n_gain = sum(_sig(g) for g in gains)
    n_loss = sum(_sig(g, -1) for g in gains)
    n_cost = sum(_sig(c, -1) for c in costs)
    across = _across(rows, "mixed", "direct", lambda r: r["imagery"]["cosine"]["value"],
                     n_resamples, seed)
    if n_gain > len(per) / 2:
        verdict = f"imagery gain in {n_gain}/{len(per)} subjects"
    elif n_loss > len(per) / 2:
        verdict = f"not supported: mixed training lowers imagery cosine in {n_loss}/{len(per)} " \
                  "subjects"
    else:
        verdict = f"not supported: significant imagery gain in {n_gain}/{len(per)} subjects"
    verdict += f"; perception significantly lower in {n_cost}/{len(costs)} subjects"
    return {"effect": "imagery cosine, mixed - direct (paired over held-out targets); "
                      "perception cosine, mixed - direct (paired over test images)",
            "per_subject": per, "across_subjects": across, "verdict": verdict,
            "note": "mixed training sees more data on the imagery target set; a gain under "
                    "the null simulation is that, not imagery-specific adaptation"}


def h3(rows: list[dict[str, Any]], n_resamples: int, seed: int,
       adapter: str = "adapter_mlp") -> dict[str, Any]:
    per = {}
    times = []
    for s in sorted({r["subject"] for r in rows}):
        a, f = _find(rows, s, adapter), _find(rows, s, "finetune")
        if a is None or f is None:
            continue
        per[s] = {"difference": _paired(a["per_target_cosine"], f["per_target_cosine"],
                                        n_resamples, seed, a.get("per_target_set")),
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
    if ratio is not None:
        verdict += f"; adapter training time = {ratio:.2f} x fine-tuning's"
    return {"effect": f"imagery cosine, {adapter} - finetune (paired over held-out targets)",
            "per_subject": per, "time_ratio": ratio,
            "across_subjects": _across(rows, adapter, "finetune",
                                       lambda r: r["imagery"]["cosine"]["value"],
                                       n_resamples, seed),
            "verdict": verdict}


def adapters_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per adapter, how many subjects show a gain over direct transfer, and how many show
    an *imagery* gain: one that its control (:data:`CONTROLS`) does not match. A gain the
    vision-trained control matches comes from adapting to the session and its target set,
    which vision trials teach as well; one the shuffled-label control matches comes from
    the extra data. Under the null simulation that is all an adapter can learn."""
    out = {}
    for method in sorted({r["method"] for r in rows if r["strategy"] == "adapter"}):
        sel = [r for r in rows if r["method"] == method and r["fraction"] >= 1.0]
        gains = [r["vs_direct"]["mean_difference"] for r in sel if r["vs_direct"]]
        entry: dict[str, Any] = {
            "n_subjects": len(sel),
            "mean_gain_vs_direct": float(np.mean(gains)) if gains else None,
            "significant_gain_vs_direct": sum(_sig(r["vs_direct"]) for r in sel),
            "significant_gain_vs_direct_p": sum(_p(r["vs_direct"]) for r in sel)}
        if method in CONTROL_ROLES:
            entry["role"] = CONTROL_ROLES[method]
        elif method in CONTROLS:
            vs = [r.get("vs_control") for r in sel]
            ctrl_gains = [c["mean_difference"] for c in vs if c]
            entry.update({
                "control": CONTROLS[method],
                "n_with_control": sum(c is not None for c in vs),
                "mean_gain_vs_control": float(np.mean(ctrl_gains)) if ctrl_gains else None,
                "significant_gain_vs_control": sum(_sig(c) for c in vs),
                "significant_imagery_gain": sum(
                    _sig(r["vs_direct"]) and _sig(r.get("vs_control")) for r in sel)})
        out[method] = entry
    return out


def adapters_verdict(summary: dict[str, Any]) -> str:
    """One sentence: which adapters show an imagery gain (beyond their control) in most
    subjects, and what their gains over direct transfer were otherwise."""
    judged = {m: v for m, v in summary.items() if v.get("n_with_control")}
    if not judged:
        return "no adapter was run with its control"
    wins = [f"{m} ({v['significant_imagery_gain']}/{v['n_subjects']})"
            for m, v in judged.items() if v["significant_imagery_gain"] > v["n_subjects"] / 2]
    if wins:
        return "imagery gain beyond the control in most subjects: " + ", ".join(wins)
    gained = [m for m, v in judged.items()
              if v["significant_gain_vs_direct"] > v["n_subjects"] / 2]
    text = "no adapter shows an imagery gain beyond its control in most subjects"
    if gained:
        text += ("; the gains over direct transfer of " + ", ".join(gained) + " are matched "
                 "by their controls (adaptation to the session, its targets and the amount "
                 "of data, not to imagery)")
    return text


def hypotheses(rows: list[dict[str, Any]], n_resamples: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Every verdict from the ablation's rows (after :func:`add_comparisons`)."""
    result = {"H1": h1(rows, n_resamples, seed), "H2": h2(rows, n_resamples, seed),
              "H3": h3(rows, n_resamples, seed), "adapters": adapters_summary(rows),
              "alpha": ALPHA}
    result["adapters_verdict"] = adapters_verdict(result["adapters"])
    return result
