"""Tables and figures of the perception-to-imagery ablation study.

The study compares ways of getting a perception-trained decoder to work on mental imagery
(``direct`` use, an ``adapter``, ``mixed`` training, ``finetune``, ``imagery_only`` and
reference ``bound`` rows), per subject and per share of imagery training trials. Its results
arrive as one "row" dict per subject x method (see :func:`results_frame` for the schema that
is read). This module turns those rows into:

* a flat per-row table (CSV at full precision for re-analysis, Markdown for reading),
* an aggregate table over subjects (LaTeX for the paper, Markdown for the README), and
* four figures (PNG + PDF).

Every metric may be missing or ``None`` (e.g. no perception test for an imagery-only
decoder, no paired comparison for the direct decoder itself); such cells render as "–" and are
left out of means and plots instead of failing the whole report.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.atomic import write_text
from fmri2img.report.figures import _pyplot, save_figure

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
# (method, fraction or None, protocol or None): one bar / one line / one aggregate row
_Key = tuple[str, float | None, str | None]

DASH = "–"
IMAGERY_METRICS = ("cosine", "two_way", "retrieval_top1")
PERCEPTION_METRICS = ("cosine", "two_way", "retrieval_top1")
BY_SET_METRICS = ("cosine", "two_way")
# strategy of reference rows (ceilings / floors): shown, but never marked "best"
BOUND_STRATEGY = "bound"

# columns of the aggregate (per-method) tables: frame column -> header
AGG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("imagery_cosine", "Imagery cosine"),
    ("imagery_two_way", "Imagery 2-way"),
    ("imagery_retrieval_top1", "Imagery top-1"),
    ("perception_two_way", "Perception 2-way"),
    ("gain_vs_direct", "Gain vs direct"),
)

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


# ---------------------------------------------------------------------------- small helpers


def _num(x: Any) -> float:
    """Any value as a float, NaN when missing or not a number (so means can skip it)."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _value_ci(entry: Any) -> tuple[float, float, float]:
    """(value, lo, hi) of a ``{"value", "ci"}`` metric entry; a bare number has no CI."""
    if entry is None:
        return math.nan, math.nan, math.nan
    if not isinstance(entry, Mapping):
        return _num(entry), math.nan, math.nan
    ci = entry.get("ci")
    lo = hi = math.nan
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
    return _num(entry.get("value")), lo, hi


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def _first_seen(items: Iterable[Any]) -> list[Any]:
    """Unique items in order of first appearance (dict keeps insertion order)."""
    return list(dict.fromkeys(items))


def _norm_fraction(f: Any) -> float | None:
    v = _num(f)
    return v if _finite(v) else None


def _norm_protocol(p: Any) -> str | None:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return None
    return str(p)


def _key(method: Any, fraction: Any, protocol: Any) -> _Key:
    return str(method), _norm_fraction(fraction), _norm_protocol(protocol)


def _row_key(row: Row) -> _Key:
    return _key(row.get("method"), row.get("fraction", 1.0), row.get("protocol"))


def _fmt_fraction(f: float | None) -> str:
    return DASH if f is None or not _finite(f) else f"{f:g}"


def _label(key: _Key, with_protocol: bool = False) -> str:
    """``method``, or ``method (f=0.5)`` when not all imagery trials were used."""
    method, fraction, protocol = key
    extra = []
    if fraction is not None and not math.isclose(fraction, 1.0):
        extra.append(f"f={fraction:g}")
    if with_protocol and protocol is not None:
        extra.append(protocol)
    return f"{method} ({', '.join(extra)})" if extra else method


def _fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if _finite(v) else DASH


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    """``0.712 [0.650, 0.770]``; the bracket is left out when the CI is unknown."""
    if not _finite(v):
        return DASH
    if _finite(lo) and _finite(hi):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{v:.3f}"


