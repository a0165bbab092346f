"""Figures of the perception-to-imagery ablation study (PNG + PDF), from the same rows as
:mod:`.ablation_tables`: overall imagery scores per method, scores per stimulus set, per
subject, and retrieval at k."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from fmri2img.report.ablation_tables import (
    Cell,
    Condition,
    Key,
    Row,
    by_set_names,
    chance_of,
    conditions,
    method_label,
    results_frame,
    row_key,
    summarize_cell,
)
from fmri2img.report.figures import pyplot, save_figure
from fmri2img.report.formatting import finite, num, value_ci

log = logging.getLogger(__name__)


def _colors(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _error(cell: Cell) -> tuple[float, float]:
    """(down, up) error bar: SD over subjects, or the one subject's CI; NaN when neither."""
    if cell.n > 1:
        return cell.sd, cell.sd
    if cell.n == 1 and finite(cell.lo) and finite(cell.hi):
        return max(cell.mean - cell.lo, 0.0), max(cell.hi - cell.mean, 0.0)
    return math.nan, math.nan


def _bars(ax: Any, x: np.ndarray, cells: Sequence[Cell], width: float, color: Any,
          label: str | None = None) -> bool:
    """Bars with error bars, skipping missing values; returns whether anything was drawn."""
    h = np.array([c.mean for c in cells], dtype=float)
    ok = np.isfinite(h)
    if not ok.any():
        return False
    ax.bar(x[ok], h[ok], width, color=color, label=label, edgecolor="black", linewidth=0.4)
    err = np.array([_error(c) for c in cells], dtype=float).reshape(len(cells), 2)
    has_err = ok & np.isfinite(err).all(axis=1)
    if has_err.any():
        ax.errorbar(x[has_err], h[has_err], yerr=err[has_err].T, fmt="none", ecolor="black",
                    elinewidth=0.8, capsize=2)
    return True


def _grouped_bars(ax: Any, n_groups: int, series: list[tuple[str, Sequence[Cell]]]) -> None:
    """One bar per series side by side in each of ``n_groups`` groups, a colour a series."""
    colors = _colors(len(series))
    x = np.arange(n_groups)
    width = 0.8 / len(series)
    for j, (label, cells) in enumerate(series):
        _bars(ax, x + (j - (len(series) - 1) / 2) * width, cells, width, colors[j], label=label)


def _chance_line(ax: Any, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance", zorder=0)


def _category_axis(ax: Any, labels: Sequence[str]) -> None:
    ax.set_xticks(np.arange(len(labels)))
    rotate = len(labels) > 3 or max((len(s) for s in labels), default=0) > 12
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")


def _bar_overall(conds: list[Condition], labels: list[str], rows: Sequence[Row],
                 stem: Path) -> list[Path]:
    plt = pyplot()
    panels = (("imagery_cosine", "imagery cosine", "cosine"),
              ("imagery_two_way", "imagery 2-way accuracy", "two_way"))
    summaries = {col: [summarize_cell(c.frame, col) for c in conds] for col, _, _ in panels}
    if not any(cell.n for cells in summaries.values() for cell in cells):
        log.warning("no imagery cosine or 2-way values; skipping %s", stem.name)
        return []
    colors = _colors(len(conds))
    x = np.arange(len(conds))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(conds) + 2.5), 3.4),
                             squeeze=False)
    multi = any(cell.n > 1 for cells in summaries.values() for cell in cells)
    for ax, (col, ylabel, chance_key) in zip(axes[0], panels, strict=True):
        cells = summaries[col]
        drawn = False
        for i, cell in enumerate(cells):
            drawn |= _bars(ax, x[i:i + 1], [cell], 0.7, colors[i])
        if multi:  # individual subjects on top of the mean
            for i, cond in enumerate(conds):
                vals = cond.frame.groupby("subject", sort=False)[col].mean().to_numpy(float)
                vals = vals[np.isfinite(vals)]
                ax.scatter(np.full(len(vals), x[i]), vals, s=10, color="black", zorder=3)
        if drawn:
            _chance_line(ax, chance_of(rows, chance_key))
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        _category_axis(ax, labels)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=8, loc="best")
    spread = "SD across subjects" if multi else "95% CI"
    fig.suptitle(f"Imagery decoding per method (mean over subjects, error bars: {spread})",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem)


