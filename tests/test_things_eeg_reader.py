"""THINGS-EEG2 reader: the three preprocessed flavours, image metadata and folders, the
restricted unpickler, the consistency checks and Fourier resampling, on tiny fake files
written in the published layouts (docs/THINGS_EEG_FORMAT.md, section 1)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from PIL import Image

from fmri2img.data import things_eeg
from fmri2img.data.things_eeg import (
    FLAVOURS,
    EEGArray,
    ImageMetadata,
    check_against_metadata,
    check_finite,
    find_eeg_files,
    image_concept,
    read_eeg_file,
    read_image_metadata,
    resample,
    scan_image_folders,
)
from fmri2img.errors import DataError

CH63 = ("Fp1,Fp2,AF7,AF3,AFz,AF4,AF8,F7,F5,F3,F1,F2,F4,F6,F8,FT9,FT7,FC5,FC3,FC1,FCz,FC2,FC4,"
        "FC6,FT8,FT10,T7,C5,C3,C1,Cz,C2,C4,C6,T8,TP9,TP7,CP5,CP3,CP1,CPz,CP2,CP4,CP6,TP8,TP10,"
        "P7,P5,P3,P1,Pz,P2,P4,P6,P8,PO7,PO3,POz,PO4,PO8,O1,Oz,O2").split(",")
CH17 = "Pz,P3,P7,O1,Oz,O2,P4,P8,P1,P5,PO7,PO3,POz,PO4,PO8,P6,P2".split(",")
TRAIN_CONCEPTS = ["00001_aardvark", "00002_aircraft_carrier"]  # 2 concepts x 10 images
TEST_CONCEPTS = ["00001_abacus", "00002_baby_bottle", "00003_cable_car"]  # 3 x 1
N_TRAIN, N_TEST = 20, 3
TIMES_300 = -0.2 + np.arange(300) / 250.0  # the uncut -0.2..1.0 s epoch at 250 Hz
TIMES_OFFICIAL = -0.2 + np.arange(10) / 100.0


def _name(concept: str) -> str:
    return concept.split("_", 1)[1]


def _train_images() -> list[tuple[str, str]]:
    """(folder, file) in sorted training order."""
    return [(c, f"{_name(c)}_{k:02d}b.jpg") for c in TRAIN_CONCEPTS for k in range(1, 11)]


def _test_images() -> list[tuple[str, str]]:
    return [(c, f"{_name(c)}_01s.jpg") for c in TEST_CONCEPTS]


def _eeg(n_img: int, n_rep: int, n_ch: int, n_t: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(n_img * 1000 + n_rep)
    return rng.standard_normal((n_img, n_rep, n_ch, n_t)).astype(dtype)


def _npy_dict(n_img: int, n_rep: int, official: bool) -> dict:
    if official:
        return {"preprocessed_eeg_data": _eeg(n_img, n_rep, 17, 10, np.float64),
                "ch_names": list(CH17), "times": TIMES_OFFICIAL.copy()}
    return {"preprocessed_eeg_data": _eeg(n_img, n_rep, 63, 250),
            "ch_names": list(CH63), "times": TIMES_300.copy()}


def write_official(path: Path, n_img: int = N_TRAIN, n_rep: int = 4, **over) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, {**_npy_dict(n_img, n_rep, official=True), **over})
    return path


def write_250hz(path: Path, n_img: int = N_TRAIN, n_rep: int = 4, **over) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump({**_npy_dict(n_img, n_rep, official=False), **over}, f, protocol=4)
    return path


def whiten_dict(which: str = "train", n_rep: int | None = None) -> dict:
    concepts = TRAIN_CONCEPTS if which == "train" else TEST_CONCEPTS
    images = _train_images() if which == "train" else _test_images()
    split_dir = "train_images" if which == "train" else "test_images"
    n_rep = n_rep or (4 if which == "train" else 80)
    n_img = len(images)
    label = torch.tensor([concepts.index(c) for c, _ in images])[:, None].repeat(1, n_rep)
    return {
        "eeg": torch.from_numpy(_eeg(n_img, n_rep, 63, 250, np.float16)),
        "label": label,
        "img": [f"{split_dir}/{c}/{f}" for c, f in images],
        "text": [_name(c) for c, _ in images],
        "session": torch.arange(n_rep)[None, :].repeat(n_img, 1) // max(1, n_rep // 4) + 1,
        "ch_names": list(CH63),
        "times": torch.from_numpy(TIMES_300[50:].copy()),
    }


def write_whiten(path: Path, which: str = "train", **over) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**whiten_dict(which), **over}, path)
    return path


def write_metadata(path: Path, flavour: str = "np.save", bare: bool = True) -> Path:
    def files(images):
        return [f if bare else f"{c}/{f}" for c, f in images]
    meta = {
        "train_img_files": files(_train_images()),
        "train_img_concepts": [c for c, _ in _train_images()],
        "train_img_concepts_THINGS": [f"{i:05d}_{_name(c)}" for i, (c, _) in
                                      enumerate(_train_images(), 1)],
        "test_img_files": files(_test_images()),
        "test_img_concepts": [c for c, _ in _test_images()],
        "test_img_concepts_THINGS": ["00010_abacus", "00020_baby_bottle", "00030_cable_car"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if flavour == "np.save":
        np.save(path, meta)
    else:
        with path.open("wb") as f:
            pickle.dump(meta, f, protocol=4)
    return path


def write_image_folders(root: Path, train_dir: str = "training_images") -> Path:
    for split, images in ((train_dir, _train_images()), ("test_images", _test_images())):
        for c, f in reversed(images):  # written out of order: the reader must sort
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (len(f) * 7 % 255, 0, 0)).save(root / split / c / f)
    (root / train_dir / TRAIN_CONCEPTS[0] / ".DS_Store").write_bytes(b"x")
    return root


class Evil:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Opaque:
    """A harmless class torch's weights_only unpickler does not know."""