def _fmt_p(p: float) -> str:
    if not _finite(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def _ci_columns(col: str) -> tuple[str, str]:
    if col == "gain_vs_direct":
        return "gain_lo", "gain_hi"
    return f"{col}_lo", f"{col}_hi"


# ---------------------------------------------------------------------------- flat table


def _by_set_names(rows: Sequence[Row]) -> list[str]:
    return _first_seen(str(s) for r in rows for s in (r.get("by_set") or {}))


def results_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """One flat row per input row, so the results can be filtered, re-read and re-plotted
    without knowing the nested row schema.

    Missing metrics are NaN (``n_params`` is a nullable integer, so it stays an integer in
    the CSV). Rows are sorted by subject, then by method in the order methods first appear in
    ``rows`` (the order the study ran them in, which is the order readers expect), keeping
    the input order within a method.
    """
    sets = _by_set_names(rows)
    method_rank = {m: i for i, m in enumerate(_first_seen(str(r.get("method")) for r in rows))}
    records = []
    for r in rows:
        rec: dict[str, Any] = {
            "subject": str(r.get("subject")),
            "method": str(r.get("method")),
            "strategy": r.get("strategy"),
            "fraction": _num(r.get("fraction", 1.0)),
            "protocol": _norm_protocol(r.get("protocol")),
        }
        for block, metrics in (("imagery", IMAGERY_METRICS), ("perception", PERCEPTION_METRICS)):
            entries = r.get(block) or {}
            for m in metrics:
                v, lo, hi = _value_ci(entries.get(m))
                rec[f"{block}_{m}"], rec[f"{block}_{m}_lo"], rec[f"{block}_{m}_hi"] = v, lo, hi
        vs = r.get("vs_direct") or {}
        ci = vs.get("ci") or (None, None)
        rec["gain_vs_direct"] = _num(vs.get("mean_difference"))
        rec["gain_lo"], rec["gain_hi"] = _num(ci[0]), _num(ci[1])
        rec["gain_p"] = _num(vs.get("p_value"))
        v, lo, hi = _value_ci(r.get("transfer_ratio"))
        rec["transfer_ratio"], rec["transfer_ratio_lo"], rec["transfer_ratio_hi"] = v, lo, hi
        rec["train_seconds"] = _num(r.get("train_seconds"))
        n_params = _num(r.get("n_params"))
        rec["n_params"] = int(round(n_params)) if _finite(n_params) else None
        by_set = r.get("by_set") or {}
        for s in sets:
            per = by_set.get(s) or {}
            for m in BY_SET_METRICS:
                rec[f"{s}_{m}"] = _num(per.get(m))
        records.append(rec)

    order = sorted(range(len(records)),
                   key=lambda i: (records[i]["subject"], method_rank[records[i]["method"]]))
    frame = pd.DataFrame([records[i] for i in order])
    if frame.empty:
        return frame
    frame["n_params"] = pd.array(frame["n_params"].tolist(), dtype="Int64")
    return frame


def _results_markdown(frame: pd.DataFrame) -> str:
    header = ["subject", "method", "fraction", "imagery cosine", "imagery 2-way",
              "imagery top-1", "perception cosine", "perception 2-way", "gain vs direct",
              "train s", "params"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for rec in frame.to_dict("records"):
        def ci(col: str, rec: dict[str, Any] = rec) -> str:
            return _fmt_ci(rec[col], rec[f"{col}_lo"], rec[f"{col}_hi"])

        gain = _fmt_ci(rec["gain_vs_direct"], rec["gain_lo"], rec["gain_hi"])
        p = _fmt_p(rec["gain_p"])
        if gain != DASH and p:
            gain = f"{gain} ({p})"
        n_params = rec["n_params"]
        cells = [
            rec["subject"], rec["method"], _fmt_fraction(rec["fraction"]),
            ci("imagery_cosine"), ci("imagery_two_way"), ci("imagery_retrieval_top1"),
            ci("perception_cosine"), ci("perception_two_way"), gain,
            _fmt(rec["train_seconds"], 2),
            DASH if n_params is None or pd.isna(n_params) else f"{int(n_params):,}",
        ]
        lines.append("| " + " | ".join(_md_escape(str(c)) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class _Cell:
    """Summary over subjects of one metric for one condition."""

    mean: float
    sd: float  # ddof=1; NaN with fewer than two subjects
    n: int  # subjects with a value
    lo: float  # the single subject's CI when n == 1, else NaN
    hi: float


@dataclass
class _Condition:
    key: _Key
    strategies: list[str]
    frame: pd.DataFrame  # this condition's rows

    @property
    def is_bound(self) -> bool:
        return bool(self.strategies) and all(s == BOUND_STRATEGY for s in self.strategies)


def _conditions(frame: pd.DataFrame, rows: Sequence[Row]) -> list[_Condition]:
    """Conditions (method x fraction x protocol) with methods in first-appearance order."""
    method_rank = {m: i for i, m in enumerate(_first_seen(str(r.get("method")) for r in rows))}
    keys = _first_seen(_row_key(r) for r in rows)
    keys.sort(key=lambda k: method_rank[k[0]])  # stable: first appearance within a method
    frame_keys = [_key(m, f, p) for m, f, p in
                  zip(frame["method"], frame["fraction"], frame["protocol"], strict=True)]
    out = []
    for k in keys:
        mask = np.array([fk == k for fk in frame_keys], dtype=bool)
        sub = frame.loc[mask]
        strategies = [str(s) for s in sub["strategy"].tolist() if s is not None]
        if sub["subject"].duplicated().any():
            log.warning("%s: several rows for one subject; averaging them per subject",
                        _label(k, True))
        out.append(_Condition(k, strategies, sub))
    return out


def _summarize(sub: pd.DataFrame, col: str) -> _Cell:
    """Mean and SD over subjects (each subject's rows averaged first) of one column."""
    if col not in sub.columns or sub.empty:
        return _Cell(math.nan, math.nan, 0, math.nan, math.nan)
    lo_col, hi_col = _ci_columns(col)
    cols = [c for c in (col, lo_col, hi_col) if c in sub.columns]
    per_subject = sub.groupby("subject", sort=False)[cols].mean()
    values = per_subject[col].to_numpy(dtype=float)
    ok = np.isfinite(values)
    n = int(ok.sum())
    if n == 0:
        return _Cell(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(values[ok].mean())
    sd = float(values[ok].std(ddof=1)) if n > 1 else math.nan
    lo = hi = math.nan
    if n == 1 and lo_col in cols and hi_col in cols:
        only = per_subject.loc[ok]
        lo, hi = float(only[lo_col].iloc[0]), float(only[hi_col].iloc[0])
    return _Cell(mean, sd, n, lo, hi)


@dataclass
class _Aggregate:
    conditions: list[_Condition]
    cells: list[dict[str, _Cell]]
    best: dict[str, float | None]
    show_fraction: bool
    show_protocol: bool
    n_subjects: int


def _aggregate(frame: pd.DataFrame, rows: Sequence[Row]) -> _Aggregate:
    """Per-condition summaries over subjects plus the best mean per column.

    ``bound`` rows are excluded from "best" because they are references (e.g. a ceiling),
    not competitors; marking them best would hide which real method wins.
    """
    conds = _conditions(frame, rows)
    cells = [{col: _summarize(c.frame, col) for col, _ in AGG_COLUMNS} for c in conds]
    best: dict[str, float | None] = {}
    for col, _ in AGG_COLUMNS:
        means = [cl[col].mean for c, cl in zip(conds, cells, strict=True)
                 if not c.is_bound and cl[col].n > 0]
        best[col] = max(means) if means else None
    fractions = {k[1] for k in (c.key for c in conds)}
    protocols = {k[2] for k in (c.key for c in conds)}
    return _Aggregate(conds, cells, best, len(fractions) > 1, len(protocols) > 1,
                      int(frame["subject"].nunique()))


def _agg_cell_text(cell: _Cell, bold: bool, tex: bool) -> str:
    if cell.n == 0:
        return "--" if tex else DASH
    text = f"{cell.mean:.3f}"
    if cell.n > 1:
        pm = r" $\pm$ " if tex else " ± "
        text += f"{pm}{cell.sd:.3f}"
    if bold:
        text = f"\\textbf{{{text}}}" if tex else f"**{text}**"
    return text


def _agg_rows(agg: _Aggregate, tex: bool) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the aggregate table (shared by LaTeX and Markdown)."""
    esc = _tex_escape if tex else _md_escape
    header = ["Method"]
    if agg.show_fraction:
        header.append("Fraction")
    if agg.show_protocol:
        header.append("Protocol")
    header += [h for _, h in AGG_COLUMNS]
    body = []
    for cond, cells in zip(agg.conditions, agg.cells, strict=True):
        method, fraction, protocol = cond.key
        line = [esc(method)]
        if agg.show_fraction:
            line.append(_fmt_fraction(fraction))
        if agg.show_protocol:
            line.append(esc(protocol) if protocol is not None else ("--" if tex else DASH))
        for col, _ in AGG_COLUMNS:
            cell = cells[col]
            best = agg.best[col]
            bold = (not cond.is_bound and cell.n > 0 and best is not None
                    and cell.mean == best)
            line.append(_agg_cell_text(cell, bold, tex))
        body.append(line)
    return header, body


def _spread_phrase(agg: _Aggregate, tex: bool) -> str:
    pm = "$\\pm$" if tex else "±"
    if agg.n_subjects > 1:
        return f"Mean {pm} SD across {agg.n_subjects} subjects"
    return "One subject"


def _chance(rows: Sequence[Row], metric: str) -> float | None:
    """The chance level of ``metric``; rows should agree, the mean is used if they do not."""
    values = [_num((r.get("chance") or {}).get(metric)) for r in rows]
    values = [v for v in values if _finite(v)]
    if not values:
        return None
    if max(values) - min(values) > 1e-9:
        log.warning("chance level of %s differs between rows; using the mean", metric)
    return float(np.mean(values))


def _latex_table(agg: _Aggregate) -> str:
    header, body = _agg_rows(agg, tex=True)
    n_text = len(header) - len(AGG_COLUMNS)
    spec = "l" * n_text + "r" * len(AGG_COLUMNS)
    caption = (
        f"Perception-to-imagery ablation. {_spread_phrase(agg, tex=True)}; best per column in "
        "bold (reference bounds excluded). Imagery cosine, 2-way identification and top-1 "
        "retrieval of decoded imagery; perception 2-way of the same decoder on perception "
        "trials; gain = imagery cosine minus that of the direct decoder, paired over targets."
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        f"\\caption{{{caption}}}",
        r"\label{tab:ablation}",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(line) + r" \\" for line in body),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _formatted_markdown(agg: _Aggregate, rows: Sequence[Row]) -> str:
    header, body = _agg_rows(agg, tex=False)
    n_text = len(header) - len(AGG_COLUMNS)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * n_text + ["---:"] * len(AGG_COLUMNS)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    chances = [(name, _chance(rows, m)) for name, m in
               (("2-way", "two_way"), ("top-1", "retrieval_top1"))]
    chance_text = ", ".join(f"{name} {c:.3g}" for name, c in chances if c is not None)
    legend = (
        f"{_spread_phrase(agg, tex=False)}; best per column in **bold** (reference bounds "
        "excluded). Imagery cosine / 2-way / top-1: decoded imagery vs its target embedding "
        "(cosine similarity, 2-way identification accuracy, top-1 retrieval); perception "
        "2-way: the same decoder on perception trials; gain vs direct: imagery cosine minus "
        "that of the direct perception decoder, paired over targets"
        + (f"; chance: {chance_text}." if chance_text else ".")
    )
    return "\n".join(lines) + "\n\n" + legend + "\n"


def write_tables(rows: Sequence[Row], out_dir: Path) -> dict[str, Path]:
    """Write the per-row and aggregate tables, each atomically, and return them by file name.

    Files: ``results_table.csv`` (full precision, for re-analysis), ``results_table.md``
    (per subject x method, 3 decimals with 95% CIs), ``table.tex`` (booktabs, for the paper)
    and ``table_formatted.md`` (the same aggregate in Markdown plus a legend line).
    """
    if not rows:
        raise ValueError("write_tables: no result rows to write")
    out_dir = Path(out_dir)
    frame = results_frame(rows)
    agg = _aggregate(frame, rows)
    texts = {
        "results_table.csv": frame.to_csv(index=False),
        "results_table.md": _results_markdown(frame),
        "table.tex": _latex_table(agg),
        "table_formatted.md": _formatted_markdown(agg, rows),
    }
    paths = {}
    for name, text in texts.items():
        path = out_dir / name
        write_text(path, text)
        log.info("wrote %s", path)
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------- figures


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _error(cell: _Cell) -> tuple[float, float]:
    """(down, up) error bar: SD over subjects, or the one subject's CI; NaN when neither."""
    if cell.n > 1:
        return cell.sd, cell.sd
    if cell.n == 1 and _finite(cell.lo) and _finite(cell.hi):
        return max(cell.mean - cell.lo, 0.0), max(cell.hi - cell.mean, 0.0)
    return math.nan, math.nan


def _bars(ax: Any, x: np.ndarray, cells: Sequence[_Cell], width: float, color: Any,
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


def _chance_line(ax: Any, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance", zorder=0)


def _category_axis(ax: Any, labels: Sequence[str]) -> None:
    ax.set_xticks(np.arange(len(labels)))
    rotate = len(labels) > 3 or max((len(s) for s in labels), default=0) > 12
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")


def _bar_overall(conds: list[_Condition], labels: list[str], rows: Sequence[Row],
                 stem: Path) -> list[Path]:
    plt = _pyplot()
    panels = (("imagery_cosine", "imagery cosine", "cosine"),
              ("imagery_two_way", "imagery 2-way accuracy", "two_way"))
    summaries = {col: [_summarize(c.frame, col) for c in conds] for col, _, _ in panels}
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
            _chance_line(ax, _chance(rows, chance_key))
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


def _bar_by_set(conds: list[_Condition], labels: list[str], sets: list[str],
                rows: Sequence[Row], stem: Path) -> list[Path]:
    plt = _pyplot()
    cols = [f"{s}_cosine" for s in sets]
    cells = {col: [_summarize(c.frame, col) for c in conds] for col in cols}
    if not any(cell.n for cs in cells.values() for cell in cs):
        log.warning("no per-stimulus-set imagery cosine; skipping %s", stem.name)
        return []
    colors = _colors(len(sets))
    x = np.arange(len(conds))
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(conds) * len(sets) + 2.0), 3.4))
    for j, (s, col) in enumerate(zip(sets, cols, strict=True)):
        _bars(ax, x + (j - (len(sets) - 1) / 2) * width, cells[col], width, colors[j], label=s)
    _chance_line(ax, _chance(rows, "cosine"))
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


def _per_subject(conds: list[_Condition], labels: list[str], subjects: list[str],
                 rows: Sequence[Row], stem: Path) -> list[Path]:
    plt = _pyplot()
    table = [[_summarize(c.frame[c.frame["subject"] == s], "imagery_cosine") for s in subjects]
             for c in conds]
    if not any(cell.n for cs in table for cell in cs):
        log.warning("no imagery cosine values; skipping %s", stem.name)
        return []
    colors = _colors(len(conds))
    x = np.arange(len(subjects))
    width = 0.8 / len(conds)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(conds) * len(subjects) + 2.5), 3.4))
    for i, (label, cs) in enumerate(zip(labels, table, strict=True)):
        _bars(ax, x + (i - (len(conds) - 1) / 2) * width, cs, width, colors[i], label=label)
    _chance_line(ax, _chance(rows, "cosine"))
    _category_axis(ax, subjects)
    ax.set_ylabel("imagery cosine")
    ax.set_title("Imagery cosine per subject (error bars: 95% CI)", fontsize=9)
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
        if _finite(_num(v)):
            curve[kk] = _num(v)
    if not curve:
        for name, entry in (row.get("imagery") or {}).items():
            m = _TOPK.match(str(name))
            v = _value_ci(entry)[0]
            if m and _finite(v):
                curve[int(m.group(1))] = v
    return curve


def _retrieval_at_k(keys: list[_Key], labels: list[str], rows: Sequence[Row],
                    stem: Path) -> list[Path]:
    plt = _pyplot()
    curves = []
    for key in keys:
        per_subject: dict[str, list[dict[int, float]]] = {}
        for r in rows:
            if _row_key(r) == key:
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
                        if (c := _chance(rows, name)) is not None)
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
    conds = _conditions(frame, rows)
    with_protocol = len({c.key[2] for c in conds}) > 1
    labels = [_label(c.key, with_protocol) for c in conds]
    subjects = sorted(frame["subject"].unique().tolist())
    sets = _by_set_names(rows)
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
