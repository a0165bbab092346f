"""Corrupt input files end as exit 2 with a message naming the file, never as a traceback,
and leave nothing behind.

Property tests corrupt each reader's input at random (truncation at a random length,
random bytes at a random offset, NaN/inf injected into the numeric payload, changed
shapes) and run the command that reads it: ``build-index`` (NSD HDF5 and NIfTI betas, a
.mat file), ``train`` (embedding tables) and ``eval`` (checkpoints). Corruptions that can
be detected must give exit 2; random bytes that may land in raw numeric payload, where
no reader can tell them from data, may give 0 or 2, but never an exception escaping
``main``. After a refusal nothing of the output is left (no output folder, no ``.tmp``
files), and the input holds exactly the corruption written. The unit tests below pin the
explicit cases, and the beta cache's identity: builds from two NSD roots never share a
cache.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nsd_fixture import write_tiny_nsd

from fmri2img.cli import main
from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index
from fmri2img.data.matfile import MatIndexConfig, build_mat_index
from fmri2img.data.nsd_layout import NSDPaths
from fmri2img.errors import DataError
from fmri2img.io.checkpoint import FORMAT, VERSION, load_checkpoint
from fmri2img.io.embedding_table import META_KEY, read_embedding_table, write_embedding_table
from fmri2img.models.pipeline import DecoderPipeline, fit_pipeline

SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
BAD_VALUES = st.sampled_from([math.nan, math.inf, -math.inf])
FRACTION = st.floats(0, 1, exclude_max=True)
MASKS = st.binary(min_size=1, max_size=16)


# ----------------------------------------------------------------------------- helpers
def _truncate(data: bytes, at: float) -> bytes:
    return data[: int(at * len(data))]


def _overwrite(data: bytes, at: float, mask: bytes, lo: int = 0, hi: int | None = None
               ) -> bytes:
    """``data`` with different bytes at a random offset of ``[lo, hi)`` (each byte XORed
    with a non-zero mask byte, so every written byte really changes)."""
    hi = len(data) if hi is None else (hi if hi >= 0 else len(data) + hi)
    lo = lo if lo >= 0 else len(data) + lo
    off = lo + int(at * (hi - lo))
    mask = mask[: hi - off]
    new = bytes(b ^ (m % 255 + 1) for b, m in zip(data[off:off + len(mask)], mask, strict=True))
    return data[:off] + new + data[off + len(new):]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main``'s exit code and its stderr without whitespace (rich folds long paths)."""
    capsys.readouterr()
    rc = main(argv)
    return rc, "".join(capsys.readouterr().err.split())


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    assert left == [], left


def _check(rc: int, err: str, allowed: tuple[int, ...], *, output: Path, corrupted: Path,
           written: bytes, scratch: Path) -> None:
    """The command's outcome: an allowed exit code, a refusal naming the file and leaving no
    output, no temporaries, and the input holding exactly what the test wrote."""
    assert rc in allowed, err
    if rc == 2:
        assert corrupted.name in err, err
        assert not output.exists(), sorted(output.rglob("*"))
    assert "Traceback" not in err
    _no_temporaries(scratch)
    assert corrupted.read_bytes() == written


# ----------------------------------------------------------------------------- NSD betas
@pytest.fixture(scope="module")
def nsd_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corrupt_nsd")
    return {fmt: write_tiny_nsd(base / fmt, formats=(fmt,)).root for fmt in ("hdf5", "nifti")}


