"""File writers in the exact on-disk formats of NSD (see shared/docs/NSD_FORMAT.md).

Every file is written beside its final path and renamed into place, so a reader never
sees half a file. Temporary names keep the final name as suffix, because nibabel picks
compression from the extension.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from fmri2img.data.simulate.render import png_bytes

STIMULI_COMPRESSION_LEVEL = 4
NIFTI_COMPRESSION_LEVEL = 1  # nibabel's default: these files are big
NIFTI_DATA_OFFSET = 352  # single-file NIfTI-1: 348-byte header + 4-byte extension flag
_LABEL_COLOURS = (
    (0, 0, 0), (230, 40, 40), (240, 160, 0), (200, 200, 0), (120, 220, 0),
    (0, 150, 255), (160, 0, 255), (255, 0, 200), (120, 120, 120),
)  # fmt: skip


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def nifti_header(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray
                 ) -> nib.Nifti1Header:
    """Single-file header: given dtype, no intensity scaling, scanner q/s-forms."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["scl_slope"] = np.nan  # stored values are the values: no scaling
    header["scl_inter"] = np.nan
    header.set_data_offset(NIFTI_DATA_OFFSET)
    return header


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write (X,Y,Z[,T]) data with its own dtype and no intensity scaling."""
    img = nib.Nifti1Image(data, affine, nifti_header(data.shape, data.dtype, affine))
    with atomic_file(path) as tmp:
        nib.save(img, tmp)


def write_betas_hdf5(path: Path, betas: np.ndarray, flat_zyx: np.ndarray,
                     shape_xyz: tuple[int, int, int]) -> None:
    """``/betas`` int16 (T, Z, Y, X) with one chunk per voxel time series, as MATLAB wrote
    them. ``betas`` is (brain voxels, T). Every chunk is allocated (zeros outside the
    brain), so the file has the real release's size (~1.05 GB per nsd-scale session) and
    readers and benchmarks see the real proportion of masked to stored bytes."""
    nx, ny, nz = shape_xyz
    t = betas.shape[1]
    z, rem = np.divmod(flat_zyx, ny * nx)
    y, x = np.divmod(rem, nx)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("betas", shape=(t, nz, ny, nx), dtype=np.int16,
                                chunks=(t, 1, 1, 1), fillvalue=0, track_times=False,
                                dcpl=dcpl)
        write_chunk = dset.id.write_direct_chunk
        rows = np.ascontiguousarray(betas)
        for i, (zi, yi, xi) in enumerate(zip(z.tolist(), y.tolist(), x.tolist(), strict=True)):
            write_chunk((0, zi, yi, xi), rows[i])


_NIFTI_TIME_BLOCK = 32  # volumes assembled at once when streaming a 4-D NIfTI


def write_betas_nifti(path: Path, betas: np.ndarray, flat_zyx: np.ndarray,
                      shape_xyz: tuple[int, int, int], affine: np.ndarray) -> None:
    """(X, Y, Z, T) int16 .nii.gz, streamed volume by volume (NIfTI's F order over
    (X,Y,Z,T) is C order over (T,Z,Y,X)), so the full 4-D array is never built."""
    nx, ny, nz = shape_xyz
    t = betas.shape[1]
    header = nifti_header((nx, ny, nz, t), np.dtype(np.int16), affine)
    with atomic_file(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", compresslevel=NIFTI_COMPRESSION_LEVEL, mtime=0
    ) as f:
        header.write_to(f)
        f.write(b"\0" * (NIFTI_DATA_OFFSET - f.tell()))
        slab = np.zeros((_NIFTI_TIME_BLOCK, nz * ny * nx), dtype=np.int16)
        for t0 in range(0, t, _NIFTI_TIME_BLOCK):
            t1 = min(t, t0 + _NIFTI_TIME_BLOCK)
            slab[: t1 - t0, flat_zyx] = betas[:, t0:t1].T
            f.write(slab[: t1 - t0].tobytes())


def write_ctab(path: Path, labels: dict[int, str]) -> None:
    lines = ["0 Unknown 0 0 0 0"]
    for k, name in sorted(labels.items()):
        r, g, b = _LABEL_COLOURS[k % len(_LABEL_COLOURS)]
        lines.append(f"{k} {name} {r} {g} {b} 0")
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_mat(path: Path, variables: dict[str, np.ndarray]) -> None:
    with atomic_file(path) as tmp:
        scipy.io.savemat(tmp, variables, format="5", do_compression=True)


def write_png(path: Path, image: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(png_bytes(image))


def write_table(path: Path, table: pd.DataFrame, sep: str = ",", index: bool = False) -> None:
    with atomic_file(path) as tmp:
        table.to_csv(tmp, sep=sep, index=index, na_rep="")


class StimulusBrick:
    """``imgBrick`` (n, S, S, 3) uint8, one gzip chunk per image: unwritten rows cost no
    disk and read back as zeros."""

    def __init__(self, path: Path, n: int, size: int) -> None:
        self._ctx = atomic_file(path)
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        self.dataset = self._file.create_dataset(
            "imgBrick", shape=(n, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3),
            compression="gzip", compression_opts=STIMULI_COMPRESSION_LEVEL, fillvalue=0,
            track_times=False,
        )

    def write(self, ids: np.ndarray, images: np.ndarray) -> None:
        order = np.argsort(ids)
        ids = np.asarray(ids)[order]
        images = images[order]
        # Runs of consecutive ids go in one call; the rest one by one.
        start = 0
        while start < ids.size:
            stop = start + 1
            while stop < ids.size and ids[stop] == ids[stop - 1] + 1:
                stop += 1
            self.dataset[int(ids[start]) : int(ids[stop - 1]) + 1] = images[start:stop]
            start = stop

    def close(self, ok: bool = True) -> None:
        self._file.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
