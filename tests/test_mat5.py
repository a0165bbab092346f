"""The MATLAB v5 structure check that runs before scipy.io.loadmat: every file SciPy writes
passes it, and the corruptions that crash SciPy's compiled reader (segmentation fault, not
an exception) are refused by it with a ValueError naming the byte."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from conftest import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.cli import main
from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index
from fmri2img.data.mat5 import check_v5, is_v5
from fmri2img.data.matfile import load_mat


def _mat(compress: bool = False, **variables: object) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables or {"x": np.arange(6.0).reshape(2, 3)},
                     do_compression=compress)
    return buf.getvalue()


VARIETY = {"a": np.arange(6.0).reshape(2, 3), "c": np.array([1 + 2j, 3]), "s": "hello",
           "cell": np.array([np.array([1.0]), "x"], dtype=object),
           "st": {"f": 1, "g": [1, 2]}, "sp": scipy.sparse.csc_matrix(np.eye(3)),
           "i": np.int16([1, 2]), "e": np.zeros((0, 3)), "u": np.uint8([[1]]),
           "lg": np.array([True, False]), "f32": np.float32([[1.5]])}


@pytest.mark.parametrize("compress", [False, True])
def test_what_scipy_writes_passes(compress: bool) -> None:
    data = _mat(compress, **VARIETY)
    assert is_v5(data[:128])
    check_v5(data)
    assert set(VARIETY) <= set(scipy.io.loadmat(io.BytesIO(data)))


def test_the_miyawaki_files_pass() -> None:
    files = sorted((SHARED_DATA / "miyawaki2008").glob("*.mat"))
    if not files:
        pytest.skip("../shared/data/miyawaki2008 not present")
    for path in files:
        data = path.read_bytes()
        assert is_v5(data[:128]), path
        check_v5(data)


def _flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1:]


def _offsets(data: bytes) -> dict[str, int]:
    """Where the one variable's parts lie in a file that holds a single 2x3 double."""
    name = data.index(b"x\x00", 128) - 4  # the small name element's tag
    return {"flags": 128 + 8 + 8 + 1, "name_type": name, "data_type": name + 8}


@pytest.mark.parametrize(("part", "match"), [
    ("flags", r"byte \d+: an element tag runs past"),  # complex flag, no imaginary part
    ("data_type", r"byte \d+: unknown data type"),
    ("name_type", r"byte \d+: (unknown data type|the array name of data type)"),
])
def test_corruptions_that_crash_scipy_are_refused(part: str, match: str) -> None:
    data = _mat()
    bad = _flip(data, _offsets(data)[part])
    with pytest.raises(ValueError, match=match):
        check_v5(bad)


def test_byte_counts_past_their_container_are_refused() -> None:
    data = bytearray(_mat())
    data[128 + 8 + 16 + 4] = 0xF0  # the dimensions' byte count (after the flags element)
    with pytest.raises(ValueError, match="runs past the end of its container"):
        check_v5(bytes(data))


def test_corrupt_compression_is_refused() -> None:
    data = _mat(True)
    with pytest.raises(ValueError, match="compressed variable"):
        check_v5(_flip(data, 128 + 8 + 2))


def test_v73_and_v4_files_are_not_v5(tmp_path: Path) -> None:
    v4 = io.BytesIO()
    scipy.io.savemat(v4, {"x": np.eye(2)}, format="4")
    assert not is_v5(v4.getvalue()[:128])
    assert not is_v5(b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM")


@settings(max_examples=300, deadline=None)
@given(compress=st.booleans(), at=st.floats(0, 1, exclude_max=True),
       mask=st.binary(min_size=1, max_size=16))
def test_random_bytes_are_refused_or_read(compress: bool, at: float, mask: bytes) -> None:
    """Either the check refuses the file or SciPy reads it (an exception at worst): in
    process, so a segmentation fault here would end the test run."""
    data = _mat(compress, **VARIETY)
    off = 128 + int(at * (len(data) - 128))
    seg = data[off:off + len(mask)]
    bad = data[:off] + bytes(b ^ (m % 255 + 1) for b, m in zip(seg, mask, strict=False)) + \
        data[off + len(seg):]
    try:
        check_v5(bad)
    except ValueError:
        return
    try:
        scipy.io.loadmat(io.BytesIO(bad))
    except Exception:  # SciPy's own refusals take many types
        pass


def _write_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: a 512-byte MAT header in the HDF5 user
    block, each variable stored column-major (h5py sees it transposed) with its class."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=np.ascontiguousarray(np.asarray(value).T))
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, written by a test".ljust(116, b" ") + bytes(8) + \
        b"\x00\x02IM"
    with path.open("r+b") as f:
        f.write(header)


def test_v73_files_are_read_through_h5py(tmp_path: Path) -> None:
    """The same variables as v5 and as v7.3 give the same index and the same betas."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 2, size=(6, 16)).astype(float)
    trn, tst = np.repeat(np.arange(6), 2), np.arange(3)
    variables = {"fmriTrn": rng.normal(size=(len(trn), 10)),
                 "fmriTest": rng.normal(size=(3, 10)),
                 "stimTrn": imgs[trn], "stimTest": imgs[tst]}
    scipy.io.savemat(tmp_path / "v5.mat", variables)
    _write_v73(tmp_path / "v73.mat", variables)
    assert not is_v5((tmp_path / "v73.mat").read_bytes()[:128])
    with pytest.raises(NotImplementedError):  # what makes matfile fall back to h5py
        scipy.io.loadmat(tmp_path / "v73.mat")
    a, b = load_mat(tmp_path / "v5.mat"), load_mat(tmp_path / "v73.mat")
    for key, value in variables.items():
        np.testing.assert_array_equal(a[key], value)
        np.testing.assert_array_equal(b[key], value)
    for name in ("v5", "v73"):
        assert main(["build-index", "--mat", str(tmp_path / f"{name}.mat"), "--output",
                     str(tmp_path / name / "idx.parquet")]) == 0
    (ia, ma), (ib, mb) = (read_index(tmp_path / n / "idx.parquet") for n in ("v5", "v73"))
    # the dataset is named after the file, so the keys differ in their prefix only
    cols = ["domain", "split", "stimulus_id", "repetition"]
    assert ia[cols].equals(ib[cols])
    assert (ia["stimulus"].str.split(":").str[1] == ib["stimulus"].str.split(":").str[1]).all()
    np.testing.assert_array_equal(BetaCache(ma["cache"]).rows(ia["cache_row"]),
                                  BetaCache(mb["cache"]).rows(ib["cache_row"]))
