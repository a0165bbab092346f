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

import logging
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from fmri2img.errors import DataError

log = logging.getLogger(__name__)

HDF5_DATASET = "betas"
_T_BLOCK = 64  # volumes per block on the slow paths: bounds memory to one block


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
    if volume_format(path) == "hdf5":
        with _open_hdf5(path) as f:
            ds = _betas_dataset(f, path)
            t, z, y, x = ds.shape
            return (x, y, z), t
    img = _load_nifti(path)
    shape = img.shape
    if len(shape) != 4:
        raise DataError(f"expected a 4-D (X, Y, Z, T) NIfTI volume, got shape {shape}", path)
    return tuple(shape[:3]), shape[3]  # type: ignore[return-value]


def read_masked(
    path: str | Path, voxels_xyz: np.ndarray, expected_xyz: tuple[int, int, int]
) -> np.ndarray:
    """Return the ``(T, V)`` stored values of the given voxels.

    ``expected_xyz`` is the (X, Y, Z) shape of the mask the voxels come from; a beta file
    on another grid is refused rather than silently mis-indexed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("beta file not found", path)
    voxels_xyz = np.asarray(voxels_xyz, dtype=np.int64)
    fmt = volume_format(path)
    try:
        data = (
            _read_hdf5(path, voxels_xyz, expected_xyz)
            if fmt == "hdf5"
            else _read_nifti(path, voxels_xyz, expected_xyz)
        )
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as exc:
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
    if ds.ndim != 4:
        raise DataError(f"'/{HDF5_DATASET}' has shape {ds.shape}; expected (T, Z, Y, X)", path)
    return ds


def _check_grid(path: Path, got_xyz: tuple[int, ...], expected_xyz: tuple[int, ...]) -> None:
    if tuple(got_xyz) != tuple(expected_xyz):
        raise DataError(
            f"betas are on a grid of (X, Y, Z)={tuple(got_xyz)} but the mask is "
            f"{tuple(expected_xyz)}; mask and betas must come from the same subject and space",
            path,
        )


def _read_hdf5(path: Path, vox: np.ndarray, expected_xyz: tuple[int, int, int]) -> np.ndarray:
    with _open_hdf5(path) as f:
        ds = _betas_dataset(f, path)
        n_t, nz, ny, nx = ds.shape
        _check_grid(path, (nx, ny, nz), expected_xyz)
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


def _read_nifti(path: Path, vox: np.ndarray, expected_xyz: tuple[int, int, int]) -> np.ndarray:
    img = _load_nifti(path)
    if len(img.shape) != 4:
        raise DataError(f"expected a 4-D (X, Y, Z, T) NIfTI volume, got shape {img.shape}", path)
    _check_grid(path, img.shape[:3], expected_xyz)
    n_t = img.shape[3]
    proxy = img.dataobj
    # Stored values, not scl_slope-scaled ones, so HDF5 and NIfTI agree bit for bit.
    raw = proxy.get_unscaled if hasattr(proxy, "get_unscaled") else None
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    scaled = raw is not None and (slope not in (1.0, None) or inter not in (0.0, None))
    dtype = img.get_data_dtype() if not scaled else np.float32
    out = np.empty((n_t, len(vox)), dtype=dtype)
    # NIfTI data are Fortran-ordered, so a block of volumes is a contiguous byte range
    # and a gzip stream is decompressed once, front to back.
    for t0 in range(0, n_t, _T_BLOCK):
        block = np.asarray(proxy[..., t0 : t0 + _T_BLOCK])
        out[t0 : t0 + _T_BLOCK] = block[vox[:, 0], vox[:, 1], vox[:, 2], :].T
    return out


def read_label_volume(path: str | Path) -> np.ndarray:
    """A 3-D integer label volume (ROI atlas or mask) in (X, Y, Z) order."""
    path = Path(path)
    img = _load_nifti(path)
    data = np.asarray(img.dataobj)
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
