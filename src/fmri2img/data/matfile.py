"""``.mat`` datasets in the seed decoder's layout (Miyawaki et al. 2008 and similar).

Keys: ``fmriTrn`` (n_train, V), ``fmriTest`` (n_test, V), ``stimTrn``/``stimTest`` (n, P)
with P a square number of pixels stored MATLAB column-major (reshape with ``order='F'``),
values 0..1 or 0..255, and optional ``labelTrn``/``labelTest`` (n, 1). MATLAB v7.3 files
(HDF5) are read too; h5py sees their arrays transposed, which is undone here.

Identical stimulus images are one stimulus: the trial index keys them ``<dataset>:<k>``
and ``stimuli.npy`` in the cache holds image k as (H, W) uint8.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
import scipy.io
from pydantic import Field

from fmri2img.data import cache as cache_mod
from fmri2img.data import index as index_mod
from fmri2img.data import mat5
from fmri2img.data.nsd import zscore_params
from fmri2img.data.options import CacheOptions
from fmri2img.data.splits import assign_validation
from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path, write_json
from fmri2img.io.checksum import fingerprint

log = logging.getLogger(__name__)
REQUIRED = ("fmriTrn", "fmriTest", "stimTrn", "stimTest")
STIMULI = "stimuli.npy"


class MatIndexConfig(CacheOptions):
    """Options of ``fmri2img build-index --mat``."""

    mat: Path = Field(description=".mat dataset (fmriTrn, fmriTest, stimTrn, stimTest)")
    dataset: str | None = Field(None, description=".mat: dataset name (default: file stem)")
    subject: str = "subj01"
    zscore: Literal["none", "train"] = "none"
    val_fraction: float = 0.0
    seed: int = 0


def load_mat(path: Path) -> dict[str, np.ndarray]:
    """The variables of a .mat file; the required ones checked to be non-empty real numeric
    matrices (a string, cell, struct or complex variable is refused, naming it)."""
    if not path.exists():
        raise DataError("file not found", path)
    try:
        arrays = _read_mat(path)
    except Exception as exc:  # scipy.io and h5py raise many types for corrupt files
        raise DataError(f"not a readable MATLAB file (truncated or corrupt?): {exc}",
                        path) from exc
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"missing variables {missing}; expected {', '.join(REQUIRED)} "
                        "(optional labelTrn, labelTest); found "
                        + ", ".join(sorted(arrays)), path)
    for key in REQUIRED:
        _check_matrix(arrays[key], key, path)
    return arrays


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as f:
        head = f.read(mat5.HEADER)
    if mat5.is_v5(head):  # SciPy's compiled reader trusts the tags: checked first
        mat5.check_v5(path.read_bytes())
    try:
        raw = scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        with h5py.File(path, "r") as f:
            return {k: _h5_variable(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


def _h5_variable(ds: h5py.Dataset) -> np.ndarray:
    """A v7.3 variable as loadmat would give it (h5py sees MATLAB arrays transposed);
    a char array becomes a string, so that it is not mistaken for numbers."""
    a = np.asarray(ds).T
    cls = ds.attrs.get("MATLAB_class", b"")
    if (cls.decode() if isinstance(cls, bytes) else str(cls)) == "char":
        return np.array(["".join(map(chr, a.ravel(order="F").astype(np.int64)))])
    return a


_KIND_NAMES = {"U": "a string", "S": "a byte string", "c": "a complex array",
               "O": "a cell array (or other Python objects)", "V": "a struct",
               "M": "a date", "m": "a time span"}


def _check_matrix(a: np.ndarray, key: str, path: Path) -> None:
    expected = ("(n_trials, n_voxels)" if key.startswith("fmri")
                else "(n, H*W) flattened images")
    if a.dtype.kind not in "biuf":
        found = _KIND_NAMES.get(a.dtype.kind, f"of type {a.dtype}")
        raise DataError(f"{key} is {found} of shape {a.shape}; expected a real numeric "
                        f"matrix {expected}", path)
    if a.ndim != 2 or a.size == 0:
        raise DataError(f"{key} has shape {a.shape}; expected a non-empty 2-D matrix "
                        f"{expected}", path)


def _labels(a: np.ndarray, key: str, n: int, path: Path) -> list[str]:
    lab = np.asarray(a).ravel()
    if lab.size != n:
        raise DataError(f"{key} has {lab.size} entries; expected {n}", path)
    if lab.dtype.kind in "biuf":
        if not np.isfinite(lab).all():
            raise DataError(f"{key} holds NaN or infinite labels; expected one finite "
                            "number or string per trial", path)
        return [str(int(v)) for v in lab]
    if lab.dtype.kind not in "USO":
        raise DataError(f"{key} is {_KIND_NAMES.get(lab.dtype.kind, lab.dtype)}; expected "
                        "one number or string per trial", path)
    return [_text(v) for v in lab]


def _text(v: object) -> str:
    """A cell's string: loadmat wraps each cell's content in an array."""
    while isinstance(v, np.ndarray) and v.size == 1:
        v = v.ravel()[0]
    return str(v)


def _stimulus_images(stim: np.ndarray, path: Path, key: str) -> np.ndarray:
    """(n, P) column-major flat images -> (n, H, W) uint8."""
    stim = np.asarray(stim, dtype=np.float64)
    side = int(round(np.sqrt(stim.shape[1]))) if stim.ndim == 2 else 0
    if stim.ndim != 2 or side * side != stim.shape[1]:
        raise DataError(f"{key} has shape {stim.shape}; expected (n, H*W) with a square image",
                        path)
    if not np.isfinite(stim).all():
        raise DataError(f"{key} contains NaN or infinite values", path)
    lo, hi = stim.min(), stim.max()
    if lo < 0 or hi > 255:
        raise DataError(f"{key} values span {lo}..{hi}; expected 0..1 or 0..255", path)
    scale = 255.0 if hi <= 1.0 else 1.0
    imgs = np.rint(stim * scale).astype(np.uint8)
    return imgs.reshape(len(imgs), side, side, order="F")


def build_mat_index(cfg: MatIndexConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    t0 = time.perf_counter()
    path = cfg.mat
    arrays = load_mat(path)
    fmri_trn = np.asarray(arrays["fmriTrn"], dtype=np.float64)
    fmri_tst = np.asarray(arrays["fmriTest"], dtype=np.float64)
    for key, a in (("fmriTrn", fmri_trn), ("fmriTest", fmri_tst)):
        if a.ndim != 2:
            raise DataError(f"{key} has shape {a.shape}; expected (n_trials, n_voxels)", path)
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a).all(axis=0))
            raise DataError(f"{key} has NaN or infinite values in {bad.size} voxels "
                            f"(first voxel {bad[0]}); expected finite responses", path)
    if fmri_trn.shape[1] != fmri_tst.shape[1]:
        raise DataError(f"fmriTrn has {fmri_trn.shape[1]} voxels but fmriTest "
                        f"{fmri_tst.shape[1]}; expected the same voxels", path)
    img_trn = _stimulus_images(arrays["stimTrn"], path, "stimTrn")
    img_tst = _stimulus_images(arrays["stimTest"], path, "stimTest")
    if len(img_trn) != len(fmri_trn) or len(img_tst) != len(fmri_tst):
        raise DataError(f"stimTrn/stimTest have {len(img_trn)}/{len(img_tst)} rows but fmriTrn/"
                        f"fmriTest {len(fmri_trn)}/{len(fmri_tst)}; expected one per trial", path)
    if img_trn.shape[1:] != img_tst.shape[1:]:
        raise DataError("stimTrn and stimTest images differ in size", path)
    labels: list[list[Any]] = []
    for key, n in (("labelTrn", len(fmri_trn)), ("labelTest", len(fmri_tst))):
        labels.append(_labels(arrays[key], key, n, path) if key in arrays else [None] * n)

    dataset = cfg.dataset or path.stem
    images = np.concatenate([img_trn, img_tst])
    flat = images.reshape(len(images), -1)
    uniq, stim_idx = np.unique(flat, axis=0, return_inverse=True)
    stim_idx = stim_idx.ravel()
    is_test = np.r_[np.zeros(len(fmri_trn), bool), np.ones(len(fmri_tst), bool)]
    split, split_manifest = assign_validation(stim_idx, is_test, cfg.val_fraction, cfg.seed)
    split_manifest["rule"] = "test = fmriTest rows; val = a seeded fraction of stimuli seen " \
                             "only in fmriTrn"
    with np.errstate(over="ignore"):
        data = np.concatenate([fmri_trn, fmri_tst]).astype(np.float32)
    if not np.isfinite(data).all():
        raise DataError("fmriTrn/fmriTest hold values beyond the float32 range (|x| > "
                        f"{np.finfo(np.float32).max:.3g}); expected responses of a sane scale",
                        path)
    spec = {"dataset": dataset, "subject": cfg.subject, "zscore": cfg.zscore,
            "val_fraction": cfg.val_fraction, "seed": cfg.seed, "dtype": cfg.cache_dtype}

    def fill(writer: cache_mod.CacheWriter) -> tuple[list[dict], dict]:
        out = data
        if cfg.zscore == "train":
            mean, sd = zscore_params(data, np.flatnonzero(split == "train"))
            out = (data - mean) / sd
        writer.write_rows(np.arange(len(out)), out)
        with atomic_path(writer.dir / STIMULI) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, uniq.reshape(len(uniq), *images.shape[1:]))
        return [fingerprint(path)], {"stimuli_file": STIMULI}

    voxels = pd.DataFrame({"voxel": np.arange(data.shape[1], dtype=np.int32)})
    cache_root = cfg.cache_dir or cfg.output.parent / "cache"
    cache_dir, reused = cache_mod.build_cache(
        cache_root, spec, sources=[path], n_rows=len(data), voxels=voxels,
        dtype=cfg.cache_dtype, fill=fill,
        reuse=cfg.reuse_cache, rehash=cfg.rehash,
        extra_manifest={"mask": {"selection": "all voxels of the file",
                                 "n_voxels": int(data.shape[1])},
                        "preprocessing": {"scale": "as stored",
                                          "zscore": "per voxel with train-split statistics"
                                          if cfg.zscore == "train" else "none (as stored)",
                                          "average": "single trials"}},
    )
    n = len(data)
    df = index_mod.empty_frame(n)
    df["subject"] = cfg.subject
    df["dataset"] = dataset
    df["domain"] = "perception"
    df["run_name"] = np.where(is_test, "test", "train")
    df["run"] = np.where(is_test, 2, 1).astype(np.int32)
    df["trial"] = np.r_[np.arange(1, len(fmri_trn) + 1), np.arange(1, len(fmri_tst) + 1)]
    df["beta_index"] = df["trial"] - 1
    df["global_trial"] = np.arange(n, dtype=np.int64)
    df["stimulus_id"] = pd.array(stim_idx, dtype="Int64")
    width = len(str(len(uniq) - 1))
    df["stimulus"] = [f"{dataset}:{k:0{width}d}" for k in stim_idx]
    df["label"] = labels[0] + labels[1]
    df["repetition"] = df.groupby("stimulus").cumcount().astype(np.int16)
    df["split"] = split
    df["cache_row"] = np.arange(n, dtype=np.int64)
    meta = {
        "dataset": dataset,
        "subject": cfg.subject,
        "cache": os.path.relpath(Path(cache_dir).resolve(), cfg.output.parent.resolve()),
        "stimuli": {"kind": "npy", "file": STIMULI,
                    "note": "row k = stimulus_id k, (H, W) uint8, upright"},
        "config": cfg.resolved(),
    }
    index_mod.write_index(cfg.output, df, meta)
    write_json(index_mod.sidecar(cfg.output, "splits.json"), split_manifest)
    cfg.save(index_mod.sidecar(cfg.output, "config.yaml"))
    log.info("%s: %d trials, %d stimuli, %d voxels in %.1f s%s", dataset, n, len(uniq),
             data.shape[1], time.perf_counter() - t0, " (cache reused)" if reused else "")
    return df, {**meta, "cache": str(cache_dir), "reused": reused}
