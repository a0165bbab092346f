"""Figure of the dimensionality gap: the mean normalised signal spectra of vision and
imagery for the primary representation (left) and the imagery - vision PR difference
per representation, per subject and for the group with CIs (right); drawn from the
saved result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def _spectrum(values: list[Any]) -> np.ndarray:
    return np.array([_val(v) for v in values], dtype=np.float64)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = {s: r for s, r in result.get("subjects", {}).items() if r.get("testable")}
    group = result.get("group", {})
    primary = group.get("primary") or next(
        (r.get("primary") for r in subjects.values()), None)
    fig, (ax_spec, ax_diff) = plt.subplots(1, 2, figsize=(10, 3.8))
    for domain, colour in (("vision", "C0"), ("imagery", "C3")):
        curves = [_spectrum(r["representations"][primary][f"spectrum_{domain}"])
                  for r in subjects.values() if primary in r.get("representations", {})]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.nanmean([c[:n] for c in curves], axis=0)
        for c in curves:
            ax_spec.plot(np.arange(1, n + 1), c[:n], color=colour, alpha=0.25, lw=0.8)
        ax_spec.plot(np.arange(1, n + 1), mean, color=colour, lw=2, label=domain)
    ax_spec.set_yscale("log")
    ax_spec.set_xlabel("signal component")
    ax_spec.set_ylabel("share of signal variance")
    ax_spec.set_title(f"signal spectrum ({primary})")
    ax_spec.legend(frameon=False)

    reps = group.get("representations") or {}
    names = list(reps) or sorted({n for r in subjects.values()
                                  for n in r.get("representations", {})})
    for j, s in enumerate(sorted(subjects)):
        vals = [_val(subjects[s]["representations"].get(n, {}).get("difference"))
                for n in names]
        ax_diff.scatter(np.arange(len(names)) + 0.08 * (j - 1.5), vals, s=14, alpha=0.7,
                        label=s)
    if reps:
        means = np.array([_val(reps[n]["difference"]) for n in names])
        lo = np.array([_val(reps[n]["ci"][0]) for n in names])
        hi = np.array([_val(reps[n]["ci"][1]) for n in names])
        err = np.array([means - lo, hi - means])
        ax_diff.errorbar(np.arange(len(names)) + 0.3, means,
                         yerr=np.where(np.isfinite(err), err, 0), fmt="ks", capsize=3,
                         label="group")
        for x, n in enumerate(names):
            ax_diff.annotate(f"p={reps[n]['p']:.2g}", (x + 0.3, hi[x]), fontsize=7,
                             ha="center", va="bottom")
    ax_diff.axhline(0, color="k", lw=0.8, ls="--")
    ax_diff.set_xticks(np.arange(len(names)), names)
    ax_diff.set_ylabel("PR imagery - vision")
    ax_diff.set_title("dimensionality gap")
    if subjects:
        ax_diff.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, stem)
