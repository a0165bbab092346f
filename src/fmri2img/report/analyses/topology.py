"""Figure of the topological signatures: the contraction ratio per subject and for the
group with CIs (left), kNN preservation against chance (middle), and the H1 persistence
diagrams of vision and imagery of the first subject (right); drawn from the saved
result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = {s: r for s, r in sorted(result.get("subjects", {}).items())
                if r.get("testable")}
    group = result.get("group", {})
    fig, (ax_c, ax_k, ax_d) = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = list(subjects)
    vals = [_val(r.get("contraction")) for r in subjects.values()]
    cis = [r.get("contraction_ci") or [None, None] for r in subjects.values()]
    eff = group.get("effect") or {}
    if eff.get("value") is not None:
        labels.append("group")
        vals.append(_val(eff["value"]))
        cis.append(eff.get("ci") or [None, None])
    if labels:
        y = np.arange(len(labels))
        v = np.array(vals)
        err = np.array([v - np.array([_val(c[0]) for c in cis]),
                        np.array([_val(c[1]) for c in cis]) - v])
        colours = ["C0"] * len(subjects) + ["k"] * (len(labels) - len(subjects))
        err = np.where(np.isfinite(err), err, 0)
        for i, colour in enumerate(colours):
            ax_c.errorbar(v[i], y[i], xerr=err[:, i:i + 1], fmt="none", ecolor=colour,
                          capsize=3)
        ax_c.scatter(v, y, c=colours, zorder=3)
        ax_c.set_yticks(y, labels)
    ax_c.axvline(1, color="k", lw=0.8, ls="--")
    p = eff.get("p")
    ax_c.set_xlabel("imagery / vision distance among target means")
    ax_c.set_title("contraction" + (f" (p = {p:.3g})" if p is not None else ""))

    names = list(subjects)
    overlap = [_val(r["knn"]["overlap"]) for r in subjects.values()]
    chance = [_val(r["knn"]["chance"]) for r in subjects.values()]
    x = np.arange(len(names))
    ax_k.bar(x, overlap, 0.6, label="observed")
    ax_k.scatter(x, chance, marker="_", s=300, c="k", label="chance", zorder=3)
    for i, r in enumerate(subjects.values()):
        ax_k.annotate(f"p={r['knn']['p']:.2g}", (i, overlap[i]), ha="center",
                      va="bottom", fontsize=7)
    ax_k.set_xticks(x, names)
    ax_k.set_ylim(0, 1)
    k = next((r["knn"]["k"] for r in subjects.values()), None)
    ax_k.set_ylabel("kNN overlap vision vs imagery")
    ax_k.set_title(f"kNN preservation (k = {k})")
    if names:
        ax_k.legend(frameon=False, fontsize=7)

    if subjects:
        first, r = next(iter(subjects.items()))
        top = 0.0
        for domain, colour in (("vision", "C0"), ("imagery", "C3")):
            dgm = np.array([[_val(b), _val(d)] for b, d in
                            r["diagrams"][domain]["H1"]]).reshape(-1, 2)
            if dgm.size:
                ax_d.scatter(dgm[:, 0], dgm[:, 1], s=10, c=colour, alpha=0.7,
                             label=f"{domain} H1 ({len(dgm)})")
                top = max(top, float(np.nanmax(dgm)))
        ax_d.plot([0, top], [0, top], color="k", lw=0.8)
        w1 = r["diagram_distance"]["H1"]
        ax_d.set_title(f"{first} H1 diagrams (W1 = {w1['w1']:.3g}, p = {w1['p']:.2g})")
        ax_d.legend(frameon=False, fontsize=7)
    ax_d.set_xlabel("birth")
    ax_d.set_ylabel("death")
    fig.tight_layout()
    return save_figure(fig, stem)
