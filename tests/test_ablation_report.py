"""Tables and figures of the perception-to-imagery ablation (synthetic result rows)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fmri2img.report.ablation_figures import write_figures
from fmri2img.report.ablation_tables import results_frame, write_tables

SUBJECTS = ("subj01", "subj02", "subj03")
# (method, strategy, fraction); imagery_only has no perception test and no paired comparison
METHODS = (
    ("direct", "direct", 1.0),
    ("adapter_mlp", "adapter", 1.0),
    ("adapter_mlp", "adapter", 0.5),
    ("imagery_only", "imagery_only", 1.0),
)
SETS = ("simple", "complex", "conceptual")
FIGURES = ("bar_overall_metric", "bar_by_stimulus_type", "per_subject_breakdown",
           "retrieval_at_k")


def _metric(rng: np.random.Generator, lo: float, hi: float) -> dict[str, Any]:
    v = float(rng.uniform(lo, hi))
    return {"value": v, "ci": [v - 0.05, v + 0.05]}


def _row(rng: np.random.Generator, subject: str, method: str, strategy: str,
         fraction: float) -> dict[str, Any]:
    no_perception = strategy == "imagery_only"
    top1 = float(rng.uniform(0.1, 0.5))
    return {
        "subject": subject, "method": method, "strategy": strategy, "fraction": fraction,
        "protocol": "leave-targets-out",
        "imagery": {"cosine": _metric(rng, 0.1, 0.8), "two_way": _metric(rng, 0.5, 0.9),
                    "retrieval_top1": {"value": top1, "ci": [top1 - 0.1, top1 + 0.1]},
                    "retrieval_top5": _metric(rng, 0.5, 0.9)},
        "by_set": {s: {"cosine": float(rng.uniform(0, 0.8)), "two_way": float(rng.uniform(0.5, 1)),
                       "retrieval_top1": float(rng.uniform(0, 0.5))} for s in SETS},
        "perception": None if no_perception else {
            "cosine": _metric(rng, 0.3, 0.9), "two_way": _metric(rng, 0.6, 1.0),
            "retrieval_top1": _metric(rng, 0.2, 0.7)},
        "primary": "two_way",
        "mean_shift": method == "adapter_mlp" and subject == "subj01",
        "cosine_below": ["mean_target"] if strategy == "imagery_only" else [],
        "gain": None if strategy in ("direct", "imagery_only") else {
            "mean_difference": float(rng.uniform(-0.1, 0.3)), "ci": [-0.05, 0.35],
            "p_value": float(rng.uniform(0, 0.2)), "cohens_dz": 0.8, "n": 12},
        "transfer_ratio": None if no_perception else _metric(rng, 0.2, 0.9),
        "train_seconds": float(rng.uniform(0.1, 5)),
        "n_params": None if strategy == "direct" else int(rng.integers(1000, 300000)),
        "retrieval_curve": {"1": top1, "5": min(1.0, top1 + 0.4), "10": 1.0},
        "chance": {"cosine": 0.0, "two_way": 0.5, "retrieval_top1": 1 / 12,
                   "retrieval_top5": 5 / 12, "retrieval_top10": 10 / 12},
    }


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    # method-major input order, so the subject-major sort of the frame is exercised
    return [_row(rng, s, m, st, f) for m, st, f in METHODS for s in SUBJECTS]


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_results_frame_order_and_columns(rows: list[dict[str, Any]]) -> None:
    frame = results_frame(rows)
    assert len(frame) == len(rows)
    assert list(frame["subject"]) == sorted(frame["subject"])
    first = frame[frame["subject"] == "subj01"]
    assert list(first["method"]) == ["direct", "adapter_mlp", "adapter_mlp", "imagery_only"]
    for col in ("imagery_retrieval_top1_hi", "perception_two_way_lo", "gain_p",
                "transfer_ratio_hi", "n_params", "simple_cosine", "conceptual_two_way"):
        assert col in frame.columns
    only = frame[frame["method"] == "imagery_only"]
    assert only["perception_cosine"].isna().all() and only["gain_vs_direct"].isna().all()


def test_write_tables(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = write_tables(rows, tmp_path)
    assert set(paths) == {"results_table.csv", "results_table.md", "table.tex",
                          "table_formatted.md"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0

    # CSV: one row per input row, values round-trip at full precision
    csv = pd.read_csv(paths["results_table.csv"])
    assert len(csv) == len(rows)
    for r in rows:
        hit = csv[(csv["subject"] == r["subject"]) & (csv["method"] == r["method"])
                  & (csv["fraction"] == r["fraction"])]
        assert len(hit) == 1
        assert hit["imagery_cosine"].iloc[0] == r["imagery"]["cosine"]["value"]
        if r["gain"] is None:
            assert np.isnan(hit["gain_p"].iloc[0])
        else:
            assert hit["gain_p"].iloc[0] == r["gain"]["p_value"]

    # Markdown per-row table: header + separator + one line per row
    md = paths["results_table.md"].read_text().strip().splitlines()
    assert len(md) == len(rows) + 2
    assert "[" in md[2] and "–" in md[-1]  # CIs shown; imagery_only lacks perception
    flagged = next(ln for ln in md if "subj01" in ln and "adapter_mlp" in ln)
    assert "mean shift" in flagged
    assert "cosine < mean_target" in next(ln for ln in md if "imagery_only" in ln)

    # LaTeX: booktabs, escaped names, one bold cell per numeric column
    tex = paths["table.tex"].read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:ablation}",
                  r"adapter\_mlp", r"\caption{"):
        assert token in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(METHODS)
    cells = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in body]
    n_numeric = 5
    assert all(len(c) == 3 + n_numeric for c in cells)  # method, fraction, 5 metrics, flags
    for j in range(2, 2 + n_numeric):
        assert sum(r"\textbf{" in c[j] for c in cells) == 1
    assert tex.count(r"\textbf{") == n_numeric
    # the bold imagery cosine is the method with the highest subject mean
    means = [np.mean([r["imagery"]["cosine"]["value"] for r in rows
                      if (r["method"], r["fraction"]) == (m, f)]) for m, _, f in METHODS]
    assert r"\textbf{" in cells[int(np.argmax(means))][2]

    # formatted Markdown: mean ± SD across subjects equals numpy's
    text = paths["table_formatted.md"].read_text()
    lines = text.strip().splitlines()
    assert len([ln for ln in lines if ln.startswith("|")]) == len(METHODS) + 2
    assert not lines[-1].startswith("|")  # legend line
    line = next(ln for ln in lines if _md_cells(ln)[:2] == ["adapter_mlp", "0.5"])
    cell = _md_cells(line)[2].strip("*")
    mean, sd = (float(x) for x in re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
    vals = [r["imagery"]["cosine"]["value"] for r in rows
            if r["method"] == "adapter_mlp" and r["fraction"] == 0.5]
    assert mean == pytest.approx(np.mean(vals), abs=5e-4)
    assert sd == pytest.approx(np.std(vals, ddof=1), abs=5e-4)
    table = "\n".join(ln for ln in lines if ln.startswith("|"))
    assert table.count("**") == 2 * n_numeric  # one bold cell per numeric column


def test_write_figures(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = write_figures(rows, tmp_path / "figures")
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in FIGURES
                                                   for e in ("png", "pdf"))
    for p in paths:
        assert p.exists() and p.stat().st_size > 0


def test_one_subject_one_method_with_missing_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    row = _row(rng, "subj01", "adapter_mlp", "adapter", 1.0)
    row["imagery"]["two_way"] = None
    del row["imagery"]["retrieval_top1"]
    row["by_set"]["complex"] = {"cosine": None}
    row["train_seconds"] = None
    row["transfer_ratio"] = {"value": 0.5, "ci": [None, None]}
    paths = write_tables([row], tmp_path)
    for p in paths.values():
        assert p.stat().st_size > 0
    tex = paths["table.tex"].read_text()
    assert r"$\pm$" not in tex.split(r"\midrule")[1]  # a single subject has no SD
    csv = pd.read_csv(paths["results_table.csv"])
    assert np.isnan(csv["imagery_two_way"].iloc[0])
    assert csv["n_params"].iloc[0] == row["n_params"]
    figs = write_figures([row], tmp_path / "figures")
    # per_subject_breakdown plots 2-way, missing here: skipped, not drawn empty
    assert sorted(p.stem for p in figs) == sorted(
        2 * [f for f in FIGURES if f != "per_subject_breakdown"])
    for p in figs:
        assert p.stat().st_size > 0


def test_empty_rows_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_tables([], tmp_path)
    with pytest.raises(ValueError):
        write_figures([], tmp_path)
