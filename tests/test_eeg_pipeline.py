"""The EEG path on the simulator: THINGS-EEG2 layout -> index + cache -> EEG-to-image
decoding (zero-shot) -> image pairing -> alignment dataset -> aligner -> its evaluation,
through the commands, with the planted effects recovered and silent under the null."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fmri2img as f2i
from fmri2img.cli import main
from fmri2img.data.align_lmdb import AlignLMDB, iter_records
from fmri2img.data.simulate import SimulationConfig, simulate
from fmri2img.data.simulate.eeg import CHANNELS, EEG_DIR, IMAGE_SET, THINGS_DIR, TRAIN_FILE
from fmri2img.data.things_eeg import read_eeg_file, read_image_metadata
from fmri2img.data.things_index import EEGIndexConfig, build_eeg_index
from fmri2img.data.trials import IndexData, Targets
from fmri2img.errors import DataError

torch.set_num_threads(1)

SMALL_EEG = {"train_concepts": 30, "images_per_concept": 4, "train_repetitions": 2,
             "test_concepts": 40, "test_repetitions": 4, "pairs": 30, "image_size": 16,
             "snr": 0.4}  # a strong planted code: the test is recovery vs the null


def _simulate(path: Path, **eeg: float) -> Path:
    cfg = SimulationConfig.from_scale("small", subjects=(1,), write_images=True,
                                      eeg={**SMALL_EEG, **eeg})
    return simulate(path, cfg, progress=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _simulate(tmp_path_factory.mktemp("eegsim") / "root")


@pytest.fixture(scope="module")
def eeg_index(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eegidx") / "sub-01.parquet"
    build_eeg_index(EEGIndexConfig(eeg_root=root / THINGS_DIR / EEG_DIR, subject="sub-01",
                                   output=out))
    return out


def test_simulated_layout_reads_as_things_eeg2(root: Path) -> None:
    eeg = read_eeg_file(root / THINGS_DIR / EEG_DIR / "sub-01" / TRAIN_FILE)
    assert eeg.flavour == "250hz" and eeg.ch_names == list(CHANNELS)
    assert eeg.data.shape == (120, 2, 63, 250) and eeg.sfreq == pytest.approx(250.0)
    assert eeg.times[0] == pytest.approx(0.0)  # the 50 pre-stimulus samples were cut
    meta = read_image_metadata(root / THINGS_DIR / IMAGE_SET / "image_metadata.npy")
    assert len(meta.train_files) == 120 and len(meta.test_files) == 40
    assert not set(meta.train_concepts) & set(meta.test_concepts)
    first = root / THINGS_DIR / IMAGE_SET / "training_images" / meta.train_concepts[0]
    assert (first / meta.train_files[0]).exists()
    truth = json.loads((root / THINGS_DIR / "ground_truth.json").read_text())
    assert len(truth["pairs"]) == 30 and not truth["null"]
    table = Targets.open(root / "targets" / "clip_like.parquet")
    assert all(t in table.keys and n in table.keys for t, n in truth["pairs"])


def test_index_rows_splits_and_shapes(eeg_index: Path) -> None:
    data = IndexData.open(eeg_index)
    df = data.frame
    assert len(df) == 120 * 2 + 40 * 4 and data.sample_shape == (63, 200)
    assert data.meta["eeg"]["sfreq"] == 200.0 and data.meta["modality"] == "eeg"
    concepts = {s: set(df.loc[df["split"] == s, "label"]) for s in ("train", "val", "test")}
    assert concepts["val"] and not concepts["val"] & concepts["train"]
    assert not concepts["test"] & (concepts["train"] | concepts["val"])  # zero-shot
    x = data.betas(df.iloc[:3])
    assert x.shape == (3, 63, 200) and x.dtype == np.float32 and np.isfinite(x).all()
    files = data.meta["stimuli"]["files"]
    assert Path(data.meta["stimuli"]["root"], files[df["stimulus"].iloc[0]]).exists()


def test_cache_is_keyed_by_the_rate_and_reused(root: Path, eeg_index: Path,
                                               tmp_path: Path) -> None:
    src = root / THINGS_DIR / EEG_DIR
    first = IndexData.open(eeg_index).cache.dir
    _, meta = build_eeg_index(EEGIndexConfig(eeg_root=src, subject=1, output=eeg_index))
    assert meta["reused"] and Path(meta["cache"]) == first
    _, other = build_eeg_index(EEGIndexConfig(eeg_root=src, subject=1, sfreq=250,
                                              output=tmp_path / "x.parquet",
                                              cache_dir=first.parent))
    assert not other["reused"] and Path(other["cache"]) != first
    assert IndexData.open(tmp_path / "x.parquet").sample_shape == (63, 250)


def _copy_layout(root: Path, dst: Path) -> Path:
    src = root / THINGS_DIR
    (dst / EEG_DIR / "sub-01").mkdir(parents=True)
    (dst / IMAGE_SET).mkdir()
    (dst / IMAGE_SET / "image_metadata.npy").write_bytes(
        (src / IMAGE_SET / "image_metadata.npy").read_bytes())
    for f in (src / EEG_DIR / "sub-01").iterdir():
        (dst / EEG_DIR / "sub-01" / f.name).write_bytes(f.read_bytes())
    return dst / EEG_DIR


@pytest.mark.parametrize("damage", ["nan", "shape", "truncated"])
def test_bad_files_stop_with_the_file_named_and_nothing_written(
        root: Path, tmp_path: Path, damage: str) -> None:
    eeg_root = _copy_layout(root, tmp_path / "copy")
    path = eeg_root / "sub-01" / TRAIN_FILE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        if damage == "nan":
            obj["preprocessed_eeg_data"][7, 1, 3, 10] = np.nan
        else:
            obj["preprocessed_eeg_data"] = obj["preprocessed_eeg_data"][:-4]
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)
    out = tmp_path / "idx" / "sub-01.parquet"
    with pytest.raises(DataError) as err:
        build_eeg_index(EEGIndexConfig(eeg_root=eeg_root, subject=1, output=out))
    assert str(path) in str(err.value)
    if damage == "nan":
        assert "image 7 repetition 1" in str(err.value)
    assert not out.exists() and not any((tmp_path / "idx").glob("cache/*")) \
        if (tmp_path / "idx").exists() else True


def _zero_shot(tmp: Path, index: Path, targets: Path) -> dict:
    assert main(["train", "--index", str(index), "--targets", str(targets), "--model-type",
                 "eeg_conv", "--output-dir", str(tmp / "conv"), "--epochs", "25"]) == 0
    assert main(["eval", "--index", str(index), "--checkpoint",
                 str(tmp / "conv" / "checkpoints" / "decoder.pt"), "--output-dir",
                 str(tmp / "eval"), "--pool-size", "40", "--n-pools", "1", "--ks", "1", "5",
                 "--n-permutations", "200", "--n-bootstrap", "500", "--no-figures"]) == 0
    return json.loads((tmp / "eval" / "metrics.json").read_text())


def test_eeg_decoding_recovers_the_planted_code_and_is_silent_under_the_null(
        root: Path, eeg_index: Path, tmp_path: Path) -> None:
    m = _zero_shot(tmp_path / "planted", eeg_index, root / "targets" / "clip_like.parquet")
    assert m["gallery_size"] == 40 and m["n_items"] == 40
    assert m["ci"]["retrieval_top5"][0] > m["chance"]["retrieval_top5"]
    assert m["ci"]["two_way"][0] > 0.6 and m["p_vs_chance"]["two_way"] < 0.01

    null_root = _simulate(tmp_path / "null", snr=0.0)
    idx = tmp_path / "null_idx" / "sub-01.parquet"
    build_eeg_index(EEGIndexConfig(eeg_root=null_root / THINGS_DIR / EEG_DIR, subject=1,
                                   output=idx))
    n = _zero_shot(tmp_path / "null_run", idx, null_root / "targets" / "clip_like.parquet")
    assert n["p_vs_chance"]["two_way"] > 0.01
    assert n["ci"]["two_way"][0] < 0.5 < n["ci"]["two_way"][1] + 0.05


def test_pairing_dataset_and_aligner_through_the_commands(root: Path, eeg_index: Path,
                                                          tmp_path: Path) -> None:
    targets = root / "targets" / "clip_like.parquet"
    fmri = tmp_path / "subj01_nsd.parquet"
    assert main(["build-index", "--nsd-root", str(root), "--subject", "subj01", "--output",
                 str(fmri)]) == 0
    assert main(["train", "--index", str(fmri), "--targets", str(targets), "--model-type",
                 "ridge", "--output-dir", str(tmp_path / "ridge")]) == 0
    assert main(["pair-images", "--eeg-index", str(eeg_index), "--fmri-index", str(fmri),
                 "--targets", str(targets), "--output-dir", str(tmp_path / "pairs"),
                 "--n-pairs", "40"]) == 0
    summary = json.loads((tmp_path / "pairs" / "pairs_summary.json").read_text())
    assert summary["truth"]["n_true"] == 30 and summary["truth"]["recall"] >= 0.9
    pairs = pd.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    assert pairs["things_key"].is_unique and pairs["nsd_key"].is_unique
    assert (tmp_path / "pairs" / "pairs.csv").read_text().startswith(
        "things_image_index,nsd_image_index,cluster_label")

    lmdb = tmp_path / "align.lmdb"
    assert main(["build-align-dataset", "--pairs", str(tmp_path / "pairs"), "--eeg-index",
                 str(eeg_index), "--fmri-index", str(fmri), "--fmri-checkpoint",
                 str(tmp_path / "ridge" / "checkpoints" / "decoder.pt"), "--output",
                 str(lmdb)]) == 0
    seen: dict[str, set] = {}
    for split in ("train", "val", "test"):
        ds = AlignLMDB(lmdb, split)
        for arrays, meta in iter_records(ds):
            assert arrays["eeg"].shape == (63, 200) and arrays["fmri"].shape == (512,)
            seen.setdefault(split, set()).add(meta["things_key"])
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"])
    assert len(ds) == 2 * len({m["pair"] for _, m in iter_records(ds)})  # 2 EEG reps each

    run = tmp_path / "aligner"
    assert main(["align-train", "--dataset", str(lmdb), "--output-dir", str(run), "--model",
                 "backbone={n_layer: 1, nhead: 4, dim_feedforward: 64}", "--model",
                 "head={kind: attention, n_queries: 4, hidden: 64}", "--train", "epochs=2",
                 "--train", "batch_size=16"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["backbone_init"]["init"] == "random" and summary["epochs_run"] == 2
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert main(["align-eval", "--run-dir", str(run), "--split", "val", "--n-bootstrap",
                 "200"]) == 0
    res = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert res["n_pairs"] == len(seen["val"]) and "eeg_only" in res
    assert 0 <= res["eeg_to_fmri"]["top1"] <= 1 and res["eeg_to_fmri"]["top1_chance"] == \
        pytest.approx(1 / res["n_pairs"])
    # a rerun resumes from the finished run: nothing more to train
    assert main(["align-train", "--dataset", str(lmdb), "--output-dir", str(run), "--model",
                 "backbone={n_layer: 1, nhead: 4, dim_feedforward: 64}", "--model",
                 "head={kind: attention, n_queries: 4, hidden: 64}", "--train", "epochs=2",
                 "--train", "batch_size=16"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"] == 2


def test_api_pairs_and_a_projection_file(root: Path, eeg_index: Path, tmp_path: Path) -> None:
    targets = root / "targets" / "clip_like.parquet"
    fmri = tmp_path / "subj01_nsd.parquet"
    f2i.build_index(fmri, nsd_root=root, subject="subj01")
    pairs = f2i.pair_images(eeg_index, fmri, targets, tmp_path / "pairs", n_pairs=30)
    assert len(pairs) == 30 and pairs["cosine"].is_monotonic_decreasing
    n_vox = IndexData.open(fmri).n_voxels
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "proj.npz", weight=rng.normal(size=(16, n_vox)).astype(np.float32),
             bias=np.zeros(16, np.float32))
    info = f2i.build_align_dataset(tmp_path / "pairs", eeg_index, fmri, tmp_path / "a.lmdb",
                                   fmri_projection=tmp_path / "proj.npz", eeg_mode="mean")
    assert info["fmri_features"] == {"kind": "projection", "dim": 16,
                                     "path": str((tmp_path / "proj.npz").resolve())}
    assert sum(info["counts"].values()) == 30  # one record per pair
    np.savez(tmp_path / "bad.npz", weight=np.zeros((16, n_vox + 1), np.float32),
             bias=np.zeros(16, np.float32))
    with pytest.raises(DataError, match="projection takes"):
        f2i.build_align_dataset(tmp_path / "pairs", eeg_index, fmri, tmp_path / "b.lmdb",
                                fmri_projection=tmp_path / "bad.npz")
    assert not (tmp_path / "b.lmdb").exists()