def _nsd_case(root: Path, fmt: str, corrupt: Callable[[Path], None],
              capsys: pytest.CaptureFixture[str], allowed: tuple[int, ...] = (2,)) -> str:
    """Copy the tiny NSD, let ``corrupt`` rewrite session 1's betas, run build-index."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        copy = scratch / "nsd"
        shutil.copytree(root, copy)
        target = NSDPaths(copy).betas_session(1, 1, fmt)
        corrupt(target)
        written = target.read_bytes()
        out = scratch / "out"
        rc, err = _run(["build-index", "--nsd-root", str(copy), "--subject", "subj01",
                        "--output", str(out / "subj01.parquet")], capsys)
        _check(rc, err, allowed, output=out, corrupted=target, written=written,
               scratch=scratch)
        return err


def _write_betas(path: Path, vol: np.ndarray) -> None:
    """(X, Y, Z, T) values as NSD stores them: HDF5 (T, Z, Y, X) one chunk per voxel, or
    NIfTI."""
    if path.name.endswith(".hdf5"):
        path.unlink()
        with h5py.File(path, "w") as f:
            data = np.ascontiguousarray(vol.transpose(3, 2, 1, 0)) if vol.ndim == 4 else vol
            chunks = (data.shape[0], 1, 1, 1) if data.ndim == 4 else None
            f.create_dataset("betas", data=data, chunks=chunks)
    else:
        nib.save(nib.Nifti1Image(vol, np.diag([1.8, 1.8, 1.8, 1.0])), path)


def _read_betas(path: Path) -> np.ndarray:
    if path.name.endswith(".hdf5"):
        with h5py.File(path, "r") as f:
            return f["betas"][()].transpose(3, 2, 1, 0)
    return np.asarray(nib.load(path).dataobj)


FORMATS = pytest.mark.parametrize("fmt", ["hdf5", "nifti"])


@FORMATS
@SETTINGS
@given(at=FRACTION)
def test_truncated_betas_are_refused(nsd_roots, capsys, fmt: str, at: float) -> None:
    _nsd_case(nsd_roots[fmt], fmt, lambda p: p.write_bytes(_truncate(p.read_bytes(), at)),
              capsys)


@FORMATS
@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_betas_never_escape(nsd_roots, capsys, fmt: str, at: float,
                                            mask: bytes) -> None:
    """Anywhere in the file: HDF5 holds raw, unchecked int16 chunks, so bytes that land in
    the payload are indistinguishable from data (0); elsewhere they are refused (2). A
    .nii.gz is one checksummed gzip stream, so everything past the gzip header's unchecked
    mtime/flags bytes is detected: random bytes in a NIfTI stream must give 2."""
    _nsd_case(nsd_roots[fmt], fmt,
              lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask,
                                                 lo=0 if fmt == "hdf5" else 10)),
              capsys, allowed=(0, 2) if fmt == "hdf5" else (2,))


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_hdf5_signature_are_refused(nsd_roots, capsys, at: float,
                                                    mask: bytes) -> None:
    _nsd_case(nsd_roots["hdf5"], "hdf5",
              lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask, lo=0, hi=8)), capsys)


@FORMATS
@SETTINGS
@given(voxel=st.integers(0, 10_000), trial=st.integers(0, 749), value=BAD_VALUES)
def test_nan_or_inf_betas_in_the_mask_are_refused(nsd_roots, capsys, fmt: str, voxel: int,
                                                  trial: int, value: float) -> None:
    mask_xyz = np.argwhere(nib.load(NSDPaths(nsd_roots[fmt]).roi(1, "nsdgeneral"))
                           .get_fdata() == 1)
    x, y, z = mask_xyz[voxel % len(mask_xyz)]

    def inject(p: Path) -> None:
        vol = _read_betas(p).astype(np.float32)
        vol[x, y, z, trial] = value
        _write_betas(p, vol)

    err = _nsd_case(nsd_roots[fmt], fmt, inject, capsys)
    assert "NaNorinfinite" in err


@FORMATS
@SETTINGS
@given(axis=st.integers(0, 4), delta=st.sampled_from([-1, 1, 3]))
def test_betas_of_another_shape_are_refused(nsd_roots, capsys, fmt: str, axis: int,
                                            delta: int) -> None:
    """One axis (X, Y, Z or T) shorter or longer, or (axis 4) a 3-D file of one volume."""
    def reshape(p: Path) -> None:
        vol = _read_betas(p)
        if axis == 4:
            vol = vol[..., 0]
        elif delta < 0:
            vol = np.take(vol, range(vol.shape[axis] + delta), axis=axis)
        else:
            pad = [(0, 0)] * 4
            pad[axis] = (0, delta)
            vol = np.pad(vol, pad)
        _write_betas(p, np.ascontiguousarray(vol))

    _nsd_case(nsd_roots[fmt], fmt, reshape, capsys)


# ----------------------------------------------------------------------------- .mat files
def _mat_variables(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 2, size=(12, 16)).astype(float)
    trn, tst = np.repeat(np.arange(12), 3), np.arange(4)
    return {"fmriTrn": rng.normal(size=(len(trn), 20)), "fmriTest": rng.normal(size=(4, 20)),
            "stimTrn": imgs[trn], "stimTest": imgs[tst]}


@pytest.fixture(scope="module")
def mat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corrupt_mat") / "x.mat"
    scipy.io.savemat(path, _mat_variables())
    return path


def _mat_case(source: Path, corrupt: Callable[[Path], None],
              capsys: pytest.CaptureFixture[str], allowed: tuple[int, ...] = (2,)) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        target = scratch / "in" / source.name
        target.parent.mkdir()
        shutil.copyfile(source, target)
        corrupt(target)
        written = target.read_bytes()
        out = scratch / "out"
        rc, err = _run(["build-index", "--mat", str(target), "--output",
                        str(out / "x.parquet")], capsys)
        _check(rc, err, allowed, output=out, corrupted=target, written=written,
               scratch=scratch)
        return err


@SETTINGS
@given(at=FRACTION)
def test_truncated_mat_is_refused(mat_file, capsys, at: float) -> None:
    _mat_case(mat_file, lambda p: p.write_bytes(_truncate(p.read_bytes(), at)), capsys)


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_mat_never_escape(mat_file, capsys, at: float, mask: bytes) -> None:
    """Anywhere: bytes in the descriptive text header or in the raw float64 payload are not
    detectable (0); the rest are refused (2)."""
    _mat_case(mat_file, lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask)), capsys,
              allowed=(0, 2))


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_a_mat_variable_tag_are_refused(mat_file, capsys, at: float,
                                                        mask: bytes) -> None:
    """The first variable's tag (type and byte count, bytes 128..135)."""
    _mat_case(mat_file,
              lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask, lo=128, hi=136)),
              capsys)


