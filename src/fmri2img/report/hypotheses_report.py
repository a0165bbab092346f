"""The hypotheses' verdicts as Markdown (``hypotheses.md``)."""

from __future__ import annotations

from typing import Any

from fmri2img.analysis.hypotheses import VISION_CONTROL


def _c(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return (f"{c['mean_difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], "
            f"p {c['p_value']:.3g}")


def render(h: dict[str, Any]) -> str:
    lines = ["# Hypotheses", "",
             "Paired tests per subject over held-out targets (imagery) or test images "
             "(perception); significant = the 95% bootstrap CI of the difference excludes 0 "
             "(targets resampled within their stimulus set, as the folds were dealt; the "
             "sign-flip p is given too and is stricter with 12 targets).", ""]
    h1_ = h["H1"]
    lines += ["## H1: imagery/vision transfer ratio in the 0.6-0.8 band", "",
              f"**Verdict:** {h1_['verdict']}", ""]
    for s, v in h1_.get("per_subject", {}).items():
        if v["value"] is not None:
            lines.append(f"- {s}: {v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
    h2_ = h["H2"]
    lines += ["", "## H2: mixed training: imagery gain, perception cost", "",
              f"**Verdict:** {h2_['verdict']}", ""]
    for s, v in h2_.get("per_subject", {}).items():
        lines.append(f"- {s}: imagery {_c(v['imagery_gain'])}; perception "
                     f"{_c(v['perception_change'])}")
    if "note" in h2_:
        lines += ["", h2_["note"] + "."]
    h3_ = h["H3"]
    lines += ["", "## H3: adapter vs full fine-tuning", "", f"**Verdict:** {h3_['verdict']}",
              ""]
    for s, v in h3_.get("per_subject", {}).items():
        lines.append(f"- {s}: {_c(v['difference'])}; {v['adapter_params']} vs "
                     f"{v['finetune_params']} parameters; {v['adapter_seconds']} s vs "
                     f"{v['finetune_seconds']} s")
    lines += ["", "## Adapters: gain over direct transfer, and how much of it is imagery", "",
              "A gain over direct transfer can come from adapting to the imagery session and "
              "its target set, which its vision trials teach as well, or from more training "
              "data; neither is evidence about imagery. Each adapter is therefore also "
              f"compared with its control: `{VISION_CONTROL}` (the mlp adapter trained on the "
              "session's vision trials of the same targets, never on imagery) for the "
              "unconditioned adapters, and `adapter_mlp_cond_shuffled` (the same examples "
              "with the domain labels permuted) for `adapter_mlp_cond`. An **imagery gain** "
              "beats both direct transfer and the control. Subjects counted where the 95% CI "
              "excludes 0.", ""]
    if "adapters_verdict" in h:
        lines += [f"**Verdict:** {h['adapters_verdict']}", ""]
    lines += ["| adapter | mean gain vs direct | gain vs direct (CI) | gain vs direct "
              "(CI and p) | control | mean gain vs control | beats control | imagery gain |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    for m, v in h["adapters"].items():
        n = v["n_subjects"]
        mean = _signed(v["mean_gain_vs_direct"])
        if "role" in v:
            ctrl, vs_ctrl, beats, img = "(is a control)", "-", "-", "-"
        elif "control" in v:
            ctrl, vs_ctrl = f"`{v['control']}`", _signed(v["mean_gain_vs_control"])
            if v["n_with_control"]:
                beats = f"{v['significant_gain_vs_control']}/{v['n_with_control']}"
                img = f"{v['significant_imagery_gain']}/{n}"
            else:
                beats = img = "control not run"
        else:
            ctrl, vs_ctrl, beats, img = "none", "-", "-", "no control"
        lines.append(f"| {m} | {mean} | {v['significant_gain_vs_direct']}/{n} | "
                     f"{v['significant_gain_vs_direct_p']}/{n} | {ctrl} | {vs_ctrl} | "
                     f"{beats} | {img} |")
    return "\n".join(lines) + "\n"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"
