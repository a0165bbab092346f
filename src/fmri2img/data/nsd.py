"""NSD perception: experiment design, trial table, splits, and the session-streaming cache build.

Reads ``nsd_expdesign.mat``, ``nsd_stim_info_merged.csv`` (cross-checked when present),
the ROI atlas, and ``betas_sessionNN.{hdf5,nii.gz}`` one session at a time. Each
session is divided by 300 and, by default, z-scored per voxel with the mean and SD of
that session's *training* trials only, so no statistic of a validation or test trial
leaks into the data a decoder is trained on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.io
from pydantic import Field, field_validator

from fmri2img.data import cache as cache_mod
from fmri2img.data import index as index_mod
from fmri2img.data.keys import nsd_key
from fmri2img.data.nsd_layout import (
    BETA_SCALE,
    DEFAULT_BETAS_VERSION,
    SUBJECTS,
    TRIALS_PER_SESSION,
    NSDPaths,
    run_lengths,
    subject_name,
)
from fmri2img.data.options import NSDSourceOptions
from fmri2img.data.rois import SUMMARY_ATLASES, RoiSelection, load_selection
from fmri2img.data.splits import assign_validation
from fmri2img.data.volumes import read_masked, volume_format
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json
from fmri2img.io.checksum import BackgroundHasher, fingerprint
from fmri2img.progress import progress

log = logging.getLogger(__name__)
DATASET = "nsd"


class NSDIndexConfig(NSDSourceOptions):
    """Options of ``fmri2img build-index --nsd-root``."""

    betas_version: str = DEFAULT_BETAS_VERSION
    sessions: list[int] | None = Field(None, description="sessions to read (default: all)")
    average: Literal["none", "test", "all"] = Field(
        "none", description="average repetitions: none, test images only, or every image")
    zscore: Literal["session", "none"] = Field(
        "session", description="per session and voxel, with the training trials' moments")
    val_fraction: float = Field(0.1, description="share of non-test images for validation")
    seed: int = Field(0, description="seed of the validation split")

    @field_validator("val_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        return v


@dataclass(frozen=True)
class ExpDesign:
    masterordering: np.ndarray  # (n_trials,) 1-based indices into a subject's image list
    subjectim: np.ndarray  # (8, n_images) 1-based 73k ids
    sharedix: np.ndarray  # (n_shared,) 1-based 73k ids

    @property
    def n_shared(self) -> int:
        return int(self.sharedix.size)


def read_expdesign(path: Path) -> ExpDesign:
    if not path.exists():
        raise DataError("experiment design not found; expected nsd_expdesign.mat", path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise DataError(f"not a readable MATLAB file: {exc}", path) from exc
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        raise DataError(f"missing variables {missing}; expected masterordering, subjectim, "
                        "sharedix", path)
    mo = np.asarray(mat["masterordering"]).astype(np.int64).ravel()
    si = np.asarray(mat["subjectim"]).astype(np.int64)
    sh = np.asarray(mat["sharedix"]).astype(np.int64).ravel()
    if si.ndim != 2 or si.shape[0] != 8:
        raise DataError(f"subjectim has shape {si.shape}; expected (8, n_images)", path)
    if mo.min() < 1 or mo.max() > si.shape[1]:
        raise DataError(
            f"masterordering values span {mo.min()}..{mo.max()}; expected 1-based indices "
            f"1..{si.shape[1]} into subjectim", path)
    if not np.array_equal(np.sort(si[0, : sh.size]), np.sort(sh)):
        raise DataError("the first columns of subjectim are not the sharedix images", path)
    return ExpDesign(mo, si, sh)


def trial_table(design: ExpDesign, subject: int) -> pd.DataFrame:
    """Every trial of the subject's design (all sessions), chronologically."""
    n = design.masterordering.size
    if n % TRIALS_PER_SESSION:
        raise DataError(f"masterordering has {n} trials, not a multiple of {TRIALS_PER_SESSION}")
    g = np.arange(n)
    ten_k = design.masterordering - 1
    session = g // TRIALS_PER_SESSION + 1
    within = g % TRIALS_PER_SESSION
    bounds = np.cumsum([0, *run_lengths()])
    run = np.searchsorted(bounds, within, side="right")
    trial = within - bounds[run - 1] + 1
    image73k = design.subjectim[subject - 1, ten_k] - 1
    df = pd.DataFrame({
        "global_trial": g,
        "session": session.astype(np.int32),
        "run": run.astype(np.int32),
        "trial": trial.astype(np.int32),
        "beta_index": within.astype(np.int32),
        "stimulus_id": image73k,
        "shared": design.masterordering <= design.n_shared,
    })
    df["repetition"] = df.groupby("stimulus_id").cumcount().astype(np.int16)
    return df


