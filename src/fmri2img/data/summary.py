"""Dataset summaries from built indices: counts a researcher checks before training."""

from __future__ import annotations

import json
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


def summary_table(perception: list[dict], imagery: list[dict]) -> Table:
    img_by_subject = {s["subject"]: s for s in imagery}
    table = Table(title="fmri2img dataset summary", show_lines=False)
    for col in ("subject", "trials", "images (train/val/test)", "voxels", "voxels per ROI",
                "imagery: vision / imagery / attention", "imagery trials by set (s/c/k)"):
        table.add_column(col, overflow="fold")
    for p in perception:
        im = img_by_subject.get(p["subject"], {})
        si = p["split_images"]
        rois = ", ".join(f"{k} {v}" for k, v in p["voxels_per_roi"].items())
        by = im.get("by_task", {})
        sets = im.get("by_task_and_set", {})
        by_set = " / ".join(
            str(sets.get(f"imagery/{s}", 0)) for s in ("simple", "complex", "conceptual"))
        table.add_row(
            p["subject"], str(p["trials"]),
            f"{si.get('train', 0)}/{si.get('val', 0)}/{si.get('test', 0)}",
            str(p["voxels"]), rois,
            f"{by.get('perception', 0)} / {by.get('imagery', 0)} / {by.get('attention', 0)}"
            if im else "-",
            by_set if im else "-",
        )
    return table


def print_summary(perception: list[dict], imagery: list[dict], console: Console | None = None
                  ) -> None:
    (console or Console()).print(summary_table(perception, imagery))


def write_summary(path: Path, perception: list[dict], imagery: list[dict]) -> None:
    from fmri2img.atomic import write_text

    write_text(path, json.dumps({"perception": perception, "imagery": imagery}, indent=2) + "\n")
