"""Tables printed to the terminal: the dataset summary and the H1 table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def make_console() -> Console:
    """A console wide enough for the tables when output goes to a file or a pipe."""
    return Console(width=None if sys.stdout.isatty() else 160)


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


def _ci(m: dict[str, Any]) -> str:
    return f"{m['value']:.2f} [{m['ci'][0]:.2f},{m['ci'][1]:.2f}]"


def print_h1_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="H1: perception-trained decoders on perception and imagery, "
                  "value [95% CI]")
    for col in ("subject", "model", "perc. top-1", "perc. 2-way", "vision 2-way",
                "imagery 2-way", "ratio (cosine)", "ratio (2-way)"):
        table.add_column(col, justify="right" if col not in ("subject", "model") else "left",
                         no_wrap=True)
    for r in rows:
        table.add_row(
            r["subject"], r["model"],
            f"{_ci(r['perception']['retrieval_top1'])} /{r['perception_pool']}",
            _ci(r["perception"]["two_way"]), _ci(r["vision"]["two_way"]),
            _ci(r["imagery"]["two_way"]), _ci(r["transfer_ratio"]),
            _ci(r["transfer_ratio_two_way"]),
        )
    console.print(table)
    console.print("perc. = NSD perception test images (top-1 in pools of /N); vision and "
                  "imagery = the 12 simple + complex NSD-Imagery targets (2-way chance 0.5); "
                  "ratio = (imagery - chance) / (vision - chance), repetitions matched")
