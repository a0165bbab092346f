"""The seed project's scripts and flags, as fmri2img accepts them.

Users arrive with the seed's documents in hand (an adapter quick-start guide, a research
roadmap of "exact commands", a README): ``python scripts/<name>.py --flag ...``. Each seed
script is one ``fmri2img`` command (:data:`SCRIPTS`); a seed flag named otherwise here is
an alias of ours (:data:`ALIASES`), and one that means nothing here is accepted and
answered with a warning saying what to use instead (:data:`NO_MEANING`), rather than
failing on an unknown argument. ``cli`` adds both to the parser; the README's table and
``tests/test_seed_workflows.py`` are built from the same tables.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

log = logging.getLogger("fmri2img")

# seed script -> fmri2img command
SCRIPTS: dict[str, str] = {
    "build_full_index.py": "build-index",
    "build_clip_cache.py": "embed-images",
    "build_nsd_imagery_index.py": "build-imagery-index",
    "train_two_stage.py": "train",
    "eval_perception_to_imagery_transfer.py": "eval",
    "train_imagery_adapter.py": "train-adapter",
    "run_imagery_ablations.py": "ablate",
    "make_paper_figures.py": "figures",
    "run_novel_analyses.py": "analyze",
    "make_novel_figures.py": "figures",
}

# config files under configs/ -> the command that takes them with --config
CONFIGS: dict[str, str] = {
    "base.yaml": "train",
    "two_stage_sota.yaml": "train",
    "analyses.yaml": "analyze",
    "experiments/novel_analyses.yaml": "analyze",
    "experiments/perception_to_imagery_eval.yaml": "eval",
    "experiments/imagery/baseline_evaluation.yaml": "eval",
    "experiments/imagery/adapter_training.yaml": "train-adapter",
    "experiments/imagery/mixed_training.yaml": "ablate",
}

# command -> {our field: [seed flags]}
ALIASES: dict[str, dict[str, list[str]]] = {
    "build-index": {"cache_dir": ["--cache-root"]},
    "build-imagery-index": {"nsd_root": ["--data-root"], "cache_dir": ["--cache-root"]},
    "embed-images": {"index": ["--index-file"], "output": ["--cache", "--out"],
                     "batch_size": ["--batch"]},
    "train": {"targets": ["--clip-cache"]},
    "eval": {"ks": ["--retrieval-k"]},
    "train-adapter": {"checkpoint": ["--perception-checkpoint"], "index": ["--imagery-index"],
                      "adapter": ["--adapter-type"]},
    "ablate": {"checkpoint": ["--perception-checkpoint"], "index": ["--imagery-index"]},
    "figures": {"results_dir": ["--ablation-dir"]},
}

# train_two_stage.py's flags that are decoder options here (``--set KEY=VALUE``)
TRAIN_MODEL_FLAGS: dict[str, str] = {"--lr": "lr", "--wd": "weight_decay",
                                     "--batch-size": "batch_size",
                                     "--patience": "early_stop_patience",
                                     "--dropout": "dropout", "--temperature": "temperature",
                                     "--n-blocks": "n_blocks"}


@dataclass(frozen=True)
class Ignored:
    """A seed flag with no meaning here: whether it takes a value, and what to do
    instead."""

    takes_value: bool
    instead: str


_CACHE = Ignored(True, "the index records where its beta cache is; nothing to give")
_DRY = Ignored(False, "nothing is simulated here; run on small data instead (fmri2img "
                      "simulate --scale small)")
NO_MEANING: dict[str, dict[str, Ignored]] = {
    "build-index": {"--max-sessions": Ignored(True, "use --sessions 1 2 ...")},
    "build-imagery-index": {
        "--stimulus-root": Ignored(True, "stimulus images are read from the NSD root "
                                         "(nsddata_stimuli/)"),
        "--dry-run": _DRY,
        "--force": Ignored(False, "outputs are replaced atomically; nothing to force"),
        "--validate-only": Ignored(False, "a missing or malformed input stops the command "
                                          "before anything is written")},
    "embed-images": {
        "--cache-root": _CACHE,
        "--limit": Ignored(True, "every stimulus of the index is embedded (the table is "
                                 "reused when up to date)"),
        "--max-items": Ignored(True, "every stimulus of the index is embedded"),
        "--include-ids": Ignored(False, "stimulus ids are always written"),
        "--log-file": Ignored(True, "redirect stderr (2> FILE)"),
        "--use-hdf5": Ignored(False, "the NSD stimulus HDF5 is read when present")},
    "train": {
        "--override": Ignored(True, "use --set KEY=VALUE (decoder options) or a flag"),
        "--use-preproc": Ignored(False, "z-scoring is on by default; --pca K adds PCA"),
        "--preproc-dir": Ignored(True, "preprocessing is saved inside the checkpoint"),
        "--checkpoint-dir": Ignored(True, "use --output-dir"),
        "--save-name": Ignored(True, "the checkpoint is OUTPUT_DIR/checkpoints/decoder.pt, "
                                     "linked as OUTPUT_DIR/best.pt")},
    "eval": {"--batch-size": Ignored(True, "prediction batches are sized automatically"),
             "--cache-root": _CACHE, "--dry-run": _DRY},
    "train-adapter": {"--cache-root": _CACHE,
                      "--num-workers": Ignored(True, "examples are held in memory"),
                      "--clip-cache-dir": Ignored(True, "the target rows used are written "
                                                        "to OUTPUT_DIR/cache/targets.npz")},
    "ablate": {"--cache-root": _CACHE,
               "--lr": Ignored(True, "each method trains with its command's defaults"),
               "--batch-size": Ignored(True, "each method trains with its command's "
                                             "defaults"),
               "--device": Ignored(True, "ablation cells train on the CPU, in parallel with "
                                         "--workers N or on a Dask --scheduler"),
               "--skip-baseline": Ignored(False, "direct (the baseline) always runs: every "
                                                 "method is compared with it"),
               "--skip-linear": Ignored(False, "choose with --methods"),
               "--skip-mlp": Ignored(False, "choose with --methods"),
               "--dry-run": Ignored(False, "each cell's command is written to commands.txt "
                                           "as it runs")},
}

GLOBAL_FLAGS = ("--verbose",)


def add_seed_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The seed's flags that have no meaning for ``command``, and ``--verbose``."""
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log at DEBUG level (the seed's flag)")
    for name, ignored in NO_MEANING.get(command, {}).items():
        dest = "seed_ignored_" + name.lstrip("-").replace("-", "_")
        if ignored.takes_value:
            parser.add_argument(name, dest=dest, default=argparse.SUPPRESS, nargs="+",
                                metavar="VALUE", help=f"(seed flag, unused: {ignored.instead})")
        else:
            parser.add_argument(name, dest=dest, action="store_true",
                                default=argparse.SUPPRESS,
                                help=f"(seed flag, unused: {ignored.instead})")


def warn_ignored(args: argparse.Namespace) -> None:
    """Say, for each seed flag given that means nothing here, what to use instead."""
    table = NO_MEANING.get(getattr(args, "command", ""), {})
    for name, ignored in table.items():
        dest = "seed_ignored_" + name.lstrip("-").replace("-", "_")
        if hasattr(args, dest):
            log.warning("%s has no meaning in fmri2img %s and was ignored: %s", name,
                        args.command, ignored.instead)
