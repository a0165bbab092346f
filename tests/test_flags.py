"""The one rule between config fields and flags, both ways: the command line is built from
the config models, and a command written from a config parses back to that config."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from fmri2img.cli import build_parser
from fmri2img.data.nsd import NSDIndexConfig
from fmri2img.experiments.ablation import METHODS, AblationConfig
from fmri2img.experiments.adapter_train import AdapterTrainConfig
from fmri2img.experiments.evaluate import EvalConfig
from fmri2img.experiments.finetune import FinetuneConfig
from fmri2img.experiments.study import StudyConfig
from fmri2img.experiments.train_decoder import TrainConfig
from fmri2img.flags import command_line, config_from_args, flag
from fmri2img.models import registry

P = Path("/data/x")


def _round_trip(command: str, cfg: BaseModel) -> BaseModel:
    line = command_line(command, cfg)
    args = build_parser().parse_args(shlex.split(line)[1:])
    return config_from_args(type(cfg), args)


CASES = [
    ("fmri2img train", TrainConfig(
        index=P / "s.parquet", targets=P / "t.parquet", model_type="mlp", output_dir=P / "o",
        model={"hidden": [8, 4], "lr": 3e-4, "loss": "cosine"}, pca=64, zscore=False,
        perception=False, imagery_index=P / "i b.parquet", protocol="held-out-repetitions",
        fold=2, data_fraction=0.5, seed=3)),
    ("fmri2img train-adapter", AdapterTrainConfig(
        index=P / "i.parquet", checkpoint=P / "d.pt", targets=P / "t.parquet",
        output_dir=P / "a", adapter="linear", condition_token=True, shuffle_domains=True,
        early_stop_patience=None, epochs=3, lr=1e-3, device="cuda:1")),
    ("fmri2img finetune", FinetuneConfig(
        index=P / "i.parquet", checkpoint=P / "d.pt", targets=P / "t.parquet",
        output_dir=P / "f", n_folds=3, fold=2, loss="hybrid", n_averages=4)),
    ("fmri2img eval", EvalConfig(
        index=P / "i.parquet", checkpoint=[P / "a.pt", P / "b.pt"],
        adapter_checkpoint=[P / "c.pt", P / "d.pt"], adapter_type="mlp",
        targets=P / "t.parquet", mode="imagery", output_dir=P / "e", figures=False,
        average=False, ks=[1, 5], n_permutations=200)),
    ("fmri2img ablate", AblationConfig(
        index="/x/{subject}_imagery.parquet", checkpoint="/x/{subject}/decoder.pt",
        targets=P / "t.parquet", output_dir=P / "ab", subjects=[1, 2],
        methods=["direct", "finetune"], with_condition=True, fractions=[0.5, 1.0],
        eval_figures=True)),
    ("fmri2img study", StudyConfig(models=[], subjects=[1], null=True, ablation_model=None,
                                   model_options={"mlp": {"epochs": 2}})),
]


@pytest.mark.parametrize(("command", "cfg"), CASES, ids=[c for c, _ in CASES])
def test_a_command_written_from_a_config_parses_back_to_it(command: str,
                                                           cfg: BaseModel) -> None:
    assert _round_trip(command, cfg) == cfg


def test_defaults_are_left_out_and_flags_follow_the_rule() -> None:
    cfg = EvalConfig(index=P / "i.parquet", checkpoint=P / "d.pt", targets=P / "t.parquet",
                     output_dir=P / "e", figures=False)
    line = command_line("fmri2img eval", cfg)
    assert line == ("fmri2img eval --index /data/x/i.parquet --checkpoint /data/x/d.pt "
                    "--targets /data/x/t.parquet --output-dir /data/x/e --no-figures")
    assert flag("figures", EvalConfig.model_fields["figures"]) == "--no-figures"
    assert flag("n_folds") == "--n-folds"


def test_choices_come_from_the_registries_and_the_method_table() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    train = {a.dest: a for a in sub["train"]._actions}
    assert train["model_type"].choices == registry.decoders.available()
    adapter = {a.dest: a for a in sub["train-adapter"]._actions}
    assert adapter["adapter"].choices == registry.adapters.available()
    ablate = {a.dest: a for a in sub["ablate"]._actions}
    assert ablate["methods"].choices == list(METHODS)
    # every field of a command's config is an option of the command
    assert set(TrainConfig.model_fields) <= set(train)


def test_documented_spellings_still_work() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--set", "lr=0.01", "--set", "hidden=[4]", "--pca",
                              "--no-zscore", "--no-perception", "--imagery-index", "i.pq"])
    cfg = config_from_args(TrainConfig, args, index="x.pq", targets="t.pq",
                           model_type="mlp", output_dir="o")
    assert cfg.model == {"lr": 0.01, "hidden": [4]} and cfg.pca == 512
    assert (cfg.zscore, cfg.perception, cfg.imagery_index) == (False, False, Path("i.pq"))
    args = parser.parse_args(["build-index", "--nsd-root", "r", "--subject", "subj03",
                              "--output", "o.parquet", "--no-cache-reuse"])
    cfg = config_from_args(NSDIndexConfig, args)
    assert cfg.subject == 3 and cfg.reuse_cache is False


def test_a_config_file_and_flags_merge(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("index: a.parquet\ntargets: t.parquet\nmodel_type: mlp\noutput_dir: o\n"
                    "model: {hidden: [8], lr: 0.001}\nepochs: 5\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--set", "lr=0.1",
                                      "--epochs", "7"])
    cfg = config_from_args(TrainConfig, args)
    assert cfg.model == {"hidden": [8], "lr": 0.1} and cfg.epochs == 7