# ---------------------------------------------------------------- the three flavours


def test_official_np_save(tmp_path: Path) -> None:
    path = write_official(tmp_path / "preprocessed_data/sub-01/preprocessed_eeg_training.npy")
    eeg = read_eeg_file(path)
    assert isinstance(eeg, EEGArray)
    assert eeg.flavour == "official" and eeg.path == path
    assert eeg.data.shape == (N_TRAIN, 4, 17, 10) and eeg.data.dtype == np.float64
    assert eeg.ch_names == CH17 and all(type(c) is str for c in eeg.ch_names)
    np.testing.assert_allclose(eeg.times, TIMES_OFFICIAL)
    assert eeg.sfreq == 100.0
    assert eeg.sessions is None and eeg.image_files is None and eeg.concepts is None
    np.testing.assert_array_equal(eeg.data, _npy_dict(N_TRAIN, 4, True)["preprocessed_eeg_data"])


def test_250hz_pickle_dump_and_times_quirk(tmp_path: Path, caplog) -> None:
    path = write_250hz(tmp_path / "Preprocessed_data_250Hz/sub-01/preprocessed_eeg_test.npy",
                       N_TEST, 80)
    # the published quirk: np.load returns the dict itself, .item() would fail
    assert isinstance(np.load(path, allow_pickle=True), dict)
    with caplog.at_level(logging.INFO, logger="fmri2img.data.things_eeg"):
        eeg = read_eeg_file(path)
    assert eeg.flavour == "250hz"
    assert eeg.data.shape == (N_TEST, 80, 63, 250) and eeg.data.dtype == np.float32
    assert eeg.ch_names == CH63
    assert len(eeg.times) == 250
    np.testing.assert_allclose(eeg.times, TIMES_300[50:])
    assert eeg.times[0] == pytest.approx(0.0, abs=1e-12)
    assert eeg.sfreq == 250.0
    assert "last 250" in caplog.text


@pytest.mark.parametrize("container", ["np.save", "pickle.dump"])
@pytest.mark.parametrize("flavour", ["official", "250hz"])
def test_both_npy_containers_read_for_both_flavours(tmp_path: Path, container: str,
                                                    flavour: str) -> None:
    raw = _npy_dict(2, 3, official=flavour == "official")
    path = tmp_path / "x.npy"
    if container == "np.save":
        np.save(path, raw)
    else:
        with path.open("wb") as f:
            pickle.dump(raw, f, protocol=4)
    eeg = read_eeg_file(path, flavour)
    assert eeg.flavour == flavour
    np.testing.assert_array_equal(eeg.data, raw["preprocessed_eeg_data"])
    assert len(eeg.times) == eeg.data.shape[-1]