def check_stim_info(path: Path, trials: pd.DataFrame, subject: int) -> None:
    """Cross-check the design against nsd_stim_info_merged.csv's repetition columns."""
    cols = [f"subject{subject}_rep{r}" for r in range(3)]
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in ("nsdId", *cols) if c not in header]
    if missing:
        raise DataError(f"missing columns {missing}; expected the NSD stim-info columns", path)
    info = pd.read_csv(path, usecols=["nsdId", *cols]).set_index("nsdId").sort_index()
    if not np.array_equal(info.index.to_numpy(), np.arange(len(info))):
        raise DataError("nsdId is not 0..n-1 in row order; expected one row per 73k image", path)
    for rep in range(3):
        sel = trials[trials["repetition"] == rep]
        recorded = info[cols[rep]].to_numpy()[sel["stimulus_id"].to_numpy()]
        if not np.array_equal(recorded, sel["global_trial"].to_numpy() + 1):
            bad = int(np.sum(recorded != sel["global_trial"].to_numpy() + 1))
            raise DataError(
                f"{cols[rep]} disagrees with nsd_expdesign.mat for {bad} trials: expected the "
                "1-based global trial number of each image's presentation", path)


def _session_files(cfg: NSDIndexConfig, paths: NSDPaths, sessions: list[int]) -> list[Path]:
    fmts = ["hdf5", "nifti"] if cfg.beta_format == "auto" else [cfg.beta_format]
    files = []
    for s in sessions:
        cands = [paths.betas_session(cfg.subject, s, f, cfg.betas_version) for f in fmts]
        found = next((c for c in cands if c.exists()), None)
        if found is None:
            raise DataError(f"betas of session {s} not found (looked for {len(cands)} formats)",
                            cands[0])
        files.append(found)
    return files


def _available_sessions(cfg: NSDIndexConfig, paths: NSDPaths, n_design: int) -> list[int]:
    fmts = ["hdf5", "nifti"] if cfg.beta_format == "auto" else [cfg.beta_format]
    n_max = min(n_design, SUBJECTS[cfg.subject].n_sessions)
    found = [s for s in range(1, n_max + 1)
             if any(paths.betas_session(cfg.subject, s, f, cfg.betas_version).exists()
                    for f in fmts)]
    if not found:
        raise DataError(f"no betas_sessionNN files for {subject_name(cfg.subject)}",
                        paths.betas_dir(cfg.subject, cfg.betas_version))
    return found


def roi_files(paths: NSDPaths, subject: int, selection: RoiSelection) -> list[Path]:
    """The label volumes and colour tables that a selection's mask and voxel table are
    read from (those present)."""
    atlases = dict.fromkeys((selection.atlas, *SUMMARY_ATLASES))
    files = [f for a in atlases for f in (paths.roi(subject, a), paths.roi_ctab(subject, a))]
    return [f for f in files if f.exists()]


