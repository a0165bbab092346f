"""Tables printed to the terminal: the dataset summary and the H1 table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def make_console() -> Console:
    """A console wide enough for the tables when output goes to a file or a pipe."""
    return Console(width=None if sys.stdout.isatty() else 200)


def summary_tables(perception: list[dict], imagery: list[dict]) -> list[Table]:
    tables = []
    if perception:
        t = Table(title="Perception (trial index + beta cache)")
        for col in ("subject", "dataset", "trials", "index rows", "images train/val/test",
                    "voxels"):
            t.add_column(col, justify="left" if col in ("subject", "dataset") else "right")
        for p in perception:
            si = p["split_images"]
            t.add_row(p["subject"], p.get("dataset", ""), str(p["trials"]), str(p["rows"]),
                      f"{si.get('train', 0)}/{si.get('val', 0)}/{si.get('test', 0)}",
                      str(p["voxels"]))
        tables.append(t)
        rois = list(dict.fromkeys(k for p in perception for k in p["voxels_per_roi"]))
        if rois:
            t = Table(title="Voxels per ROI (of the cached selection)")
            t.add_column("subject")
            for r in rois:
                t.add_column(r, justify="right")
            for p in perception:
                t.add_row(p["subject"], *(str(p["voxels_per_roi"].get(r, 0)) for r in rois))
            tables.append(t)
    if imagery:
        t = Table(title="NSD-Imagery trials (vision = perception domain)")
        cols = ("subject", "vision", "imagery", "attention (excluded)", "imagery simple",
                "imagery complex", "imagery conceptual", "scored", "vivid")
        for col in cols:
            t.add_column(col, justify="left" if col == "subject" else "right")
        for s in imagery:
            by, sets = s["by_task"], s["by_task_and_set"]
            t.add_row(s["subject"], str(by.get("perception", 0)), str(by.get("imagery", 0)),
                      str(by.get("attention", 0)),
                      *(str(sets.get(f"imagery/{k}", 0)) for k in ("simple", "complex",
                                                                   "conceptual")),
                      str(s["scored"]), f"{100 * s['vivid_fraction']:.0f}%")
        tables.append(t)
    return tables


def print_summary(perception: list[dict], imagery: list[dict], console: Console | None = None
                  ) -> None:
    console = console or make_console()
    for table in summary_tables(perception, imagery):
        console.print(table)


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    return f"{m['value']:.2f} [{m['ci'][0]:.2f},{m['ci'][1]:.2f}]"


def print_h1_table(rows: list[dict[str, Any]], console: Console,
                   comparisons: list[dict[str, Any]] | None = None) -> None:
    metric = rows[0]["transfer_ratio"]["metric"] if rows else "two_way"
    table = Table(title="H1: perception-trained decoders on perception and imagery, "
                  "value [95% CI]")
    for col in ("subject", "model", "perc. top-1", "perc. 2-way", "perc. cosine",
                "vision 2-way", "imagery 2-way", "imagery cosine", f"ratio ({metric})",
                "ratio (cosine)"):
        table.add_column(col, justify="right" if col not in ("subject", "model") else "left",
                         no_wrap=True)
    for r in rows:
        table.add_row(
            r["subject"], r["model"],
            f"{_ci(r['perception']['retrieval_top1'])} /{r['perception_pool']}",
            _ci(r["perception"]["two_way"]), _ci(r["perception"]["cosine"]),
            _ci(r["vision"]["two_way"]), _ci(r["imagery"]["two_way"]),
            _ci(r["imagery"]["cosine"]), _ci(r["transfer_ratio"]),
            _ci(r["transfer_ratio_cosine"]),
        )
    console.print(table)
    console.print("perc. = NSD perception test images (top-1 in pools of /N); vision and "
                  "imagery = the 12 simple + complex NSD-Imagery targets (2-way chance 0.5); "
                  "ratio = (imagery - chance) / (vision - chance), repetitions matched")
    if comparisons:
        t = Table(title="Decoders compared on the same perception test images: paired "
                        "difference [95% CI]")
        for col in ("subject", "pair", "top-1", "2-way", "cosine"):
            t.add_column(col, justify="left" if col in ("subject", "pair") else "right",
                         no_wrap=True)
        for c in comparisons:
            t.add_row(c["subject"], f"{c['a']} - {c['b']}",
                      *(_diff(c["metrics"].get(k)) for k in ("retrieval_top1", "two_way",
                                                            "cosine")))
        console.print(t)
        console.print("* : the CI excludes 0 (the two decoders differ by more than it)")


def _diff(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    star = " *" if c["ci"][0] > 0 or c["ci"][1] < 0 else ""
    return f"{c['mean_difference']:+.3f} [{c['ci'][0]:+.3f},{c['ci'][1]:+.3f}]{star}"