def test_whiten(tmp_path: Path) -> None:
    path = write_whiten(tmp_path / "Preprocessed_data_250Hz_whiten/sub-01/train.pt")
    eeg = read_eeg_file(path)
    assert eeg.flavour == "whiten"
    assert eeg.data.shape == (N_TRAIN, 4, 63, 250) and eeg.data.dtype == np.float16
    assert eeg.sfreq == 250.0 and len(eeg.times) == 250
    assert eeg.sessions.shape == (N_TRAIN, 4)
    np.testing.assert_array_equal(eeg.sessions[0], [1, 2, 3, 4])
    assert eeg.labels.shape == (N_TRAIN, 4)
    np.testing.assert_array_equal(eeg.labels[:, 0], [0] * 10 + [1] * 10)
    assert eeg.image_files[0] == "train_images/00001_aardvark/aardvark_01b.jpg"
    assert eeg.concepts[10] == "aircraft_carrier"


def test_whiten_numpy_times_of_300_and_list_sessions(tmp_path: Path, caplog) -> None:
    # numpy values need NumPy's globals under weights_only: allowed without allow_pickle
    session = [[1, 1, 2, 2]] * N_TRAIN
    path = write_whiten(tmp_path / "train.pt", times=TIMES_300.copy(), session=session)
    with caplog.at_level(logging.WARNING):
        eeg = read_eeg_file(path)
    assert "trusted" not in caplog.text
    np.testing.assert_allclose(eeg.times, TIMES_300[50:])
    np.testing.assert_array_equal(eeg.sessions, np.array(session))


def test_whiten_with_python_objects_needs_allow_pickle(tmp_path: Path, caplog) -> None:
    path = write_whiten(tmp_path / "train.pt", extra=Opaque())
    with pytest.raises(DataError, match="allow_pickle=True") as err:
        read_eeg_file(path)
    assert "pickled Python objects" in str(err.value) and "Opaque" in str(err.value)
    assert err.value.path == path
    with caplog.at_level(logging.WARNING):
        eeg = read_eeg_file(path, allow_pickle=True)
    assert eeg.data.shape == (N_TRAIN, 4, 63, 250)
    assert "trusted" in caplog.text


def test_whiten_bad_per_trial_and_per_image_values(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'session' has shape \(4, 20\)"):
        read_eeg_file(write_whiten(tmp_path / "a.pt", session=torch.ones(4, N_TRAIN)))
    with pytest.raises(DataError, match="'img' has 3 entries"):
        read_eeg_file(write_whiten(tmp_path / "b.pt", img=["a", "b", "c"]))
    flat = whiten_dict()["label"].reshape(-1)
    eeg = read_eeg_file(write_whiten(tmp_path / "c.pt", label=flat.float()))
    assert eeg.labels.shape == (N_TRAIN, 4) and eeg.labels.dtype == np.int64


def test_auto_flavour_detection(tmp_path: Path) -> None:
    official = write_official(tmp_path / "a/preprocessed_eeg_training.npy")
    hz250 = write_250hz(tmp_path / "b/preprocessed_eeg_training.npy")
    whiten = write_whiten(tmp_path / "c/train.pt")
    renamed = tmp_path / "c/train.bin"
    renamed.write_bytes(whiten.read_bytes())
    assert [read_eeg_file(p).flavour for p in (official, hz250, whiten, renamed)] == \
        ["official", "250hz", "whiten", "whiten"]
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"hello world")
    with pytest.raises(DataError, match="cannot tell"):
        read_eeg_file(junk)
    with pytest.raises(ValueError, match="flavour"):
        read_eeg_file(official, "bogus")
    assert set(FLAVOURS) == {"official", "250hz", "whiten"}


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("writer", [write_official, write_250hz, write_whiten])
def test_truncated_file_names_the_file(tmp_path: Path, writer) -> None:
    good = writer(tmp_path / ("f.pt" if writer is write_whiten else "f.npy"))
    path = tmp_path / f"cut{good.suffix}"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_eeg_file(path)
    assert err.value.path == path and str(path) in str(err.value)


