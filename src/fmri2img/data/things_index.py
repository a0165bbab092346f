"""THINGS-EEG2 -> the trial index + cache that fMRI uses (``fmri2img build-eeg-index``).

One index row per EEG trial (image x repetition), or per image averaged over its
repetitions (``average``). Keys ``things:<image file stem>`` reach the same embedding
tables as NSD images; ``label`` is the concept, ``stimulus_id`` the 0-based image number
(training images, then test images, in the metadata's order), ``repetition`` the 0-based
repetition. Splits: ``test`` = the test images (their concepts are not among the training
concepts: the zero-shot protocol); ``val`` = a seeded share of the training *concepts*, so
validation is zero-shot too. Each cache row is one epoch, channels x times flattened, the
manifest's ``sample_shape`` restoring it; resampling (CBraMod wants 200 Hz) happens here,
once, and is part of the cache's key.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.data import cache as cache_mod
from fmri2img.data import index as index_mod
from fmri2img.data.keys import things_key
from fmri2img.data.options import CacheOptions
from fmri2img.data.splits import assign_validation
from fmri2img.data.things_eeg import (
    EEGArray,
    ImageMetadata,
    check_against_metadata,
    find_eeg_files,
    image_concept,
    read_eeg_file,
    read_image_metadata,
    resample,
    scan_image_folders,
)
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json
from fmri2img.io.checksum import fingerprint
from fmri2img.progress import progress

log = logging.getLogger(__name__)

DATASET = "things-eeg2"
METADATA_FILE = "image_metadata.npy"
IMAGE_SET = "image_set"
TRAIN_FOLDERS = ("training_images", "train_images")
TEST_FOLDER = "test_images"
_BLOCK_IMAGES = 256  # images per read/resample/write block


def parse_eeg_subject(value: Any) -> str:
    """``1``, ``"1"``, ``"sub-01"``, ``"sub01"`` -> ``"sub-01"``."""
    text = str(value).strip().lower().removeprefix("sub").lstrip("-_")
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise ValueError(f"not a THINGS-EEG2 subject: {value!r} (expected e.g. sub-01 or 1)")
    return f"sub-{int(text):02d}"


class EEGIndexConfig(CacheOptions):
    """Options of ``fmri2img build-eeg-index``."""

    eeg_root: Path = Field(description="folder of sub-XX/ folders of one flavour "
                                       "(preprocessed_data, Preprocessed_data_250Hz or "
                                       "Preprocessed_data_250Hz_whiten)")
    subject: str = Field(description="sub-01 or 1")
    images: Path | None = Field(None, description="the image set: image_metadata.npy and/or "
                                "training_images/ + test_images/ (default: EEG_ROOT/../"
                                "image_set)")
    flavour: Literal["auto", "official", "250hz", "whiten"] = "auto"
    sfreq: float | None = Field(200.0, gt=0, description="resample to this rate in Hz "
                                "(CBraMod: 200); none: keep the file's")
    average: Literal["none", "test", "all"] = Field(
        "none", description="average repetitions: none, test images only, or every image")
    val_fraction: float = Field(0.1, ge=0, lt=1,
                                description="share of training concepts for validation")
    seed: int = Field(0, description="seed of the validation split")
    allow_pickle: bool = Field(False, description="whiten .pt files holding Python objects: "
                               "read them trusting their code")

    _subject = field_validator("subject", mode="before")(
        classmethod(lambda cls, v: parse_eeg_subject(v)))


def image_root(cfg: EEGIndexConfig) -> Path:
    """``--images``, else ``image_set/`` inside or beside the EEG folder."""
    if cfg.images is not None:
        return cfg.images
    inside = cfg.eeg_root / IMAGE_SET
    return inside if inside.is_dir() else cfg.eeg_root.parent / IMAGE_SET


def load_image_metadata(root: Path) -> tuple[ImageMetadata, dict[str, str]]:
    """The image metadata and, where the folders exist, each key's image path relative to
    ``root``. ``image_metadata.npy`` wins over the folders; both present must agree."""
    meta = read_image_metadata(root / METADATA_FILE) if (root / METADATA_FILE).exists() \
        else None
    train_folder = next((f for f in TRAIN_FOLDERS if (root / f).is_dir()), None)
    files: dict[str, str] = {}
    if train_folder is not None and (root / TEST_FOLDER).is_dir():
        scanned = scan_image_folders(root)
        if meta is None:
            meta = scanned
        elif ([Path(f).name for f in scanned.train_files] != [Path(f).name for f in
                                                               meta.train_files]
              or [Path(f).name for f in scanned.test_files] != [Path(f).name for f in
                                                                meta.test_files]):
            raise DataError(f"the image folders' files do not match {METADATA_FILE} (order "
                            "or names differ)", root)
        for folder, names in ((train_folder, scanned.train_files),
                              (TEST_FOLDER, scanned.test_files)):
            for f in names:
                files[things_key(f)] = f"{folder}/{f}"
    if meta is None:
        raise DataError(f"no {METADATA_FILE} and no training_images/ + test_images/ folders "
                        "(pass --images)", root)
    return meta, files


def _trial_rows(eeg: EEGArray, files: list[str], concepts: list[str], offset: int,
                split_name: str) -> pd.DataFrame:
    n_img, reps = eeg.data.shape[:2]
    img = np.repeat(np.arange(n_img), reps)
    rep = np.tile(np.arange(reps), n_img)
    keys = np.array([things_key(f) for f in files], dtype=object)
    names = np.array([image_concept(c)[1] for c in concepts], dtype=object)
    session = (np.asarray(eeg.sessions).reshape(-1) if eeg.sessions is not None
               else np.ones(img.size, dtype=np.int64))
    return pd.DataFrame({
        "file": split_name, "image": img, "rep": rep, "stimulus": keys[img],
        "concept": names[img], "stimulus_id": img + offset, "session": session,
        "beta_index": img * reps + rep, "is_test": split_name == "test",
    })


def build_eeg_index(cfg: EEGIndexConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build (or reuse) the cache and write the index, split manifest and config."""
    t_start = time.perf_counter()
    paths = find_eeg_files(cfg.eeg_root, cfg.subject, flavour=cfg.flavour)
    images = image_root(cfg)
    meta_img, image_files = load_image_metadata(images)
    eegs = {}
    for which, path in paths.items():
        eeg = read_eeg_file(path, cfg.flavour, allow_pickle=cfg.allow_pickle)
        check_against_metadata(eeg, meta_img, which)
        eegs[which] = eeg
    tr, te = eegs["train"], eegs["test"]
    if tr.ch_names != te.ch_names or tr.data.shape[2:] != te.data.shape[2:]:
        raise DataError(f"training and test files disagree: {tr.data.shape[2:]} vs "
                        f"{te.data.shape[2:]} (channels, times) or channel names", te.path)
    if abs(tr.sfreq - te.sfreq) > 1e-6:
        raise DataError(f"sampling rates differ: {tr.sfreq} Hz (training) vs {te.sfreq} Hz",
                        te.path)
    trials = pd.concat([
        _trial_rows(tr, meta_img.train_files, meta_img.train_concepts, 0, "train"),
        _trial_rows(te, meta_img.test_files, meta_img.test_concepts, len(meta_img.train_files),
                    "test"),
    ], ignore_index=True)
    split, split_manifest = assign_validation(trials["concept"].to_numpy(),
                                              trials["is_test"].to_numpy(), cfg.val_fraction,
                                              cfg.seed)
    trials["split"] = split
    split_manifest.update({
        "rule": "test = the test images (concepts absent from training: zero-shot); val = a "
                "seeded random fraction of the training concepts, grouped by concept",
        "grouped_by": "concept",
    })
    rows = _row_plan(trials, cfg.average)
    sfreq = cfg.sfreq if cfg.sfreq is not None else tr.sfreq
    n_times = int(round(tr.data.shape[3] * sfreq / tr.sfreq))
    times = tr.times[0] + np.arange(n_times) / sfreq
    n_ch = tr.data.shape[2]
    spec = {
        "dataset": DATASET, "subject": cfg.subject, "flavour": tr.flavour,
        "sources": [str(p.resolve()) for p in paths.values()],
        "images": str(images.resolve()), "sfreq": sfreq, "average": cfg.average,
        "val_fraction": cfg.val_fraction, "seed": cfg.seed, "dtype": cfg.cache_dtype,
    }
    voxels = pd.DataFrame({"channel": np.repeat(np.array(tr.ch_names, dtype=object), n_times),
                           "time": np.tile(times, n_ch)})

    def fill(writer: cache_mod.CacheWriter) -> tuple[list[dict], dict]:
        return _fill_cache(writer, eegs, trials, rows, sfreq), {}

    cache_root = cfg.cache_dir or cfg.output.parent / "cache"
    cache_dir, reused = cache_mod.build_cache(
        cache_root, spec, sources=list(paths.values()), n_rows=len(rows), voxels=voxels,
        dtype=cfg.cache_dtype, fill=fill,
        extra_manifest={
            "sample_shape": [n_ch, n_times], "channels": list(tr.ch_names),
            "times": [float(t) for t in times], "sfreq": sfreq,
            "source_sfreq": tr.sfreq,
            "preprocessing": {
                "resample": "none" if sfreq == tr.sfreq else
                f"{tr.sfreq:g} -> {sfreq:g} Hz, scipy.signal.resample (Fourier)",
                "average": {"none": "single trials",
                            "test": "test images averaged over repetitions, others single",
                            "all": "every image averaged over its repetitions"}[cfg.average],
                "values": "as stored by the flavour (whitened where it was)",
            },
        },
        reuse=cfg.reuse_cache, rehash=cfg.rehash)

    df = index_mod.empty_frame(len(rows))
    df["subject"] = cfg.subject
    df["dataset"] = DATASET
    df["domain"] = "perception"
    for col in ("session", "beta_index", "repetition", "n_averaged", "split"):
        df[col] = rows[col].to_numpy()
    df["trial"] = np.arange(1, len(rows) + 1, dtype=np.int32)
    df["global_trial"] = rows["global_trial"].to_numpy()
    df["stimulus"] = rows["stimulus"].to_numpy()
    df["stimulus_id"] = pd.array(rows["stimulus_id"].to_numpy(), dtype="Int64")
    df["label"] = rows["concept"].to_numpy()
    df["cache_row"] = np.arange(len(rows), dtype=np.int64)
    meta = {
        "dataset": DATASET,
        "subject": cfg.subject,
        "modality": "eeg",
        "cache": os.path.relpath(Path(cache_dir).resolve(), cfg.output.parent.resolve()),
        "stimuli": {"kind": "files", "root": str(images.resolve()),
                    "files": {k: v for k, v in image_files.items()
                              if k in set(df["stimulus"])}},
        "eeg": {"flavour": tr.flavour, "sfreq": sfreq, "channels": list(tr.ch_names),
                "n_times": n_times, "tmin": float(times[0])},
        "config": cfg.resolved(),
        "splits": index_mod.sidecar(cfg.output, "splits.json").name,
    }
    index_mod.write_index(cfg.output, df, meta)
    write_json(index_mod.sidecar(cfg.output, "splits.json"), split_manifest)
    cfg.save(index_mod.sidecar(cfg.output, "config.yaml"))
    log.info("%s: %d EEG index rows (%s), %d channels x %d samples at %g Hz in %.1f s%s",
             cfg.subject, len(df),
             ", ".join(f"{k} {v}" for k, v in df["split"].value_counts().items()), n_ch,
             n_times, sfreq, time.perf_counter() - t_start, " (cache reused)" if reused else "")
    return df, {**meta, "cache": str(cache_dir), "reused": reused}