@SETTINGS
@given(key=st.sampled_from(["fmriTrn", "fmriTest", "stimTrn", "stimTest"]),
       row=st.integers(0, 100), col=st.integers(0, 100), value=BAD_VALUES)
def test_nan_or_inf_in_mat_is_refused(mat_file, capsys, key: str, row: int, col: int,
                                      value: float) -> None:
    def inject(p: Path) -> None:
        d = _mat_variables()
        a = d[key]
        a[row % a.shape[0], col % a.shape[1]] = value
        scipy.io.savemat(p, d)

    err = _mat_case(mat_file, inject, capsys)
    assert key in err and "NaNorinfinite" in err


@SETTINGS
@given(key=st.sampled_from(["fmriTrn", "fmriTest", "stimTrn", "stimTest"]),
       change=st.sampled_from(["drop_column", "drop_row", "3d", "empty", "string", "complex",
                               "cell", "struct"]))
def test_mat_variables_of_another_shape_or_type_are_refused(mat_file, capsys, key: str,
                                                            change: str) -> None:
    def reshape(p: Path) -> None:
        d: dict[str, object] = dict(_mat_variables())
        a = np.asarray(d[key])
        d[key] = {"drop_column": a[:, :-1], "drop_row": a[:-1], "3d": a[..., None] * [1, 1],
                  "empty": a[:0], "string": "abc", "complex": a + 1j,
                  "cell": np.array([a, "x"], dtype=object), "struct": {"values": a}}[change]
        scipy.io.savemat(p, d)

    err = _mat_case(mat_file, reshape, capsys)
    assert key in err