def zscore_params(data: np.ndarray, fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and SD over ``fit_rows``; constant voxels get SD 1 (left centred)."""
    fit = data[fit_rows]
    mean = fit.mean(axis=0, dtype=np.float64)
    sd = fit.std(axis=0, dtype=np.float64)
    sd[_is_constant(mean, sd)] = 1.0
    return mean.astype(np.float32), sd.astype(np.float32)


def _is_constant(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """SDs that are rounding error: a constant float column can come out at ~1e-17, not 0."""
    return sd <= 1e-9 * np.maximum(np.abs(mean), np.finfo(np.float64).tiny)


def _voxel_moments(vt: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD (float64) of each row of voxel-major ``vt`` over columns ``cols``.

    Integer betas (NSD's int16) are summed exactly in int64, which is also the fastest
    way; float betas go through float64.
    """
    sub = vt[:, cols]
    n = len(cols)
    if sub.dtype.kind in "iu" and sub.dtype.itemsize <= 2:
        s1 = sub.sum(axis=1, dtype=np.int64)
        sq = sub.astype(np.int32)
        np.multiply(sq, sq, out=sq)
        s2 = sq.sum(axis=1, dtype=np.int64)
        # n*s2 - s1^2 stays exact in int64 for int16 data and n < 2**16 trials
        var = (n * s2 - s1 * s1).astype(np.float64) / (float(n) * n)
        mean = s1 / n
    else:
        sub = sub.astype(np.float64)
        mean = sub.mean(axis=1)
        var = sub.var(axis=1)
    return mean, np.sqrt(var)


def session_block(raw: np.ndarray, beta_idx: np.ndarray, fit: np.ndarray | None,
                  scale: float) -> np.ndarray:
    """float32 ``(len(beta_idx), V)`` betas of one session from its stored ``(T, V)`` values.

    Values are ``stored / scale``; with ``fit`` (positions in ``beta_idx`` of the trials
    that define the statistics) each voxel is then z-scored with the mean and SD of those
    trials. Constant voxels are centred and left at SD 1 (in scaled units). Computed as one
    affine map of the stored values, ``stored * a + b``, in a single pass over the output.
    """
    vt = np.ascontiguousarray(raw.T)  # free for the voxel-major chunk reader's output
    if fit is None:
        a = np.full(vt.shape[0], 1.0 / scale)
        b = np.zeros(vt.shape[0])
    else:
        mean, sd = _voxel_moments(vt, beta_idx[fit])
        sd_scaled = np.where(_is_constant(mean, sd), scale, sd)  # SD 1 after scaling
        a = 1.0 / sd_scaled
        b = -mean * a
    identity = len(beta_idx) == vt.shape[1] and np.array_equal(beta_idx, np.arange(len(beta_idx)))
    src = raw if identity else vt[:, beta_idx].T
    out = np.empty((len(beta_idx), vt.shape[0]), dtype=np.float32)
    np.multiply(src, a.astype(np.float32), out=out)
    out += b.astype(np.float32)
    return out


def build_nsd_index(cfg: NSDIndexConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build (or reuse) the cache and write the index, split manifest and config."""
    t_start = time.perf_counter()
    paths = NSDPaths(cfg.nsd_root)
    if not paths.root.is_dir():
        raise DataError("NSD root is not a directory", paths.root)
    subj = subject_name(cfg.subject)
    design = read_expdesign(paths.expdesign)
    all_trials = trial_table(design, cfg.subject)
    n_design_sessions = int(all_trials["session"].max())
    sessions = cfg.sessions or _available_sessions(cfg, paths, n_design_sessions)
    bad = [s for s in sessions if not 1 <= s <= n_design_sessions]
    if bad:
        raise DataError(f"sessions {bad} outside the design's 1..{n_design_sessions}",
                        paths.expdesign)
    files = _session_files(cfg, paths, sessions)
    trials = all_trials[all_trials["session"].isin(sessions)].reset_index(drop=True)
    # Checked on the sessions read only: a partial download (or simulation) may leave
    # the other sessions' presentations recorded as 0.
    if paths.stim_info.exists():
        check_stim_info(paths.stim_info, trials, cfg.subject)
    else:
        log.warning("%s not found: repetition numbers not cross-checked", paths.stim_info)

    # Splits: test = shared images; validation = a seeded fraction of the other images.
    split, split_manifest = assign_validation(
        trials["stimulus_id"].to_numpy(), trials["shared"].to_numpy(), cfg.val_fraction, cfg.seed
    )
    trials["split"] = split
    split_manifest.update({
        "rule": "test = images whose masterordering value is <= n_shared (the shared images); "
                "val = a seeded random fraction of the remaining images, grouped by image",
        "n_shared": design.n_shared,
        "sessions": sessions,
    })

    selection = RoiSelection.parse(cfg.roi)
    mask, voxels, mask_info = load_selection(paths, cfg.subject, selection)
    grid = tuple(int(v) for v in mask.shape)
    vox_xyz = voxels[["x", "y", "z"]].to_numpy()

    rows = _row_plan(trials, cfg.average)
    spec = {
        "dataset": DATASET,
        "subject": subj,
        "roi": str(selection),
        "sessions": sessions,
        "betas_version": cfg.betas_version,
        "formats": sorted({volume_format(f) for f in files}),
        "zscore": cfg.zscore,
        "average": cfg.average,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
        "dtype": cfg.cache_dtype,
    }
    cache_root = cfg.cache_dir or cfg.output.parent / "cache"

    meta_files = [p for p in (paths.expdesign, paths.stim_info) if p.exists()]

    def fill(writer: cache_mod.CacheWriter) -> tuple[list[dict], dict]:
        return _fill_cache(writer, cfg, files, sessions, trials, rows, vox_xyz, grid,
                           *meta_files)

    cache_dir, reused = cache_mod.build_cache(
        cache_root, spec, sources=[*files, *meta_files, *roi_files(paths, cfg.subject, selection)],
        n_rows=len(rows), voxels=voxels, dtype=cfg.cache_dtype, fill=fill,
        extra_manifest={
            "mask": mask_info,
            "preprocessing": {
                "scale": f"stored int16 / {BETA_SCALE:g} (percent signal change)",
                "zscore": "per session and voxel, mean/SD of that session's train-split trials"
                if cfg.zscore == "session" else "none",
                "average": {"none": "single trials",
                            "test": "test images averaged over repetitions, others single",
                            "all": "every image averaged over its repetitions"}[cfg.average],
            },
        },
        reuse=cfg.reuse_cache, rehash=cfg.rehash,
    )

    df = index_mod.empty_frame(len(rows))
    for col in ("session", "run", "trial", "beta_index", "global_trial", "repetition",
                "n_averaged", "split"):
        df[col] = rows[col].to_numpy()
    df["subject"] = subj
    df["dataset"] = DATASET
    df["domain"] = "perception"
    df["run_name"] = [f"run{r:02d}" if r > 0 else None for r in rows["run"]]
    df["stimulus_id"] = pd.array(rows["stimulus_id"].to_numpy(), dtype="Int64")
    df["stimulus"] = [nsd_key(int(i)) for i in rows["stimulus_id"]]
    df["cache_row"] = np.arange(len(rows), dtype=np.int64)
    meta = {
        "dataset": DATASET,
        "subject": subj,
        "cache": os.path.relpath(Path(cache_dir).resolve(), cfg.output.parent.resolve()),
        "stimuli": {"kind": "nsd_hdf5", "path": str(paths.stimuli_hdf5.resolve())},
        "config": cfg.resolved(),
        "splits": index_mod.sidecar(cfg.output, "splits.json").name,
    }
    index_mod.write_index(cfg.output, df, meta)
    write_json(index_mod.sidecar(cfg.output, "splits.json"), split_manifest)
    cfg.save(index_mod.sidecar(cfg.output, "config.yaml"))
    log.info("%s: %d index rows (%s) in %.1f s%s", subj, len(df),
             ", ".join(f"{k} {v}" for k, v in df["split"].value_counts().items()),
             time.perf_counter() - t_start, " (cache reused)" if reused else "")
    return df, {**meta, "cache": str(cache_dir), "reused": reused}


def _row_plan(trials: pd.DataFrame, average: str) -> pd.DataFrame:
    """Index rows in cache order: single trials first, then averaged images.

    ``source_trials`` lists the rows of ``trials`` that each index row is made of.
    """
    avg_mask = {"none": np.zeros(len(trials), bool),
                "test": trials["split"].to_numpy() == "test",
                "all": np.ones(len(trials), bool)}[average]
    singles = trials[~avg_mask].copy()
    singles["n_averaged"] = np.int16(1)
    singles["is_average"] = False
    singles["source_trials"] = [[i] for i in singles.index]
    groups = trials[avg_mask].groupby("stimulus_id", sort=True)
    averaged = pd.DataFrame({
        "stimulus_id": np.asarray(list(groups.groups.keys()), dtype=np.int64),
        "split": groups["split"].first().to_numpy(),
        "session": groups["session"].min().to_numpy().astype(np.int32),
        "n_averaged": groups.size().to_numpy().astype(np.int16),
        "is_average": True,
        "source_trials": [list(v) for v in groups.groups.values()],
    })
    for col in ("run", "trial", "beta_index", "global_trial", "repetition"):
        averaged[col] = -1
    return pd.concat([singles, averaged], ignore_index=True)


def _fill_cache(
    writer: cache_mod.CacheWriter,
    cfg: NSDIndexConfig,
    files: list[Path],
    sessions: list[int],
    trials: pd.DataFrame,
    rows: pd.DataFrame,
    vox_xyz: np.ndarray,
    grid: tuple[int, ...],
    *meta_files: Path,
) -> tuple[list[dict], dict]:
    """Stream sessions into the cache; returns (source fingerprints, build details)."""
    n_vox = vox_xyz.shape[0]
    single = rows[~rows["is_average"]]
    trial_to_row = pd.Series(single.index.to_numpy(),
                             index=[src[0] for src in single["source_trials"]])
    averaged = rows[rows["is_average"]]
    sums = np.zeros((len(averaged), n_vox), dtype=np.float64) if len(averaged) else None
    trial_to_avg = pd.Series(
        [k for k, src in enumerate(averaged["source_trials"]) for _ in src],
        index=[t for src in averaged["source_trials"] for t in src], dtype=np.int64)
    timings = {"read_s": 0.0, "process_s": 0.0}
    sources = []
    with BackgroundHasher() as hasher:
        for f in files:
            hasher.submit(f)
        for session, path in progress(list(zip(sessions, files, strict=True)),
                                      description="ingest sessions"):
            t0 = time.perf_counter()
            # Wait for this file's checksum: its sequential read leaves the file in the page
            # cache, so the scattered per-voxel chunk reads that follow do not compete with
            # it for the disk, while the hasher goes on to the next session.
            sources.append(hasher.result(path))
            raw = read_masked(path, vox_xyz, grid, n_volumes=TRIALS_PER_SESSION)
            t1 = time.perf_counter()
            sel = trials.index[trials["session"] == session].to_numpy()
            beta_idx = trials.loc[sel, "beta_index"].to_numpy()
            if raw.shape[0] != TRIALS_PER_SESSION:
                raise DataError(f"{raw.shape[0]} volumes; expected {TRIALS_PER_SESSION} trials "
                                "per NSD session", path)
            fit = None
            if cfg.zscore == "session":
                fit = np.flatnonzero(trials.loc[sel, "split"].to_numpy() == "train")
                if fit.size < 2:
                    raise DataError(f"session {session} has {fit.size} training trials; "
                                    "z-scoring needs at least 2", path)
            with np.errstate(over="ignore", invalid="ignore"):
                data = session_block(raw, beta_idx, fit, BETA_SCALE)
            if not np.isfinite(data).all():
                raise DataError("betas beyond the float32 range once scaled; expected "
                                "finite values of a sane scale", path)
            in_single = np.isin(sel, trial_to_row.index)
            if in_single.all():
                writer.write_rows(trial_to_row.loc[sel].to_numpy(), data)
            elif in_single.any():
                writer.write_rows(trial_to_row.loc[sel[in_single]].to_numpy(), data[in_single])
            in_avg = np.isin(sel, trial_to_avg.index)
            if sums is not None and in_avg.any():
                np.add.at(sums, trial_to_avg.loc[sel[in_avg]].to_numpy(), data[in_avg])
            timings["read_s"] += t1 - t0
            timings["process_s"] += time.perf_counter() - t1
        if sums is not None:
            counts = averaged["n_averaged"].to_numpy()[:, None]
            writer.write_rows(averaged.index.to_numpy(), (sums / counts).astype(np.float32))
    for m in meta_files:
        if Path(m).exists():
            sources.append(fingerprint(m))
    return sources, {"timings": {k: round(v, 3) for k, v in timings.items()}}
