from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from fmri2img.data.volumes import read_label_volume, read_masked
from fmri2img.errors import DataError

SHAPE = (6, 7, 5)


def _volume(seed: int = 0, t: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, size=(*SHAPE, t), dtype=np.int16)


def _write_h5(path: Path, vol: np.ndarray, chunks=None, dtype=None) -> None:
    with h5py.File(path, "w") as f:
        data = np.ascontiguousarray(vol.transpose(3, 2, 1, 0))
        f.create_dataset("betas", data=data if dtype is None else data.astype(dtype),
                         chunks=chunks)


def _voxels(n: int = 15, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(np.prod(SHAPE), size=n, replace=False))
    return np.stack(np.unravel_index(flat, SHAPE), axis=1)


@pytest.mark.parametrize("chunks", ["voxel", None, (4, 2, 3, 2)])
def test_hdf5_tzyx_and_nifti_xyzt_give_identical_vectors(tmp_path: Path, chunks) -> None:
    vol = _volume()
    t = vol.shape[3]
    _write_h5(tmp_path / "b.hdf5", vol, chunks=(t, 1, 1, 1) if chunks == "voxel" else chunks)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "b.nii.gz")
    vox = _voxels()
    a = read_masked(tmp_path / "b.hdf5", vox, SHAPE)
    b = read_masked(tmp_path / "b.nii.gz", vox, SHAPE)
    expected = vol[vox[:, 0], vox[:, 1], vox[:, 2], :].T  # nibabel (X, Y, Z, T) indexing
    assert a.dtype == np.int16 and b.dtype == np.int16
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(b, expected)
    # The h5py view really is (T, Z, Y, X): voxel (x, y, z) is h5[:, z, y, x].
    with h5py.File(tmp_path / "b.hdf5") as f:
        x, y, z = vox[3]
        np.testing.assert_array_equal(f["betas"][:, z, y, x], vol[x, y, z])


def test_grid_mismatch_names_file_and_shapes(tmp_path: Path) -> None:
    _write_h5(tmp_path / "b.hdf5", _volume())
    with pytest.raises(DataError, match=r"b\.hdf5.*\(X, Y, Z\)=\(6, 7, 5\).*\(6, 7, 6\)"):
        read_masked(tmp_path / "b.hdf5", _voxels(), (6, 7, 6))


def test_truncated_hdf5_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "b.hdf5"
    _write_h5(p, _volume(t=200), chunks=(200, 1, 1, 1))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b\.hdf5.*(truncated|corrupt)"):
        read_masked(p, _voxels(), SHAPE)


def test_garbage_hdf5_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "b.hdf5"
    p.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_masked(p, _voxels(), SHAPE)


def test_missing_dataset_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "b.hdf5"
    with h5py.File(p, "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    with pytest.raises(DataError, match=r"no '/betas' dataset.*other"):
        read_masked(p, _voxels(), SHAPE)


def test_nan_betas_are_refused(tmp_path: Path) -> None:
    vol = _volume().astype(np.float32)
    vox = _voxels()
    x, y, z = vox[2]
    vol[x, y, z, 5] = np.nan
    p = tmp_path / "b.hdf5"
    _write_h5(p, vol)
    with pytest.raises(DataError, match=rf"NaN or infinite.*x={x}, y={y}, z={z}"):
        read_masked(p, vox, SHAPE)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_masked(tmp_path / "nope.hdf5", _voxels(), SHAPE)


def test_label_volume_rejects_fractional_labels(tmp_path: Path) -> None:
    p = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, dtype=np.float32), np.eye(4)), p)
    with pytest.raises(DataError, match="non-integer"):
        read_label_volume(p)
