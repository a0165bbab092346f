"""The ``fmri2img`` command. Thin: each command's options are the fields of its config model
(:mod:`fmri2img.flags`), choices come from the model registries, and each command
validates its config and calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.logging import RichHandler

from fmri2img.config import read_yaml
from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.index import read_index
from fmri2img.data.matfile import MatIndexConfig, build_mat_index
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
from fmri2img.data.nsd_layout import parse_subject, subject_name
from fmri2img.data.simulate import SimulateOptions, simulate
from fmri2img.data.summary import summarize_imagery, summarize_perception
from fmri2img.data.things_index import EEGIndexConfig, build_eeg_index, parse_eeg_subject
from fmri2img.errors import DataError
from fmri2img.experiments.ablation import (
    ABLATION_RESULTS,
    AblationConfig,
    redraw_ablation,
    run_ablation,
)
from fmri2img.experiments.adapter_train import AdapterTrainConfig, train_adapter
from fmri2img.experiments.align_data import (
    AlignDataConfig,
    PairConfig,
    build_align_dataset,
    pair_images,
)
from fmri2img.experiments.align_run import (
    AlignEvalConfig,
    AlignRunConfig,
    evaluate_aligner,
    train_aligner,
)
from fmri2img.experiments.align_run import render as render_alignment
from fmri2img.experiments.analyses import NAMES as ANALYSES
from fmri2img.experiments.analyses.runner import (
    AnalyzeConfig,
    FiguresConfig,
    redraw_figures,
    run_analyze,
)
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder
from fmri2img.experiments.imagery_rsa import ImageryRSAConfig, run_imagery_rsa
from fmri2img.experiments.methods import METHODS
from fmri2img.experiments.reconstruct import ReconstructConfig, reconstruct
from fmri2img.experiments.study import StudyConfig, run_study
from fmri2img.experiments.train_decoder import TrainConfig, train_decoder
from fmri2img.flags import add_fields, config_from_args, flag, given, option_errors
from fmri2img.models import registry
from fmri2img.report.console import print_summary
from fmri2img.report.study_page import ReportConfig, run_report
from fmri2img.seeds import ALIASES, TRAIN_MODEL_FLAGS, add_seed_flags, warn_ignored
from fmri2img.targets.embed import EmbedConfig, embed_captions, embed_index
from fmri2img.version import __version__

log = logging.getLogger("fmri2img")

NSD_ROOT_ENV = "NSD_ROOT"  # the NSD root when build-index is given neither --nsd-root nor --mat
EMBEDDER_ENV = "FMRI2IMG_EMBEDDER"  # embed-images' embedder when --embedder is not given
DEFAULT_EMBEDDER = "open_clip:ViT-B-32:openai"  # the seed's CLIP (its weights are downloaded)
SEED_INDEX_ROOT = "data/indices/nsd_index"  # where the seed's build_full_index.py writes

CACHE_ALIASES = {"reuse_cache": {"aliases": ["--no-cache-reuse"]}}


# ----------------------------------------------------------------------------- commands
def cmd_simulate(args: argparse.Namespace) -> None:
    opts = config_from_args(SimulateOptions, args)
    root = simulate(opts.out, opts.simulation())
    log.info("simulated dataset written to %s", root)


def _only(args: argparse.Namespace, chosen: type[BaseModel], other: type[BaseModel],
          source: str) -> None:
    """Refuse options of ``other`` that ``chosen`` does not take."""
    extra = sorted(set(given(args, other)) - set(chosen.model_fields))
    if extra:
        names = ", ".join(flag(e, other.model_fields[e]) for e in extra)
        raise DataError(f"{names}: not an option of {source}")


def _subject(value: str | None) -> str:
    """subj01 for 1, "1", subj1; other names (a .mat dataset's) as they are."""
    try:
        return subject_name(parse_subject(value or "subj01"))
    except DataError:
        return str(value)


def _output_in_folder(args: argparse.Namespace) -> None:
    """The seed's ``--output DIR/``: the index is written as ``DIR/<subject>.parquet``."""
    out = getattr(args, "output", None)
    if out is not None and (str(out).endswith(("/", "\\")) or Path(out).is_dir()):
        subject = _subject(getattr(args, "subject", None))
        args.output = str(Path(out) / f"{subject}.parquet")


def cmd_build_index(args: argparse.Namespace) -> None:
    _output_in_folder(args)
    if not hasattr(args, "nsd_root") and not hasattr(args, "mat") and os.environ.get(
            NSD_ROOT_ENV) and not args.config:
        args.nsd_root = os.environ[NSD_ROOT_ENV]
        log.info("NSD root from $%s: %s", NSD_ROOT_ENV, args.nsd_root)
    flags = given(args, NSDIndexConfig) | given(args, MatIndexConfig)
    mat = "mat" in flags or (args.config and "mat" in read_yaml(args.config))
    if ("mat" in flags and "nsd_root" in flags) or not (mat or "nsd_root" in flags
                                                      or args.config):
        raise DataError("give exactly one of --nsd-root (with --subject) or --mat (or set "
                        f"${NSD_ROOT_ENV} to the NSD root)")
    if mat:
        _only(args, MatIndexConfig, NSDIndexConfig, "--mat")
        cfg = config_from_args(MatIndexConfig, args)
        build_mat_index(cfg)
    else:
        _only(args, NSDIndexConfig, MatIndexConfig, "--nsd-root")
        if "subject" not in flags and not args.config:
            raise DataError("--nsd-root needs --subject (e.g. subj01)")
        cfg = config_from_args(NSDIndexConfig, args)
        build_nsd_index(cfg)
    print_summary([summarize_perception(cfg.output)], [])


def cmd_build_imagery_index(args: argparse.Namespace) -> None:
    _output_in_folder(args)
    cfg = config_from_args(ImageryIndexConfig, args)
    build_imagery_index(cfg)
    s = summarize_imagery(cfg.output)
    log.info("%s: %s; by set: %s", s["subject"], s["by_task"], s["by_task_and_set"])


def cmd_build_eeg_index(args: argparse.Namespace) -> None:
    out = getattr(args, "output", None)
    if out is not None and (str(out).endswith(("/", "\\")) or Path(out).is_dir()):
        args.output = str(Path(out) / f"{parse_eeg_subject(args.subject)}.parquet")
    build_eeg_index(config_from_args(EEGIndexConfig, args))


def cmd_pair_images(args: argparse.Namespace) -> None:
    pair_images(config_from_args(PairConfig, args))


def cmd_build_align_dataset(args: argparse.Namespace) -> None:
    build_align_dataset(config_from_args(AlignDataConfig, args))


def cmd_align_train(args: argparse.Namespace) -> None:
    train_aligner(config_from_args(AlignRunConfig, args))


def cmd_align_eval(args: argparse.Namespace) -> None:
    result = evaluate_aligner(config_from_args(AlignEvalConfig, args))
    Console().print(render_alignment(result, [k for k in (1, 10) if f"top{k}" in
                                              result["eeg_to_fmri"]]), markup=False)


def cmd_summary(args: argparse.Namespace) -> None:
    perception, imagery = [], []
    for p in args.index:
        _, meta = read_index(p)
        if meta["dataset"] == "nsd-imagery":
            imagery.append(summarize_imagery(p))
        else:
            perception.append(summarize_perception(p))
    print_summary(perception, imagery)


def cmd_embed(args: argparse.Namespace) -> None:
    overrides = {}
    if not hasattr(args, "index") and not args.config:
        # the seed's default: the subject's index in the seed's index folder
        subject = _subject(args.subject)
        overrides["index"] = Path(args.index_root) / f"{subject}.parquet"
        if not overrides["index"].exists():
            raise DataError("no --index given, and the seed's default index is not there; "
                            "give --index PATH", overrides["index"])
    if not hasattr(args, "embedder") and not args.config:
        overrides["embedder"] = os.environ.get(EMBEDDER_ENV, DEFAULT_EMBEDDER)
    cfg = config_from_args(EmbedConfig, args, **overrides)
    path = embed_captions(cfg) if args.command == "embed-captions" else embed_index(cfg)
    log.info("embedding table: %s", path)


def cmd_train(args: argparse.Namespace) -> None:
    seed_model = {key: value for flag_, key in TRAIN_MODEL_FLAGS.items()
                  if (value := getattr(args, "seed_model_" + key, None)) is not None}
    if seed_model:
        args.model = [*getattr(args, "model", []), *seed_model.items()]
    train_decoder(config_from_args(TrainConfig, args))


def cmd_train_adapter(args: argparse.Namespace) -> None:
    train_adapter(config_from_args(AdapterTrainConfig, args))


def cmd_finetune(args: argparse.Namespace) -> None:
    finetune_decoder(config_from_args(FinetuneConfig, args))


def cmd_ablate(args: argparse.Namespace) -> None:
    cfg = config_from_args(AblationConfig, args)
    run_ablation(cfg)
    console = Console()
    console.print((cfg.output_dir / "table_formatted.md").read_text())
    console.print((cfg.output_dir / "hypotheses.md").read_text())


def cmd_eval(args: argparse.Namespace) -> None:
    if getattr(args, "mode", None) == "both":
        log.info("--mode both: imagery mode scores the session's imagery and vision trials")
        args.mode = "imagery"
    evaluate(config_from_args(EvalConfig, args))


def cmd_imagery_rsa(args: argparse.Namespace) -> None:
    cfg = config_from_args(ImageryRSAConfig, args)
    run_imagery_rsa(cfg)
    Console().print((cfg.output_dir / "rsa.md").read_text())


def cmd_analyze(args: argparse.Namespace) -> None:
    cfg = config_from_args(AnalyzeConfig, args)
    out = run_analyze(cfg)
    console = Console()
    if cfg.dry_run:
        for line in out["dry_run"]:
            console.print(line, soft_wrap=True)
        return
    console.print((cfg.output_dir / "summary.md").read_text(), soft_wrap=True)


def cmd_figures(args: argparse.Namespace) -> None:
    cfg = config_from_args(FiguresConfig, args)
    if (cfg.results_dir / ABLATION_RESULTS).exists():
        files = redraw_ablation(cfg.results_dir, cfg.output_dir)
        log.info("%d table and figure files written", len(files))
        return
    files = redraw_figures(cfg)
    log.info("%d figure files written", len(files))


def cmd_reconstruct(args: argparse.Namespace) -> None:
    cfg = config_from_args(ReconstructConfig, args)
    reconstruct(cfg)
    metrics = cfg.output_dir / "image_metrics.md"
    if metrics.exists():
        Console().print(metrics.read_text(), markup=False, soft_wrap=True)
    log.info("grid: %s", cfg.output_dir / "grid.png")


def cmd_report(args: argparse.Namespace) -> None:
    page = run_report(config_from_args(ReportConfig, args))
    Console().print(f"report: {page}", markup=False, soft_wrap=True)


def cmd_study(args: argparse.Namespace) -> None:
    run_study(config_from_args(StudyConfig, args))


# ----------------------------------------------------------------------------- parser
def _command(sub: Any, name: str, help: str, func: Callable[[argparse.Namespace], None],
             *models: type[BaseModel], **kwargs: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    extra = {k: dict(v) for k, v in kwargs.pop("extra", {}).items()}
    for field, aliases in ALIASES.get(name, {}).items():
        extra.setdefault(field, {})
        extra[field]["aliases"] = [*extra[field].get("aliases", []), *aliases]
    add_fields(p, *models, extra=extra, **kwargs)
    add_seed_flags(p, name)
    p.add_argument("--config", type=Path, help="YAML file of options (flags override it)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmri2img", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fmri2img {__version__}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    decoders = registry.decoders.available()
    adapters = registry.adapters.available()
    methods = list(METHODS)

    _command(sub, "simulate", "write a simulated NSD + NSD-Imagery dataset", cmd_simulate,
             SimulateOptions)
    _command(sub, "build-index", "NSD perception or .mat data -> trial index + cache",
             cmd_build_index, NSDIndexConfig, MatIndexConfig, extra=CACHE_ALIASES)
    _command(sub, "build-imagery-index", "NSD-Imagery -> trial index + cache",
             cmd_build_imagery_index, ImageryIndexConfig, extra=CACHE_ALIASES)
    _command(sub, "build-eeg-index", "THINGS-EEG2 -> trial index + cache (resampled once)",
             cmd_build_eeg_index, EEGIndexConfig, extra=CACHE_ALIASES)
    _command(sub, "pair-images", "pair THINGS and NSD images by embedding cosine, cluster "
             "the pairs", cmd_pair_images, PairConfig)
    _command(sub, "build-align-dataset", "EEG epochs x fMRI features of the image pairs -> "
             "LMDB split by pair", cmd_build_align_dataset, AlignDataConfig)
    _command(sub, "align-train", "train the EEG-fMRI aligner (CBraMod + pooling head + "
             "fMRI-query attention) on an alignment dataset", cmd_align_train, AlignRunConfig,
             extra={"model": {"help": "aligner options, e.g. --model "
                              "backbone='{n_layer: 12, pretrained: weights.pth}' "
                              "head='{kind: attention, n_queries: 16}'"},
                    "train": {"help": "training options, e.g. --train epochs=100 "
                              "batch_size=64 lr=1e-4"}})
    _command(sub, "align-eval", "score an aligner: MSE, cosine, EEG<->fMRI retrieval with "
             "CIs, beside the EEG-only control", cmd_align_eval, AlignEvalConfig)
    p = sub.add_parser("summary", help="print the summary table of built indices")
    p.add_argument("index", type=Path, nargs="+")
    p.set_defaults(func=cmd_summary)
    for name, what in (("embed-images", "the index's stimulus images"),
                       ("embed-captions", "the index's stimulus captions")):
        p = _command(sub, name, f"embed {what} -> embedding table (cached)", cmd_embed,
                     EmbedConfig, skip=["kind"])
        p.add_argument("--index-root", default=SEED_INDEX_ROOT,
                       help="without --index: the index INDEX_ROOT/<subject>.parquet")
        p.add_argument("--subject", default=None, help="without --index: whose index")
    p = _command(sub, "train", "fit a decoder: index + target embeddings -> checkpoint",
                 cmd_train,
             TrainConfig, extra={
                 "model_type": {"choices": decoders},
                 "pca": {"nargs": "?", "const": 512, "metavar": "K"},
                 "model": {"aliases": ["--set"], "help": "a decoder option, e.g. --set "
                           "lr=3e-4 --set alphas=[1,10,100]"}})
    for seed_flag, key in TRAIN_MODEL_FLAGS.items():
        p.add_argument(seed_flag, dest="seed_model_" + key, type=yaml.safe_load,
                       default=None, help=f"the decoder option {key} (as --set {key}=VALUE)")
    _command(sub, "train-adapter", "adapter on a frozen decoder, trained on imagery",
             cmd_train_adapter, AdapterTrainConfig, extra={"adapter": {"choices": adapters}})
    _command(sub, "finetune", "tune every weight of a decoder on imagery trials",
             cmd_finetune, FinetuneConfig)
    _command(sub, "ablate", "every transfer strategy x subject, tables, figures, hypothesis "
             "verdicts", cmd_ablate, AblationConfig, extra={"methods": {"choices": methods}})
    _command(sub, "eval", "score a decoder on perception or imagery trials", cmd_eval,
             EvalConfig, extra={"adapter_type": {"choices": ["auto", *adapters]},
                                "model_type": {"choices": ["auto", *decoders]},
                                "mode": {"choices": ["perception", "imagery", "both"]}})
    _command(sub, "imagery-rsa", "vision-imagery RSA per subject, stimulus set and ROI, "
             "with group means and sign-flip p-values", cmd_imagery_rsa, ImageryRSAConfig)
    _command(sub, "analyze", "the perception-vs-imagery analyses per subject, with "
             "statistics, summary and figures", cmd_analyze, AnalyzeConfig,
             extra={"analyses": {"choices": list(ANALYSES)},
                    "options": {"help": "per-analysis options, e.g. --options "
                                "uncertainty='{n_passes: 50}'"}})
    _command(sub, "figures", "redraw every analysis figure (PNG, PDF) from saved results",
             cmd_figures, FiguresConfig)
    _command(sub, "reconstruct", "images from decoded embeddings (eval's predictions) "
             "through a diffusion pipeline, scored against the stimuli, with a grid",
             cmd_reconstruct, ReconstructConfig,
             extra={"backend": {"choices": registry.generators.available()},
                    "generator": {"help": "generation options, e.g. --generator steps=50 "
                                  "--generator guidance_scale=4"}})
    _command(sub, "report", "one self-contained HTML page of a study folder", cmd_report,
             ReportConfig)
    _command(sub, "study", "the main job: simulate (or use --nsd-root), index, train, "
             "evaluate, ablate", cmd_study, StudyConfig, extra={
                 "models": {"choices": decoders, "nargs": "*"},
                 "ablation_model": {"choices": [*decoders, None]},
                 "ablation_methods": {"choices": methods},
                 "analyses": {"choices": list(ANALYSES), "nargs": "*"},
                 "reconstruct_backend": {"choices": registry.generators.available()}})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = "DEBUG" if getattr(args, "verbose", False) else args.log_level
    # not a terminal (CI, a log file): plain lines, so that paths are never wrapped
    handler: logging.Handler = (
        RichHandler(console=Console(stderr=True), show_path=False) if sys.stderr.isatty()
        else logging.StreamHandler(sys.stderr))
    fmt = "%(message)s" if sys.stderr.isatty() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]", handlers=[handler],
                        force=True)
    func: Callable[[argparse.Namespace], None] = args.func
    warn_ignored(args)
    try:
        func(args)
    except DataError as exc:
        log.error("error: %s", exc)
        return 2
    except ValidationError as exc:
        log.error("invalid options:\n%s", option_errors(exc))
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished outputs are kept, unfinished ones were not written")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
