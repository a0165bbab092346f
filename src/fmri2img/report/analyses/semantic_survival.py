"""Figure of semantic survival: each target's imagery/vision preservation ratio per
subject (dots) and their mean (bars), targets grouped by stimulus set (left); the
preservation ratio of the semantic part and of the rest per subject and per set (middle);
the difference semantic - rest per subject and for the group, with CIs (right). Drawn
from the saved result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure

SETS = ("simple", "complex", "conceptual")
PARTS = ("semantic", "rest")


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = {s: r for s, r in result.get("subjects", {}).items() if r.get("testable")}
    group = result.get("group", {})
    fig, (ax_t, ax_p, ax_d) = plt.subplots(1, 3, figsize=(14, 3.8),
                                           gridspec_kw={"width_ratios": [3, 2, 2]})
    names = sorted(subjects)
    targets = sorted({t for r in subjects.values() for t in (r.get("full") or {})
                      .get("targets", {})})
    x = np.arange(len(targets))
    per = np.array([[_val(subjects[s]["full"]["targets"].get(t, {}).get("ratio"))
                     for t in targets] for s in names]) if names else np.zeros((0, 0))
    if per.size:
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(np.where(np.isfinite(per), per, np.nan), axis=0)
        ax_t.bar(x, np.nan_to_num(mean), color="0.8")
        for j, s in enumerate(names):
            ax_t.plot(x, per[j], "o", ms=3, label=s)
    ax_t.axhline(0, color="k", lw=0.8)
    ax_t.axhline(1, color="grey", lw=0.8, ls=":")
    ax_t.set_xticks(x, targets)
    ax_t.set_ylabel("(img - .5) / (vis - .5)")
    ax_t.set_title("preservation ratio per target (2-way, single trials)")
    if names:
        ax_t.legend(frameon=False, fontsize=7)

    groups = [g for g in (*SETS, "all")
              if any(g in (r.get("semantic") or {}).get("groups", {})
                     for r in subjects.values())]
    width = 0.8 / max(1, len(PARTS))
    ratios = (group.get("ratios") or {})
    for k, part in enumerate(PARTS):
        vals = [_val((ratios.get(part) or {}).get(g, {}).get("ratio")) for g in groups]
        xs = np.arange(len(groups)) - 0.4 + width * (k + 0.5)
        ax_p.bar(xs, np.nan_to_num(vals), width, color=f"C{k}", alpha=0.5, label=part)
        for s in names:
            g_of = (subjects[s].get(part) or {}).get("groups", {})
            ax_p.plot(xs, [_val(g_of.get(g, {}).get("ratio")) for g in groups], "k.",
                      ms=3)
    ax_p.axhline(0, color="k", lw=0.8)
    ax_p.set_xticks(np.arange(len(groups)), groups)
    ax_p.set_title("semantic part vs the rest")
    if groups:
        ax_p.legend(frameon=False, fontsize=7)
    else:
        ax_p.text(0.5, 0.5, "no semantic table:\ndecomposition not testable",
                  ha="center", va="center", transform=ax_p.transAxes)

    dec = [s for s in names if (subjects[s].get("decomposition") or {}).get("testable")]
    vals = [_val(subjects[s]["decomposition"]["difference"]) for s in dec]
    cis = [subjects[s]["decomposition"].get("ci") or [None, None] for s in dec]
    labels = list(dec)
    eff = group.get("effect") or {}
    if eff.get("value") is not None:
        labels.append("group")
        vals.append(_val(eff["value"]))
        cis.append(eff.get("ci") or [None, None])
    if labels:
        v = np.array(vals)
        err = np.array([v - np.array([_val(c[0]) for c in cis]),
                        np.array([_val(c[1]) for c in cis]) - v])
        err = np.where(np.isfinite(err), err, 0)
        for k in range(len(labels)):
            ax_d.errorbar(v[k], k, xerr=err[:, k:k + 1], fmt="o", capsize=3,
                          color="k" if labels[k] == "group" else "C0")
        ax_d.set_yticks(np.arange(len(labels)), labels)
    ax_d.axvline(0, color="k", lw=0.8, ls="--")
    p = eff.get("p")
    ax_d.set_xlabel("ratio(semantic) - ratio(rest)")
    ax_d.set_title("semantic - rest" + (f" (p = {p:.3g})" if p is not None else ""))
    fig.tight_layout()
    return save_figure(fig, stem)