def test_mat_fmritrn_as_a_string(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "s.mat", {**_mat_variables(), "fmriTrn": "abc"})
    with pytest.raises(DataError, match=r"s\.mat: fmriTrn is a string.*expected a real "
                                        "numeric matrix"):
        build_mat_index(MatIndexConfig(mat=tmp_path / "s.mat", output=tmp_path / "o/x.parquet"))
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- embedding tables
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A .mat index, its embedding table and a ridge decoder trained on them."""
    base = tmp_path_factory.mktemp("corrupt_train")
    scipy.io.savemat(base / "x.mat", _mat_variables())
    index = base / "idx" / "x.parquet"
    assert main(["build-index", "--mat", str(base / "x.mat"), "--output", str(index)]) == 0
    keys = sorted(read_index(index)[0]["stimulus"].unique())
    targets = base / "targets.parquet"
    write_embedding_table(targets, keys, np.random.default_rng(1).normal(size=(len(keys), 8)),
                          meta={"model_id": "toy"})
    out = base / "ridge"
    assert main(["train", "--index", str(index), "--targets", str(targets), "--model-type",
                 "ridge", "--output-dir", str(out)]) == 0
    return {"index": index, "targets": targets, "checkpoint": out / "checkpoints" / "decoder.pt"}


def _file_case(source: Path, corrupt: Callable[[Path], None],
               argv: Callable[[Path, Path], list[str]], capsys: pytest.CaptureFixture[str],
               allowed: tuple[int, ...]) -> str:
    """Copy ``source`` into a scratch folder, let ``corrupt`` rewrite it, run the command
    ``argv(copy, output)`` gives and check the outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        target = scratch / "in" / source.name
        target.parent.mkdir()
        shutil.copyfile(source, target)
        corrupt(target)
        written = target.read_bytes()
        out = scratch / "out"
        rc, err = _run(argv(target, out), capsys)
        _check(rc, err, allowed, output=out, corrupted=target, written=written,
               scratch=scratch)
        return err


def _table_case(trained: dict[str, Path], corrupt: Callable[[Path], None],
                capsys: pytest.CaptureFixture[str], allowed: tuple[int, ...] = (2,)) -> str:
    """``train`` with a corrupted embedding table."""
    return _file_case(trained["targets"], corrupt, lambda table, out: [
        "train", "--index", str(trained["index"]), "--targets", str(table), "--model-type",
        "ridge", "--output-dir", str(out)], capsys, allowed)


def _plain_table(keys: list, rows: list, embedding_type: pa.DataType | None = None) -> pa.Table:
    """A table as another tool would write it: pyarrow directly, no fmri2img metadata."""
    return pa.table({"stimulus": pa.array(keys, pa.string()),
                     "embedding": pa.array(rows, embedding_type or pa.list_(pa.float32()))})


def _table_rows(path: Path) -> tuple[list[str], list[list[float]]]:
    table = pq.read_table(path)
    return table.column("stimulus").to_pylist(), table.column("embedding").to_pylist()


@SETTINGS
@given(at=FRACTION)
def test_truncated_embedding_table_is_refused(trained, capsys, at: float) -> None:
    _table_case(trained, lambda p: p.write_bytes(_truncate(p.read_bytes(), at)), capsys)


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_embedding_table_never_escape(trained, capsys, at: float,
                                                      mask: bytes) -> None:
    """Anywhere: Parquet pages carry no checksum, so bytes in a column the reader does not
    check (stimulus_id, caption, statistics, padding) pass unseen (0); the rest is refused
    (2), the vectors through the table's own checksum."""
    _table_case(trained, lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask)), capsys,
                allowed=(0, 2))


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_embedding_table_footer_are_refused(trained, capsys, at: float,
                                                            mask: bytes) -> None:
    """The footer's length and magic (the last 8 bytes)."""
    _table_case(trained,
                lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask, lo=-8)), capsys)


@SETTINGS
@given(row=st.integers(0, 1000), col=st.integers(0, 7), value=BAD_VALUES,
       fixed=st.booleans())
def test_nan_or_inf_in_embedding_table_is_refused(trained, capsys, row: int, col: int,
                                                  value: float, fixed: bool) -> None:
    keys, rows = _table_rows(trained["targets"])
    row %= len(keys)

    def inject(p: Path) -> None:
        rows[row][col] = value
        pq.write_table(_plain_table(keys, rows, pa.list_(pa.float32(), 8) if fixed else None),
                       p)

    err = _table_case(trained, inject, capsys)
    assert "NaNorinfinite" in err and keys[row] in err


