"""The EEG-fMRI alignment dataset in one LMDB: one record per (EEG trial, fMRI trial) of
an image pair, split by pair so that no image is seen in two splits.

Records are safetensors blobs (arrays plus a JSON string in the header), never pickles:
reading a dataset cannot run code, and any safetensors reader can inspect it. The key
``meta_info`` holds the dataset's description as JSON. The database is written into a
temporary directory and renamed into place, so an interrupted build leaves nothing at the
target path, and its map size grows as needed instead of being guessed up front (the
original reserved 50 GB).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import safetensors.numpy
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch.utils.data import Dataset

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_dir

logger = logging.getLogger(__name__)

FORMAT = "fmri2img.align_lmdb"
VERSION = 1
META_KEY = b"meta_info"
SPLITS = ("train", "val", "test")
INT_FIELDS = ("label", "things_idx", "nsd_idx", "pair")
_TXN_RECORDS = 256  # records per write transaction: the unit redone when the map grows
_MIN_MAP = 1 << 20


# -- records ------------------------------------------------------------------------------

def encode_record(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """One record as safetensors bytes: ``arrays`` as tensors, ``meta`` as JSON."""
    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return safetensors.numpy.save(clean, metadata={"json": json.dumps(meta)})


def decode_record(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of :func:`encode_record`'s bytes; ValueError when they are not one.

    The metadata is read from the safetensors header directly (8-byte little-endian
    length, then JSON) because safetensors' numpy loader returns the arrays only.
    """
    blob = bytes(blob)
    if len(blob) < 8:
        raise ValueError("not a safetensors record: shorter than its header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError("not a safetensors record: header runs past the end (truncated?)")
    try:
        header = json.loads(blob[8:8 + n])
        meta = json.loads(header.get("__metadata__", {}).get("json", "{}"))
        arrays = safetensors.numpy.load(blob)
    except Exception as exc:  # json, dict access and the rust side's SafetensorError
        raise ValueError(f"not a safetensors record: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError("record metadata is not a JSON object")
    return arrays, meta


# -- writing ------------------------------------------------------------------------------

def _round_pages(size: int) -> int:
    page = 1 << 16
    return max(_MIN_MAP, -(-size // page) * page)


def _put_batch(env: lmdb.Environment, batch: list[tuple[bytes, bytes]]) -> None:
    with env.begin(write=True) as txn:
        for key, value in batch:
            if not txn.put(key, value, overwrite=False):
                raise ValueError(f"duplicate record key {key.decode()!r}")


def _write_batch(env: lmdb.Environment, batch: list[tuple[bytes, bytes]]) -> None:
    """Write ``batch`` in one transaction, doubling the map until it fits."""
    while True:
        try:
            _put_batch(env, batch)
            return
        except lmdb.MapFullError:
            # the failed transaction was aborted whole, so the batch is simply redone
            size = env.info()["map_size"] * 2
            logger.debug("align lmdb: map full, growing to %d bytes", size)
            env.set_mapsize(size)


def write_align_lmdb(path: str | Path, records: Iterable[tuple[str, dict[str, np.ndarray],
                                                            dict[str, Any]]],
                     meta_info: dict[str, Any], map_size: int | None = None) -> dict[str, int]:
    """Write ``records`` ``(key, arrays, meta)`` and ``meta_info`` as an LMDB at ``path``.

    Keys start with the split (``f"{split}_{pair:05d}_{k:05d}"``), which is how
    :class:`AlignLMDB` finds a split. Returns the record count per split (also stored in
    ``meta_info["counts"]``). An existing database at ``path`` is replaced only once the
    new one is complete.
    """
    path = Path(path)
    counts: dict[str, int] = {}
    with atomic_dir(path) as tmp:
        env: lmdb.Environment | None = None
        try:
            batch: list[tuple[bytes, bytes]] = []
            for key, arrays, meta in records:
                if key.encode() == META_KEY:
                    raise ValueError(f"record key {key!r} is reserved for the dataset info")
                value = encode_record(arrays, meta)
                if env is None:
                    # a first guess from the first record: the map doubles when full
                    start = map_size or _round_pages(8 * _TXN_RECORDS * (len(value) + 64))
                    env = lmdb.open(str(tmp), map_size=int(start), subdir=True,
                                    meminit=False)
                batch.append((key.encode(), value))
                split = key.split("_", 1)[0]
                counts[split] = counts.get(split, 0) + 1
                if len(batch) >= _TXN_RECORDS:
                    _write_batch(env, batch)
                    batch = []
            if env is None:
                env = lmdb.open(str(tmp), map_size=int(map_size or _MIN_MAP), subdir=True)
            info = {**meta_info, "format": FORMAT, "version": VERSION, "counts": counts}
            batch.append((META_KEY, json.dumps(info, default=str).encode()))
            _write_batch(env, batch)
            env.sync(True)
        finally:
            if env is not None:
                env.close()
    logger.info("wrote %s: %s", path, counts)
    return counts


# -- splits -------------------------------------------------------------------------------

def split_by_pair(things_idx: ArrayLike, nsd_idx: ArrayLike,
                  ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 42
                  ) -> NDArray[np.str_]:
    """"train" / "val" / "test" per pair, with no image of either side in two splits.

    Pairs that share an image (on either side, directly or through a chain) form a
    connected component; a component of more than one pair goes to train whole, as
    Brain2Image did. The single pairs are shuffled (seeded) and dealt so that val and test
    get their share of *all* pairs where enough single pairs exist.
    """
    t = np.asarray(things_idx)
    s = np.asarray(nsd_idx)
    if t.ndim != 1 or t.shape != s.shape or t.size == 0:
        raise ValueError(f"things_idx and nsd_idx must be equal-length non-empty 1-D arrays, "
                         f"got shapes {t.shape} and {s.shape}")
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or np.any(r < 0) or not np.isclose(r.sum(), 1.0):
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    n = t.size
    _, tc = np.unique(t, return_inverse=True)
    _, sc = np.unique(s, return_inverse=True)
    n_t = int(tc.max()) + 1
    n_nodes = n_t + int(sc.max()) + 1
    # bipartite graph: image nodes (THINGS then NSD), one edge per pair
    graph = coo_matrix((np.ones(n), (tc.ravel(), n_t + sc.ravel())), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[tc.ravel()]
    sizes = np.bincount(pair_comp)
    out = np.full(n, "train", dtype="<U5")
    single = np.flatnonzero(sizes[pair_comp] == 1)
    rng = np.random.default_rng(seed)
    single = single[rng.permutation(single.size)]
    want = np.rint(r[1:] * n).astype(int)
    if want.sum() > single.size:  # not enough free pairs: val and test shrink alike
        want = np.floor(want * single.size / want.sum()).astype(int)
    out[single[:want[0]]] = "val"
    out[single[want[0]:want[0] + want[1]]] = "test"
    return out


# -- reading ------------------------------------------------------------------------------

# one read-only environment per database file and process: py-lmdb refuses to open the
# same files twice in a process, and several datasets (train, val) share one database
_ENVS: dict[tuple[str, int, int], tuple[int, lmdb.Environment]] = {}


def _env_key(path: Path) -> tuple[str, int, int]:
    try:
        st = os.stat(path / "data.mdb")
    except OSError as exc:
        raise DataError("alignment LMDB not found (expected a directory with data.mdb)",
                        path) from exc
    # the inode tells a database rewritten at the same path from the one held open
    return str(path.resolve()), st.st_dev, st.st_ino


def _held(key: tuple[str, int, int]) -> lmdb.Environment | None:
    """This process's environment for ``key``; one inherited through a fork is closed."""
    held = _ENVS.get(key)
    if held is None:
        return None
    if held[0] == os.getpid():
        return held[1]
    # a forked copy: closing it unmaps only this process's view (the parent's handle is
    # untouched) and lets this process open its own, as LMDB requires after a fork
    with contextlib.suppress(lmdb.Error):
        held[1].close()
    del _ENVS[key]
    return None


def _shared_env(path: Path) -> lmdb.Environment:
    key = _env_key(path)
    env = _held(key)
    if env is None:
        env = _open(path)
        _ENVS[key] = (os.getpid(), env)
    return env


def _open(path: Path) -> lmdb.Environment:
    if not (path / "data.mdb").exists():
        raise DataError("alignment LMDB not found (expected a directory with data.mdb)", path)
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                         meminit=False, subdir=True, max_readers=512)
    except lmdb.Error as exc:
        raise DataError(f"not a readable LMDB: {exc}", path) from exc


class AlignLMDB(Dataset):
    """One split of an alignment LMDB; items are dicts of tensors (default collate works).

    The keys of the split are listed once, at construction, with an environment that is
    closed again; each process then opens its own read-only environment on first access
    (an LMDB handle must not cross a fork), so DataLoader workers each read on their own.
    Datasets of one database in one process share that environment (py-lmdb allows one).
    """

    def __init__(self, path: str | Path, split: str, normalize_fmri: bool = False, *,
                 eeg_scale: float = 1.0) -> None:
        self.path = Path(path)
        self.split = split
        self.normalize_fmri = bool(normalize_fmri)
        self.eeg_scale = float(eeg_scale)  # Brain2Image fed CBraMod EEG / 100
        held = _held(_env_key(self.path))
        env = held or _open(self.path)  # a short-lived one unless this process holds one
        try:
            with env.begin() as txn:
                raw = txn.get(META_KEY)
                prefix = f"{split}_".encode()
                cursor = txn.cursor()
                keys: list[bytes] = []
                if cursor.set_range(prefix):
                    for key in cursor.iternext(keys=True, values=False):
                        if not key.startswith(prefix):
                            break
                        if key != META_KEY:
                            keys.append(bytes(key))
        finally:
            if held is None:
                env.close()
        if raw is None:
            raise DataError(f"no {META_KEY.decode()!r} key: not an alignment LMDB", self.path)
        try:
            self._meta_info = json.loads(bytes(raw))
        except ValueError as exc:
            raise DataError(f"{META_KEY.decode()!r} is not JSON: {exc}", self.path) from exc
        if self._meta_info.get("format") != FORMAT:
            raise DataError(f"not an alignment LMDB (format {FORMAT!r} expected)", self.path)
        if not keys:
            have = sorted(self._meta_info.get("counts", {}))
            raise DataError(f"split {split!r} has no records (splits here: {have})", self.path)
        self.keys = keys
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None

    @property
    def meta_info(self) -> dict[str, Any]:
        return dict(self._meta_info)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        # spawned workers get the dataset pickled: an open handle cannot travel
        state = dict(self.__dict__)
        state["_env"] = None
        state["_pid"] = None
        return state

    def _environment(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            self._env = _shared_env(self.path)
            self._pid = os.getpid()
        return self._env

    def record(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The raw (arrays, meta) of item ``index``."""
        key = self.keys[index]
        with self._environment().begin(buffers=False) as txn:
            blob = txn.get(key)
        if blob is None:
            raise DataError(f"record {key.decode()!r} vanished (database rewritten?)",
                            self.path)
        try:
            arrays, meta = decode_record(blob)
        except ValueError as exc:
            raise DataError(f"record {key.decode()!r} is corrupt: {exc}", self.path) from exc
        missing = [k for k in ("eeg", "fmri") if k not in arrays]
        missing += [k for k in INT_FIELDS if k not in meta]
        if missing:
            raise DataError(f"record {key.decode()!r} lacks {missing}", self.path)
        return arrays, meta

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        arrays, meta = self.record(index)
        eeg = torch.from_numpy(np.asarray(arrays["eeg"], dtype=np.float32))
        eeg = eeg.reshape(-1, eeg.shape[-1])  # (1, C, T) as Brain2Image stored it -> (C, T)
        if self.eeg_scale != 1.0:
            eeg = eeg * self.eeg_scale
        fmri = torch.from_numpy(np.asarray(arrays["fmri"], dtype=np.float32)).reshape(-1)
        if self.normalize_fmri:
            fmri = torch.nn.functional.normalize(fmri, dim=0)
        item = {"eeg": eeg, "fmri": fmri}
        item.update({k: torch.tensor(int(meta[k]), dtype=torch.long) for k in INT_FIELDS})
        return item


def iter_records(ds: AlignLMDB) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Every raw record of ``ds`` in key order (for inspection and rewriting)."""
    for i in range(len(ds)):
        yield ds.record(i)
