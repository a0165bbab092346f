"""Issue 12's bad inputs through the CLI: exit 2, a message naming the option or file,
nothing written, inputs unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmri2img.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad")
    root = base / "sim"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1"]) == 0
    index = base / "idx" / "s1.parquet"
    assert main(["build-index", "--nsd-root", str(root), "--subject", "subj01",
                 "--output", str(index)]) == 0
    targets = root / "targets" / "clip_like.parquet"
    ckpt = base / "dec"
    assert main(["train", "--index", str(index), "--targets", str(targets), "--model-type",
                 "ridge", "--output-dir", str(ckpt)]) == 0
    return {"root": root, "index": index, "targets": targets,
            "checkpoint": ckpt / "checkpoints" / "decoder.pt", "base": base}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(argv: list[str], capsys: pytest.CaptureFixture, *words: str) -> str:
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err
    return err


def _train(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--index", str(data["index"]), "--targets", str(data["targets"]),
            "--output-dir", str(out), *extra]


@pytest.mark.parametrize(("extra", "words"), [
    (["--model-type", "mlp", "--set", "bogus=3"], ["--set bogus=3", "Extra inputs"]),
    (["--model-type", "mlp", "--set", "lr=abc"], ["--set lr='abc'", "valid number"]),
    (["--model-type", "mlp", "--epochs", "0"],
     ["--epochs", "'0'", "greater than or equal to 1"]),
    (["--model-type", "ridge", "--pca", "0"], ["--pca", "'0'"]),
])
def test_bad_train_options(data: dict[str, Path], tmp_path: Path, extra: list[str],
                           words: list[str], capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _refused(_train(data, out, *extra), capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [
    ("--pool-size", "0"), ("--n-pools", "0"), ("--n-bootstrap", "-1"),
    ("--n-permutations", "-5")])
def test_bad_eval_options(data: dict[str, Path], tmp_path: Path, option: str, value: str,
                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    _refused(["eval", "--index", str(data["index"]), "--checkpoint", str(data["checkpoint"]),
              "--targets", str(data["targets"]), "--output-dir", str(out), option, value],
             capsys, option, repr(value))
    assert not out.exists()


def test_output_over_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mat = Path(__file__).resolve().parents[2] / "shared" / "data" / "miyawaki2008" / \
        "miyawaki_condition3_alphabet_1a_sharp.mat"
    if not mat.exists():
        pytest.skip(f"{mat} not present")
    copy = tmp_path / "copy.mat"
    shutil.copyfile(mat, copy)
    before = _digest(copy)
    _refused(["build-index", "--mat", str(copy), "--output", str(copy)], capsys,
             "--output", "--mat", str(copy))
    assert _digest(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.mat"]


def test_output_containing_input_is_refused(data: dict[str, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    folder = data["index"].parent
    before = sorted(p.name for p in folder.iterdir())
    _refused(_train(data, folder, "--model-type", "ridge"), capsys, "--output-dir",
             "--index")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_output_under_a_file(data: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "afile").write_text("x")
    _refused(_train(data, tmp_path / "afile" / "sub", "--model-type", "ridge"), capsys,
             "--output-dir", "is a file")
    assert (tmp_path / "afile").read_text() == "x"


def test_malformed_yaml_config(data: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("a: [1, 2\nb: :\n")
    _refused(["train", "--config", str(config), *_train(data, tmp_path / "o")[1:],
              "--model-type", "ridge"], capsys, str(config), "YAML")
    assert not (tmp_path / "o").exists()


def test_sessions_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _refused(["simulate", "--out", str(tmp_path / "s"), "--sessions", "0"], capsys,
             "--sessions", "'0'")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["train", "train-adapter", "finetune"])
def test_fold_outside_the_folds(data: dict[str, Path], tmp_path: Path, command: str,
                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    given = (["--targets", str(data["targets"]), "--imagery-index", str(data["index"]),
              "--model-type", "ridge"]
             if command == "train" else ["--checkpoint", str(data["checkpoint"])])
    _refused([command, "--index", str(data["index"]), *given, "--output-dir", str(out),
              "--fold", "7", "--n-folds", "6"], capsys,
             "--fold 7 does not exist with --n-folds 6")
    assert not out.exists()


def test_study_model_options_are_checked_first(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    _refused(["study", "--out", str(out), "--model-options", "mlp={bogus: 1, epochs: 0}"],
             capsys, "--model-options", "mlp.bogus=1: Extra inputs",
             "mlp.epochs=0: Input should be greater than or equal to 1")
    config = tmp_path / "study.yaml"
    config.write_text("eeg_options:\n  model_options:\n    eeg_conv: {kernel: abc}\n")
    _refused(["study", "--config", str(config), "--out", str(out)], capsys, str(config),
             "eeg_conv.kernel='abc'")
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--n-permutations", "0"),
                                               ("--subjects", "0"), ("--epochs", "0")])
def test_bad_ablate_options(data: dict[str, Path], tmp_path: Path, option: str, value: str,
                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "abl"
    _refused(["ablate", "--index", str(data["index"]), "--checkpoint", str(data["checkpoint"]),
              "--output-dir", str(out), option, value], capsys, option, repr(value))
    assert not out.exists()


def _rewrite_table(source: Path, dest: Path, change: Callable[[list, list], None]) -> Path:
    """The table as another tool would write it (no fmri2img checksum), changed."""
    table = pq.read_table(source)
    keys = table.column("stimulus").to_pylist()
    rows = table.column("embedding").to_pylist()
    change(keys, rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"stimulus": pa.array(keys, pa.string()),
                             "embedding": pa.array(rows, pa.list_(pa.float32()))}), dest)
    return dest


def _duplicate(keys: list, rows: list) -> None:
    keys.append(keys[0])
    rows.append([-v for v in rows[0]])  # same stimulus, another vector


def _poison(value: float) -> Callable[[list, list], None]:
    def change(keys: list, rows: list) -> None:
        rows[len(rows) // 2][0] = value
    return change


@pytest.mark.parametrize(("command", "change", "words"), [
    ("train", _duplicate, ["stimulus keys occur more than once"]),
    ("train", _poison(float("nan")), ["NaN or infinite"]),
    ("eval", _poison(float("inf")), ["NaN or infinite"]),
])
def test_bad_embedding_tables(data: dict[str, Path], tmp_path: Path, command: str,
                              change: Callable[[list, list], None], words: list[str],
                              capsys: pytest.CaptureFixture) -> None:
    table = _rewrite_table(data["targets"], tmp_path / "in" / "targets.parquet", change)
    before = _digest(table)
    out = tmp_path / "out"
    first = (["train", "--model-type", "ridge"] if command == "train" else
             ["eval", "--checkpoint", str(data["checkpoint"])])
    _refused([*first, "--index", str(data["index"]), "--targets", str(table),
              "--output-dir", str(out)], capsys, str(table), *words)
    assert _digest(table) == before
    assert not out.exists()


def test_read_only_output_place(data: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    place = tmp_path / "ro"
    place.mkdir()
    place.chmod(0o555)
    if os.geteuid() == 0:
        # root writes through permission bits; a read-only mount is what refuses it, and
        # access(2) reports that (EROFS) as it reports the bits to anyone else
        real = os.access
        monkeypatch.setattr("fmri2img.io.guard.os.access",
                            lambda p, mode: False if Path(p) == place else real(p, mode))
    try:
        _refused(_train(data, place / "out", "--model-type", "ridge"), capsys,
                 "--output-dir", f"{place} is not writable")
        assert list(place.iterdir()) == []
    finally:
        place.chmod(0o755)


def test_subjects_help_and_range(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "distinct values of 1..8" in " ".join(capsys.readouterr().out.split())
    _refused(["simulate", "--out", str(tmp_path / "s"), "--subjects", "9"], capsys,
             "--subjects")
    assert not (tmp_path / "s").exists()


def test_log_lines_are_not_wrapped_off_a_terminal(data: dict[str, Path],
                                                  tmp_path: Path) -> None:
    # a path far longer than 80 columns must come out whole, on one line, so that it can
    # be copied or searched in a CI log
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "missing_targets_table.parquet"
    argv = ["train", "--index", str(data["index"]), "--targets", str(deep), "--model-type",
            "ridge", "--output-dir", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-m", "fmri2img.cli", *argv], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 2, done.stderr
    assert any(str(deep) in line for line in done.stderr.splitlines()), done.stderr
