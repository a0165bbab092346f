"""The hypotheses' verdicts as Markdown (``hypotheses.md``)."""

from __future__ import annotations

from typing import Any

from fmri2img.analysis.hypotheses import NAMES


def _c(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return (f"{c['mean_difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], "
            f"p {c['p_value']:.3g}")


def _v(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci")
    return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def render(h: dict[str, Any]) -> str:
    primary = h.get("primary_metric", "two_way")
    name = NAMES[primary]
    lines = ["# Hypotheses", "",
             f"Primary metric: **{name}** (cosine beside it). Paired tests per subject "
             "over held-out targets (imagery) or test images (perception); significant = "
             "the 95% bootstrap CI of the difference excludes 0 (targets resampled within "
             "their stimulus set, as the folds were dealt; the sign-flip p is given too and "
             "is stricter with 12 targets). A row whose imagery cosine rises over direct "
             "transfer while its 2-way or top-1 falls significantly is a **shift toward the "
             "mean target** and never counts as a gain.", ""]
    h1_ = h["H1"]
    lines += [f"## H1: imagery/vision transfer ratio ({name}) in the 0.6-0.8 band", "",
              f"**Verdict:** {h1_['verdict']}", ""]
    for s, v in h1_.get("per_subject", {}).items():
        lines.append(f"- {s}: {_v(v)}; cosine ratio {_v(v.get('cosine'))}")
    h2_ = h["H2"]
    lines += ["", "## H2: mixed training: imagery gain, perception cost", "",
              f"**Verdict:** {h2_['verdict']}", ""]
    for s, v in h2_.get("per_subject", {}).items():
        shift = "; **mean shift**" if v.get("mean_shift") else ""
        lines.append(f"- {s}: imagery {_c(v['imagery_gain'])} (cosine "
                     f"{_c(v.get('imagery_gain_cosine'))}); vs `{v.get('control')}` "
                     f"{_c(v.get('vs_control'))}; perception {_c(v['perception_change'])}"
                     f"{shift}")
    if "note" in h2_:
        lines += ["", h2_["note"] + "."]
    h3_ = h["H3"]
    lines += ["", "## H3: adapter vs full fine-tuning", "", f"**Verdict:** {h3_['verdict']}",
              ""]
    for s, v in h3_.get("per_subject", {}).items():
        lines.append(f"- {s}: {_c(v['difference'])} (cosine {_c(v.get('difference_cosine'))})"
                     f"; {v['adapter_params']} vs {v['finetune_params']} parameters; "
                     f"{v['adapter_seconds']} s vs {v['finetune_seconds']} s")
    lines += _methods(h, name)
    lines += _mean_target(h)
    return "\n".join(lines) + "\n"


def _methods(h: dict[str, Any], name: str) -> list[str]:
    lines = ["", "## Transfer methods: gain over direct transfer, and how much of it is "
             "imagery", "",
             "A gain over direct transfer can come from adapting to the imagery session and "
             "its target set, which its vision trials teach as well, or from more training "
             "data; neither is evidence about imagery. Each method is therefore compared "
             "with its matched control: the same training on the session's vision trials of "
             "the same targets (`*_vision`), or, for `adapter_mlp_cond`, the same examples "
             "with the domain labels permuted. An **imagery gain** beats both direct "
             f"transfer and the control in {name}, without a shift toward the mean target. "
             "Subjects counted where the 95% CI excludes 0.", ""]
    if "methods_verdict" in h:
        lines += [f"**Verdict:** {h['methods_verdict']}", ""]
    lines += [f"| method | loss | mean gain vs direct ({name}) | mean cosine gain | gain vs "
              "direct (CI) | gain (CI and p) | loss vs direct | control | mean gain vs "
              "control | beats control | imagery gain | mean shift | cosine < mean target |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for m, v in h["methods"].items():
        n = v["n_subjects"]
        if "role" in v:
            ctrl, vs_ctrl, beats, img = f"({v['role']})", "-", "-", "-"
        elif "control" in v:
            ctrl, vs_ctrl = f"`{v['control']}`", _signed(v["mean_gain_vs_control"])
            if v["n_with_control"]:
                beats = f"{v['significant_gain_vs_control']}/{v['n_with_control']}"
                img = f"{v['significant_imagery_gain']}/{n}"
            else:
                beats = img = "control not run"
        else:
            ctrl, vs_ctrl, beats, img = "none", "-", "-", "no control"
        lines.append(f"| {m} | {v.get('loss') or '-'} | {_signed(v['mean_gain_vs_direct'])} | "
                     f"{_signed(v['mean_cosine_gain_vs_direct'])} | "
                     f"{v['significant_gain_vs_direct']}/{n} | "
                     f"{v['significant_gain_vs_direct_p']}/{n} | "
                     f"{v['significant_loss_vs_direct']}/{n} | {ctrl} | {vs_ctrl} | "
                     f"{beats} | {img} | {v['mean_shift']}/{n} | "
                     f"{v['cosine_below_mean_target']}/{n} |")
    return lines


def _mean_target(h: dict[str, Any]) -> list[str]:
    controls = h.get("mean_target") or {}
    if not controls:
        return []
    lines = ["", "## Mean-target controls", "",
             "Every item predicted by the mean training target: high cosine, identification "
             "at chance. Methods whose imagery cosine lies below it are listed.", "",
             "| control | subject | imagery cosine | imagery 2-way | imagery top-1 | cosine "
             "above |", "|---|---|---:|---:|---:|---|"]
    for name, c in controls.items():
        for s, v in c["per_subject"].items():
            above = ", ".join(c["cosine_above"].get(s, [])) or "-"
            lines.append(f"| {name} | {s} | {_v(v.get('cosine'))} | {_v(v.get('two_way'))} | "
                         f"{_v(v.get('retrieval_top1'))} | {above} |")
    return lines


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"
