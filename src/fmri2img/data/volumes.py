"""Read masked voxel time series from 4-D beta files (NSD HDF5 or NIfTI).

Both readers return ``(T, V)`` arrays of the *stored* values (int16 for NSD), with voxels
ordered as the caller's ``(V, 3)`` array of NIfTI ``(x, y, z)`` coordinates. The HDF5
files were written by MATLAB, so h5py sees ``(T, Z, Y, X)`` (NSD_FORMAT.md section 0).

NSD's HDF5 betas are chunked one voxel's time series per chunk ([1 1 1 T] in MATLAB
order). Reading a whole session through HDF5's hyperslab machinery visits ~700k chunks
and takes seconds; reading only the masked voxels' chunks with ``read_direct_chunk``
reads a few percent of the file and is an order of magnitude faster.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from fmri2img.errors import DataError

log = logging.getLogger(__name__)

HDF5_DATASET = "betas"
_T_BLOCK = 64  # volumes per block on the slow paths: bounds memory to one block
# What h5py, nibabel, gzip and zlib raise for truncated or corrupt files, mid-read: caught
# at the read boundary and reported as a DataError naming the file.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, RuntimeError, KeyError, EOFError, TypeError, IndexError,
    OverflowError, zlib.error, gzip.BadGzipFile, struct.error, ImageFileError)


def volume_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".hdf5", ".h5")):
        return "hdf5"
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    raise DataError("unknown beta file format: expected .hdf5, .h5, .nii or .nii.gz", path)


def volume_shape(path: Path) -> tuple[tuple[int, int, int], int]:
    """Spatial shape as (X, Y, Z) and number of volumes, read from the header only."""
    path = Path(path)
    try:
        if volume_format(path) == "hdf5":
            with _open_hdf5(path) as f:
                ds = _betas_dataset(f, path)
                t, z, y, x = ds.shape
                return (x, y, z), t
        img = _nifti_betas(path)
        shape = img.shape
        return tuple(shape[:3]), shape[3]  # type: ignore[return-value]
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"could not read the betas' header (truncated or corrupt file?): "
                        f"{exc}", path) from exc


def read_masked(
    path: str | Path, voxels_xyz: np.ndarray, expected_xyz: tuple[int, int, int],
    n_volumes: int | None = None,
) -> np.ndarray:
    """Return the ``(T, V)`` stored values of the given voxels.

    ``expected_xyz`` is the (X, Y, Z) shape of the mask the voxels come from; a beta file
    on another grid is refused rather than silently mis-indexed. With ``n_volumes``, a file
    whose header declares another number of volumes is refused before anything is read.
    Truncated or corrupt files, non-numeric values and NaN or infinite betas inside the
    mask are refused with a :class:`DataError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("beta file not found", path)
    voxels_xyz = np.asarray(voxels_xyz, dtype=np.int64)
    fmt = volume_format(path)
    try:
        data = (
            _read_hdf5(path, voxels_xyz, expected_xyz, n_volumes)
            if fmt == "hdf5"
            else _read_nifti(path, voxels_xyz, expected_xyz, n_volumes)
        )
    except DataError:
        raise
    except READ_ERRORS as exc:
        # h5py and gzip report truncation and corruption as generic errors mid-read
        raise DataError(f"could not read betas (truncated or corrupt file?): {exc}", path) from exc
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            cols = np.flatnonzero(bad.any(axis=0))
            x, y, z = voxels_xyz[cols[0]]
            raise DataError(
                f"{bad.sum()} NaN or infinite beta values in {cols.size} voxels "
                f"(first at x={x}, y={y}, z={z}); expected finite betas inside the mask",
                path,
            )
    return data


# --------------------------------------------------------------------------- HDF5
def _open_hdf5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", path) from exc


def _betas_dataset(f: h5py.File, path: Path) -> h5py.Dataset:
    if HDF5_DATASET not in f:
        raise DataError(
            f"no '/{HDF5_DATASET}' dataset; found {sorted(f.keys())}. "
            "Expected NSD betas of shape (T, Z, Y, X)",
            path,
        )
    ds = f[HDF5_DATASET]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"'/{HDF5_DATASET}' is a {type(ds).__name__}, not a dataset; "
                        "expected NSD betas of shape (T, Z, Y, X)", path)
    if ds.ndim != 4:
        raise DataError(f"'/{HDF5_DATASET}' has shape {ds.shape}; expected (T, Z, Y, X)", path)
    _check_dtype(path, ds.dtype)
    return ds


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if np.dtype(dtype).kind not in "iuf":
        raise DataError(f"betas are stored as {dtype}; expected integer or real "
                        "floating-point values", path)


def _check_volumes(path: Path, got: int, expected: int | None) -> None:
    if got < 1 or (expected is not None and got != expected):
        raise DataError(f"the file holds {got} volumes; expected "
                        f"{expected if expected is not None else 'at least 1'}", path)


def _check_grid(path: Path, got_xyz: tuple[int, ...], expected_xyz: tuple[int, ...]) -> None:
    if tuple(got_xyz) != tuple(expected_xyz):
        raise DataError(
            f"betas are on a grid of (X, Y, Z)={tuple(got_xyz)} but the mask is "
            f"{tuple(expected_xyz)}; mask and betas must come from the same subject and space",
            path,
        )


def _read_hdf5(path: Path, vox: np.ndarray, expected_xyz: tuple[int, int, int],
               n_volumes: int | None) -> np.ndarray:
    with _open_hdf5(path) as f:
        ds = _betas_dataset(f, path)
        n_t, nz, ny, nx = ds.shape
        _check_grid(path, (nx, ny, nz), expected_xyz)
        _check_volumes(path, n_t, n_volumes)
        dcpl = ds.id.get_create_plist()
        per_voxel_chunks = ds.chunks == (n_t, 1, 1, 1) and dcpl.get_nfilters() == 0
        if per_voxel_chunks:
            return _read_voxel_chunks(ds, vox)
        if ds.chunks is None and ds.id.get_offset() is not None:
            return _read_contiguous(path, ds, vox)
        return _read_hyperslabs(ds, vox)


def _read_voxel_chunks(ds: h5py.Dataset, vox: np.ndarray) -> np.ndarray:
    """One uncompressed chunk per voxel: copy each chunk's bytes straight into a row of a
    voxel-major buffer. Returned as its transpose, an F-ordered (T, V) view, so callers
    that reduce over trials can take ``.T`` back for free."""
    n_t = ds.shape[0]
    buf = np.empty((len(vox), n_t), dtype=ds.dtype)
    flat = buf.view(np.uint8).reshape(len(vox), -1)
    expected = flat.shape[1]
    read = ds.id.read_direct_chunk
    for i, (x, y, z) in enumerate(vox.tolist()):
        filter_mask, got = read((0, z, y, x), out=flat[i])
        if filter_mask or got.nbytes != expected:
            raise OSError(f"chunk of voxel x={x}, y={y}, z={z} holds {got.nbytes} bytes, "
                          f"expected {expected}")
    return buf.T


def _read_contiguous(path: Path, ds: h5py.Dataset, vox: np.ndarray) -> np.ndarray:
    n_t, nz, ny, nx = ds.shape
    offset = ds.id.get_offset()
    if path.stat().st_size < offset + ds.size * ds.dtype.itemsize:
        raise OSError("file is shorter than its '/betas' dataset: truncated")
    mm = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=(n_t, nz * ny * nx))
    flat = np.ravel_multi_index((vox[:, 2], vox[:, 1], vox[:, 0]), (nz, ny, nx))
    out = np.empty((n_t, len(flat)), dtype=ds.dtype)
    for t0 in range(0, n_t, _T_BLOCK):
        out[t0 : t0 + _T_BLOCK] = mm[t0 : t0 + _T_BLOCK][:, flat]
    return out


def _read_hyperslabs(ds: h5py.Dataset, vox: np.ndarray) -> np.ndarray:
    """Any other layout: read the mask's bounding box, a block of volumes at a time."""
    n_t = ds.shape[0]
    lo = vox.min(axis=0)
    hi = vox.max(axis=0) + 1
    local = vox - lo
    out = np.empty((n_t, len(vox)), dtype=ds.dtype)
    for t0 in range(0, n_t, _T_BLOCK):
        block = ds[t0 : t0 + _T_BLOCK, lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        out[t0 : t0 + _T_BLOCK] = block[:, local[:, 2], local[:, 1], local[:, 0]]
    return out


# --------------------------------------------------------------------------- NIfTI
def _load_nifti(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise DataError("file not found", path)
    try:
        return nib.load(str(path), keep_file_open=True)
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DataError(f"not a readable NIfTI file: {exc}", path) from exc


def _nifti_betas(path: Path) -> nib.Nifti1Image:
    """A 4-D NIfTI image of numbers (header checked; nothing read yet)."""
    img = _load_nifti(path)
    if len(img.shape) != 4:
        raise DataError(f"expected a 4-D (X, Y, Z, T) NIfTI volume, got shape {img.shape}", path)
    _check_dtype(path, img.get_data_dtype())
    return img


def _read_nifti(path: Path, vox: np.ndarray, expected_xyz: tuple[int, int, int],
                n_volumes: int | None) -> np.ndarray:
    """Stream the data front to back, a block of volumes at a time, then to the end of the
    file: a gzip stream is decompressed once, and its CRC and length are checked at its end
    (random bytes in a compressed stream often decompress silently to other values)."""
    img = _nifti_betas(path)
    _check_grid(path, img.shape[:3], expected_xyz)
    n_t = img.shape[3]
    _check_volumes(path, n_t, n_volumes)
    proxy = img.dataobj
    offset = getattr(proxy, "offset", None)
    if offset is None:
        raise DataError("NIfTI image without a data offset; expected a .nii or .nii.gz file",
                        path)
    stored = np.dtype(img.get_data_dtype())
    # Stored values (so HDF5 and NIfTI agree bit for bit) unless the header scales them.
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    scaled = slope != 1.0 or inter != 0.0
    out = np.empty((n_t, len(vox)), dtype=np.float32 if scaled else stored.newbyteorder("="))
    nx, ny, nz = img.shape[:3]
    # NIfTI data are Fortran-ordered: each volume is a contiguous run of X*Y*Z values
    flat = np.ravel_multi_index((vox[:, 0], vox[:, 1], vox[:, 2]), (nx, ny, nz), order="F")
    vol_bytes = nx * ny * nz * stored.itemsize
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        _read_exact(fh, int(offset), "header")
        for t0 in range(0, n_t, _T_BLOCK):
            k = min(_T_BLOCK, n_t - t0)
            buf = _read_exact(fh, k * vol_bytes, f"volumes {t0}..{t0 + k - 1}")
            vals = np.frombuffer(buf, dtype=stored).reshape(k, -1)[:, flat]
            out[t0 : t0 + k] = vals * slope + inter if scaled else vals
        while fh.read(_DRAIN):  # to the end: gzip checks the stream's CRC there
            pass
    return out


_DRAIN = 1 << 20


def _read_exact(fh: Any, n: int, what: str) -> bytes:
    buf = fh.read(n)
    if len(buf) != n:
        raise EOFError(f"file ends inside the {what} ({len(buf)} of {n} bytes): truncated")
    return buf


def read_label_volume(path: str | Path) -> np.ndarray:
    """A 3-D integer label volume (ROI atlas or mask) in (X, Y, Z) order."""
    path = Path(path)
    img = _load_nifti(path)
    try:
        data = np.asarray(img.dataobj)
    except READ_ERRORS as exc:
        raise DataError(f"could not read the label volume (truncated or corrupt file?): "
                        f"{exc}", path) from exc
    if data.dtype.kind not in "biuf":
        raise DataError(f"label volume is stored as {data.dtype}; expected integer labels",
                        path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"expected a 3-D label volume, got shape {data.shape}", path)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise DataError("label volume contains NaN or infinite values", path)
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise DataError("label volume holds non-integer values; expected ROI labels", path)
        data = rounded
    return data.astype(np.int32)
