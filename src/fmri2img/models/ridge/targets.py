"""Targets in blocks, and where the weights go.

A target grid such as Brain-Diffuser's CLIP-vision tokens (257 x 768 = 197,376 outputs)
does not fit in memory at once: its weights from 15,724 voxels are 12.4 GB in float32,
and every solver temporary the size of the targets would be as large again. The solvers
therefore take targets in contiguous blocks (:func:`target_blocks`), each solved, scored
and stored against factorisations that are shared by all blocks, and write the weights
to a :class:`CoefStore`: an array in memory, or a ``.npy`` file holding ``coef.T``
(targets x features, so that a block of targets is one contiguous byte range) that is
written with ``pwrite`` (page cache only, never mapped into the process) and read back as
a read-only memory map.
"""

from __future__ import annotations

import logging
import os
import uuid
import weakref
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Share of the available memory that automatic choices may plan to use for one thing
# (the weights, the fold operators), and for one block's temporaries, whose estimate is
# rougher (library work space, copies in transit).
MEMORY_SHARE = 0.25
BLOCK_SHARE = 0.125
MIN_BLOCK_BYTES = 64 * 2**20


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def auto_target_block(k: int, bytes_per_target: int, reserved: int = 0) -> int:
    """Targets per block such that the block's temporaries take at most
    ``BLOCK_SHARE`` of the memory left after ``reserved`` bytes (factorisations, the
    weights when in memory), and never less than ``MIN_BLOCK_BYTES`` worth."""
    budget = max(MIN_BLOCK_BYTES, int(BLOCK_SHARE * (available_memory() - reserved)))
    return int(min(k, max(1, budget // max(1, bytes_per_target))))


def target_blocks(k: int, block: int) -> list[slice]:
    """Contiguous blocks of ``block`` targets (the last one shorter if ``block`` does
    not divide ``k``)."""
    if block < 1:
        raise ValueError(f"target_block must be >= 1, got {block}")
    return [slice(j0, min(k, j0 + block)) for j0 in range(0, k, block)]


class CoefStore:
    """The (p, k) weights, written a set of targets at a time."""

    def __init__(self, p: int, k: int, dtype: np.dtype):
        self.p, self.k, self.dtype = p, k, np.dtype(dtype)
        self.coef = np.empty((p, k), dtype=self.dtype)
        self.finite = True  # whether every value written so far was finite

    def write(self, cols: np.ndarray | slice, values: np.ndarray) -> None:
        """``coef[:, cols] = values`` (``values`` is (p, len(cols)))."""
        self.finite &= bool(np.isfinite(values).all())
        self.coef[:, cols] = values

    def result(self) -> np.ndarray:
        return self.coef


class FileCoefStore(CoefStore):
    """Weights in a ``.npy`` file of shape (k, p) (``coef.T``), read back memory-mapped.

    The file is created in ``directory`` under a unique name and removed when the array
    that :meth:`result` returns (and every view of it) is gone, unless it was saved
    beside a checkpoint first (which links or copies it).
    """

    def __init__(self, p: int, k: int, dtype: np.dtype, directory: str | Path):
        self.p, self.k, self.dtype = p, k, np.dtype(dtype)
        self.finite = True
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"fmri2img-ridge-coef-{os.getpid()}-{uuid.uuid4().hex}.npy"
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (k, p)}
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            self.offset = f.tell()
            f.truncate(self.offset + k * p * self.dtype.itemsize)
        self._fd = os.open(self.path, os.O_WRONLY)
        log.info("ridge: weights (%d x %d, %.2f GB) written to %s", p, k,
                 k * p * self.dtype.itemsize / 1e9, self.path)

    def write(self, cols: np.ndarray | slice, values: np.ndarray) -> None:
        self.finite &= bool(np.isfinite(values).all())
        idx = np.arange(self.k)[cols] if isinstance(cols, slice) else np.asarray(cols)
        if idx.size == 0:
            return
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
        values = values[:, order]
        # runs of consecutive targets are one contiguous range of the file each
        starts = np.flatnonzero(np.diff(idx, prepend=idx[0] - 2) != 1)
        ends = np.append(starts[1:], idx.size)
        row = self.p * self.dtype.itemsize
        for a, b in zip(starts, ends, strict=True):
            chunk = np.ascontiguousarray(values[:, a:b].T, dtype=self.dtype)
            os.pwrite(self._fd, chunk.data, self.offset + int(idx[a]) * row)

    def result(self) -> np.ndarray:
        os.close(self._fd)
        mapped = np.load(self.path, mmap_mode="r")
        weakref.finalize(mapped, _unlink, str(self.path))
        return mapped.T


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def file_rows(a: np.ndarray) -> np.memmap | None:
    """The (k, p) memory map behind ``a`` when ``a`` is the transposed file array a
    :class:`FileCoefStore` (or a checkpoint's side file) returns, else None."""
    base = a.T
    if not (isinstance(base, np.memmap) and base.flags.c_contiguous and base.filename):
        return None
    if os.path.getsize(base.filename) - base.offset != base.nbytes:
        return None  # a slice of the file's array, not all of it
    return base


def read_rows(rows: np.memmap, j0: int, j1: int) -> np.ndarray:
    """Rows ``j0:j1`` of a C-ordered 2-D memory map, read with ``pread`` into a new array
    (so the pages are not mapped into this process and do not count as its memory)."""
    p = rows.shape[1]
    itemsize = rows.dtype.itemsize
    out = np.empty((j1 - j0, p), dtype=rows.dtype)
    with open(rows.filename, "rb") as f:
        f.seek(rows.offset + j0 * p * itemsize)
        f.readinto(memoryview(out).cast("B"))
    return out
