"""The seed project's documented commands, run as their users type them.

Each command line below is copied verbatim from a seed document (adapter quick-start
guide: A*, research roadmap "exact commands": R*, README: M*); ``python scripts/X.py``
becomes the fmri2img command the README's table maps it to (:data:`fmri2img.seeds.SCRIPTS`)
and ``--device cuda`` becomes ``--device cpu``. They run in a folder laid out as the seed
expects, on a small simulated subject: ``data/nsd_imagery`` and ``$NSD_ROOT`` are the
simulated NSD root. Two substitutions, both of data: embed-images runs with a tiny
random CLIP (``$FMRI2IMG_EMBEDDER``; no CLIP weights offline), after which the simulator's
ground-truth targets stand in for the CLIP cache (the tiny CLIP's features carry no
signal); and ``configs/two_stage_sota.yaml`` trains 3 epochs instead of the seed's 150
(3 minutes here), its other settings unchanged (the file itself is validated below), and
the ablation commands train each of their 42 folds for 2 epochs instead of 50 (5 minutes).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from fmri2img.cli import build_parser, main
from fmri2img.experiments.ablation import AblationConfig
from fmri2img.experiments.adapter_train import AdapterTrainConfig
from fmri2img.experiments.analyses.runner import AnalyzeConfig
from fmri2img.experiments.evaluate import EvalConfig
from fmri2img.experiments.train_decoder import TrainConfig
from fmri2img.flags import config_from_args
from fmri2img.seeds import CONFIGS, SCRIPTS

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {"embed_dim": 8,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8,
                            "head_width": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                          "layers": 1}}

SETUP = [
    ("M1", "python scripts/build_full_index.py --cache-root cache --subject subj01 "
           "--output data/indices/nsd_index/"),
    ("M2", "python scripts/build_clip_cache.py --cache-root cache --output "
           "outputs/clip_cache/clip.parquet --batch-size 256"),
    ("M3", "python scripts/build_nsd_imagery_index.py --subject subj01 --data-root "
           "data/nsd_imagery --cache-root cache/ --output cache/indices/imagery/subj01.parquet "
           "--verbose"),
    ("M4", "python scripts/train_two_stage.py --config configs/two_stage_sota.yaml --subject "
           "subj01 --output-dir checkpoints/two_stage/subj01"),
]
IDX = "cache/indices/imagery/subj01.parquet"
CKPT = "checkpoints/two_stage/subj01/best.pt"
COMMANDS = [
    ("M5", f"python scripts/eval_perception_to_imagery_transfer.py --index {IDX} --checkpoint "
           f"{CKPT} --mode imagery --split test --output-dir "
           "outputs/reports/imagery/perception_transfer"),
    ("M6", f"python scripts/eval_perception_to_imagery_transfer.py --index {IDX} --checkpoint "
           f"{CKPT} --mode perception --split test --output-dir "
           "outputs/reports/imagery/perception_baseline"),
    ("R2", f"python scripts/eval_perception_to_imagery_transfer.py --index {IDX} --checkpoint "
           f"{CKPT} --model-type two_stage --mode imagery --split test --output-dir "
           "outputs/reports/imagery/baseline"),
    ("A1", f"python scripts/train_imagery_adapter.py --index {IDX} --checkpoint {CKPT} "
           "--model-type two_stage --adapter mlp --output-dir outputs/adapters/subj01/mlp "
           "--epochs 50"),
    ("A2", f"python scripts/eval_perception_to_imagery_transfer.py --index {IDX} --checkpoint "
           f"{CKPT} --adapter-checkpoint outputs/adapters/subj01/mlp/checkpoints/adapter_best.pt"
           " --mode imagery --output-dir outputs/eval/mlp_adapter"),
    ("R3", f"python scripts/train_imagery_adapter.py --index {IDX} --checkpoint {CKPT} "
           "--model-type two_stage --adapter linear --output-dir outputs/adapters/subj01/linear "
           "--epochs 50 --lr 1e-3 --batch-size 32 --device cuda"),
    ("R4", f"python scripts/train_imagery_adapter.py --index {IDX} --checkpoint {CKPT} "
           "--model-type two_stage --adapter mlp --output-dir outputs/adapters/subj01/mlp "
           "--epochs 50 --lr 1e-3 --batch-size 32 --device cuda"),
    ("R5", f"python scripts/eval_perception_to_imagery_transfer.py --index {IDX} --checkpoint "
           f"{CKPT} --model-type two_stage --adapter-checkpoint "
           "outputs/adapters/subj01/mlp/checkpoints/adapter_best.pt --adapter-type mlp --mode "
           "imagery --split test --output-dir outputs/reports/imagery/mlp_adapter"),
    ("M7", f"python scripts/train_imagery_adapter.py --perception-checkpoint {CKPT} "
           f"--imagery-index {IDX} --adapter-type mlp --output-dir checkpoints/adapters/subj01"),
    ("A4", f"python scripts/run_imagery_ablations.py --index {IDX} --checkpoint {CKPT} "
           "--model-type two_stage --output-dir outputs/imagery_ablations/subj01 --epochs 50 "
           "--with-condition"),
    ("R6", f"python scripts/run_imagery_ablations.py --index {IDX} --checkpoint {CKPT} "
           "--model-type two_stage --output-dir outputs/imagery_ablations/subj01 --epochs 50 "
           "--with-condition"),
    ("R7", "python scripts/make_paper_figures.py --ablation-dir outputs/imagery_ablations/subj01"
           " --output-dir outputs/imagery_ablations/subj01/figures"),
    ("M8", "python scripts/run_novel_analyses.py --config "
           "configs/experiments/novel_analyses.yaml --dry-run"),
    ("M9", "python scripts/run_novel_analyses.py --config "
           "configs/experiments/novel_analyses.yaml"),
    ("M10", "python scripts/make_novel_figures.py --results-dir outputs/novel_analyses/"),
]
# the README's ablation line differs from A4 only in its flag names and output folder: it is
# parsed to the same config rather than run a second time (each run trains 42 folds)
PARSED_ONLY = [
    ("M11", f"python scripts/run_imagery_ablations.py --perception-checkpoint {CKPT} "
            f"--imagery-index {IDX} --output-dir outputs/ablations/subj01"),
]
LAYOUT = {
    "M1": ["data/indices/nsd_index/subj01.parquet"],
    "M2": ["outputs/clip_cache/clip.parquet"],
    "M3": [IDX],
    "M4": [CKPT, "checkpoints/two_stage/subj01/config_resolved.yaml"],
    "M5": [f"outputs/reports/imagery/perception_transfer/{f}"
           for f in ("metrics.json", "per_trial.csv", "README.md")],
    "A1": [f"outputs/adapters/subj01/mlp/{f}" for f in (
        "checkpoints/adapter_best.pt", "checkpoints/adapter_last.pt", "metrics_train.json",
        "metrics_val.json", "config_resolved.yaml")],
    "A2": [f"outputs/eval/mlp_adapter/{f}" for f in ("metrics.json", "per_trial.csv",
                                                      "README.md")],
    "A4": [f"outputs/imagery_ablations/subj01/{f}" for f in (
        "results_table.csv", "results_table.md", "metrics_all.json", "commands.txt",
        "table.tex", "table_formatted.md", "figures/bar_overall_metric.png")],
    "R7": [f"outputs/imagery_ablations/subj01/figures/{f}" for f in (
        "table.tex", "table_formatted.md", "results_table.csv")],
    "M9": ["outputs/novel_analyses/summary.md",
           "outputs/novel_analyses/results/dimensionality.json"],
}


def as_fmri2img(line: str) -> list[str]:
    """A seed command line as fmri2img arguments: the script becomes its command."""
    words = shlex.split(line)
    assert words[0] == "python" and words[1].startswith("scripts/")
    args = [SCRIPTS[Path(words[1]).name], *words[2:]]
    if args[0] == "ablate":  # 7 methods x 6 folds: 2 epochs each keeps the suite's budget
        args = [("2" if args[i - 1] == "--epochs" else w) for i, w in enumerate(args)]
    return ["cpu" if w == "cuda" and args[i - 1] == "--device" else w
            for i, w in enumerate(args)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seedworld")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    assert main(["simulate", "--out", "nsd", "--scale", "small", "--subjects", "1"]) == 0
    (root / "data").mkdir()
    (root / "data" / "nsd_imagery").symlink_to(root / "nsd")
    spec = root / "tiny_clip.json"
    spec.write_text(json.dumps(TINY_CLIP))
    mp.setenv("NSD_ROOT", "nsd")
    mp.setenv("FMRI2IMG_EMBEDDER", f"open_clip:{spec}:none")
    (root / "configs").mkdir()
    for name in CONFIGS:
        dest = root / "configs" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(REPO / "configs" / name)
    fast = yaml.safe_load((REPO / "configs" / "two_stage_sota.yaml").read_text())
    (root / "configs" / "two_stage_sota.yaml").unlink()
    (root / "configs" / "two_stage_sota.yaml").write_text(yaml.safe_dump({**fast, "epochs": 3}))
    for key, line in SETUP:
        assert main(as_fmri2img(line)) == 0, key
        if key == "M2":  # the simulated dataset's own targets play CLIP's part from here
            shutil.copyfile("nsd/targets/clip_like.parquet", "outputs/clip_cache/clip.parquet")
        for path in LAYOUT.get(key, []):
            assert (root / path).exists(), (key, path)
    yield root
    mp.undo()


def test_seed_commands_run_as_written(world: Path) -> None:
    for key, line in COMMANDS:
        assert main(as_fmri2img(line)) == 0, key
        for path in LAYOUT.get(key, []):
            assert (world / path).exists(), (key, path)
    # the quick start (A1 + A2) scores every target, each by the fold that held it out
    m = json.loads((world / "outputs/eval/mlp_adapter/metrics.json").read_text())
    assert m["n_items"] == 12 and m["protocol"] == "leave-targets-out"
    assert m["warning"] is None and m["adapter"]["type"] == "mlp"
    assert "Imagery protocol: leave-targets-out" in (
        world / "outputs/eval/mlp_adapter/README.md").read_text()
    rows = json.loads((world / "outputs/imagery_ablations/subj01/metrics_all.json")
                      .read_text())
    methods = {r["method"] for r in rows["rows"]}
    assert {"direct", "adapter_mlp", "adapter_mlp_cond", "finetune"} <= methods
    # without --perception-index the retraining methods are named as skipped, not failed
    assert set(rows["skipped"]) == {"mixed", "mixed_vision", "imagery_only",
                                    "imagery_only_vision"}


def test_readme_ablation_line_is_the_quick_start_ablation(world: Path) -> None:
    parser = build_parser()
    for key, line in PARSED_ONLY:
        args = parser.parse_args(as_fmri2img(line))
        cfg = config_from_args(AblationConfig, args)
        assert cfg.index == IDX and cfg.checkpoint == CKPT, key


def test_single_fold_adapter_is_labelled(world: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train-adapter", "--index", IDX, "--checkpoint", CKPT, "--adapter", "linear",
                 "--fold", "0", "--epochs", "3", "--output-dir", "one_fold",
                 "--cache-root", "cache"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--cache-root has no meaning in fmri2img train-adapter" in err
    assert main(["eval", "--index", IDX, "--checkpoint", CKPT, "--adapter-checkpoint",
                 "one_fold/checkpoints/adapter_best.pt", "--mode", "imagery", "--output-dir",
                 "one_fold/eval", "--n-bootstrap", "200", "--n-permutations", "100"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "SMALL SAMPLE: only 2 items scored" in err
    m = json.loads(Path("one_fold/eval/metrics.json").read_text())
    assert m["n_items"] == 2 and m["warning"].startswith("SMALL SAMPLE")
    assert "**Warning.** SMALL SAMPLE" in Path("one_fold/eval/README.md").read_text()


def test_targets_come_from_the_checkpoint(world: Path, capsys: pytest.CaptureFixture) -> None:
    table = Path("moved/clip.parquet")
    table.parent.mkdir()
    shutil.copyfile("outputs/clip_cache/clip.parquet", table)
    assert main(["train", "--index", "data/indices/nsd_index/subj01.parquet", "--targets",
                 str(table), "--model-type", "ridge", "--output-dir", "ridge"]) == 0
    ev = ["eval", "--index", "data/indices/nsd_index/subj01.parquet", "--checkpoint",
          "ridge/best.pt", "--n-bootstrap", "200", "--n-permutations", "100", "--no-figures"]
    assert main([*ev, "--output-dir", "ridge/ev1"]) == 0
    used = json.loads(Path("ridge/ev1/metrics.json").read_text())["config"]["targets"]
    assert Path(used).resolve() == table.resolve()
    table.rename("moved/elsewhere.parquet")
    assert main([*ev, "--output-dir", "ridge/ev2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is not there any more" in err and "--targets" in err
    assert not Path("ridge/ev2").exists()
    shutil.copyfile("nsd/targets/clip_like_words.parquet", table)  # another table, same path
    assert main([*ev, "--output-dir", "ridge/ev3"]) == 2
    assert "changed since this decoder was trained" in " ".join(
        capsys.readouterr().err.split())


def test_config_files_are_valid_for_their_commands() -> None:
    files = sorted(str(p.relative_to(REPO / "configs")) for p in
                   (REPO / "configs").rglob("*.yaml"))
    assert files == sorted(CONFIGS)
    parser = build_parser()
    for name, command in CONFIGS.items():
        args = parser.parse_args([command, "--config", str(REPO / "configs" / name),
                                  *(["--subject", "subj01"] if command == "train" else []),
                                  *(["--output-dir", "x"] if "output_dir" not in yaml.safe_load(
                                      (REPO / "configs" / name).read_text()) else [])])
        model = {"train": TrainConfig, "analyze": AnalyzeConfig, "eval": EvalConfig,
                 "train-adapter": AdapterTrainConfig, "ablate": AblationConfig}[command]
        cfg = config_from_args(model, args)
        assert cfg.seed in (42, 123, 0), name


def test_readme_maps_every_seed_script() -> None:
    readme = (REPO / "README.md").read_text()
    for script, command in SCRIPTS.items():
        assert re.search(rf"\| `{re.escape(script)}` \| `fmri2img {command}", readme), script
