"""Tables of the perception-to-imagery ablation study.

The study compares ways of getting a perception-trained decoder to work on mental imagery
(``direct`` use, an ``adapter``, ``mixed`` training, ``finetune``, ``imagery_only`` and
reference ``bound`` rows), per subject and per share of imagery training trials. Its results
arrive as one "row" dict per subject x method (see :func:`results_frame` for the schema that
is read). This module turns those rows into:

* a flat per-row table (CSV at full precision for re-analysis, Markdown for reading), and
* an aggregate table over subjects (LaTeX for the paper, Markdown for the README);

:mod:`.ablation_figures` draws the four figures (PNG + PDF) from the same rows.

Every metric may be missing or ``None`` (e.g. no perception test for an imagery-only
decoder, no paired comparison for the direct decoder itself); such cells render as "–" and are
left out of means and plots instead of failing the whole report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.io.atomic import write_text
from fmri2img.report.formatting import (
    DASH,
    finite,
    fmt,
    fmt_ci,
    fmt_p,
    md_escape,
    num,
    tex_escape,
    value_ci,
)

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
# (method, fraction or None, protocol or None): one bar / one line / one aggregate row
Key = tuple[str, float | None, str | None]

IMAGERY_METRICS = ("cosine", "two_way", "retrieval_top1", "cosine_centred")
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
    ("gain_vs_direct", "Gain vs direct (primary)"),
)



# ---------------------------------------------------------------------------- small helpers


def _first_seen(items: Iterable[Any]) -> list[Any]:
    """Unique items in order of first appearance (dict keeps insertion order)."""
    return list(dict.fromkeys(items))


def _norm_fraction(f: Any) -> float | None:
    v = num(f)
    return v if finite(v) else None


def _norm_protocol(p: Any) -> str | None:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return None
    return str(p)


def _key(method: Any, fraction: Any, protocol: Any) -> Key:
    return str(method), _norm_fraction(fraction), _norm_protocol(protocol)


def row_key(row: Row) -> Key:
    return _key(row.get("method"), row.get("fraction", 1.0), row.get("protocol"))


def _fmt_fraction(f: float | None) -> str:
    return DASH if f is None or not finite(f) else f"{f:g}"


def method_label(key: Key, with_protocol: bool = False) -> str:
    """``method``, or ``method (f=0.5)`` when not all imagery trials were used."""
    method, fraction, protocol = key
    extra = []
    if fraction is not None and not math.isclose(fraction, 1.0):
        extra.append(f"f={fraction:g}")
    if with_protocol and protocol is not None:
        extra.append(protocol)
    return f"{method} ({', '.join(extra)})" if extra else method


def _ci_columns(col: str) -> tuple[str, str]:
    if col == "gain_vs_direct":
        return "gain_lo", "gain_hi"
    return f"{col}_lo", f"{col}_hi"


# ---------------------------------------------------------------------------- flat table


def by_set_names(rows: Sequence[Row]) -> list[str]:
    return _first_seen(str(s) for r in rows for s in (r.get("by_set") or {}))


def results_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """One flat row per input row, so the results can be filtered, re-read and re-plotted
    without knowing the nested row schema.

    Missing metrics are NaN (``n_params`` is a nullable integer, so it stays an integer in
    the CSV). Rows are sorted by subject, then by method in the order methods first appear in
    ``rows`` (the order the study ran them in, which is the order readers expect), keeping
    the input order within a method.
    """
    sets = by_set_names(rows)
    method_rank = {m: i for i, m in enumerate(_first_seen(str(r.get("method")) for r in rows))}
    records = []
    for r in rows:
        rec: dict[str, Any] = {
            "subject": str(r.get("subject")),
            "method": str(r.get("method")),
            "strategy": r.get("strategy"),
            "fraction": num(r.get("fraction", 1.0)),
            "protocol": _norm_protocol(r.get("protocol")),
        }
        for block, metrics in (("imagery", IMAGERY_METRICS), ("perception", PERCEPTION_METRICS)):
            entries = r.get(block) or {}
            for m in metrics:
                v, lo, hi = value_ci(entries.get(m))
                rec[f"{block}_{m}"], rec[f"{block}_{m}_lo"], rec[f"{block}_{m}_hi"] = v, lo, hi
        vs = r.get("gain") or {}
        ci = vs.get("ci") or (None, None)
        rec["primary_metric"] = r.get("primary")
        rec["loss"] = r.get("loss")
        rec["gain_vs_direct"] = num(vs.get("mean_difference"))
        rec["gain_lo"], rec["gain_hi"] = num(ci[0]), num(ci[1])
        rec["gain_p"] = num(vs.get("p_value"))
        rec["flags"] = row_flags(r)
        v, lo, hi = value_ci(r.get("transfer_ratio"))
        rec["transfer_ratio"], rec["transfer_ratio_lo"], rec["transfer_ratio_hi"] = v, lo, hi
        rec["train_seconds"] = num(r.get("train_seconds"))
        n_params = num(r.get("n_params"))
        rec["n_params"] = int(round(n_params)) if finite(n_params) else None
        for name, entry in _image_entries(r).items():
            ci = entry.get("ci") or (None, None)
            rec[f"image_{name}"], rec[f"image_{name}_lo"], rec[f"image_{name}_hi"] = (
                num(entry.get("mean")), num(ci[0]), num(ci[1]))
        by_set = r.get("by_set") or {}
        for s in sets:
            per = by_set.get(s) or {}
            for m in BY_SET_METRICS:
                rec[f"{s}_{m}"] = num(per.get(m))
        records.append(rec)

    order = sorted(range(len(records)),
                   key=lambda i: (records[i]["subject"], method_rank[records[i]["method"]]))
    frame = pd.DataFrame([records[i] for i in order])
    if frame.empty:
        return frame
    frame["n_params"] = pd.array(frame["n_params"].tolist(), dtype="Int64")
    return frame


def _image_entries(r: Row) -> dict[str, Mapping[str, Any]]:
    """The row's scored image metrics (``ablate --reconstruct-pipeline``): PixCorr, SSIM,
    PSNR and every feature network that had weights."""
    found = r.get("image_metrics") or {}
    return {k: v for k, v in found.items() if isinstance(v, Mapping) and "mean" in v}


def _image_headers(frame: pd.DataFrame) -> list[tuple[str, str]]:
    labels = {"pixcorr": "PixCorr", "ssim": "SSIM", "psnr": "PSNR"}
    cols = [c[len("image_"):] for c in frame.columns
            if c.startswith("image_") and not c.endswith(("_lo", "_hi"))]
    return [(c, f"image {labels.get(c, c)}") for c in cols]


def row_flags(r: Row) -> str:
    """What a reader must know before trusting a row's gain: a shift toward the mean
    target, or an imagery cosine below a mean-target control's."""
    flags = []
    if r.get("mean_shift"):
        flags.append("mean shift")
    flags += [f"cosine < {c}" for c in r.get("cosine_below") or []]
    return "; ".join(flags)