@SETTINGS
@given(row=st.integers(0, 1000), delta=st.sampled_from([-8, -1, 1, 2]))
def test_ragged_embedding_table_is_refused(trained, capsys, row: int, delta: int) -> None:
    keys, rows = _table_rows(trained["targets"])
    row = row % (len(keys) - 1) + 1  # row 0 sets the expected length

    def reshape(p: Path) -> None:
        rows[row] = rows[row][:delta] if delta < 0 else rows[row] + [0.5] * delta
        pq.write_table(_plain_table(keys, rows), p)

    err = _table_case(trained, reshape, capsys)
    assert keys[row] in err and "differentlengths" in err


def test_embedding_table_with_duplicate_keys(tmp_path: Path) -> None:
    pq.write_table(_plain_table(["nsd:1", "nsd:2", "nsd:1"], [[1.0, 0.0], [0.0, 1.0],
                                                               [0.5, 0.5]]), tmp_path / "d.pq")
    with pytest.raises(DataError, match=r"d\.pq: 1 stimulus keys occur more than once "
                                        r"\(first: 'nsd:1'\)"):
        read_embedding_table(tmp_path / "d.pq")


def test_embedding_table_with_ragged_rows(tmp_path: Path) -> None:
    pq.write_table(_plain_table(["a", "b", "c"], [[1.0, 0.0], [0.0, 1.0], [0.5]]),
                   tmp_path / "r.pq")
    with pytest.raises(DataError, match=r"r\.pq: embeddings of different lengths: 'c' \(row 2\) "
                                        r"has 1 values but 'a' \(row 0\) has 2"):
        read_embedding_table(tmp_path / "r.pq")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_embedding_table_with_nan_or_inf(tmp_path: Path, value: float) -> None:
    pq.write_table(_plain_table(["a", "b"], [[1.0, 0.0], [value, 1.0]]), tmp_path / "n.pq")
    with pytest.raises(DataError, match=r"n\.pq: 1 embeddings hold NaN or infinite values "
                                        r"\(first: 'b', row 1\)"):
        read_embedding_table(tmp_path / "n.pq")


@pytest.mark.parametrize("keys,rows,match", [
    (["a", None], [[1.0], [2.0]], r"1 rows have no stimulus key \(first: row 1\)"),
    (["a", "b"], [[1.0], None], r"1 rows have no embedding \(first: 'b', row 1\)"),
    (["a", "b"], [[1.0], [None]], r"the embedding of 'b' \(row 1\) holds null values"),
])
def test_embedding_table_with_nulls(tmp_path: Path, keys, rows, match) -> None:
    pq.write_table(_plain_table(keys, rows), tmp_path / "z.pq")
    with pytest.raises(DataError, match=match):
        read_embedding_table(tmp_path / "z.pq")


