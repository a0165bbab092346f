"""Dataset summaries from built indices: counts a researcher checks before training."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index
from fmri2img.data.rois import roi_voxel_counts


def summarize_perception(index_path: Path) -> dict[str, Any]:
    df, meta = read_index(index_path)
    cache = BetaCache(meta["cache"])
    atlases = cache.manifest.get("mask", {}).get("atlases", {})
    single = df[df["n_averaged"] == 1]
    return {
        "subject": meta["subject"],
        "dataset": meta["dataset"],
        "rows": len(df),
        "trials": int(df["n_averaged"].sum()),
        "images": int(df["stimulus"].nunique()),
        "split_rows": {k: int(v) for k, v in df["split"].value_counts().items()},
        "split_images": {k: int(v) for k, v in df.groupby("split")["stimulus"].nunique().items()},
        "single_trial_rows": len(single),
        "voxels": cache.n_voxels,
        "voxels_per_roi": roi_voxel_counts(cache.voxels(), atlases),
        "cache": str(cache.dir),
    }


def summarize_imagery(index_path: Path) -> dict[str, Any]:
    df, meta = read_index(index_path)
    cache = BetaCache(meta["cache"])
    per = df.groupby(["domain", "stimulus_set"]).size()
    return {
        "subject": meta["subject"],
        "betas": len(df),
        "voxels": cache.n_voxels,
        "by_task": {k: int(v) for k, v in df["domain"].value_counts().items()},
        "by_task_and_set": {f"{d}/{s}": int(v) for (d, s), v in per.items()},
        "scored": int((df["split"] == "test").sum()),
        "vivid_fraction": float(df.loc[df["domain"] == "imagery", "vividness"].mean()),
    }


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


def make_console() -> Console:
    """A console wide enough for the tables when output goes to a file or a pipe."""
    return Console(width=None if sys.stdout.isatty() else 160)


def print_summary(perception: list[dict], imagery: list[dict], console: Console | None = None
                  ) -> None:
    console = console or make_console()
    for table in summary_tables(perception, imagery):
        console.print(table)


def write_summary(path: Path, perception: list[dict], imagery: list[dict]) -> None:
    from fmri2img.atomic import write_text

    write_text(path, json.dumps({"perception": perception, "imagery": imagery}, indent=2) + "\n")
