"""Perception-to-imagery transfer: adapters, protocols, cross-validated evaluation, the
ablation command (resume after SIGKILL, Dask) and the hypothesis verdicts."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fmri2img.cli import build_parser, main
from fmri2img.data.splits import usable_rows
from fmri2img.experiments.adapter_train import AdapterTrainConfig
from fmri2img.experiments.evaluate import EvalConfig
from fmri2img.experiments.finetune import FinetuneConfig
from fmri2img.experiments.train_decoder import TrainConfig
from fmri2img.flags import config_from_args
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.models import registry
from fmri2img.models.adapters import (
    AdapterConfig,
    apply_adapter,
    build_adapter,
    load_adapter,
    save_adapter,
)

FAST = ["--n-bootstrap", "200", "--n-permutations", "50"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("transfer")
    root = base / "nsd"
    assert main(["simulate", "--out", str(root), "--scale", "small", "--subjects", "1", "2",
                 "--no-images"]) == 0
    out = {"root": root, "targets": root / "targets" / "clip_like.parquet", "base": base}
    for s in ("subj01", "subj02"):
        out[f"{s}_nsd"] = base / f"{s}_nsd.parquet"
        out[f"{s}_imagery"] = base / f"{s}_imagery.parquet"
        assert main(["build-index", "--nsd-root", str(root), "--subject", s,
                     "--output", str(out[f"{s}_nsd"])]) == 0
        assert main(["build-imagery-index", "--nsd-root", str(root), "--subject", s,
                     "--output", str(out[f"{s}_imagery"])]) == 0
        assert main(["train", "--index", str(out[f"{s}_nsd"]), "--targets",
                     str(out["targets"]), "--model-type", "ridge", "--output-dir",
                     str(base / "decoders" / s)]) == 0
    out["ckpt"] = base / "decoders" / "subj01" / "checkpoints" / "decoder.pt"
    return out


# ----------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("kind", registry.adapters.available())
@pytest.mark.parametrize("condition", [False, True])
def test_adapters_start_at_identity_and_round_trip(kind: str, condition: bool,
                                                   tmp_path: Path) -> None:
    adapter = build_adapter(kind, 16, AdapterConfig(condition=condition))
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    for domain in ("perception", "imagery"):
        np.testing.assert_array_equal(apply_adapter(adapter, x, domain), x)
    expected = 16 * 16 + 16 if kind == "linear" else None
    if expected is not None:
        assert adapter.n_parameters() == expected + (32 if condition else 0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_adapter(tmp_path / "a.pt", adapter, {"note": "test"})
    back, meta = load_adapter(tmp_path / "a.pt", dim=16)
    assert meta["model_type"] == kind
    assert meta["model_meta"]["n_parameters"] == adapter.n_parameters()
    np.testing.assert_allclose(apply_adapter(back, x, "imagery"),
                               apply_adapter(adapter, x, "imagery"), rtol=1e-6, atol=1e-6)
    if condition:  # the domain vectors make the two domains differ once trained
        assert not np.allclose(apply_adapter(back, x, "imagery"),
                               apply_adapter(back, x, "perception"))


def test_conditioned_mlp_learns_a_domain_offset(tmp_path: Path) -> None:
    """The per-domain output vectors learn from the first step (the branch's input vectors
    get no gradient while its zero-initialised last layer is still zero)."""
    from fmri2img.io.checkpoint import save_checkpoint
    from fmri2img.models.adapters import pack

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    adapter = build_adapter("mlp", 8, AdapterConfig(condition=True, dropout=0.0))
    x = rng.standard_normal((64, 8)).astype(np.float32)
    domains = ["imagery", "perception"] * 32
    shift = np.where(np.array(domains)[:, None] == "imagery", 0.5, 0.0).astype(np.float32)
    inputs, wanted = torch.from_numpy(pack(x, domains)), torch.from_numpy(x + shift)
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    for step in range(300):
        opt.zero_grad()
        loss = ((adapter(inputs) - wanted) ** 2).mean()
        loss.backward()
        if step == 0:
            assert adapter.condition_out.grad.abs().sum() > 0
        opt.step()
    img = apply_adapter(adapter, x, "imagery") - x
    per = apply_adapter(adapter, x, "perception") - x
    assert abs(img.mean() - 0.5) < 0.05 and abs(per.mean()) < 0.05

    # a checkpoint from before the output vectors existed loads as it was
    state = {k: v.detach().numpy() for k, v in adapter.state_dict().items()
             if k != "condition_out"}
    save_checkpoint(tmp_path / "old.pt", state, {
        "kind": "adapter", "adapter_type": "mlp", "dim": 8,
        "adapter_config": adapter.config.resolved(), "n_parameters": 0})
    old, _ = load_adapter(tmp_path / "old.pt", dim=8)
    with torch.no_grad():
        adapter.condition_out.zero_()
    np.testing.assert_allclose(apply_adapter(old, x, "imagery"),
                               apply_adapter(adapter, x, "imagery"), rtol=1e-6, atol=1e-6)


def test_adapter_dimension_and_type_are_checked(tmp_path: Path) -> None:
    from fmri2img.errors import DataError

    save_adapter(tmp_path / "a.pt", build_adapter("linear", 16), {})
    with pytest.raises(DataError, match="16-d"):
        load_adapter(tmp_path / "a.pt", dim=32)
    with pytest.raises(DataError, match="linear adapter"):
        load_adapter(tmp_path / "a.pt", dim=16, expected_type="mlp")


# ----------------------------------------------------------------------------- train-adapter
def test_train_adapter_leaves_decoder_unchanged_and_eval_uses_it(sim: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    before_bytes = sim["ckpt"].read_bytes()
    before, _ = load_checkpoint(sim["ckpt"])
    outs = []
    for k in range(3):
        out = tmp_path / f"fold{k}"
        assert main(["train-adapter", "--index", str(sim["subj01_imagery"]), "--checkpoint",
                     str(sim["ckpt"]), "--targets", str(sim["targets"]), "--model-type",
                     "ridge", "--adapter", "mlp", "--output-dir", str(out), "--epochs", "20",
                     "--lr", "3e-4", "--batch-size", "32", "--loss", "cosine",
                     "--early-stop-patience", "5", "--n-folds", "3", "--fold", str(k),
                     "--seed", "0", "--device", "cpu"]) == 0
        for name in ("checkpoints/adapter_best.pt", "checkpoints/adapter_last.pt",
                     "logs/history.csv", "cache/targets.npz", "metrics_train.json",
                     "metrics_val.json", "config_resolved.yaml"):
            assert (out / name).exists(), name
        outs.append(out / "checkpoints" / "adapter_best.pt")
    after, _ = load_checkpoint(sim["ckpt"])
    assert sim["ckpt"].read_bytes() == before_bytes
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)

    common = ["--targets", str(sim["targets"]), *FAST]
    base, adapted = tmp_path / "base", tmp_path / "adapted"
    for out, extra in ((base, []), (adapted, ["--adapter-checkpoint", *map(str, outs),
                                              "--adapter-type", "auto"])):
        for mode, idx in (("imagery", "subj01_imagery"), ("perception", "subj01_nsd")):
            assert main(["eval", "--index", str(sim[idx]), "--checkpoint", str(sim["ckpt"]),
                         "--mode", mode, "--output-dir", str(out / mode), *extra,
                         *common]) == 0
    m_base = json.loads((base / "imagery" / "metrics.json").read_text())
    m_ad = json.loads((adapted / "imagery" / "metrics.json").read_text())
    assert m_ad["protocol"] == "leave-targets-out" and m_base["protocol"] is None
    assert m_ad["adapter"]["type"] == "mlp"
    assert m_ad["n_items"] == m_base["n_items"]  # every scored target held out once
    # the adapter path switched off: perception results identical to the base decoder's
    p_base = json.loads((base / "perception" / "metrics.json").read_text())
    p_ad = json.loads((adapted / "perception" / "metrics.json").read_text())
    assert p_base["overall"] == p_ad["overall"] and p_base["by_stimulus"] == p_ad["by_stimulus"]
    assert m_base["vision"]["overall"] == m_ad["vision"]["overall"]


def test_eval_refuses_adapter_of_other_dimension(sim: dict[str, Path], tmp_path: Path,
                                                 capsys) -> None:
    save_adapter(tmp_path / "a.pt", build_adapter("linear", 7), {})
    rc = main(["eval", "--index", str(sim["subj01_imagery"]), "--checkpoint", str(sim["ckpt"]),
               "--targets", str(sim["targets"]), "--mode", "imagery", "--output-dir",
               str(tmp_path / "e"), "--adapter-checkpoint", str(tmp_path / "a.pt"), *FAST])
    assert rc == 2
    assert "7-d" in capsys.readouterr().err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_adapter_seen_targets_are_never_scored(sim: dict[str, Path], tmp_path: Path) -> None:
    """One leave-targets-out adapter alone scores only its own held-out targets."""
    out = tmp_path / "a"
    assert main(["train-adapter", "--index", str(sim["subj01_imagery"]), "--checkpoint",
                 str(sim["ckpt"]), "--targets", str(sim["targets"]), "--adapter", "linear",
                 "--output-dir", str(out), "--epochs", "3", "--n-folds", "2",
                 "--fold", "0"]) == 0
    meta = json.loads((out / "train_summary.json").read_text())
    assert main(["eval", "--index", str(sim["subj01_imagery"]), "--checkpoint",
                 str(sim["ckpt"]), "--targets", str(sim["targets"]), "--mode", "imagery",
                 "--output-dir", str(tmp_path / "e"), "--adapter-checkpoint",
                 str(out / "checkpoints" / "adapter_best.pt"), *FAST]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    scored = {k for k, v in m["by_stimulus"].items() if v["stimulus_set"] in ("simple",
                                                                              "complex")}
    assert scored and scored <= set(meta["test_targets"])


def test_shuffled_domain_control_keeps_the_data_and_permutes_the_labels(
        sim: dict[str, Path]) -> None:
    from fmri2img.data.trials import IndexData, Targets
    from fmri2img.experiments.adapter_train import AdapterTrainConfig, domain_examples
    from fmri2img.models.pipeline import DecoderPipeline

    pipeline, _ = DecoderPipeline.load(sim["ckpt"])
    data, targets = IndexData.open(sim["subj01_imagery"]), Targets.open(sim["targets"])
    rows = usable_rows(data.frame, ("imagery", "perception"))

    def examples(shuffle: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return domain_examples(pipeline, data, rows, targets, 4, np.random.default_rng(3),
                               condition=True, shuffle=shuffle)

    x, y, doms = examples(False)
    xs, ys, doms_s = examples(True)
    np.testing.assert_array_equal(xs[:, :-1], x[:, :-1])  # same examples, same targets
    np.testing.assert_array_equal(ys, y)
    np.testing.assert_array_equal(doms_s, doms)  # the true domains are still reported
    codes, codes_s = x[:, -1], xs[:, -1]
    assert sorted(codes_s) == sorted(codes) and (codes_s != codes).any()
    with pytest.raises(ValueError, match="condition_token"):
        AdapterTrainConfig(index=sim["subj01_imagery"], checkpoint=sim["ckpt"],
                           targets=sim["targets"], output_dir=sim["base"] / "x",
                           shuffle_domains=True)


def _hyp_row(subject: str, method: str, per_target: dict[str, float]) -> dict:
    from fmri2img.experiments.ablation import CONTROL_OF, METHODS

    strategy = "direct" if method == "direct" else "adapter"
    return {"subject": subject, "method": method, "strategy": strategy, "fraction": 1.0,
            "loss": "cosine", "control": METHODS[method].control,
            "control_of": CONTROL_OF.get(method),
            "imagery": {"cosine": {"value": float(np.mean(list(per_target.values())))}},
            "per_target": {"cosine": per_target},
            "per_target_set": {k: k[0] for k in per_target}}


def test_imagery_gain_needs_to_beat_the_matched_control() -> None:
    """A gain over direct transfer that the control matches is not an imagery gain; each
    adapter is judged against its own control."""
    from fmri2img.analysis.hypotheses import add_comparisons, methods_summary, methods_verdict
    from fmri2img.report.hypotheses_report import render

    rng = np.random.default_rng(0)
    keys = [f"{s}{i}" for s in "ab" for i in range(6)]
    rows = []
    for subj in ("subj01", "subj02", "subj05"):
        base = {k: 0.5 + 0.05 * rng.standard_normal() for k in keys}

        def shifted(d: float, base: dict[str, float] = base) -> dict[str, float]:
            return {k: v + d + 0.005 * rng.standard_normal() for k, v in base.items()}

        same = shifted(0.10)
        rows += [_hyp_row(subj, "direct", base),
                 _hyp_row(subj, "adapter_mlp", same),  # no better than its control
                 _hyp_row(subj, "adapter_mlp_vision", same),
                 _hyp_row(subj, "adapter_mlp_cond", shifted(0.20)),  # beats its control
                 _hyp_row(subj, "adapter_mlp_cond_shuffled", shifted(0.10))]
    rows.append(_hyp_row("subj07", "direct", {k: 0.5 for k in keys}))
    rows.append(_hyp_row("subj07", "adapter_linear", {k: 0.6 for k in keys}))
    summary = methods_summary(add_comparisons(rows, "cosine", n_resamples=500))
    mlp, cond, linear = (summary[m] for m in ("adapter_mlp", "adapter_mlp_cond",
                                               "adapter_linear"))
    assert mlp["significant_gain_vs_direct"] == 3 and mlp["control"] == "adapter_mlp_vision"
    assert mlp["significant_imagery_gain"] == 0
    assert cond["control"] == "adapter_mlp_cond_shuffled"
    assert cond["significant_gain_vs_control"] == 3 and cond["significant_imagery_gain"] == 3
    assert cond["mean_gain_vs_control"] == pytest.approx(0.10, abs=0.01)
    assert "role" in summary["adapter_mlp_vision"] and "role" in summary[
        "adapter_mlp_cond_shuffled"]
    assert linear["n_with_control"] == 0  # its control was not run for that subject
    assert methods_verdict(summary, "cosine") == (
        "imagery gain in cosine beyond the control in most subjects: adapter_mlp_cond "
        "(cosine loss, 3/3)")
    no_cond = {m: v for m, v in summary.items() if m != "adapter_mlp_cond"}
    assert methods_verdict(no_cond, "cosine").startswith("no method, with any loss, shows")
    assert "adapter_mlp are matched by their controls" in methods_verdict(no_cond, "cosine")
    text = render({"H1": {"verdict": "-"}, "H2": {"verdict": "-"}, "H3": {"verdict": "-"},
                   "methods": summary, "primary_metric": "cosine"})
    assert f"| adapter_mlp_cond | cosine | {cond['mean_gain_vs_direct']:+.3f} |" in text
    assert "| adapter_linear | cosine | +0.100 | +0.100 | 1/1 | 1/1 | 0/1 | `adapter_mlp_vision` " \
           "| - | control not run |" in text


def test_finetune_and_mixed_training_record_what_they_saw(sim: dict[str, Path],
                                                          tmp_path: Path) -> None:
    assert main(["finetune", "--index", str(sim["subj01_imagery"]), "--checkpoint",
                 str(sim["ckpt"]), "--targets", str(sim["targets"]), "--output-dir",
                 str(tmp_path / "ft"), "--epochs", "3", "--n-folds", "3", "--fold", "1"]) == 0
    assert main(["train", "--index", str(sim["subj01_nsd"]), "--targets", str(sim["targets"]),
                 "--model-type", "ridge", "--output-dir", str(tmp_path / "mx"),
                 "--imagery-index", str(sim["subj01_imagery"]), "--n-folds", "3",
                 "--fold", "1"]) == 0
    for path in (tmp_path / "ft", tmp_path / "mx"):
        _, meta = load_checkpoint(path / "checkpoints" / "decoder.pt")
        seen = meta["imagery_training"]
        assert seen["protocol"] == "leave-targets-out" and seen["fold"] == 1
        assert not set(seen["seen_targets"]) & set(seen["test_targets"])


def test_contrastive_loss_and_vision_controls_for_every_strategy(sim: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """``--loss infonce`` trains adapters and fine-tuning; each strategy's control trains
    on the session's vision trials of the same fold's targets; a closed-form decoder
    refuses a loss."""
    common = ["--index", str(sim["subj01_imagery"]), "--checkpoint", str(sim["ckpt"]),
              "--targets", str(sim["targets"]), "--epochs", "3", "--n-folds", "3",
              "--fold", "1"]
    assert main(["train-adapter", *common, "--output-dir", str(tmp_path / "ad"),
                 "--loss", "infonce", "--temperature", "0.1"]) == 0
    assert main(["finetune", *common, "--output-dir", str(tmp_path / "ft"),
                 "--loss", "infonce", "--train-domain", "perception"]) == 0
    assert main(["train", "--index", str(sim["subj01_nsd"]), "--targets", str(sim["targets"]),
                 "--model-type", "ridge", "--output-dir", str(tmp_path / "mx"),
                 "--imagery-index", str(sim["subj01_imagery"]), "--n-folds", "3",
                 "--fold", "1", "--imagery-domain", "perception"]) == 0
    ad = yaml.safe_load((tmp_path / "ad" / "config_resolved.yaml").read_text())
    assert ad["loss"] == "infonce" and ad["temperature"] == 0.1
    for name in ("ft", "mx"):
        _, meta = load_checkpoint(tmp_path / name / "checkpoints" / "decoder.pt")
        seen = meta["imagery_training"]
        assert seen["domains"] == ["perception"]  # the session's vision trials
        assert not set(seen["train_targets"]) & set(seen["test_targets"])
        assert len(meta["target_mean"]) == len(seen["target_mean"])
    assert main(["train", "--index", str(sim["subj01_nsd"]), "--targets", str(sim["targets"]),
                 "--model-type", "ridge", "--output-dir", str(tmp_path / "bad"),
                 "--loss", "infonce"]) == 2
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- ablate
def _ablate_args(sim: dict[str, Path], out: Path) -> list[str]:
    base = sim["base"]
    return ["ablate", "--index", str(base / "{subject}_imagery.parquet"),
            "--perception-index", str(base / "{subject}_nsd.parquet"),
            "--checkpoint", str(base / "decoders" / "{subject}" / "checkpoints" /
                                "decoder.pt"),
            "--targets", str(sim["targets"]), "--output-dir", str(out), "--subjects", "1", "2",
            "--methods", "direct", "adapter_linear", "adapter_mlp", "mixed", "finetune",
            "--with-condition", "--n-folds", "3", "--epochs", "8", *FAST]


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results_table.csv")


def test_ablate_refuses_a_loss_for_a_closed_form_decoder(sim: dict[str, Path],
                                                         tmp_path: Path) -> None:
    args = _ablate_args(sim, tmp_path / "out")
    at = args.index("--methods")
    args[at + 1:at + 6] = ["direct", "mixed_infonce"]
    assert main(args) == 2  # ridge has no loss to swap
    assert not (tmp_path / "out").exists()


def test_ablate_layout_and_verdicts(sim: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    assert main(_ablate_args(sim, out)) == 0
    for name in ("results_table.csv", "results_table.md", "metrics_all.json", "commands.txt",
                 "table.tex", "table_formatted.md", "hypotheses.md", "hypotheses.json",
                 "figures/bar_overall_metric.png", "figures/bar_by_stimulus_type.pdf",
                 "figures/per_subject_breakdown.png", "figures/retrieval_at_k.png"):
        assert (out / name).exists(), name
    table = _table(out)
    methods = ["direct", "adapter_linear", "adapter_mlp_vision", "adapter_mlp",
               "adapter_mlp_cond", "adapter_mlp_cond_shuffled", "mixed", "mixed_vision",
               "finetune", "finetune_vision", "mean_target", "mean_target_fold"]
    assert sorted(table["method"].unique()) == sorted(methods) and len(table) == 24
    assert (out / "eval" / "adapter_mlp" / "subj01" / "imagery" / "metrics.json").exists()
    assert (out / "adapters" / "adapter_mlp" / "subj02" / "fold2").is_dir()
    # adapters leave perception untouched
    for subj, group in table.groupby("subject"):
        direct = group[group["method"] == "direct"].iloc[0]
        for m in ("adapter_linear", "adapter_mlp", "adapter_mlp_cond",
                  "adapter_mlp_cond_shuffled"):
            row = group[group["method"] == m].iloc[0]
            assert row["perception_cosine"] == direct["perception_cosine"], (subj, m)
    hyp = json.loads((out / "hypotheses.json").read_text())
    assert set(hyp) >= {"H1", "H2", "H3"}
    for key in ("H1", "H2", "H3"):
        assert hyp[key]["verdict"]
    assert hyp["H3"]["time_ratio"] is not None
    assert hyp["methods"]["adapter_mlp_cond"]["control"] == "adapter_mlp_cond_shuffled"
    assert hyp["methods"]["adapter_mlp_cond"]["n_with_control"] == 2
    assert hyp["methods"]["finetune"]["control"] == "finetune_vision"
    assert hyp["primary_metric"] == "two_way"
    # the mean-target control: identification at chance, within its CI
    for r in json.loads((out / "metrics_all.json").read_text())["rows"]:
        if r["method"] in ("mean_target", "mean_target_fold"):
            tw = r["imagery"]["two_way"]
            assert tw["ci"][0] <= 0.5 <= tw["ci"][1], r["method"]
    commands = (out / "commands.txt").read_text()
    assert "fmri2img train-adapter" in commands and "fmri2img finetune" in commands
    assert "--shuffle-domains" in commands
    # each recorded command, typed again, gives the config that ran
    configs = {"train-adapter": AdapterTrainConfig, "finetune": FinetuneConfig,
               "train": TrainConfig, "eval": EvalConfig}
    for line in commands.splitlines():
        words = shlex.split(line)
        cfg = config_from_args(configs[words[1]], build_parser().parse_args(words[1:]))
        ran = yaml.safe_load((cfg.output_dir / "config_resolved.yaml").read_text())
        assert cfg.resolved() == ran, line

    # rerun: every cell reused, identical table
    before = _table(out)
    assert main(_ablate_args(sim, out)) == 0
    pd.testing.assert_frame_equal(_table(out), before)


def test_ablate_resumes_after_sigkill(sim: dict[str, Path], tmp_path: Path) -> None:
    out_ref, out = tmp_path / "ref", tmp_path / "killed"
    assert main(_ablate_args(sim, out_ref)) == 0
    cmd = [sys.executable, "-m", "fmri2img.cli", *_ablate_args(sim, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill once some cells are finished and others are not
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("eval/*/*/cell.json"))) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results_table.csv").exists()
    assert main(_ablate_args(sim, out)) == 0
    pd.testing.assert_frame_equal(_table(out), _table(out_ref))
    assert not list(out.rglob("*.tmp"))


def test_ablate_on_dask_matches_in_process(sim: dict[str, Path], tmp_path: Path) -> None:
    from distributed import LocalCluster

    out_a, out_b = tmp_path / "local", tmp_path / "dask"
    args_a = _ablate_args(sim, out_a)
    assert main(args_a) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        assert main([*_ablate_args(sim, out_b), "--scheduler", cluster.scheduler_address]) == 0
    pd.testing.assert_frame_equal(_table(out_b), _table(out_a))
    # --workers: the same on a cluster of local processes that ablate starts itself
    out_c = tmp_path / "workers"
    assert main([*_ablate_args(sim, out_c), "--workers", "2"]) == 0
    pd.testing.assert_frame_equal(_table(out_c), _table(out_a))
