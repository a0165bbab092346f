"""train / eval end to end on a small simulated dataset, and the checkpoint guards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, needs_shared

from fmri2img.cli import main
from fmri2img.models import registry


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("decoding")
    root = base / "nsd"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1", "2"]) == 0
    out = {"root": root, "targets": root / "targets" / "clip_like.parquet", "base": base}
    for s in ("subj01", "subj02"):
        out[f"{s}_nsd"] = base / f"{s}_nsd.parquet"
        assert main(["build-index", "--nsd-root", str(root), "--subject", s,
                     "--output", str(out[f"{s}_nsd"])]) == 0
    out["subj01_imagery"] = base / "subj01_imagery.parquet"
    assert main(["build-imagery-index", "--nsd-root", str(root), "--subject", "subj01",
                 "--output", str(out["subj01_imagery"])]) == 0
    out["ridge"] = base / "ridge"
    assert main(["train", "--index", str(out["subj01_nsd"]), "--targets", str(out["targets"]),
                 "--model-type", "ridge", "--output-dir", str(out["ridge"])]) == 0
    return out


class _Payload:
    """Any pickled object (harmless here) that a checkpoint loader must never unpickle."""


def test_registries_are_complete() -> None:
    for family in (registry.decoders, registry.adapters):
        for name in family.available():
            cls = family.get(name)
            assert cls.name == name
            model = family.build(name, 7, 7)
            assert (model.input_shape, model.n_outputs) == ((7,), 7)
        # every module the registry names registers what it promises, and nothing else
        assert set(family._classes) == set(family.modules)
        with pytest.raises(KeyError):
            family.get("nope")
    with pytest.raises(ValueError, match="invalid options"):
        registry.decoders.build("ridge", 7, 3, {"no_such_option": 1})


def test_train_writes_checkpoint_and_summary(sim: dict[str, Path]) -> None:
    out = sim["ridge"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["model_type"] == "ridge" and summary["n_train_rows"] > 0
    assert (out / "checkpoints" / "decoder.pt").exists()
    assert (out / "config_resolved.yaml").exists()


def test_eval_perception_and_imagery(sim: dict[str, Path]) -> None:
    ckpt = sim["ridge"] / "checkpoints" / "decoder.pt"
    p_out, i_out = sim["base"] / "eval_p", sim["base"] / "eval_i"
    common = ["--checkpoint", str(ckpt), "--targets", str(sim["targets"]),
              "--n-permutations", "200", "--n-bootstrap", "500"]
    assert main(["eval", "--index", str(sim["subj01_nsd"]), "--mode", "perception",
                 "--output-dir", str(p_out), *common]) == 0
    m = json.loads((p_out / "metrics.json").read_text())
    for key in ("overall", "ci", "p_vs_chance", "by_stimulus_set", "by_stimulus", "config",
                "bounds", "chance"):
        assert key in m
    names = {"cosine", "retrieval_top1", "retrieval_top5", "retrieval_top10", "retrieval_top50",
             "brain_retrieval_top1", "two_way"}
    assert names <= set(m["overall"])
    # the simulated perception signal is strong: far above chance
    assert m["overall"]["two_way"] > 0.8 and m["p_vs_chance"]["two_way"] < 0.01
    lo, hi = m["ci"]["two_way"]
    assert lo <= m["overall"]["two_way"] <= hi
    assert m["overall"]["retrieval_top1"] > 5 * m["chance"]["retrieval_top1"]
    assert (p_out / "README.md").read_text().startswith("# Evaluation")
    trials = pd.read_csv(p_out / "per_trial.csv")
    assert len(trials) > m["n_items"]  # single trials, more than the averaged items

    assert main(["eval", "--index", str(sim["subj01_imagery"]), "--mode", "imagery",
                 "--output-dir", str(i_out), "--perception-metrics",
                 str(p_out / "metrics.json"), *common]) == 0
    mi = json.loads((i_out / "metrics.json").read_text())
    assert mi["n_items"] == 12  # simple + complex targets
    assert set(mi["by_stimulus_set"]) == {"simple", "complex", "conceptual"}
    tr = mi["transfer"]
    assert tr["repetitions_matched"] == 8 and tr["n_targets"] == 12
    assert tr["metrics"]["cosine"]["ci"][0] <= tr["metrics"]["cosine"]["ratio"]
    assert "vs_perception_test" in tr
    assert mi["bounds"]["upper_true_targets"]["two_way"] == 1.0


def test_eval_refuses_other_subject(sim: dict[str, Path], capsys) -> None:
    ckpt = sim["ridge"] / "checkpoints" / "decoder.pt"
    rc = main(["eval", "--index", str(sim["subj02_nsd"]), "--checkpoint", str(ckpt),
               "--targets", str(sim["targets"]), "--mode", "perception",
               "--output-dir", str(sim["base"] / "bad")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "subj01" in err and "subj02" in err
    assert not (sim["base"] / "bad" / "metrics.json").exists()


def test_pickled_checkpoint_is_refused(sim: dict[str, Path], tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fmri2img.checkpoint", "obj": _Payload()}, evil)
    rc = main(["eval", "--index", str(sim["subj01_nsd"]), "--checkpoint", str(evil),
               "--targets", str(sim["targets"]), "--output-dir", str(tmp_path / "e")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pickled" in err and "evil.pt" in err


def test_ridge_weights_in_a_file_through_train_and_eval(sim: dict[str, Path]) -> None:
    """Weights written to a file (in blocks of targets) land beside the checkpoint, are
    read back memory-mapped, and evaluate exactly as the in-memory ridge does."""
    out = sim["base"] / "ridge_file"
    assert main(["train", "--index", str(sim["subj01_nsd"]), "--targets", str(sim["targets"]),
                 "--model-type", "ridge", "--output-dir", str(out), "--set",
                 "coef_storage=file", "--set", "target_block=5", "--set",
                 f"coef_dir={sim['base'] / 'scratch'}"]) == 0
    side = out / "checkpoints" / "decoder.pt.model-coef.npy"
    assert side.exists()
    assert not list((sim["base"] / "scratch").iterdir())  # the fit's own file is gone
    metrics = {}
    for name, d in (("file", out), ("memory", sim["ridge"])):
        assert main(["eval", "--index", str(sim["subj01_nsd"]), "--checkpoint",
                     str(d / "checkpoints" / "decoder.pt"), "--targets", str(sim["targets"]),
                     "--output-dir", str(sim["base"] / f"eval_{name}"),
                     "--n-permutations", "50", "--n-bootstrap", "50"]) == 0
        metrics[name] = json.loads((sim["base"] / f"eval_{name}" / "metrics.json").read_text())
    for key in ("two_way", "retrieval_top1", "cosine"):
        assert metrics["file"]["overall"][key] == pytest.approx(
            metrics["memory"]["overall"][key], abs=1e-5)


def test_torch_decoder_end_to_end(sim: dict[str, Path]) -> None:
    out = sim["base"] / "mlp"
    assert main(["train", "--index", str(sim["subj01_nsd"]), "--targets", str(sim["targets"]),
                 "--model-type", "mlp", "--output-dir", str(out), "--epochs", "5", "--pca", "64",
                 "--set", "hidden=[64]"]) == 0
    hist = pd.read_csv(out / "logs" / "history.csv")
    assert len(hist) == 5 and np.isfinite(hist["val_loss"]).all()
    assert (out / "figures" / "loss_curve.png").exists()
    assert main(["eval", "--index", str(sim["subj01_nsd"]), "--checkpoint",
                 str(out / "checkpoints" / "decoder.pt"), "--targets", str(sim["targets"]),
                 "--output-dir", str(out / "eval"), "--n-permutations", "100"]) == 0


MIYAWAKI = SHARED_DATA / "miyawaki2008" / "miyawaki_conditions_2to5_combined_sharp.mat"


@needs_shared(MIYAWAKI)
def test_real_miyawaki_seed_workflow(tmp_path: Path) -> None:
    """The seed decoder's workflow on real fMRI: .mat -> effnet-lite0 -> ridge -> eval."""
    index, targets = tmp_path / "miy.parquet", tmp_path / "effnet.parquet"
    assert main(["build-index", "--mat", str(MIYAWAKI), "--output", str(index)]) == 0
    assert main(["embed-images", "--index", str(index), "--embedder", "effnet-lite0",
                 "--output", str(targets)]) == 0
    assert main(["train", "--index", str(index), "--targets", str(targets), "--model-type",
                 "ridge", "--output-dir", str(tmp_path / "ridge")]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "--index", str(index), "--targets", str(targets), "--checkpoint",
                 str(tmp_path / "ridge" / "checkpoints" / "decoder.pt"),
                 "--output-dir", str(out), "--n-permutations", "500"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_items"] == 10  # 12 test trials of 10 distinct stimuli, averaged
    assert m["ci"]["two_way"][0] > 0.6 and m["p_vs_chance"]["two_way"] < 0.01
    assert (out / "figures" / "retrieval_examples.png").exists()


def test_null_simulation_transfer_ratio_contains_one(tmp_path: Path) -> None:
    """Under --null imagery is statistically identical to perception: the matched-repetition
    transfer ratio's CI must contain 1 (and imagery still decodes above chance)."""
    root = tmp_path / "nsd"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1",
                 "--null", "--no-images"]) == 0
    targets = root / "targets" / "clip_like.parquet"
    p_idx, i_idx = tmp_path / "p.parquet", tmp_path / "i.parquet"
    assert main(["build-index", "--nsd-root", str(root), "--subject", "1",
                 "--output", str(p_idx)]) == 0
    assert main(["build-imagery-index", "--nsd-root", str(root), "--subject", "1",
                 "--output", str(i_idx)]) == 0
    assert main(["train", "--index", str(p_idx), "--targets", str(targets), "--model-type",
                 "ridge", "--output-dir", str(tmp_path / "r")]) == 0
    assert main(["eval", "--index", str(i_idx), "--targets", str(targets), "--mode", "imagery",
                 "--checkpoint", str(tmp_path / "r" / "checkpoints" / "decoder.pt"),
                 "--output-dir", str(tmp_path / "e"), "--n-permutations", "200"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    lo, hi = m["transfer"]["metrics"]["cosine"]["ci"]
    assert lo <= 1.0 <= hi
    assert m["ci"]["two_way"][0] > 0.5