def _results_markdown(frame: pd.DataFrame) -> str:
    metric = next((m for m in frame.get("primary_metric", []) if isinstance(m, str)),
                  "two_way")
    header = ["subject", "method", "loss", "fraction", "imagery cosine", "imagery 2-way",
              "imagery top-1", "perception cosine", "perception 2-way",
              f"gain vs direct ({metric})", "flags", "train s", "params"]
    images = _image_headers(frame)
    header += [h for _, h in images]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * 6 + ["---"] + ["---:"] * (2 + len(images)))
             + "|"]
    for rec in frame.to_dict("records"):
        def ci(col: str, rec: dict[str, Any] = rec) -> str:
            return fmt_ci(rec[col], rec[f"{col}_lo"], rec[f"{col}_hi"])

        gain = fmt_ci(rec["gain_vs_direct"], rec["gain_lo"], rec["gain_hi"])
        p = fmt_p(rec["gain_p"])
        if gain != DASH and p:
            gain = f"{gain} ({p})"
        n_params = rec["n_params"]
        cells = [
            rec["subject"], rec["method"], rec["loss"] or DASH, _fmt_fraction(rec["fraction"]),
            ci("imagery_cosine"), ci("imagery_two_way"), ci("imagery_retrieval_top1"),
            ci("perception_cosine"), ci("perception_two_way"), gain, rec["flags"] or DASH,
            fmt(rec["train_seconds"], 2),
            DASH if n_params is None or pd.isna(n_params) else f"{int(n_params):,}",
            *(ci(f"image_{c}") for c, _ in images),
        ]
        lines.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class Cell:
    """Summary over subjects of one metric for one condition."""

    mean: float
    sd: float  # ddof=1; NaN with fewer than two subjects
    n: int  # subjects with a value
    lo: float  # the single subject's CI when n == 1, else NaN
    hi: float


@dataclass
class Condition:
    key: Key
    strategies: list[str]
    frame: pd.DataFrame  # this condition's rows

    @property
    def is_bound(self) -> bool:
        return bool(self.strategies) and all(s == BOUND_STRATEGY for s in self.strategies)


def conditions(frame: pd.DataFrame, rows: Sequence[Row]) -> list[Condition]:
    """Conditions (method x fraction x protocol) with methods in first-appearance order."""
    method_rank = {m: i for i, m in enumerate(_first_seen(str(r.get("method")) for r in rows))}
    keys = _first_seen(row_key(r) for r in rows)
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
                        method_label(k, True))
        out.append(Condition(k, strategies, sub))
    return out


