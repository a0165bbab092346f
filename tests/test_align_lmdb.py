"""The alignment LMDB: safetensors records (no pickle), atomic writes with a growing map,
splits without shared images, lazy per-process environments."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
from pathlib import Path

import lmdb
import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from fmri2img.data.align_lmdb import (
    AlignLMDB,
    decode_record,
    encode_record,
    split_by_pair,
    write_align_lmdb,
)
from fmri2img.errors import DataError

torch.set_num_threads(1)

C, T, D = 3, 20, 6


def _records(n_pairs: int = 6, per_pair: int = 2, split_of=lambda p: "train"):
    rng = np.random.default_rng(0)
    for p in range(n_pairs):
        fmri = rng.standard_normal(D).astype(np.float32)
        for k in range(per_pair):
            eeg = rng.standard_normal((1, C, T)).astype(np.float32)
            meta = {"label": p % 3, "things_idx": 100 + p, "nsd_idx": 200 + p, "pair": p,
                    "eeg_trial": k}
            yield f"{split_of(p)}_{p:05d}_{k:05d}", {"eeg": eeg, "fmri": fmri}, meta


def _split(p: int) -> str:
    return ("train", "train", "val", "test")[p % 4]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "align.lmdb"
    write_align_lmdb(path, _records(8, 2, _split), {"mix": "cross", "seed": 42})
    return path


def test_record_round_trip() -> None:
    arrays = {"eeg": np.arange(12, dtype=np.float32).reshape(1, 3, 4),
              "fmri": np.ones(5, dtype=np.float32), "idx": np.array([3], dtype=np.int64)}
    meta = {"label": 2, "note": "x"}
    out, back = decode_record(encode_record(arrays, meta))
    assert back == meta
    for k, v in arrays.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == v.dtype
    with pytest.raises(ValueError, match="safetensors"):
        decode_record(b"\x80\x04not a record at all")


def test_dataset_round_trip(db: Path) -> None:
    expected = {key: (arrays, meta) for key, arrays, meta in _records(8, 2, _split)}
    ds = AlignLMDB(db, "train")
    assert len(ds) == 8  # pairs 0, 1, 4, 5 x 2 records
    assert ds.meta_info["mix"] == "cross"
    assert ds.meta_info["counts"] == {"train": 8, "val": 4, "test": 4}
    for i, key in enumerate(ds.keys):
        arrays, meta = expected[key.decode()]
        item = ds[i]
        assert item["eeg"].shape == (C, T) and item["eeg"].dtype == torch.float32
        np.testing.assert_array_equal(item["eeg"].numpy(), arrays["eeg"][0])
        np.testing.assert_array_equal(item["fmri"].numpy(), arrays["fmri"])
        for k in ("label", "things_idx", "nsd_idx", "pair"):
            assert item[k].dtype == torch.long and int(item[k]) == meta[k]
    normed = AlignLMDB(db, "val", normalize_fmri=True)[0]["fmri"]
    assert float(normed.norm()) == pytest.approx(1.0)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["eeg"].shape == (4, C, T) and batch["pair"].shape == (4,)


def test_stored_bytes_are_safetensors_not_pickle(db: Path) -> None:
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        for key, value in txn.cursor():
            if key == b"meta_info":
                assert json.loads(value)["format"] == "fmri2img.align_lmdb"
                continue
            assert not value.startswith(b"\x80")  # a pickle starts with its protocol
            arrays = safetensors.numpy.load(bytes(value))  # readable without fmri2img
            assert set(arrays) == {"eeg", "fmri"}
    env.close()


def test_map_grows_when_full(tmp_path: Path) -> None:
    path = tmp_path / "small.lmdb"
    big = ((f"train_{p:05d}_00000", {"eeg": np.zeros((4, 2000), np.float32),
                                     "fmri": np.zeros(4, np.float32)},
            {"label": 0, "things_idx": p, "nsd_idx": p, "pair": p}) for p in range(300))
    counts = write_align_lmdb(path, big, {}, map_size=64 * 1024)
    assert counts == {"train": 300}
    ds = AlignLMDB(path, "train")
    assert len(ds) == 300 and int(ds[299]["pair"]) == 299


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    def failing():
        for i, rec in enumerate(_records(4, 2)):
            if i == 5:
                raise RuntimeError("killed")
            yield rec

    path = tmp_path / "out.lmdb"
    with pytest.raises(RuntimeError, match="killed"):
        write_align_lmdb(path, failing(), {})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_duplicate_and_reserved_keys_are_refused(tmp_path: Path) -> None:
    rec = next(_records(1, 1))
    with pytest.raises(ValueError, match="duplicate"):
        write_align_lmdb(tmp_path / "a.lmdb", [rec, rec], {})
    with pytest.raises(ValueError, match="reserved"):
        write_align_lmdb(tmp_path / "b.lmdb", [("meta_info", rec[1], rec[2])], {})
    assert not (tmp_path / "a.lmdb").exists()


def test_errors_name_the_file(db: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no records") as err:
        AlignLMDB(db, "holdout")
    assert str(db) in str(err.value)
    with pytest.raises(DataError, match="not found"):
        AlignLMDB(tmp_path / "nowhere", "train")
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"test_00003_00000", b"garbage")
    env.close()
    ds = AlignLMDB(db, "test")
    bad = ds.keys.index(b"test_00003_00000")
    with pytest.raises(DataError, match="corrupt") as err:
        ds[bad]
    assert str(db) in str(err.value) and "test_00003_00000" in str(err.value)


def test_each_worker_opens_its_own_environment(db: Path) -> None:
    ds = AlignLMDB(db, "train")
    assert ds._env is None  # the key listing did not leave a handle behind
    first = ds[0]  # the parent opens one; forked workers must not reuse it
    assert ds._pid == os.getpid()
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    seen = torch.cat([b["pair"] for b in loader])
    assert len(seen) == len(ds)
    assert sorted(seen.tolist()) == sorted(int(ds[i]["pair"]) for i in range(len(ds)))
    assert torch.equal(ds[0]["eeg"], first["eeg"])


def _images(split: np.ndarray, idx: np.ndarray) -> dict[str, set[int]]:
    return {s: set(idx[split == s].tolist()) for s in ("train", "val", "test")}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=80),
       st.integers(0, 5))
def test_no_image_in_two_splits(pairs: list[tuple[int, int]], seed: int) -> None:
    t = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    split = split_by_pair(t, s, seed=seed)
    assert split.shape == t.shape and set(split) <= {"train", "val", "test"}
    for idx in (t, s):
        sets = _images(split, idx)
        assert not sets["train"] & sets["val"]
        assert not sets["train"] & sets["test"]
        assert not sets["val"] & sets["test"]


def test_split_ratios_and_seed() -> None:
    t = np.arange(200)
    s = np.arange(200) + 1000
    t[:10] = 0  # ten pairs share THINGS image 0: one component, all in train
    split = split_by_pair(t, s, seed=42)
    assert set(split[:10]) == {"train"}
    assert (split == "val").sum() == 20 and (split == "test").sum() == 20
    np.testing.assert_array_equal(split, split_by_pair(t, s, seed=42))
    assert not np.array_equal(split, split_by_pair(t, s, seed=1))
    with pytest.raises(ValueError, match="ratios"):
        split_by_pair(t, s, ratios=(0.5, 0.1, 0.1))
