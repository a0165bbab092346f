"""End to end through the CLI: simulated data, real .mat data, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from browser import find_chromium, render_dom
from conftest import SHARED_DATA, needs_shared

from fmri2img.cli import main
from fmri2img.data.index import read_index
from fmri2img.data.nsd_layout import NSDPaths


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "nsd"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1", "2"]) == 0
    return root


def test_split_rule_on_simulated_data(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s2.parquet"
    assert main(["build-index", "--nsd-root", str(sim_root), "--subject", "subj02",
                 "--output", str(out)]) == 0
    df, _ = read_index(out)
    mat = scipy.io.loadmat(NSDPaths(sim_root).expdesign)
    mo = mat["masterordering"].ravel().astype(int)
    n_shared = mat["sharedix"].size
    value = mo[df["global_trial"].to_numpy()]
    np.testing.assert_array_equal(df["split"] == "test", value <= n_shared)
    assert set(df.loc[df.split != "test", "split"]) == {"train", "val"}
    assert (value[df["split"].to_numpy() != "test"] > n_shared).all()
    ids = mat["subjectim"][1, value - 1].astype(int) - 1
    np.testing.assert_array_equal(df["stimulus_id"].to_numpy(dtype=int), ids)


def test_imagery_index_on_simulated_data(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "i1.parquet"
    assert main(["build-imagery-index", "--nsd-root", str(sim_root), "--subject", "subj01",
                 "--output", str(out)]) == 0
    df, meta = read_index(out)
    assert df["domain"].value_counts().to_dict() == {"perception": 144, "imagery": 288,
                                                     "attention": 288}
    assert meta["unresolved_vision_trials"] == 0
    assert df.loc[df.domain != "attention", "target_code"].notna().all()
    vis = df[df.domain == "perception"]
    assert (vis.target_code != vis.cue).sum() == 72


def test_study_small_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    args = ["study", "--out", str(out), "--scale", "small", "--subjects", "1", "5"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for word in ("Perception", "Voxels per ROI", "NSD-Imagery", "subj01", "subj05", "ventral",
                 "H1", "ridge", "two_stage", "ratio (cosine)", "Vision-imagery RSA",
                 "Crossover", "EEG -> image, zero-shot 40-way", "image pairing",
                 "EEG-fMRI alignment", "Reconstructions", "untrained test pipeline",
                 "report:"):
        assert word in text
    for name in ("summary.json", "study_config.yaml", "study_result.json",
                 "indices/subj01_nsd.parquet", "indices/subj05_imagery.parquet",
                 "indices/subj01_nsd.splits.json", "data/ground_truth.json",
                 "decoders/subj05/mlp/checkpoints/decoder.pt",
                 "eval/subj01/two_stage/imagery/metrics.json", "rsa/rsa.json", "rsa/rsa.md",
                 "indices/sub-01_things.parquet", "eeg/decoders/sub-01/eeg_conv/eval/metrics.json",
                 "eeg/pairs/pairs_summary.json", "eeg/aligner/eval_test/metrics.json",
                 "reconstruction/subj01/ridge/grid.png",
                 "reconstruction/subj01/ridge/image_metrics.json", "report.html"):
        assert (out / name).exists(), name
    recon = json.loads((out / "reconstruction/subj01/ridge/reconstruct.json").read_text())
    assert recon["untrained_test_pipeline"] is True
    page = (out / "report.html").read_text()
    assert "untrained test pipeline" in page and 'src="http' not in page
    if find_chromium() is not None:  # the page as a browser shows it: every image loads
        dom = render_dom(out / "report.html")
        assert 'data-images-broken="0"' in dom
        assert f'data-images-loaded="{page.count("<img")}"' in dom
    # a second run reuses the simulation and the caches
    assert main(args) == 0


def test_console_script_reports_bad_input(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("fmri2img")
    out = tmp_path / "x.parquet"
    proc = subprocess.run([str(exe), "build-index", "--nsd-root", str(tmp_path), "--subject",
                           "subj01", "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nsd_expdesign.mat" in proc.stderr and "not found" in proc.stderr
    assert not out.exists()


def test_cli_unknown_subject(sim_root: Path, tmp_path: Path) -> None:
    assert main(["build-index", "--nsd-root", str(sim_root), "--subject", "subj11",
                 "--output", str(tmp_path / "x.parquet")]) == 2
    assert not (tmp_path / "x.parquet").exists()


def test_cli_mat_without_keys(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "bad.mat", {"X": np.zeros((2, 2))})
    assert main(["build-index", "--mat", str(tmp_path / "bad.mat"), "--output",
                 str(tmp_path / "o.parquet")]) == 2
    assert not (tmp_path / "o.parquet").exists()


@needs_shared(SHARED_DATA / "miyawaki2008")
def test_cli_real_miyawaki(tmp_path: Path) -> None:
    out = tmp_path / "miyawaki.parquet"
    mat = SHARED_DATA / "miyawaki2008" / "miyawaki_condition3_alphabet_1a_sharp.mat"
    assert main(["build-index", "--mat", str(mat), "--output", str(out),
                 "--dataset", "miyawaki2008"]) == 0
    df, meta = read_index(out)
    assert df["dataset"].unique().tolist() == ["miyawaki2008"]
    assert (Path(meta["cache"]) / "stimuli.npy").exists()
