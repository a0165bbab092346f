"""Figure of the semantic-structural dissociation: each family's imagery gap per subject
(left) and the semantic-structural index per subject and for the group, with CIs
(right); drawn from the saved result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = result.get("subjects", {})
    group = result.get("group", {})
    fig, (ax_gap, ax_ssi) = plt.subplots(1, 2, figsize=(10, 3.8),
                                         gridspec_kw={"width_ratios": [3, 2]})
    families: list[str] = []
    for r in subjects.values():
        for f in r.get("families", {}):
            if f not in families:
                families.append(f)
    names = sorted(subjects)
    width = 0.8 / max(1, len(names))
    for j, s in enumerate(names):
        fams = subjects[s].get("families", {})
        gaps = [_val(fams.get(f, {}).get("gap")) for f in families]
        lo = [_val((fams.get(f, {}).get("gap_ci") or [None, None])[0]) for f in families]
        hi = [_val((fams.get(f, {}).get("gap_ci") or [None, None])[1]) for f in families]
        x = np.arange(len(families)) - 0.4 + width * (j + 0.5)
        err = np.array([np.subtract(gaps, lo), np.subtract(hi, gaps)])
        ax_gap.bar(x, gaps, width, label=s, yerr=np.where(np.isfinite(err), err, 0),
                   capsize=2)
    ax_gap.axhline(0, color="k", lw=0.8)
    ax_gap.set_xticks(np.arange(len(families)), families)
    ax_gap.set_ylabel("imagery gap  1 - (img - .5)/(vis - .5)")
    ax_gap.set_title("imagery gap per target family (2-way, sets A+B)")
    if names:
        ax_gap.legend(frameon=False, fontsize=7)

    testable = [s for s in names if subjects[s].get("testable")]
    values = [_val(subjects[s].get("ssi")) for s in testable]
    cis = [subjects[s].get("ssi_ci") or [None, None] for s in testable]
    eff = group.get("effect") or {}
    labels = [*testable]
    if eff.get("value") is not None:
        labels.append("group")
        values.append(_val(eff["value"]))
        cis.append(eff.get("ci") or [None, None])
    y = np.arange(len(labels))
    lo = np.array([_val(c[0]) for c in cis]) if cis else np.array([])
    hi = np.array([_val(c[1]) for c in cis]) if cis else np.array([])
    vals = np.array(values)
    if len(labels):
        err = np.array([vals - lo, hi - vals])
        colours = ["C0"] * len(testable) + (["k"] if len(labels) > len(testable) else [])
        err = np.where(np.isfinite(err), err, 0)
        for k, colour in enumerate(colours):
            ax_ssi.errorbar(vals[k], y[k], xerr=err[:, k:k + 1], fmt="o", color=colour,
                            capsize=3)
        ax_ssi.set_yticks(y, labels)
    ax_ssi.axvline(0, color="k", lw=0.8, ls="--")
    ax_ssi.set_xlabel("SSI = gap(structural) - gap(semantic)")
    p = eff.get("p")
    ax_ssi.set_title("semantic-structural index" + (f" (p = {p:.3g})" if p is not None
                                                    else ""))
    fig.tight_layout()
    return save_figure(fig, stem)