def summarize_cell(sub: pd.DataFrame, col: str) -> Cell:
    """Mean and SD over subjects (each subject's rows averaged first) of one column."""
    if col not in sub.columns or sub.empty:
        return Cell(math.nan, math.nan, 0, math.nan, math.nan)
    lo_col, hi_col = _ci_columns(col)
    cols = [c for c in (col, lo_col, hi_col) if c in sub.columns]
    per_subject = sub.groupby("subject", sort=False)[cols].mean()
    values = per_subject[col].to_numpy(dtype=float)
    ok = np.isfinite(values)
    n = int(ok.sum())
    if n == 0:
        return Cell(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(values[ok].mean())
    sd = float(values[ok].std(ddof=1)) if n > 1 else math.nan
    lo = hi = math.nan
    if n == 1 and lo_col in cols and hi_col in cols:
        only = per_subject.loc[ok]
        lo, hi = float(only[lo_col].iloc[0]), float(only[hi_col].iloc[0])
    return Cell(mean, sd, n, lo, hi)


@dataclass
class _Aggregate:
    conditions: list[Condition]
    cells: list[dict[str, Cell]]
    best: dict[str, float | None]
    show_fraction: bool
    show_protocol: bool
    n_subjects: int


def _aggregate(frame: pd.DataFrame, rows: Sequence[Row]) -> _Aggregate:
    """Per-condition summaries over subjects plus the best mean per column.

    ``bound`` rows are excluded from "best" because they are references (e.g. a ceiling),
    not competitors; marking them best would hide which real method wins.
    """
    conds = conditions(frame, rows)
    cells = [{col: summarize_cell(c.frame, col) for col, _ in AGG_COLUMNS} for c in conds]
    best: dict[str, float | None] = {}
    for col, _ in AGG_COLUMNS:
        means = [cl[col].mean for c, cl in zip(conds, cells, strict=True)
                 if not c.is_bound and cl[col].n > 0]
        best[col] = max(means) if means else None
    fractions = {k[1] for k in (c.key for c in conds)}
    protocols = {k[2] for k in (c.key for c in conds)}
    return _Aggregate(conds, cells, best, len(fractions) > 1, len(protocols) > 1,
                      int(frame["subject"].nunique()))


def _agg_cell_text(cell: Cell, bold: bool, tex: bool) -> str:
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
    esc = tex_escape if tex else md_escape
    header = ["Method"]
    if agg.show_fraction:
        header.append("Fraction")
    if agg.show_protocol:
        header.append("Protocol")
    header += [h for _, h in AGG_COLUMNS] + ["Flags"]
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
        line.append(esc(_flag_counts(cond.frame)))
        body.append(line)
    return header, body


def _flag_counts(sub: pd.DataFrame) -> str:
    """``mean shift 3/4; cosine < mean_target 4/4``: subjects with each flag."""
    n = int(sub["subject"].nunique())
    counts: dict[str, set] = {}
    for subj, flags in zip(sub["subject"], sub.get("flags", [""] * len(sub)), strict=True):
        for f in filter(None, str(flags or "").split("; ")):
            counts.setdefault(f, set()).add(subj)
    return "; ".join(f"{f} {len(v)}/{n}" for f, v in counts.items()) or "-"


def _legend(agg: _Aggregate, tex: bool) -> str:
    metric = _primary_name(agg)
    return (f"{_spread_phrase(agg, tex)}; best per column in bold (reference bounds and "
            "mean-target controls excluded). Imagery cosine, 2-way identification and top-1 "
            "retrieval of decoded imagery; perception 2-way of the same decoder on "
            f"perception trials; gain = imagery {metric} minus that of the direct decoder, "
            "paired over targets. Flags: mean shift = cosine up over direct transfer while "
            "2-way or top-1 falls significantly (a pull toward the mean target, not an "
            "imagery gain); cosine < mean_target = a lower imagery cosine than predicting "
            "the mean training target for every item")


def _primary_name(agg: _Aggregate) -> str:
    for c in agg.conditions:
        for m in c.frame.get("primary_metric", []):
            if isinstance(m, str):
                return {"two_way": "2-way", "retrieval_top1": "top-1"}.get(m, m)
    return "2-way"


def _spread_phrase(agg: _Aggregate, tex: bool) -> str:
    pm = "$\\pm$" if tex else "±"
    if agg.n_subjects > 1:
        return f"Mean {pm} SD across {agg.n_subjects} subjects"
    return "One subject"


def chance_of(rows: Sequence[Row], metric: str) -> float | None:
    """The chance level of ``metric``; rows should agree, the mean is used if they do not."""
    values = [num((r.get("chance") or {}).get(metric)) for r in rows]
    values = [v for v in values if finite(v)]
    if not values:
        return None
    if max(values) - min(values) > 1e-9:
        log.warning("chance level of %s differs between rows; using the mean", metric)
    return float(np.mean(values))


def _latex_table(agg: _Aggregate) -> str:
    header, body = _agg_rows(agg, tex=True)
    n_text = len(header) - len(AGG_COLUMNS) - 1
    spec = "l" * n_text + "r" * len(AGG_COLUMNS) + "l"
    caption = tex_escape(f"Perception-to-imagery ablation. {_legend(agg, tex=False)}.")
    caption = caption.replace("±", r"$\pm$")
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
    n_text = len(header) - len(AGG_COLUMNS) - 1
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * n_text + ["---:"] * len(AGG_COLUMNS) + ["---"]) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    chances = [(name, chance_of(rows, m)) for name, m in
               (("2-way", "two_way"), ("top-1", "retrieval_top1"))]
    chance_text = ", ".join(f"{name} {c:.3g}" for name, c in chances if c is not None)
    legend = _legend(agg, tex=False) + (f"; chance: {chance_text}." if chance_text else ".")
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