def test_embedding_table_metadata_must_agree(tmp_path: Path) -> None:
    table = _plain_table(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    for meta, match in ((b"{not json", "metadata is not JSON"),
                        (json.dumps({"dim": 3}).encode(), "dim=3 but it holds 2"),
                        (json.dumps({"n": 5}).encode(), "n=5 but it holds 2"),
                        (json.dumps({"tokens": 3}).encode(), "tokens=3"),
                        (json.dumps({"checksum": "0"}).encode(), "checksum does not match")):
        pq.write_table(table.replace_schema_metadata({META_KEY: meta}), tmp_path / "m.pq")
        with pytest.raises(DataError, match=match):
            read_embedding_table(tmp_path / "m.pq")


def test_variable_length_lists_of_one_length_are_read(tmp_path: Path) -> None:
    """Tables written by other tools (list<float>, not fixed-size) load when every row has
    the same length; fmri2img's own tables still load."""
    pq.write_table(_plain_table(["a", "b"], [[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]),
                   tmp_path / "l.pq")
    keys, emb, meta, captions = read_embedding_table(tmp_path / "l.pq")
    assert keys == ["a", "b"] and emb.dtype == np.float32 and meta == {} and captions == []
    np.testing.assert_array_equal(emb, [[1, 0, 2], [0, 1, 3]])
    write_embedding_table(tmp_path / "own.pq", ["x", "y"], np.eye(2), meta={"model_id": "m"})
    keys, emb, meta, _ = read_embedding_table(tmp_path / "own.pq")
    assert keys == ["x", "y"] and meta["dim"] == 2 and meta["model_id"] == "m"


# ----------------------------------------------------------------------------- checkpoints
def _ckpt_case(trained: dict[str, Path], corrupt: Callable[[Path], None],
               capsys: pytest.CaptureFixture[str], allowed: tuple[int, ...] = (2,)) -> str:
    """``eval`` with a corrupted decoder checkpoint."""
    return _file_case(trained["checkpoint"], corrupt, lambda ckpt, out: [
        "eval", "--index", str(trained["index"]), "--checkpoint", str(ckpt), "--targets",
        str(trained["targets"]), "--output-dir", str(out), "--n-permutations", "10",
        "--n-bootstrap", "10", "--no-figures"], capsys, allowed)


def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _rewrite(path: Path, change: Callable[[dict], None]) -> None:
    """Load the checkpoint's payload as save_checkpoint wrote it, change it, save it."""
    payload = _payload(path)
    change(payload)
    torch.save(payload, path)


# arrays that predictions are made with (a NaN in a CV score or an alpha is harmless)
USED = ["model/coef", "model/intercept", "pre/mean", "pre/scale"]


@SETTINGS
@given(at=FRACTION)
def test_truncated_checkpoint_is_refused(trained, capsys, at: float) -> None:
    _ckpt_case(trained, lambda p: p.write_bytes(_truncate(p.read_bytes(), at)), capsys)


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_checkpoint_never_escape(trained, capsys, at: float,
                                                 mask: bytes) -> None:
    """Anywhere: torch's zip reader checks no CRC, so bytes in a tensor's raw data (or in
    zip fields it ignores) pass unseen unless they make a weight NaN (0 or 2)."""
    _ckpt_case(trained, lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask)), capsys,
               allowed=(0, 2))


@SETTINGS
@given(at=FRACTION, mask=MASKS)
def test_random_bytes_in_checkpoint_zip_signature_are_refused(trained, capsys, at: float,
                                                              mask: bytes) -> None:
    _ckpt_case(trained,
               lambda p: p.write_bytes(_overwrite(p.read_bytes(), at, mask, lo=0, hi=4)), capsys)


@SETTINGS
@given(name=st.sampled_from(USED), at=FRACTION, value=BAD_VALUES)
def test_nan_or_inf_weights_are_refused(trained, capsys, name: str, at: float,
                                        value: float) -> None:
    def inject(payload: dict) -> None:
        flat = payload["tensors"][name].view(-1)
        flat[int(at * flat.numel())] = value

    err = _ckpt_case(trained, lambda p: _rewrite(p, inject), capsys)
    assert "NaNorinfinite" in err


@SETTINGS
@given(name=st.sampled_from([*USED, "model/alpha", "pre/components"]), axis=st.integers(0, 1),
       delta=st.sampled_from([-1, 1, 2]))
def test_arrays_of_another_shape_are_refused(trained, capsys, name: str, axis: int,
                                             delta: int) -> None:
    """One axis of one array shorter or longer than the recorded model gives it (an array
    the model lacks, pre/components here, added)."""
    def reshape(payload: dict) -> None:
        tensors = payload["tensors"]
        if name not in tensors:
            tensors[name] = torch.zeros(3, tensors["pre/mean"].shape[0])
            return
        t = tensors[name]
        ax = axis % t.ndim
        if delta < 0:
            tensors[name] = t.narrow(ax, 0, t.shape[ax] + delta).clone()
        else:
            shape = list(t.shape)
            shape[ax] = delta
            tensors[name] = torch.cat([t, torch.ones(shape, dtype=t.dtype)], dim=ax)

    err = _ckpt_case(trained, lambda p: _rewrite(p, reshape), capsys)
    assert name.split("/")[1] in err


