"""The vision-imagery RSA table as Markdown: per subject, group mean, SD and sign-flip p."""

from __future__ import annotations

from typing import Any

SET_NAMES = {"A": "A (simple)", "B": "B (complex)", "C": "C (concepts)"}


def _num(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    subjects = list(result["subjects"])
    sets, rois = cfg["sets"], list(cfg["rois"])
    lines = ["# Vision-imagery RSA", "",
             f"Method: {result['method']}.", "",
             "ROIs: " + "; ".join(f"`{k}` = {v}" for k, v in cfg["rois"].items()) + ".", "",
             "| set | ROI | " + " | ".join(subjects) + " | mean | SD | 95% CI | p |",
             "|---|---|" + "---:|" * (len(subjects) + 4)]
    for s in sets:
        for r in rois:
            g = result["group"][s][r]
            ci = g.get("ci")
            cells = [_num(g["per_subject"].get(subj)) for subj in subjects]
            lines.append(f"| {SET_NAMES[s]} | {r} | " + " | ".join(cells)
                         + f" | **{_num(g['mean'])}** | {_num(g['sd'], False)} | "
                         + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "n/a")
                         + f" | {_p(g['p_value'])} |")
    why = {v["why"] for by in result["subjects"].values() for x in by["alignment"].values()
           for v in x.values() if v.get("why")}
    if why:
        lines += [""] + [f"- not computed: {w}" for w in sorted(why)]
    c = result.get("contrasts") or {}
    if c:
        low, high = cfg["low_roi"], cfg["high_roi"]
        names = {"simple_low_minus_high": f"set A: {low} - {high}",
                 "complex_high_minus_low": f"set B: {high} - {low}",
                 "interaction": "crossover (sum of both)"}
        lines += ["", "Crossover contrasts (per subject, then the group sign-flip test):", "",
                  "| contrast | " + " | ".join(subjects) + " | mean | p |",
                  "|---|" + "---:|" * (len(subjects) + 2)]
        for key, label in names.items():
            g = c[key]
            lines.append(f"| {label} | " + " | ".join(_num(g["per_subject"].get(subj))
                                                      for subj in subjects)
                         + f" | {_num(g['mean'])} | {_p(g['p_value'])} |")
        if "crossover_in_means" in c:
            lines += ["", "Crossover in the group means (A: low > high, B: high > low): "
                      + ("yes" if c["crossover_in_means"] else "no") + "."]
    so = result.get("second_order") or {}
    if any(g[t]["n"] for g in so.values() for t in g):
        low, high = cfg["low_roi"], cfg["high_roi"]
        lines += ["", f"Shared geometry along the hierarchy: rho between the {low} and the "
                  f"{high} RDM:", "",
                  "| set | task | " + " | ".join(subjects) + " | mean | p |",
                  "|---|---|" + "---:|" * (len(subjects) + 2)]
        for s, by_task in so.items():
            for t, g in by_task.items():
                lines.append(f"| {SET_NAMES[s]} | {t} | " + " | ".join(
                    _num(g["per_subject"].get(subj)) for subj in subjects)
                    + f" | {_num(g['mean'])} | {_p(g['p_value'])} |")
    n = len(subjects)
    lines += ["", f"p: exact two-sided sign-flip test of mean = 0 over the {n} subjects "
              f"(smallest possible p = {2 / 2 ** n:.3g})." if n >= 2 else
              "p needs at least 2 subjects."]
    return "\n".join(lines) + "\n"
