"""The reconstruction grid (stimulus | perception reconstruction | imagery reconstruction)
and the image-metrics table of one ``reconstruct`` output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.report.figures import pyplot, save_figure
from fmri2img.report.formatting import fmt_ci, md_escape, num

# the order of the metrics table's columns; networks follow in the order they were scored
PIXEL_METRICS = (("pixcorr", "PixCorr ↑"), ("ssim", "SSIM ↑"), ("psnr", "PSNR dB ↑"))


def reconstruction_grid(stimuli: Sequence[np.ndarray | None],
                        columns: Mapping[str, Sequence[np.ndarray | None]],
                        row_labels: Sequence[str], stem: str | Path, *, title: str = "",
                        banner: str | None = None) -> list[Path]:
    """One row per item: its stimulus, then each column's image (blank where an item has
    none: a conceptual target has no stimulus image, a domain may lack the item)."""
    plt = pyplot()
    n_rows, n_cols = len(row_labels), 1 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols + 1.2, 1.45 * n_rows + 0.6),
                             squeeze=False)
    panels = [("stimulus", list(stimuli)), *((k, list(v)) for k, v in columns.items())]
    for c, (name, images) in enumerate(panels):
        for r in range(n_rows):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = images[r]
            if image is None:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7,
                        color="0.4", transform=ax.transAxes)
            else:
                ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=6, rotation=0, ha="right",
                              va="center")
    heading = title if banner is None else f"{title}\n{banner.upper()}"
    fig.suptitle(heading, fontsize=8, color="black" if banner is None else "firebrick")
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))  # the title just above the panels
    return save_figure(fig, stem)


def _cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    if "unavailable" in entry:
        return "unavailable"
    ci = entry.get("ci") or [None, None]
    return fmt_ci(num(entry.get("mean")), num(ci[0]), num(ci[1]))


def metrics_markdown(metrics: Mapping[str, Any], untrained: bool = False) -> str:
    """Image metrics per domain, each with its 95% bootstrap CI over images; networks
    without local weights say so, with the reason below the table."""
    domains = metrics.get("domains", {})
    nets: list[str] = []
    missing: dict[str, str] = {}
    for scores in domains.values():
        for name, entry in scores.items():
            if not isinstance(entry, Mapping) or name in dict(PIXEL_METRICS):
                continue
            if "unavailable" in entry and "metric" in entry:
                missing.setdefault(entry.get("label", name), entry["unavailable"])
            elif "mean" in entry and name not in nets:
                nets.append(name)
    label = {name: (scores.get(name) or {}).get("label", name)
             for scores in domains.values() for name in nets}
    header = ["domain", "n", *(t for _, t in PIXEL_METRICS),
              *(_header(label.get(n, n), _metric(domains, n)) for n in nets)]
    lines = []
    if untrained:
        lines.append("**Untrained test pipeline (random weights): these numbers show the "
                     "plumbing, not reconstruction quality.**\n")
    lines += ["| " + " | ".join(md_escape(h) for h in header) + " |",
              "|" + "---|" * len(header)]
    notes: dict[str, str] = {}
    for d, scores in domains.items():
        if "unavailable" in scores:
            lines.append(f"| {d} | – | " + " | ".join(["–"] * (len(header) - 2)) + " |")
            notes[d] = scores["unavailable"]
            continue
        cells = [d, str(scores.get("n_items", "–")),
                 *(_cell(scores.get(k)) for k, _ in PIXEL_METRICS),
                 *(_cell(scores.get(n)) for n in nets)]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    lines.append("")
    lines.append(f"2-way: {metrics.get('two_way_convention', 'mindeye2')} convention, "
                 "chance 0.5; dist: correlation distance (lower is better); PixCorr and "
                 f"SSIM at {metrics.get('pixel_size', 512)} px.")
    for what, why in notes.items():
        lines.append(f"- {what}: not scored ({why})")
    if missing:
        lines.append(f"- Unavailable, no weights on this machine (never scored with random "
                     f"weights): {', '.join(missing)}; image_metrics.json says where each "
                     "was looked for.")
    return "\n".join(lines) + "\n"


def _metric(domains: Mapping[str, Any], name: str) -> str | None:
    for scores in domains.values():
        entry = scores.get(name) or {}
        if entry.get("metric"):
            return str(entry["metric"])
    return None


def _header(label: str, metric: str | None) -> str:
    if metric == "two_way":
        return label + (" ↑" if "2-way" in label else " 2-way ↑")
    return label + (" ↓" if "distance" in label else " distance ↓")