@pytest.mark.parametrize("change,match", [
    (lambda p: p.update(meta="{not json"), "checkpoint metadata is not JSON"),
    (lambda p: p.update(meta="[1, 2]"), "metadata is a JSON list; expected an object"),
    (lambda p: p.update(meta=7), "metadata is a int; expected a JSON string"),
    (lambda p: p.update(tensors=[1, 2]), "'tensors' is a list; expected a dict"),
    (lambda p: p["tensors"].update(extra="text"), "entry 'extra' is a str"),
    (lambda p: p.update(meta=json.dumps({k: v for k, v in json.loads(p["meta"]).items()
                                         if k != "preprocess"})),
     "metadata lacks 'preprocess'"),
    (lambda p: p.update(meta=json.dumps({**json.loads(p["meta"]), "input_shape": [21]})),
     r"coef has shape \(20, 8\), expected \(21, 8\)"),
    (lambda p: p.update(meta=json.dumps({**json.loads(p["meta"]), "target_mean": [0.0]})),
     r"target_mean has shape \(1,\); expected \(8,\)"),
])
def test_malformed_checkpoints(trained, tmp_path: Path, change, match: str) -> None:
    path = tmp_path / "bad.pt"
    shutil.copyfile(trained["checkpoint"], path)
    _rewrite(path, change)
    with pytest.raises(DataError, match=match) as err:
        DecoderPipeline.load(path)
    assert err.value.path == path


def test_ridge_weights_with_another_number_of_rows(trained, tmp_path: Path, capsys) -> None:
    path = tmp_path / "rows.pt"
    shutil.copyfile(trained["checkpoint"], path)
    _rewrite(path, lambda p: p["tensors"].update(
        {"model/coef": torch.cat([p["tensors"]["model/coef"]] * 2)}))
    with pytest.raises(DataError, match=r"rows\.pt: .*coef has shape \(40, 8\), expected "
                                        r"\(20, 8\)"):
        DecoderPipeline.load(path)
    rc, err = _run(["eval", "--index", str(trained["index"]), "--checkpoint", str(path),
                    "--targets", str(trained["targets"]), "--output-dir",
                    str(tmp_path / "e")], capsys)
    assert rc == 2 and "rows.pt" in err and not (tmp_path / "e").exists()


def test_torch_state_dict_with_a_wrong_shaped_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(16, 6)).astype(np.float32), rng.normal(size=(16, 3))
    pipe = fit_pipeline("mlp", X, Y, pca=None, options={"hidden": [4], "epochs": 1,
                                                       "batch_size": 8})
    path = pipe.save(tmp_path / "mlp.pt", {})
    assert DecoderPipeline.load(path)[0].predict(X).shape == (16, 3)
    name = next(k for k, v in _payload(path)["tensors"].items()
                if k.startswith("model/") and v.ndim == 2)
    _rewrite(path, lambda p: p["tensors"].update({name: torch.zeros(5, 5)}))
    with pytest.raises(DataError, match=rf"(?s)mlp\.pt: .*size mismatch for {name[6:]}"):
        DecoderPipeline.load(path)


def test_checkpoint_tensor_without_a_numpy_form_is_refused(tmp_path: Path) -> None:
    torch.save({"format": FORMAT, "version": VERSION, "meta": "{}", "tensors": {
        "x": torch.zeros(2, dtype=torch.bfloat16)}}, tmp_path / "bf.pt")
    with pytest.raises(DataError, match=r"bf\.pt: checkpoint tensor 'x' \(torch.bfloat16"):
        load_checkpoint(tmp_path / "bf.pt")


# ----------------------------------------------------------------------------- cache identity
def _build(root: Path, index: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["build-index", "--nsd-root", str(root), "--subject", "subj01",
               "--output", str(index)])
    return rc, " ".join(capsys.readouterr().err.split())


def _cache_of(index: Path) -> Path:
    return Path(read_index(index)[1]["cache"])