def _row_plan(trials: pd.DataFrame, average: str) -> pd.DataFrame:
    """Index rows in cache order: single trials, then averaged images."""
    avg = {"none": np.zeros(len(trials), bool), "test": trials["is_test"].to_numpy(),
           "all": np.ones(len(trials), bool)}[average]
    singles = trials[~avg].copy()
    singles["n_averaged"] = np.int16(1)
    singles["repetition"] = singles["rep"].astype(np.int16)
    singles["global_trial"] = singles.index.to_numpy().astype(np.int64)
    singles["is_average"] = False
    grouped = trials[avg].groupby(["file", "image"], sort=False)
    averaged = grouped.first().reset_index()
    averaged["n_averaged"] = grouped.size().to_numpy().astype(np.int16)
    averaged["repetition"] = np.int16(-1)
    averaged["beta_index"] = -1
    averaged["global_trial"] = np.int64(-1)
    averaged["session"] = grouped["session"].min().to_numpy()
    averaged["is_average"] = True
    return pd.concat([singles, averaged], ignore_index=True)


def _fill_cache(writer: cache_mod.CacheWriter, eegs: dict[str, EEGArray],
                trials: pd.DataFrame, rows: pd.DataFrame, sfreq: float) -> list[dict]:
    """Read, check, resample and write block by block; returns the sources' fingerprints."""
    row_of = {(f, int(i), int(r)): k for k, (f, i, r, a) in enumerate(
        zip(rows["file"], rows["image"], rows["rep"], rows["is_average"], strict=True))
        if not a}
    avg_of = {(f, int(i)): k for k, (f, i, a) in enumerate(
        zip(rows["file"], rows["image"], rows["is_average"], strict=True)) if a}
    blocks = [(which, a) for which, eeg in eegs.items()
              for a in range(0, eeg.data.shape[0], _BLOCK_IMAGES)]
    for which, a in progress(blocks, description="EEG epochs -> cache"):
        eeg = eegs[which]
        b = min(eeg.data.shape[0], a + _BLOCK_IMAGES)
        block = np.asarray(eeg.data[a:b], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=(2, 3))
        if bad.any():
            i, r = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"image {a + i} repetition {r} holds NaN or infinite values "
                            f"({int(bad.sum())} such epochs in images {a}..{b - 1})", eeg.path)
        if sfreq != eeg.sfreq:
            shape = block.shape
            flat, _ = resample(block.reshape(-1, shape[3]), eeg.times, eeg.sfreq, sfreq)
            block = flat.reshape(*shape[:3], -1)
        n_img, reps = block.shape[:2]
        singles = [(row_of[(which, a + i, r)], i, r) for i in range(n_img) for r in range(reps)
                   if (which, a + i, r) in row_of]
        if singles:
            idx = np.array(singles)
            order = np.argsort(idx[:, 0])
            idx = idx[order]
            writer.write_rows(idx[:, 0], block[idx[:, 1], idx[:, 2]].reshape(len(idx), -1))
        means = [(avg_of[(which, a + i)], i) for i in range(n_img) if (which, a + i) in avg_of]
        if means:
            idx = np.array(means)
            order = np.argsort(idx[:, 0])
            idx = idx[order]
            writer.write_rows(idx[:, 0], block[idx[:, 1]].mean(axis=1).reshape(len(idx), -1))
    return [fingerprint(eeg.path) for eeg in eegs.values()]
