"""``fmri2img train`` of a torch decoder resumes after SIGKILL: the rerun of the same command
continues from ``OUTPUT_DIR/checkpoints/train_state/last.pt`` and saves the weights an
uninterrupted run saves; a finished run is not trained again, and a state left by other
options is refused (exit 2, naming the file) rather than continued."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmri2img.cli import main
from fmri2img.errors import DataError
from fmri2img.experiments.train_decoder import TrainConfig
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.models.mlp import MLPConfig, MLPDecoder
from fmri2img.models.preprocess import Preprocessor

EPOCHS = 30
KILL_AFTER = 3  # epochs on disk before the kill
STATE = Path("checkpoints") / "train_state" / "last.pt"
DECODER = Path("checkpoints") / "decoder.pt"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Data:
    index: Path
    targets: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("sim")
    idx = root / "subj01.parquet"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1"]) == 0
    assert main(["build-index", "--nsd-root", str(root), "--subject", "subj01",
                 "--output", str(idx)]) == 0
    return Data(idx, root / "targets" / "clip_like.parquet")


def _cmd(data: Data, out: Path, *extra: str) -> list[str]:
    # PCA on: the rerun must rebuild bit-identical inputs, or the trainer's data key
    # differs and it starts over instead of resuming; no early stop: all 30 epochs run
    return [sys.executable, "-m", "fmri2img.cli", "train", "--index", str(data.index),
            "--targets", str(data.targets), "--model-type", "mlp", "--output-dir", str(out),
            "--epochs", str(EPOCHS), "--pca", "100", "--set", "early_stop_patience=null",
            *extra]


def _env() -> dict[str, str]:
    # one thread per process (two run side by side); wide lines: rich wraps log lines at
    # 80 columns when not on a terminal, which would split the messages checked here
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "400"}


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=180)
    done.stdout = " ".join(done.stdout.split())  # log lines as one string, spacing evened
    return done


def _epochs_saved(path: Path) -> int:
    return int(load_checkpoint(path)[1]["epoch"]) if path.exists() else 0


def _wait_for_epochs(proc: subprocess.Popen[str], path: Path, n: int,
                     timeout: float = 120.0) -> None:
    """Until the resume state at ``path`` holds ``n`` finished epochs (it is written
    atomically, so any version seen is whole)."""
    seen = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before being killed:\n"
                        f"{proc.communicate()[0]}")
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            if _epochs_saved(path) >= n:
                return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {n} epochs in {path} after {timeout} s:\n{proc.communicate()[0]}")


def _decoder(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    return load_checkpoint(out / DECODER)


def _assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-equal on a CPU


@dataclass
class Runs:
    reference: Path  # uninterrupted, finished
    killed: Path  # SIGKILLed after `saved` epochs
    saved: int
    unfinished: Path  # a copy of `killed` as the kill left it (the resume test finishes it)


@pytest.fixture(scope="module")
def runs(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """An uninterrupted run and, beside it, one of the same command killed mid-training."""
    base = tmp_path_factory.mktemp("runs")
    ref_out, killed_out = base / "reference", base / "killed"
    ref = _start(_cmd(data, ref_out))
    victim = _start(_cmd(data, killed_out))
    try:
        _wait_for_epochs(victim, killed_out / STATE, KILL_AFTER)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        ref_log = ref.communicate(timeout=180)[0]
    finally:
        for proc in (ref, victim):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert ref.returncode == 0, ref_log
    saved = _epochs_saved(killed_out / STATE)
    assert KILL_AFTER <= saved < EPOCHS
    assert not (killed_out / DECODER).exists()
    shutil.copytree(killed_out, base / "unfinished")
    return Runs(ref_out, killed_out, saved, base / "unfinished")


def test_killed_run_resumes_to_the_uninterrupted_result(data: Data, runs: Runs) -> None:
    done = _run(_cmd(data, runs.killed))
    assert done.returncode == 0, done.stdout
    state = runs.killed / STATE
    assert f"resuming after epoch {runs.saved} of {EPOCHS} ({state})" in done.stdout
    assert "starting over" not in done.stdout

    arrays, meta = _decoder(runs.killed)
    ref_arrays, ref_meta = _decoder(runs.reference)
    _assert_same_weights(arrays, ref_arrays)
    training, ref_training = meta["model_meta"]["training"], ref_meta["model_meta"]["training"]
    assert training["resumed_from"] == runs.saved and ref_training["resumed_from"] == 0
    for key in ("best_epoch", "best_val_loss", "epochs_run", "stopped_early", "train_rows"):
        assert training[key] == ref_training[key], key
    # the recorded options differ only in where each run kept its state
    config = {**meta["model_config"], "checkpoint_dir": None}
    assert config == {**ref_meta["model_config"], "checkpoint_dir": None}
    assert meta["model_config"]["checkpoint_dir"] == str(state.parent)

    summary = pd.read_json(runs.killed / "train_summary.json", typ="series")
    ref_summary = pd.read_json(runs.reference / "train_summary.json", typ="series")
    assert summary["epochs_run"] == ref_summary["epochs_run"] == EPOCHS
    history = pd.read_csv(runs.killed / "logs" / "history.csv")
    ref_history = pd.read_csv(runs.reference / "logs" / "history.csv")
    assert history["epoch"].tolist() == ref_history["epoch"].tolist() == list(
        range(1, EPOCHS + 1))
    for col in ("train_loss", "val_loss", "lr"):
        assert history[col].tolist() == ref_history[col].tolist(), col


def test_rerun_of_a_finished_run_does_not_train_again(data: Data, runs: Runs,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "again"
    shutil.copytree(runs.reference, out)  # a state moved with its folder still resumes
    before = (out / STATE).stat().st_mtime_ns
    done = _run(_cmd(data, out))
    assert done.returncode == 0, done.stdout
    assert f"holds the finished run ({EPOCHS} epochs); not training again" in done.stdout
    assert (out / STATE).stat().st_mtime_ns == before  # no epoch ran, nothing rewritten
    _assert_same_weights(_decoder(out)[0], _decoder(runs.reference)[0])
    assert _decoder(out)[1]["model_meta"]["training"]["resumed_from"] == EPOCHS


def test_state_of_other_options_is_refused(data: Data, runs: Runs, tmp_path: Path) -> None:
    # An unfinished state is refused, not started over (it may be hours of a run restarted
    # with a mistyped option); the message says what to delete.
    out = tmp_path / "other"
    shutil.copytree(runs.unfinished, out)
    before = (out / STATE).read_bytes()
    done = _run(_cmd(data, out, "--set", "lr=3e-4"))
    assert done.returncode == 2, done.stdout
    assert f"{out / STATE}: checkpoint was written with other training options (lr differ)" \
        in done.stdout
    assert f"delete {out / STATE.parent}" in done.stdout
    assert (out / STATE).read_bytes() == before  # the state is kept
    assert not (out / DECODER).exists()


def test_finished_run_with_other_options_trains_again(data: Data, runs: Runs,
                                                       tmp_path: Path) -> None:
    # a study rerun with new model options: the finished run's state is for the old ones
    out = tmp_path / "new_options"
    shutil.copytree(runs.reference, out)
    done = _run(_cmd(data, out, "--set", "lr=3e-4", "--epochs", "2"))
    assert done.returncode == 0, done.stdout
    assert f"{out} was trained with other options; training it again" in done.stdout
    assert _decoder(out)[1]["model_meta"]["training"]["resumed_from"] == 0
    assert _epochs_saved(out / STATE) == 2
    assert _decoder(out)[1]["model_config"]["lr"] == 3e-4


# -- in process: the decoder's part -------------------------------------------------------

def _xy(n: int = 64, p: int = 10, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    return X, (X @ rng.standard_normal((p, d))).astype(np.float32)


def _mlp(**options: object) -> MLPDecoder:
    base: dict[str, object] = {"hidden": [16], "epochs": 4, "batch_size": 16,
                               "early_stop_patience": None}
    return MLPDecoder(10, 6, MLPConfig(**{**base, **options}))


def test_checkpoint_dir_does_not_change_the_result(tmp_path: Path) -> None:
    X, Y = _xy()
    plain = _mlp().fit(X, Y)
    kept = _mlp(checkpoint_dir=tmp_path / "state").fit(X, Y)
    assert (tmp_path / "state" / "last.pt").exists() and (tmp_path / "state" / "best.pt").exists()
    a, meta = plain.state()
    b, kept_meta = kept.state()
    _assert_same_weights(a, b)
    assert [h["train_loss"] for h in meta["history"]] == \
        [h["train_loss"] for h in kept_meta["history"]]
    assert meta["config"]["checkpoint_dir"] is None
    assert kept_meta["config"]["checkpoint_dir"] == str(tmp_path / "state")


def test_state_of_other_decoder_options_is_refused(tmp_path: Path) -> None:
    """Options the trainer does not see (dropout, loss) change the result too; the decoder
    hands them over with its state, so such a state is refused as well."""
    X, Y = _xy()
    _mlp(checkpoint_dir=tmp_path).fit(X, Y)
    for change, name in (({"dropout": 0.3}, "options.dropout"), ({"loss": "mse"}, "options.loss")):
        with pytest.raises(DataError, match=re.escape(name)) as err:
            _mlp(checkpoint_dir=tmp_path, **change).fit(X, Y)
        assert err.value.path == tmp_path / "last.pt"
    # other data (the same options) is not continued but trained from the start
    X2, Y2 = _xy(seed=1)
    fresh = _mlp(checkpoint_dir=tmp_path).fit(X2, Y2)
    assert fresh.training_["resumed_from"] == 0
    _assert_same_weights(fresh.state()[0], _mlp().fit(X2, Y2).state()[0])
    # the same options and data again: the finished state is picked up
    again = _mlp(checkpoint_dir=tmp_path).fit(X2, Y2)
    assert again.training_["resumed_from"] == 4
    _assert_same_weights(again.state()[0], fresh.state()[0])


def test_only_decoders_with_a_resume_state_get_a_folder(tmp_path: Path) -> None:
    def options(model_type: str, **kw: object) -> dict:
        return TrainConfig(index=tmp_path / "i.parquet", targets=tmp_path / "t.parquet",
                           model_type=model_type, output_dir=tmp_path / "out",
                           **kw).decoder_options()

    state_dir = str(tmp_path / "out" / "checkpoints" / "train_state")
    for model_type in ("mlp", "two_stage", "contrastive_mlp"):
        assert options(model_type)["checkpoint_dir"] == state_dir
    assert options("mlp", model={"checkpoint_dir": None})["checkpoint_dir"] is None
    assert "checkpoint_dir" not in options("ridge")


def test_preprocessing_is_rebuilt_bit_identical() -> None:
    """A rerun refits z-score and PCA: both solvers give the same arrays again, so the
    rebuilt inputs match the data key of the resume state."""
    X = np.random.default_rng(0).standard_normal((120, 40)).astype(np.float32)
    for solver in ("full", "randomized"):
        a = Preprocessor(pca_components=8, svd_solver=solver, seed=3).fit(X)
        b = Preprocessor(pca_components=8, svd_solver=solver, seed=3).fit(X.copy())
        np.testing.assert_array_equal(a.transform(X), b.transform(X))
        np.testing.assert_array_equal(a.components_, b.components_)
