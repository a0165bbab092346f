"""Figure of the ROI hierarchy profile: the transfer ratio per ROI along the hierarchy,
per subject and for the group with CIs (left), and the group profile per stimulus set
(right); drawn from the saved result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def _profile(rois: dict[str, Any], key: str = "ratio") -> tuple[np.ndarray, np.ndarray,
                                                                list[str]]:
    names = sorted(rois, key=lambda n: _val(rois[n].get("position")))
    x = np.array([_val(rois[n].get("position")) for n in names])
    y = np.array([_val(rois[n].get(key)) if rois[n].get("used", True) else np.nan
                  for n in names])
    return x, y, names


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    subjects = result.get("subjects", {})
    group = result.get("group", {})
    hierarchy = group.get("hierarchy") or next(
        (r.get("hierarchy") for r in subjects.values() if r.get("hierarchy")), [])
    fig, (ax, ax_set) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for s in sorted(subjects):
        overall = subjects[s].get("overall")
        if not subjects[s].get("testable") or not overall:
            continue
        x, y, _ = _profile(overall["rois"])
        ax.plot(x, y, "o-", lw=0.8, ms=3, alpha=0.6, label=s)
    g_rois = (group.get("overall") or {}).get("rois") or {}
    if g_rois:
        x, y, _ = _profile(g_rois)
        cis = [g_rois[n].get("ci") or [None, None] for n in
               sorted(g_rois, key=lambda n: _val(g_rois[n].get("position")))]
        lo = np.array([_val(c[0]) for c in cis])
        hi = np.array([_val(c[1]) for c in cis])
        err = np.where(np.isfinite([y - lo, hi - y]), [y - lo, hi - y], 0)
        ax.errorbar(x, y, yerr=err, fmt="s-", color="k", lw=2, capsize=3, label="group")
    eff = group.get("effect") or {}
    title = "transfer ratio along the hierarchy"
    if eff.get("value") is not None:
        title += f"\nslope {eff['value']:+.3f}/ROI (p = {_val(eff.get('p')):.3g})"
    ax.set_title(title, fontsize=9)
    for a in (ax, ax_set):
        a.axhline(0, color="k", lw=0.6)
        a.axhline(1, color="grey", lw=0.6, ls="--")
        if hierarchy:
            a.set_xticks(np.arange(len(hierarchy)), hierarchy, rotation=30, fontsize=8)
    ax.set_ylabel("(imagery - .5) / (vision - .5)")
    if subjects:
        ax.legend(frameon=False, fontsize=7)
    for k, (name, part) in enumerate((group.get("by_set") or {}).items()):
        x, y, _ = _profile(part.get("rois") or {})
        sl = (part.get("slope") or {})
        label = name if sl.get("value") is None else \
            f"{name} (slope {sl['value']:+.3f}, p {_val(sl.get('p')):.2g})"
        ax_set.plot(x, y, "o-", color=f"C{k}", label=label)
    ax_set.set_title("group profile per stimulus set", fontsize=9)
    if group.get("by_set"):
        ax_set.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, stem)