@pytest.mark.parametrize("size", [0, 3])
def test_tiny_and_missing_files(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.npy"
    path.write_bytes(b"\x80\x04\x95"[:size])
    with pytest.raises(DataError):
        read_eeg_file(path)
    with pytest.raises(DataError, match="not found"):
        read_eeg_file(tmp_path / "missing.npy")


def test_wrong_keys_names_missing_and_found(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, {"eeg_data": np.zeros((1, 1, 1, 2)), "ch_names": ["a"]})
    with pytest.raises(DataError, match="missing keys") as err:
        read_eeg_file(path)
    msg = str(err.value)
    assert "preprocessed_eeg_data" in msg and "times" in msg and "eeg_data" in msg


def test_plain_numeric_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(DataError, match="plain float64 array"):
        read_eeg_file(path)


@pytest.mark.parametrize(("over", "match"), [
    ({"preprocessed_eeg_data": np.zeros((2, 17, 10))}, "expected 4 axes"),
    ({"ch_names": CH17[:-1]}, "16 channel names for 17 channels"),
    ({"times": -0.2 + np.arange(60) / 100.0}, "60 values but the data have 10 samples"),
    ({"times": TIMES_OFFICIAL[:9]}, "9 values"),
    ({"times": np.r_[TIMES_OFFICIAL[:5], TIMES_OFFICIAL[6:], 0.9]}, "evenly spaced"),
    ({"ch_names": "Pz"}, "one string"),
])
def test_bad_official_contents(tmp_path: Path, over: dict, match: str) -> None:
    path = write_official(tmp_path / "f.npy", 2, 4, **over)
    with pytest.raises(DataError, match=match):
        read_eeg_file(path)


def test_250hz_times_matching_neither(tmp_path: Path) -> None:
    path = write_250hz(tmp_path / "f.npy", 2, 4, times=TIMES_300[:200])
    with pytest.raises(DataError, match="200 values but the data have 250"):
        read_eeg_file(path)


def test_numpy1_protocol2_pickle_reads(tmp_path: Path) -> None:
    # files written under NumPy 1 name numpy.core.*; protocol 2 spells bytes as
    # _codecs.encode(text, "latin1") and numpy scalars via multiarray.scalar
    raw = {**_npy_dict(2, 4, official=True), "extra": np.float64(2.5)}
    stream = pickle.dumps(raw, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in stream and b"_codecs" in stream
    path = tmp_path / "old.npy"
    path.write_bytes(stream)
    eeg = read_eeg_file(path, "official")
    np.testing.assert_array_equal(eeg.data, raw["preprocessed_eeg_data"])
    evil = stream.replace(b"latin1", b"zlib\x00\x00")  # same length: only the codec differs
    path.write_bytes(evil)
    with pytest.raises(DataError, match=r"^\S+: refusing to unpickle codecs\.encode"):
        read_eeg_file(path, "official")


@pytest.mark.parametrize("container", ["np.save", "pickle.dump"])
def test_forbidden_global_is_refused_without_running(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "marker"
    payload = {"preprocessed_eeg_data": Evil(marker), "ch_names": [], "times": []}
    path = tmp_path / "evil.npy"
    if container == "np.save":
        np.save(path, np.array(payload, dtype=object), allow_pickle=True)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f, protocol=4)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt)\.system"):
        read_eeg_file(path)
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_image_metadata(path)
    assert not marker.exists()


# ---------------------------------------------------------------- images and metadata


@pytest.mark.parametrize("container", ["np.save", "pickle.dump"])
def test_read_image_metadata(tmp_path: Path, container: str) -> None:
    path = write_metadata(tmp_path / "image_metadata.npy", container)
    meta = read_image_metadata(path)
    assert isinstance(meta, ImageMetadata) and meta.path == path
    assert len(meta.train_files) == N_TRAIN and len(meta.test_files) == N_TEST
    assert meta.train_files[0] == "aardvark_01b.jpg"  # bare names kept as given
    assert meta.train_concepts[10] == "00002_aircraft_carrier"
    assert meta.test_concepts_things[0] == "00010_abacus"
    assert len(meta.train_concepts_things) == N_TRAIN


def test_image_metadata_missing_keys_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "image_metadata.npy"
    np.save(path, {"train_img_files": ["a.jpg"], "test_img_files": []})
    with pytest.raises(DataError, match="missing keys") as err:
        read_image_metadata(path)
    assert "train_img_concepts" in str(err.value) and "test_img_files" in str(err.value)
    np.save(path, {"train_img_files": ["a.jpg"], "train_img_concepts": [],
                   "test_img_files": [], "test_img_concepts": []})
    with pytest.raises(DataError, match="has 0 entries but train_img_files has 1"):
        read_image_metadata(path)


@pytest.mark.parametrize("train_dir", ["training_images", "train_images"])
def test_scan_image_folders(tmp_path: Path, train_dir: str) -> None:
    root = write_image_folders(tmp_path / "images", train_dir)
    meta = scan_image_folders(root)
    assert meta.train_files == [f"{c}/{f}" for c, f in _train_images()]
    assert meta.train_concepts == [c for c, _ in _train_images()]
    assert meta.test_files[2] == "00003_cable_car/cable_car_01s.jpg"
    assert meta.test_concepts == TEST_CONCEPTS
    assert meta.train_concepts_things is None and meta.path == root


def test_scan_image_folders_errors(tmp_path: Path) -> None:
    root = write_image_folders(tmp_path / "images")
    (root / "train_images").mkdir()
    with pytest.raises(DataError, match="both"):
        scan_image_folders(root)
    (root / "train_images").rmdir()
    (root / "test_images" / "notanumber").mkdir()
    with pytest.raises(DataError, match="not <number>_<concept>"):
        scan_image_folders(root)
    with pytest.raises(DataError, match="no training_images"):
        scan_image_folders(tmp_path)


def test_image_concept() -> None:
    assert image_concept("00001_aircraft_carrier") == (1, "aircraft_carrier")
    assert image_concept("01654_zucchini") == (1654, "zucchini")
    with pytest.raises(DataError):
        image_concept("aardvark")


# ---------------------------------------------------------------- checks


def test_check_against_metadata(tmp_path: Path) -> None:
    meta = read_image_metadata(write_metadata(tmp_path / "image_metadata.npy"))
    train = read_eeg_file(write_official(tmp_path / "train.npy"))
    test = read_eeg_file(write_official(tmp_path / "test.npy", N_TEST, 80))
    check_against_metadata(train, meta, "train")
    check_against_metadata(test, meta, "test")
    with pytest.raises(DataError) as err:
        check_against_metadata(test, meta, "train")
    msg = str(err.value)
    assert err.value.path == test.path and "3 images" in msg and "lists 20 train" in msg
    assert str(meta.path) in msg
    short = read_eeg_file(write_official(tmp_path / "short.npy", N_TRAIN, 2))
    check_against_metadata(short, meta, "train")  # fewer repetitions than the release: logged
    with pytest.raises(DataError, match="2 repetitions per image; expected 4"):
        check_against_metadata(short, meta, "train", expected_reps=4)


@pytest.mark.parametrize("bare", [True, False])
def test_check_whiten_against_metadata(tmp_path: Path, bare: bool) -> None:
    meta = read_image_metadata(write_metadata(tmp_path / "m.npy", bare=bare))
    scanned = scan_image_folders(write_image_folders(tmp_path / "images", "train_images"))
    eeg = read_eeg_file(write_whiten(tmp_path / "train.pt"))
    check_against_metadata(eeg, meta, "train")
    check_against_metadata(eeg, scanned, "train")
    check_against_metadata(read_eeg_file(write_whiten(tmp_path / "test.pt", "test")), meta,
                           "test")
    eeg.image_files = eeg.image_files[::-1]
    with pytest.raises(DataError, match="image files differ.*image 0"):
        check_against_metadata(eeg, meta, "train")
    eeg.image_files = None
    eeg.concepts = ["a photo of an aardvark"] * 10 + ["aircraft carrier"] * 10
    check_against_metadata(eeg, meta, "train")
    eeg.concepts[3] = "aardvarks"
    with pytest.raises(DataError, match="1 concepts differ.*image 3"):
        check_against_metadata(eeg, meta, "train")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_finite(tmp_path: Path, monkeypatch, bad: float) -> None:
    eeg = read_eeg_file(write_official(tmp_path / "f.npy"))
    check_finite(eeg)
    eeg.data[13, 2, 5, 7] = bad
    eeg.data[17, 0, 0, 0] = bad
    monkeypatch.setattr(things_eeg, "_BLOCK_ELEMS", 3 * 4 * 17 * 10)  # blocks of 3 images
    with pytest.raises(DataError, match="image 13, repetition 2") as err:
        check_finite(eeg)
    assert err.value.path == eeg.path


# ---------------------------------------------------------------- resampling


def test_resample_250_to_200(monkeypatch) -> None:
    times = np.arange(250) / 250.0
    rng = np.random.default_rng(0)
    data = np.sin(2 * np.pi * 10 * times) * rng.uniform(0.5, 2, (5, 4, 3, 1))
    data += 0.01 * rng.standard_normal(data.shape)
    monkeypatch.setattr(things_eeg, "_BLOCK_ELEMS", 2 * 4 * 3 * 250)  # blocks of 2 rows
    out, new_times = resample(data, times, 250.0, 200.0)
    assert out.shape == (5, 4, 3, 200) and out.dtype == np.float32
    np.testing.assert_allclose(new_times, np.arange(200) / 200.0)
    expected = scipy.signal.resample(data, 200, axis=-1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    spectrum = np.abs(np.fft.rfft(out, axis=-1)).mean(axis=(0, 1, 2))
    assert np.fft.rfftfreq(200, 1 / 200.0)[spectrum.argmax()] == pytest.approx(10.0)
    half, _ = resample(data.astype(np.float16), times, 250.0, 200.0)
    np.testing.assert_allclose(half, expected, atol=2e-2)
    one, _ = resample(data[0, 0, 0], times, 250, 200)
    np.testing.assert_allclose(one, expected[0, 0, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="times"):
        resample(data, times[:-1], 250.0, 200.0)
    with pytest.raises(ValueError, match="> 0"):
        resample(data, times, 0.0, 200.0)


# ---------------------------------------------------------------- finding files


def test_find_eeg_files(tmp_path: Path) -> None:
    root = tmp_path / "eeg"
    for split in ("training", "test"):
        write_official(root / f"preprocessed_data/sub-01/preprocessed_eeg_{split}.npy", 2, 4)
    expected = {"train": root / "preprocessed_data/sub-01/preprocessed_eeg_training.npy",
                "test": root / "preprocessed_data/sub-01/preprocessed_eeg_test.npy"}
    assert find_eeg_files(root, "sub-01") == expected
    assert find_eeg_files(root, 1) == expected
    assert find_eeg_files(root / "preprocessed_data", "01")["test"].resolve() == \
        expected["test"].resolve()
    write_whiten(root / "Preprocessed_data_250Hz_whiten/sub-01/train.pt")
    with pytest.raises(DataError, match="missing.*test.pt"):
        find_eeg_files(root, "sub-01", flavour="whiten")
    write_whiten(root / "Preprocessed_data_250Hz_whiten/sub-01/test.pt", "test")
    with pytest.raises(DataError, match="several"):
        find_eeg_files(root, "sub-01")
    assert find_eeg_files(root, "sub-01", flavour="whiten")["train"].name == "train.pt"
    assert find_eeg_files(root, "sub-01", flavour="official") == expected
    with pytest.raises(DataError, match="no THINGS-EEG2"):
        find_eeg_files(root, "sub-02")
    with pytest.raises(DataError, match="no THINGS-EEG2"):
        find_eeg_files(root, "sub-01", flavour="250hz")
    with pytest.raises(DataError, match="not like"):
        find_eeg_files(root, "subject one")
