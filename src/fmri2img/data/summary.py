"""Dataset summaries from built indices: counts a researcher checks before training
(printed by :mod:`fmri2img.report.console`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index
from fmri2img.data.rois import roi_voxel_counts
from fmri2img.io.atomic import write_text


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


def write_summary(path: Path, perception: list[dict], imagery: list[dict]) -> None:
    write_text(path, json.dumps({"perception": perception, "imagery": imagery}, indent=2) + "\n")
