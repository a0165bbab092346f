"""NSD-Imagery: the 720-beta file, its block layout, trial labels and vividness.

Trial labels come from up to three tables, cross-checked wherever they overlap:

* the official per-run behaviour files ``nsddata/bdata/nsdimagery/nsdimagery_subjXX_<run>.tsv``
  (or one event table holding their columns plus ``beta_index``), which carry CONDITION,
  the target actually shown, and BUTTON, the vividness answer;
* the per-beta stimulus table ``nsdimagery_stiminfo.csv`` (TaskType, StimType, StimCond, Cue,
  frame indices), which also covers the attention betas;
* the per-beta behaviour table ``subjNN_Imagery_Behavioralresponse.csv`` (``Value``: 1 vivid,
  0 not vivid).

Vision trials are labelled by the target shown, never by the cue: half of them show a
target other than the cue. Without the official files, sets A and B are resolved from the
frame index (each target's canonical frame, learned from the imagery rows, is the smallest
canonical index >= the frame), and set C vision trials whose cue was wrong cannot be
resolved; they are kept, marked ``excluded``, and reported.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from fmri2img.data import cache as cache_mod
from fmri2img.data import index as index_mod
from fmri2img.data.keys import imagery_key, nsd_key
from fmri2img.data.nsd import roi_files
from fmri2img.data.nsd_layout import (
    BETA_SCALE,
    DEFAULT_IMAGERY_VERSION,
    IMAGERY_BLOCKS,
    IMAGERY_N_BETAS,
    IMAGERY_TARGETS,
    STIM_SET_KIND,
    TASK_TYPE_CODES,
    NSDPaths,
    subject_name,
)
from fmri2img.data.options import NSDSourceOptions
from fmri2img.data.rois import RoiSelection, load_selection
from fmri2img.data.volumes import read_masked, volume_format
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json
from fmri2img.io.checksum import BackgroundHasher, fingerprint

log = logging.getLogger(__name__)
DATASET = "nsd-imagery"
DOMAIN_OF_TASK = {"vision": "perception", "imagery": "imagery", "attention": "attention"}
STIMINFO_COLUMNS = ["betas", "TaskType", "StimType", "StimCond(0/1)", "Cue",
                    "Image(s) seen/imagined"]
_NSD_FRAME = re.compile(r"shared\d+_nsd(\d+)")


class ImageryIndexConfig(NSDSourceOptions):
    """Options of ``fmri2img build-imagery-index``."""

    betas_version: str = DEFAULT_IMAGERY_VERSION
    meta_dir: Path | None = Field(None, description="folder with nsdimagery_stiminfo.csv and "
                                  "subjNN_Imagery_Behavioralresponse.csv")
    events: Path | None = Field(None, description="folder of official "
                                "nsdimagery_subjXX_<run>.tsv files, or one event table")
    # "session" by default: runs are blocked by stimulus set, so z-scoring per run would
    # subtract each set's mean pattern and make a held-out target's betas the negative of
    # the other targets' in its run (see README, NSD-Imagery). "run" is MIRAGE's choice.
    zscore: Literal["run", "session", "none"] = "session"


# ----------------------------------------------------------------------------- tables
def beta_layout() -> pd.DataFrame:
    """One row per beta of the 720-beta file: block, run, task, set, trial, epoch."""
    rows = []
    for run, block in enumerate(IMAGERY_BLOCKS, start=1):
        for k in range(block.n_betas):
            rows.append({
                "beta_index": block.start + k,
                "run_name": block.name,
                "run": run,
                "task": block.task,
                "stim_set": block.stim_set,
                "trial": k // block.betas_per_trial + 1,
                "epoch": k % block.betas_per_trial,
            })
    layout = pd.DataFrame(rows)
    assert len(layout) == IMAGERY_N_BETAS
    return layout


def read_stiminfo(path: Path) -> pd.DataFrame:
    df = _read_table(path, sep=",")
    missing = [c for c in STIMINFO_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing}; expected {STIMINFO_COLUMNS}", path)
    if len(df) != IMAGERY_N_BETAS or not np.array_equal(df["betas"], np.arange(IMAGERY_N_BETAS)):
        raise DataError(f"expected {IMAGERY_N_BETAS} rows with betas = 0..719, got {len(df)}",
                        path)
    layout = beta_layout()
    task = df["TaskType"].map(lambda v: TASK_TYPE_CODES.get(int(v)) if pd.notna(v) else None)
    if not (task.to_numpy() == layout["task"].to_numpy()).all():
        bad = int(np.flatnonzero(task.to_numpy() != layout["task"].to_numpy())[0])
        raise DataError(f"beta {bad}: TaskType {df['TaskType'][bad]} does not fit the 720-beta "
                        f"block layout ({layout['run_name'][bad]} is {layout['task'][bad]})", path)
    sets = df["StimType"].map({0: "A", 1: "B", 2: "C"})
    if not (sets.to_numpy() == layout["stim_set"].to_numpy()).all():
        raise DataError("StimType does not fit the block layout (0=A, 1=B, 2=C per block)", path)
    df["frames"] = [_parse_list(v, path, i) for i, v in enumerate(df["Image(s) seen/imagined"])]
    return df


def _parse_list(text: Any, path: Path, row: int) -> list:
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise DataError(f"row {row}: 'Image(s) seen/imagined' is not a list: {text!r}",
                        path) from exc
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_behaviour(path: Path) -> pd.Series:
    df = _read_table(path, sep=",")
    if "Value" not in df.columns or len(df) != IMAGERY_N_BETAS:
        raise DataError(f"expected {IMAGERY_N_BETAS} rows with a 'Value' column "
                        "(1 vivid, 0 not vivid)", path)
    return df["Value"].astype(float)


def read_events(source: Path, subject: int) -> pd.DataFrame:
    """Official behaviour rows keyed by beta_index (both betas of an attention trial)."""
    subj = subject_name(subject)
    if source.is_dir():
        frames = []
        for block in IMAGERY_BLOCKS:
            p = source / f"nsdimagery_{subj}_{block.name}.tsv"
            if not p.exists():
                continue
            df = _read_table(p, sep="\t")
            _require(df, ["TRIAL", "CONDITION", "CUE"], p)
            if df["TRIAL"].min() < 1 or df["TRIAL"].max() * block.betas_per_trial > block.n_betas:
                raise DataError(f"TRIAL values {df['TRIAL'].min()}..{df['TRIAL'].max()} do not "
                                f"fit run {block.name} ({block.n_betas} betas)", p)
            for epoch in range(block.betas_per_trial):
                d = df.copy()
                d["beta_index"] = block.start + (d["TRIAL"] - 1) * block.betas_per_trial + epoch
                d["source_file"] = p.name
                frames.append(d)
        if not frames:
            raise DataError(f"no nsdimagery_{subj}_<run>.tsv behaviour files", source)
        events = pd.concat(frames, ignore_index=True)
    else:
        events = _read_table(source, sep="\t" if source.suffix == ".tsv" else ",")
        _require(events, ["beta_index", "CONDITION", "CUE"], source)
        subj_col = "subject" if "subject" in events.columns else None
        if subj_col is not None:
            events = events[events[subj_col].astype(str) == subj]
            if events.empty:
                raise DataError(f"no rows for {subj} in the event table", source)
        events = events.assign(source_file=source.name)
    if events["beta_index"].duplicated().any():
        raise DataError("two behaviour rows claim the same beta", source)
    if events["beta_index"].min() < 0 or events["beta_index"].max() >= IMAGERY_N_BETAS:
        raise DataError("beta_index outside 0..719", source)
    return events.set_index("beta_index").sort_index()


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError("file not found", path)
    try:
        return pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"not a readable table: {exc}", path) from exc


def _require(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing}", path)


# ------------------------------------------------------------------------- labelling
def label_betas(
    stiminfo: pd.DataFrame | None,
    behaviour: pd.Series | None,
    events: pd.DataFrame | None,
    *,
    sources: dict[str, str],
) -> pd.DataFrame:
    """Resolve cue, target, stimulus key and vividness of every beta."""
    if stiminfo is None and events is None:
        raise DataError("NSD-Imagery needs the official behaviour files or the stiminfo table")
    table = beta_layout()
    n = len(table)
    cue = np.full(n, None, dtype=object)
    target = np.full(n, None, dtype=object)
    stimulus = np.full(n, None, dtype=object)
    vivid = np.full(n, np.nan)
    target_key = {t.code: (nsd_key(t.nsd_id) if t.nsd_id is not None else imagery_key(t.code))
                  for t in IMAGERY_TARGETS}

    if events is not None:
        ev = events.reindex(range(n))
        has = ev["CONDITION"].notna().to_numpy()
        cue[has] = ev["CUE"].to_numpy()[has]
        target[has] = ev["CONDITION"].to_numpy()[has]
        if "FRAMEFILE" in ev.columns:
            # Learn which NSD image each complex target is from what vision trials showed.
            vis = has & (table["task"].to_numpy() == "vision")
            for i in np.flatnonzero(vis):
                key = _frame_key(ev["FRAMEFILE"].iat[i])
                code = target[i]
                if table["stim_set"].iat[i] == "C":
                    stimulus[i] = key  # the exemplar actually shown
                elif table["stim_set"].iat[i] == "B" and key is not None:
                    target_key[code] = key
        if "BUTTON" in ev.columns:
            img = has & (table["task"].to_numpy() == "imagery")
            vivid[img] = ev["BUTTON"].to_numpy()[img]
            vivid[img] = np.where(vivid[img] == 1, 1.0, np.where(vivid[img] == 2, 0.0, np.nan))

    if stiminfo is not None:
        si_cue = stiminfo["Cue"].to_numpy()
        known = np.array([c is not None for c in cue])
        clash = known & (si_cue != cue)
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise DataError(f"beta {i}: cue {si_cue[i]!r} in {sources['stiminfo']} but "
                            f"{cue[i]!r} in {sources['events']}; tables are not aligned")
        cue[~known] = si_cue[~known]
        resolved = _targets_from_stiminfo(table, stiminfo)
        both = np.array([t is not None for t in target]) & np.array(
            [r is not None for r in resolved])
        clash = both & (resolved != target)
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise DataError(f"beta {i}: the frame rule gives target {resolved[i]!r} but "
                            f"{sources['events']} says CONDITION {target[i]!r}")
        fill = np.array([t is None for t in target])
        target[fill] = resolved[fill]

    if behaviour is not None:
        img = table["task"].to_numpy() == "imagery"
        csv_vivid = behaviour.to_numpy()
        both = img & ~np.isnan(vivid) & ~np.isnan(csv_vivid)
        if (vivid[both] != csv_vivid[both]).any():
            i = int(np.flatnonzero(both & (vivid != csv_vivid))[0])
            raise DataError(f"beta {i}: vividness {csv_vivid[i]} in {sources['behaviour']} but "
                            f"BUTTON gives {vivid[i]}")
        fill = img & np.isnan(vivid)
        vivid[fill] = csv_vivid[fill]

    task = table["task"].to_numpy()
    for i in range(n):
        code = target[i]
        if task[i] == "attention":
            target[i] = None  # an attention beta shows a stream, not one target
            continue
        if code is None:
            continue
        if stimulus[i] is None and not (task[i] == "vision" and table["stim_set"].iat[i] == "C"):
            stimulus[i] = target_key[code]
    table["cue"] = cue
    table["target_code"] = target
    table["stimulus"] = stimulus
    table["vividness"] = vivid.astype(np.float32)
    return table


def _frame_key(name: Any) -> str | None:
    m = _NSD_FRAME.search(str(name))
    if m is None:
        return None
    id1 = int(m.group(1))
    return nsd_key(id1 - 1) if id1 > 0 else None  # nsd00000 is the artwork, not NSD


def _targets_from_stiminfo(table: pd.DataFrame, si: pd.DataFrame) -> np.ndarray:
    """Targets from the per-beta table alone (see module docstring)."""
    n = len(table)
    out = np.full(n, None, dtype=object)
    task = table["task"].to_numpy()
    sets = table["stim_set"].to_numpy()
    cue = si["Cue"].to_numpy()
    cond = si["StimCond(0/1)"].to_numpy()
    canonical: dict[str, dict[int, str]] = {"A": {}, "B": {}}
    for i in np.flatnonzero(task == "imagery"):
        out[i] = cue[i]
        if sets[i] in canonical:
            frame = si["frames"].iat[i][0]
            canonical[sets[i]][int(frame)] = cue[i]
    for i in np.flatnonzero(task == "vision"):
        if sets[i] in canonical:
            frames = sorted(canonical[sets[i]])
            f = int(si["frames"].iat[i][0])
            k = int(np.searchsorted(frames, f))
            if k < len(frames):
                out[i] = canonical[sets[i]][frames[k]]
        elif cond[i] == 1:
            out[i] = cue[i]
    # StimCond says whether the shown target matched the cue: check the frame rule by it.
    vis_ab = np.flatnonzero((task == "vision") & (sets != "C"))
    for i in vis_ab:
        if out[i] is not None and not np.isnan(cond[i]) and (out[i] == cue[i]) != bool(cond[i]):
            raise DataError(f"beta {i}: frame {si['frames'].iat[i]} resolves to {out[i]} but "
                            f"StimCond={cond[i]} with cue {cue[i]}; the stiminfo table is "
                            "inconsistent")
    return out


# ------------------------------------------------------------------------------ build
def _zscore(block: np.ndarray) -> np.ndarray:
    """Each voxel (column) to mean 0 and sd 1 over the rows; constant voxels become 0."""
    sd = block.std(axis=0)
    sd[sd == 0] = 1.0
    return (block - block.mean(axis=0)) / sd


def build_imagery_index(cfg: ImageryIndexConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    t_start = time.perf_counter()
    paths = NSDPaths(cfg.nsd_root)
    if not paths.root.is_dir():
        raise DataError("NSD root is not a directory", paths.root)
    subj = subject_name(cfg.subject)
    meta_dir = cfg.meta_dir
    stiminfo_path = meta_dir / "nsdimagery_stiminfo.csv" if meta_dir else paths.imagery_stiminfo
    behaviour_path = (meta_dir / f"subj{cfg.subject:02d}_Imagery_Behavioralresponse.csv"
                      if meta_dir else paths.imagery_behaviour_csv(cfg.subject))
    events_path = cfg.events
    if events_path is None and paths.imagery_run_tsv(cfg.subject, "visA").exists():
        events_path = paths.imagery_bdata_dir
    if events_path is not None and not events_path.exists():
        raise DataError("behaviour files not found", events_path)
    if meta_dir is not None and not stiminfo_path.exists():
        raise DataError("nsdimagery_stiminfo.csv not found in the metadata folder",
                        stiminfo_path)
    stiminfo = read_stiminfo(stiminfo_path) if stiminfo_path.exists() else None
    behaviour = read_behaviour(behaviour_path) if behaviour_path.exists() else None
    events = read_events(events_path, cfg.subject) if events_path is not None else None
    if stiminfo is None and events is None:
        raise DataError("no NSD-Imagery trial metadata: expected the official behaviour files "
                        f"in {paths.imagery_bdata_dir} or the stiminfo table (--meta-dir)",
                        stiminfo_path)
    labels = label_betas(stiminfo, behaviour, events, sources={
        "stiminfo": str(stiminfo_path), "behaviour": str(behaviour_path),
        "events": str(events_path)})

    fmts = ["hdf5", "nifti"] if cfg.beta_format == "auto" else [cfg.beta_format]
    cands = [paths.imagery_betas(cfg.subject, f, cfg.betas_version) for f in fmts]
    betas_path = next((c for c in cands if c.exists()), None)
    if betas_path is None:
        raise DataError("NSD-Imagery betas not found; expected betas_nsdimagery.hdf5 or .nii.gz",
                        cands[0])
    selection = RoiSelection.parse(cfg.roi)
    mask, voxels, mask_info = load_selection(paths, cfg.subject, selection)
    vox_xyz = voxels[["x", "y", "z"]].to_numpy()
    meta_sources = [p for p in (stiminfo_path, behaviour_path, paths.roi(cfg.subject,
                    selection.atlas)) if p.exists()]
    if events_path is not None:
        meta_sources += sorted(events_path.glob(f"nsdimagery_{subj}_*.tsv")) \
            if events_path.is_dir() else [events_path]
    spec = {
        "dataset": DATASET,
        "subject": subj,
        "roi": str(selection),
        "betas_version": cfg.betas_version,
        "format": volume_format(betas_path),
        "zscore": cfg.zscore,
        "dtype": cfg.cache_dtype,
    }

    def fill(writer: cache_mod.CacheWriter) -> tuple[list[dict], dict]:
        with BackgroundHasher() as hasher:
            hasher.submit(betas_path)
            raw = read_masked(betas_path, vox_xyz, tuple(mask.shape),
                              n_volumes=IMAGERY_N_BETAS)
            if raw.shape[0] != IMAGERY_N_BETAS:
                raise DataError(f"{raw.shape[0]} volumes; expected {IMAGERY_N_BETAS} "
                                "NSD-Imagery betas", betas_path)
            with np.errstate(over="ignore", invalid="ignore"):
                data = raw.astype(np.float32) / np.float32(BETA_SCALE)
                if cfg.zscore == "run":
                    for block in IMAGERY_BLOCKS:
                        data[block.start:block.stop] = _zscore(data[block.start:block.stop])
                elif cfg.zscore == "session":
                    data = _zscore(data)
            if not np.isfinite(data).all():
                raise DataError("betas beyond the float32 range once scaled; expected "
                                "finite values of a sane scale", betas_path)
            writer.write_rows(np.arange(IMAGERY_N_BETAS), data)
            sources = [hasher.result(betas_path)] + [fingerprint(p) for p in meta_sources]
        return sources, {}

    cache_root = cfg.cache_dir or cfg.output.parent / "cache"
    sources = [betas_path, *meta_sources, *roi_files(paths, cfg.subject, selection)]
    cache_dir, reused = cache_mod.build_cache(
        cache_root, spec, sources=sources, n_rows=IMAGERY_N_BETAS, voxels=voxels,
        dtype=cfg.cache_dtype,
        fill=fill, reuse=cfg.reuse_cache, rehash=cfg.rehash,
        extra_manifest={
            "mask": mask_info,
            "preprocessing": {
                "scale": f"stored int16 / {BETA_SCALE:g} (percent signal change)",
                "zscore": {"run": "per run (12 blocks) and voxel over all its betas",
                           "session": "per voxel over all 720 betas of the session",
                           "none": "none"}[cfg.zscore],
                "average": "single betas",
            },
        },
    )

    df = index_mod.empty_frame(IMAGERY_N_BETAS)
    df["subject"] = subj
    df["dataset"] = DATASET
    df["domain"] = labels["task"].map(DOMAIN_OF_TASK).to_numpy()
    df["session"] = np.int32(1)
    for col in ("run", "run_name", "trial", "beta_index", "cue", "target_code", "stimulus",
                "vividness"):
        df[col] = labels[col].to_numpy()
    df["global_trial"] = labels["beta_index"].to_numpy().astype(np.int64)
    df["stimulus_set"] = labels["stim_set"].map(STIM_SET_KIND).to_numpy()
    ids = [int(k.split(":")[1]) if isinstance(k, str) and k.startswith("nsd:") else pd.NA
           for k in df["stimulus"]]
    df["stimulus_id"] = pd.array(ids, dtype="Int64")
    scored = (df["domain"] != "attention") & df["target_code"].notna()
    df["split"] = np.where(scored, "test", "excluded")
    df["repetition"] = (df.groupby(["domain", "target_code"], dropna=False).cumcount()
                        .astype(np.int16))
    df.loc[df["domain"] == "attention", "repetition"] = (
        df[df["domain"] == "attention"].groupby("run_name").cumcount() // 2).astype(np.int16)
    df["cache_row"] = df["beta_index"].astype(np.int64)

    unresolved = int(((df["domain"] == "perception") & df["target_code"].isna()).sum())
    if unresolved:
        log.warning("%s: %d vision trials have no resolvable shown target (set C trials whose "
                    "cue was not the shown concept need the official behaviour files); they "
                    "are marked excluded", subj, unresolved)
    meta = {
        "dataset": DATASET,
        "subject": subj,
        "cache": os.path.relpath(Path(cache_dir).resolve(), cfg.output.parent.resolve()),
        "stimuli": {"kind": "nsd_imagery", "root": str(paths.root.resolve())},
        "config": cfg.resolved(),
        "label_sources": {"events": str(events_path) if events_path else None,
                          "stiminfo": str(stiminfo_path) if stiminfo is not None else None,
                          "behaviour": str(behaviour_path) if behaviour is not None else None},
        "unresolved_vision_trials": unresolved,
    }
    index_mod.write_index(cfg.output, df, meta)
    split_manifest = {
        "seed": None,
        "rule": "vision and imagery trials with a resolved target are 'test'; attention "
                "betas and unresolved trials are 'excluded' from scoring",
        "counts": {f"{d}/{s}": int(v)
                   for (d, s), v in df.groupby(["domain", "split"]).size().items()},
    }
    write_json(index_mod.sidecar(cfg.output, "splits.json"), split_manifest)
    cfg.save(index_mod.sidecar(cfg.output, "config.yaml"))
    log.info("%s imagery: %s in %.1f s%s", subj,
             ", ".join(f"{k} {v}" for k, v in df["domain"].value_counts().items()),
             time.perf_counter() - t_start, " (cache reused)" if reused else "")
    return df, {**meta, "cache": str(cache_dir), "reused": reused}
