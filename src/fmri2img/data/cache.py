"""The beta cache: one subject's voxels (one ROI selection) in one memory-mappable array.

Layout of a cache directory::

    betas.npy       (n_rows, n_voxels) float32 or float16, NumPy .npy (np.load mmap_mode="r")
    voxels.parquet  one row per voxel: x, y, z on the source grid and each atlas's label
                    (EEG: one row per (channel, time) value: channel, time)
    manifest.json   spec (options and the resolved paths of the source files), the
                    sources' fingerprints, shapes, mask, preprocessing;
                    ``sample_shape`` when a row is a flattened array (EEG: [channels, times])

A directory is built under a temporary name and renamed into place whole, and the
manifest is its last file, so a cache either exists complete or not at all. Its name hashes
the spec, source paths included: builds from other files (another NSD root) never share a
cache, and a cache is reused only while the recorded sources' contents are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_dir, write_json
from fmri2img.io.checksum import fingerprint, fingerprint_matches
from fmri2img.version import __version__

log = logging.getLogger(__name__)

FORMAT = "fmri2img-beta-cache"
VERSION = 1
BETAS = "betas.npy"
VOXELS = "voxels.parquet"
MANIFEST = "manifest.json"


def spec_key(spec: dict[str, Any]) -> str:
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_dir_for(root: Path, spec: dict[str, Any]) -> Path:
    name = f"{spec['subject']}_{spec['dataset']}_{spec_key(spec)}"
    return Path(root) / name


def source_paths(sources: Iterable[str | Path]) -> list[str]:
    """The resolved paths of the files a cache is built from, in the order given."""
    return [str(Path(p).resolve()) for p in sources]


def is_reusable(directory: Path, spec: dict[str, Any], *, rehash: bool = False,
                sources: Iterable[str | Path] | None = None) -> bool:
    """A finished cache built with the same options from the same, unchanged sources.

    ``sources`` are the files this build would read: the cache must record a fingerprint
    of exactly these files (by resolved path), each still matching its content.
    """
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("version") != VERSION:
        return False
    if json.dumps(manifest.get("spec"), sort_keys=True, default=str) != json.dumps(
        spec, sort_keys=True, default=str
    ):
        log.info("cache %s was built with other options: rebuilding", directory)
        return False
    records = manifest.get("sources")
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and {"path", "size", "mtime_ns", "checksum"} <= set(r)
            for r in records):
        return False
    if sources is not None and {r["path"] for r in records} != set(source_paths(sources)):
        log.info("cache %s was built from other source files: rebuilding", directory)
        return False
    for record in records:
        if not fingerprint_matches(record, rehash=rehash):
            log.info("source %s changed since the cache was built: rebuilding", record["path"])
            return False
    betas = directory / BETAS
    if not betas.exists() or not (directory / VOXELS).exists():
        return False
    expected = tuple(manifest["shape"])
    try:
        arr = np.load(betas, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return arr.shape == expected and str(arr.dtype) == manifest["dtype"]


class CacheWriter:
    """Fill a cache row block by row block without holding it in memory."""

    def __init__(self, tmp_dir: Path, n_rows: int, n_voxels: int, dtype: str) -> None:
        self.dir = tmp_dir
        self.dtype = np.dtype(dtype)
        self.shape = (n_rows, n_voxels)
        path = tmp_dir / BETAS
        # open_memmap writes a valid .npy header and sizes the file (sparse); rows are then
        # written with plain file writes so dirty pages do not pile up in our RSS.
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=self.shape)
        self._offset = mm.offset
        del mm
        self._fh = open(path, "r+b")
        self._row_bytes = n_voxels * self.dtype.itemsize
        self._written = np.zeros(n_rows, dtype=bool)

    def write_rows(self, rows: np.ndarray, data: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        data = np.ascontiguousarray(data, dtype=self.dtype)
        if data.shape != (len(rows), self.shape[1]):
            raise ValueError(f"block of shape {data.shape} for {len(rows)} rows")
        if len(rows) == 0:
            return
        # Contiguous runs of rows go out in one write each.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for chunk_rows, chunk in zip(np.split(rows, breaks), np.split(data, breaks), strict=True):
            self._fh.seek(self._offset + int(chunk_rows[0]) * self._row_bytes)
            self._fh.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
        self._written[rows] = True

    def finish(self) -> None:
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise RuntimeError(f"{missing.size} cache rows never written (first {missing[0]})")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class BetaCache:
    """A finished cache, opened read-only and memory-mapped."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        manifest_path = self.dir / MANIFEST
        if not manifest_path.exists():
            raise DataError("not a finished beta cache (no manifest.json)", self.dir)
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataError("manifest.json is not an fmri2img beta-cache manifest", manifest_path)
        self.betas: np.ndarray = np.load(self.dir / BETAS, mmap_mode="r")
        if list(self.betas.shape) != list(self.manifest["shape"]):
            raise DataError(
                f"betas.npy has shape {self.betas.shape}, manifest says {self.manifest['shape']}",
                self.dir / BETAS,
            )

    @property
    def n_voxels(self) -> int:
        """Values per row (voxels; for EEG channels x times)."""
        return int(self.betas.shape[1])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(n_voxels,)``, or ``(channels, times)`` for EEG."""
        shape = tuple(int(s) for s in self.manifest.get("sample_shape", [self.n_voxels]))
        if int(np.prod(shape)) != self.n_voxels:
            raise DataError(f"manifest sample_shape {list(shape)} does not hold "
                            f"{self.n_voxels} values per row", self.dir / MANIFEST)
        return shape

    def voxels(self) -> pd.DataFrame:
        return pd.read_parquet(self.dir / VOXELS)

    def rows(self, rows: Iterable[int]) -> np.ndarray:
        """Rows as float32 (float16 caches are widened), in the order asked."""
        idx = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.n_voxels), dtype=np.float32)
        out[order] = self.betas[idx[order]]  # sorted reads are sequential on disk
        return out


def build_cache(
    root: Path,
    spec: dict[str, Any],
    *,
    sources: Sequence[str | Path] = (),
    n_rows: int,
    voxels: pd.DataFrame,
    dtype: str,
    fill: Any,
    extra_manifest: dict[str, Any] | None = None,
    reuse: bool = True,
    rehash: bool = False,
) -> tuple[Path, bool]:
    """Return (cache directory, reused?). ``fill(writer) -> (source fingerprints, details)``.

    ``sources`` are the files the build reads (none for data made in memory). Their
    resolved paths join ``spec`` in the key of the directory, so a build from other files
    (another NSD root) gets its own cache; a cache is reused only while it records these
    very files with unchanged contents.
    ``fill`` returns fingerprints of some or all of them (e.g. hashed while reading); the
    others are fingerprinted here. A failed build leaves no directory it created behind.
    """
    paths = source_paths(sources)
    spec = {**spec, "source_paths": paths}
    directory = cache_dir_for(root, spec)
    if reuse and is_reusable(directory, spec, rehash=rehash, sources=paths):
        log.info("reusing beta cache %s", directory)
        return directory, True
    t0 = time.perf_counter()
    created = _missing_dirs(Path(root))
    try:
        with atomic_dir(directory) as tmp:
            writer = CacheWriter(tmp, n_rows, len(voxels), dtype)
            try:
                recorded, details = fill(writer)
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            voxels.to_parquet(tmp / VOXELS, index=False)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "fmri2img_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "spec": spec,
                "shape": [n_rows, len(voxels)],
                "dtype": str(np.dtype(dtype)),
                "n_voxels": len(voxels),
                "sources": _source_records(paths, recorded),
                "build_seconds": round(time.perf_counter() - t0, 3),
                **details,
                **(extra_manifest or {}),
            }
            write_json(tmp / MANIFEST, manifest)
    except BaseException:
        _remove_empty(created)
        raise
    log.info("built beta cache %s (%d x %d) in %.1f s", directory, n_rows, len(voxels),
             time.perf_counter() - t0)
    return directory, False


def _source_records(paths: list[str], recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fingerprint per declared source, in the declared order."""
    by_path = {r["path"]: r for r in recorded}
    undeclared = sorted(set(by_path) - set(paths))
    if undeclared:
        raise RuntimeError(f"the cache build read files it did not declare: {undeclared}")
    return [by_path[p] if p in by_path else fingerprint(p) for p in dict.fromkeys(paths)]


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _remove_empty(dirs: list[Path]) -> None:
    """Remove the directories a failed build created, deepest first, while empty."""
    for d in dirs:
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: another build's files
            return
