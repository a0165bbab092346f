"""Figure of the imagery fingerprints: each subject's degradation profile (left), the
mean half-A x half-B profile correlation between subjects (middle: a bright diagonal is
a fingerprint) and the identification accuracy against its permutation null (right);
drawn from the saved result alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure


def _arr(x: Any) -> np.ndarray:
    return np.array([] if x is None else x, dtype=np.float64)


def draw(result: dict[str, Any], stem: Path) -> list[Path]:
    plt = pyplot()
    group = result.get("group", {})
    fig, (ax_p, ax_m, ax_n) = plt.subplots(1, 3, figsize=(13, 3.8),
                                           gridspec_kw={"width_ratios": [3, 1.4, 1.4]})
    subjects_res = result.get("subjects", {})
    names = list(group.get("elements") or dict.fromkeys(
        n for r in subjects_res.values() for n in (r.get("profile") or {})))
    for s, r in sorted(subjects_res.items()):
        prof = r.get("profile") or {}
        if not prof:
            continue
        # the ratio is what the profile means; clipped for display (a ratio whose
        # vision score is near chance runs off any scale)
        y = _arr([(prof.get(n) or {}).get("ratio") for n in names])
        ax_p.plot(np.arange(len(names)), np.clip(y, -1, 2), "o-", lw=0.8, ms=3, label=s)
    ax_p.axhline(0, color="k", lw=0.6)
    ax_p.axhline(1, color="grey", lw=0.6, ls="--")
    if names:
        ax_p.set_xticks(np.arange(len(names)), [n.split(":", 1)[-1] for n in names],
                        rotation=90, fontsize=6)
    ax_p.set_ylabel("(img - .5) / (vis - .5), clipped to [-1, 2]")
    ax_p.set_title("degradation profiles (ROIs, then targets)", fontsize=9)
    if subjects_res:
        ax_p.legend(frameon=False, fontsize=7)

    mat = _arr(group.get("half_correlation"))
    subjects = group.get("subjects") or []
    if mat.ndim == 2 and mat.size:
        im = ax_m.imshow(mat, cmap="viridis", vmin=-1, vmax=1)
        ax_m.set_xticks(np.arange(len(subjects)), subjects, rotation=90, fontsize=7)
        ax_m.set_yticks(np.arange(len(subjects)), subjects, fontsize=7)
        ax_m.set_xlabel("half B")
        ax_m.set_ylabel("half A")
        fig.colorbar(im, ax=ax_m, fraction=0.046)
    ax_m.set_title("half-profile rank correlation"
                   + (" (mean profile removed)" if group.get("centred") else ""), fontsize=9)

    eff = group.get("effect") or {}
    null = _arr(group.get("null"))
    if null.size:
        ax_n.hist(null[np.isfinite(null)], bins=20, color="grey")
    if eff.get("value") is not None:
        ax_n.axvline(eff["value"], color="C3", lw=2, label="observed")
        ax_n.axvline(group.get("chance", np.nan), color="k", ls="--", lw=1, label="chance")
        ax_n.legend(frameon=False, fontsize=7)
        ax_n.set_title(f"identification {eff['value']:.2f} (p = {eff['p']:.3g})",
                       fontsize=9)
    else:
        ax_n.set_title("identification: not testable", fontsize=9)
    ax_n.set_xlabel("accuracy under relabelled halves")
    fig.tight_layout()
    return save_figure(fig, stem)