def _second_root(first: Path, second: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """A copy of the NSD root ``first`` whose session-1 betas are ``change``d."""
    shutil.copytree(first, second)
    p = NSDPaths(second).betas_session(1, 1, "hdf5")
    _write_betas(p, change(_read_betas(p)))


def test_two_nsd_roots_into_one_folder_get_two_caches(tmp_path: Path, capsys) -> None:
    a = write_tiny_nsd(tmp_path / "a").root
    _second_root(a, tmp_path / "b", lambda v: (v // 2).astype(np.int16))
    out = tmp_path / "out" / "subj01.parquet"
    assert _build(a, out, capsys)[0] == 0
    cache_a = _cache_of(out)
    betas_a = np.array(BetaCache(cache_a).betas)
    rc, err = _build(tmp_path / "b", out, capsys)
    assert rc == 0 and "reusing" not in err
    cache_b = _cache_of(out)
    assert cache_b != cache_a
    assert sorted(p.name for p in (tmp_path / "out" / "cache").iterdir()) == sorted(
        [cache_a.name, cache_b.name])
    # each index reads its own root's betas: the same as a build of that root alone
    assert _build(tmp_path / "b", tmp_path / "alone" / "subj01.parquet", capsys)[0] == 0
    np.testing.assert_array_equal(BetaCache(cache_b).betas,
                                  BetaCache(_cache_of(tmp_path / "alone" / "subj01.parquet")).betas)
    assert not np.array_equal(BetaCache(cache_b).betas, betas_a)
    np.testing.assert_array_equal(BetaCache(cache_a).betas, betas_a)  # untouched
    rc, err = _build(a, out, capsys)  # the first root again: its own cache, reused
    assert rc == 0 and "reusing beta cache" in err and _cache_of(out) == cache_a
    manifest = json.loads((cache_a / "manifest.json").read_text())
    recorded = {r["path"] for r in manifest["sources"]}
    assert str(NSDPaths(a).betas_session(1, 1, "hdf5").resolve()) in recorded
    assert all(p.startswith(str(a.resolve())) for p in recorded)
    assert set(manifest["spec"]["source_paths"]) == recorded


def test_second_root_with_nan_betas_is_refused_after_the_first_built(tmp_path: Path,
                                                                     capsys) -> None:
    a = write_tiny_nsd(tmp_path / "a").root
    out = tmp_path / "out" / "subj01.parquet"
    assert _build(a, out, capsys)[0] == 0
    cache_a = _cache_of(out)
    index_before = out.read_bytes()

    def poison(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float32)
        x, y, z = np.argwhere(nib.load(NSDPaths(a).roi(1, "nsdgeneral")).get_fdata() == 1)[0]
        v[x, y, z, 3] = np.nan
        return v

    _second_root(a, tmp_path / "b", poison)
    rc, err = _build(tmp_path / "b", out, capsys)
    assert rc == 2 and "NaN or infinite" in err and "betas_session01.hdf5" in err
    assert "reusing" not in err
    assert [p.name for p in (tmp_path / "out" / "cache").iterdir()] == [cache_a.name]
    assert out.read_bytes() == index_before  # the first index is left as it was
    _no_temporaries(tmp_path / "out")


def test_failed_build_index_leaves_no_cache_folder(tmp_path: Path, capsys) -> None:
    root = write_tiny_nsd(tmp_path / "nsd").root
    p = NSDPaths(root).betas_session(1, 2, "hdf5")
    _write_betas(p, _read_betas(p).astype(np.float32) + np.float32(np.inf))
    rc, err = _build(root, tmp_path / "fresh" / "sub" / "subj01.parquet", capsys)
    assert rc == 2 and "betas_session02.hdf5" in err
    assert not (tmp_path / "fresh").exists()  # nor the folders made for it
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert _build(root, kept / "subj01.parquet", capsys)[0] == 2
    assert [q.name for q in kept.iterdir()] == ["notes.txt"]


def test_two_mat_files_of_one_name_get_two_caches(tmp_path: Path) -> None:
    for folder, seed in (("one", 0), ("two", 1)):
        (tmp_path / folder).mkdir()
        scipy.io.savemat(tmp_path / folder / "x.mat", _mat_variables(seed))
    out = tmp_path / "out" / "x.parquet"
    caches = []
    for folder in ("one", "two"):
        _, meta = build_mat_index(MatIndexConfig(mat=tmp_path / folder / "x.mat", output=out))
        assert not meta["reused"]
        caches.append(Path(meta["cache"]))
        np.testing.assert_allclose(BetaCache(caches[-1]).rows(range(36)),
                                   _mat_variables(["one", "two"].index(folder))["fmriTrn"],
                                   rtol=1e-6)
    assert caches[0] != caches[1]
    _, meta = build_mat_index(MatIndexConfig(mat=tmp_path / "one" / "x.mat", output=out))
    assert meta["reused"] and Path(meta["cache"]) == caches[0]
