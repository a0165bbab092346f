"""Figure of uncertainty as vividness: per subject and for the group, Spearman's rho of
MC-dropout uncertainty and of accuracy with vividness, with CIs (left); the calibration
plot, accuracy by uncertainty quantile bin per subject and pooled (right). Drawn from
the saved result alone, for the headline decoder (the first of ``options.models``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure

MEASURES = ("uncertainty", "accuracy")


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = result.get("subjects", {})
    group = result.get("group", {})
    models = (result.get("options") or {}).get("models") or ["mlp"]
    model = models[0]
    fig, (ax_rho, ax_cal) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = sorted(s for s, r in subjects.items() if r.get("testable")
                   and (r.get("models") or {}).get(model, {}).get("testable"))
    pooled = (group.get("models") or {}).get(model) or {}
    labels = [*names, "group"]
    y = np.arange(len(labels))
    for k, measure in enumerate(MEASURES):
        vals, lo, hi = [], [], []
        for s in names:
            c = subjects[s]["models"][model][measure]
            vals.append(_val(c["rho"]))
            lo.append(_val((c.get("ci") or [None, None])[0]))
            hi.append(_val((c.get("ci") or [None, None])[1]))
        g = pooled.get(measure) or {}
        vals.append(_val(g.get("rho")))
        lo.append(_val((g.get("ci") or [None, None])[0]))
        hi.append(_val((g.get("ci") or [None, None])[1]))
        v = np.array(vals)
        err = np.array([v - np.array(lo), np.array(hi) - v])
        ax_rho.errorbar(v, y + (k - 0.5) * 0.3, xerr=np.where(np.isfinite(err), err, 0),
                        fmt="o", capsize=3, color=f"C{k}", label=measure)
    ax_rho.axvline(0, color="k", lw=0.8, ls="--")
    ax_rho.set_yticks(y, labels)
    ax_rho.set_xlabel("Spearman rho with vividness")
    ax_rho.set_title(f"{model}: uncertainty and accuracy vs vividness")
    ax_rho.legend(frameon=False, fontsize=7)
    skipped = [s for s in sorted(subjects) if s not in names]
    if skipped:
        ax_rho.text(0.01, 0.01, "not testable: " + ", ".join(skipped), fontsize=7,
                    transform=ax_rho.transAxes)

    for s in names:
        cal = subjects[s]["models"][model]["calibration"]
        acc = [_val(a) for a in cal["accuracy"]]
        ax_cal.plot(np.arange(1, len(acc) + 1), acc, "o-", lw=1, alpha=0.6, label=s)
    pc = pooled.get("calibration")
    if pc:
        acc = [_val(a) for a in pc["accuracy"]]
        ax_cal.plot(np.arange(1, len(acc) + 1), acc, "s-", color="k", lw=2,
                    label="pooled")
    ax_cal.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax_cal.set_xlabel("uncertainty quantile bin (1 = most certain)")
    ax_cal.set_ylabel("2-way identification")
    ax_cal.set_title("calibration: accuracy by MC-dropout uncertainty")
    if names:
        ax_cal.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, stem)