def _bar_by_set(conds: list[Condition], labels: list[str], sets: list[str],
                rows: Sequence[Row], stem: Path) -> list[Path]:
    plt = pyplot()
    cols = [f"{s}_cosine" for s in sets]
    cells = {col: [summarize_cell(c.frame, col) for c in conds] for col in cols}
    if not any(cell.n for cs in cells.values() for cell in cs):
        log.warning("no per-stimulus-set imagery cosine; skipping %s", stem.name)
        return []
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(conds) * len(sets) + 2.0), 3.4))
    _grouped_bars(ax, len(conds), [(s, cells[col]) for s, col in zip(sets, cols, strict=True)])
    _chance_line(ax, chance_of(rows, "cosine"))
    _category_axis(ax, labels)
    ax.set_ylabel("imagery cosine")
    multi = any(cell.n > 1 for cs in cells.values() for cell in cs)
    spread = "SD across subjects" if multi else "none"
    ax.set_title(f"Imagery cosine by stimulus set (mean over subjects, error bars: {spread})",
                 fontsize=9)
    ax.legend(frameon=False, fontsize=8, title="stimulus set", title_fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return save_figure(fig, stem)


def _per_subject(conds: list[Condition], labels: list[str], subjects: list[str],
                 rows: Sequence[Row], stem: Path) -> list[Path]:
    plt = pyplot()
    table = [[summarize_cell(c.frame[c.frame["subject"] == s], "imagery_two_way") for s in subjects]
             for c in conds]
    if not any(cell.n for cs in table for cell in cs):
        log.warning("no imagery 2-way values; skipping %s", stem.name)
        return []
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(conds) * len(subjects) + 2.5), 3.4))
    _grouped_bars(ax, len(subjects), list(zip(labels, table, strict=True)))
    _chance_line(ax, chance_of(rows, "two_way"))
    _category_axis(ax, subjects)
    ax.set_ylabel("imagery 2-way accuracy")
    ax.set_title("Imagery 2-way identification per subject (error bars: 95% CI)", fontsize=9)
    ax.legend(frameon=False, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return save_figure(fig, stem)


_TOPK = re.compile(r"^retrieval_top(\d+)$")


def _retrieval_curve(row: Row) -> dict[int, float]:
    """Imagery retrieval@K of one row: ``retrieval_curve``, else its ``retrieval_topK`` metrics."""
    curve: dict[int, float] = {}
    for k, v in (row.get("retrieval_curve") or {}).items():
        try:
            kk = int(k)
        except (TypeError, ValueError):
            continue
        if finite(num(v)):
            curve[kk] = num(v)
    if not curve:
        for name, entry in (row.get("imagery") or {}).items():
            m = _TOPK.match(str(name))
            v = value_ci(entry)[0]
            if m and finite(v):
                curve[int(m.group(1))] = v
    return curve


def _retrieval_at_k(keys: list[Key], labels: list[str], rows: Sequence[Row],
                    stem: Path) -> list[Path]:
    plt = pyplot()
    curves = []
    for key in keys:
        per_subject: dict[str, list[dict[int, float]]] = {}
        for r in rows:
            if row_key(r) == key:
                per_subject.setdefault(str(r.get("subject")), []).append(_retrieval_curve(r))
        ks = sorted({k for cs in per_subject.values() for c in cs for k in c})
        mean, sd = [], []
        for k in ks:
            vals = np.array([np.mean(v) for cs in per_subject.values()
                             if (v := [c[k] for c in cs if k in c])], dtype=float)
            mean.append(float(vals.mean()))
            sd.append(float(vals.std(ddof=1)) if len(vals) > 1 else math.nan)
        curves.append((np.array(ks, dtype=float), np.array(mean), np.array(sd)))
    if not any(len(ks) for ks, _, _ in curves):
        log.warning("no imagery retrieval@K values; skipping %s", stem.name)
        return []
    colors = _colors(len(keys))
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for (ks, mean, sd), label, color in zip(curves, labels, colors, strict=True):
        if not len(ks):
            continue
        ax.plot(ks, mean, marker="o", markersize=3, color=color, label=label)
        band = np.isfinite(sd)
        if band.sum() > 1:
            ax.fill_between(ks[band], (mean - sd)[band], (mean + sd)[band], color=color,
                            alpha=0.15, linewidth=0)
    chance = {}
    for r in rows:
        for name in (r.get("chance") or {}):
            m = _TOPK.match(str(name))
            if m:
                chance[int(m.group(1))] = name
    chance_pts = sorted((k, c) for k, name in chance.items()
                        if (c := chance_of(rows, name)) is not None)
    if chance_pts:
        ck, cv = zip(*chance_pts, strict=True)
        ax.plot(ck, cv, color="gray", linestyle="--", marker=".", label="chance")
    all_k = sorted({int(k) for ks, _, _ in curves for k in ks})
    ax.set_xticks(all_k)
    ax.set_xlabel("K")
    ax.set_ylabel("imagery retrieval@K")
    ax.set_ylim(0, 1.02)
    ax.set_title("Imagery retrieval@K (mean over subjects)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, stem)


def write_figures(rows: Sequence[Row], folder: Path) -> list[Path]:
    """Write the ablation figures (PNG + PDF each) into ``folder`` and return their paths.

    ``bar_overall_metric``, ``bar_by_stimulus_type``, ``per_subject_breakdown`` and
    ``retrieval_at_k``. A figure whose data are missing from every row is skipped with a
    warning rather than drawn empty, so the returned list says what exists.
    """
    if not rows:
        raise ValueError("write_figures: no result rows to plot")
    folder = Path(folder)
    frame = results_frame(rows)
    conds = conditions(frame, rows)
    with_protocol = len({c.key[2] for c in conds}) > 1
    labels = [method_label(c.key, with_protocol) for c in conds]
    subjects = sorted(frame["subject"].unique().tolist())
    sets = by_set_names(rows)
    paths: list[Path] = []
    paths += _bar_overall(conds, labels, rows, folder / "bar_overall_metric")
    if sets:
        paths += _bar_by_set(conds, labels, sets, rows, folder / "bar_by_stimulus_type")
    else:
        log.warning("rows have no by_set results; skipping bar_by_stimulus_type")
    paths += _per_subject(conds, labels, subjects, rows, folder / "per_subject_breakdown")
    paths += _retrieval_at_k([c.key for c in conds], labels, rows, folder / "retrieval_at_k")
    for p in paths:
        log.info("wrote %s", p)
    return paths
