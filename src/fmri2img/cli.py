"""The ``fmri2img`` command. Thin: each command validates its options and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from fmri2img import __version__
from fmri2img.errors import DataError

log = logging.getLogger("fmri2img")


def _options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """Explicitly given options only, so config-file values are not overridden by defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _make(cls: Any, args: argparse.Namespace, names: Sequence[str]) -> Any:
    opts = _options(args, names)
    if getattr(args, "config", None):
        return cls.from_yaml(args.config, **opts)
    return cls(**opts)


def cmd_simulate(args: argparse.Namespace) -> None:
    from fmri2img.data.simulate import SimulationConfig, simulate

    kwargs: dict[str, Any] = {"seed": args.seed, "null": args.null}
    if args.subjects:
        kwargs["subjects"] = tuple(args.subjects)
    if args.sessions:
        kwargs["n_sessions"] = args.sessions
    if args.formats:
        kwargs["formats"] = tuple(args.formats)
    if args.no_images:
        kwargs["write_images"] = False
    cfg = SimulationConfig.from_scale(args.scale, **kwargs)
    root = simulate(args.out, cfg)
    log.info("simulated dataset written to %s", root)


NSD_OPTS = ("nsd_root", "subject", "output", "betas_version", "beta_format", "roi", "sessions",
            "average", "zscore", "val_fraction", "seed", "cache_dtype", "cache_dir", "reuse_cache")
MAT_OPTS = ("mat", "output", "dataset", "subject", "zscore", "val_fraction", "seed",
            "cache_dtype", "cache_dir", "reuse_cache")
IMG_OPTS = ("nsd_root", "subject", "output", "betas_version", "beta_format", "roi", "meta_dir",
            "events", "zscore", "cache_dtype", "cache_dir", "reuse_cache")


def cmd_build_index(args: argparse.Namespace) -> None:
    from fmri2img.data.summary import print_summary, summarize_perception

    if bool(args.mat) == bool(args.nsd_root):
        raise DataError("give exactly one of --nsd-root (with --subject) or --mat")
    _common_flags(args)
    if args.mat:
        from fmri2img.data.matfile import MatIndexConfig, build_mat_index

        cfg = _make(MatIndexConfig, args, MAT_OPTS)
        build_mat_index(cfg)
    else:
        from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index

        if args.subject is None and not args.config:
            raise DataError("--nsd-root needs --subject (e.g. subj01)")
        cfg = _make(NSDIndexConfig, args, NSD_OPTS)
        build_nsd_index(cfg)
    print_summary([summarize_perception(cfg.output)], [])


def cmd_build_imagery_index(args: argparse.Namespace) -> None:
    from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
    from fmri2img.data.summary import summarize_imagery

    _common_flags(args)
    cfg = _make(ImageryIndexConfig, args, IMG_OPTS)
    build_imagery_index(cfg)
    s = summarize_imagery(cfg.output)
    log.info("%s: %s; by set: %s", s["subject"], s["by_task"], s["by_task_and_set"])


def _common_flags(args: argparse.Namespace) -> None:
    if getattr(args, "no_cache_reuse", False):
        args.reuse_cache = False


def cmd_summary(args: argparse.Namespace) -> None:
    from fmri2img.data.index import read_index
    from fmri2img.data.summary import print_summary, summarize_imagery, summarize_perception

    perception, imagery = [], []
    for p in args.index:
        _, meta = read_index(p)
        (imagery if meta["dataset"] == "nsd-imagery" else perception).append(
            summarize_imagery(p) if meta["dataset"] == "nsd-imagery" else summarize_perception(p))
    print_summary(perception, imagery)


def cmd_study(args: argparse.Namespace) -> None:
    from fmri2img.experiments.study import StudyConfig, run_study

    names = ("out", "scale", "seed", "null", "subjects", "nsd_root", "roi", "average", "models",
             "targets", "n_permutations", "n_bootstrap")
    cfg = _make(StudyConfig, args, names)
    run_study(cfg)


EMBED_OPTS = ("index", "embedder", "output", "batch_size", "device", "normalize", "conceptual",
              "captions", "reuse", "rehash")


def cmd_embed(args: argparse.Namespace) -> None:
    from fmri2img.targets.embed import EmbedConfig, embed_captions, embed_index

    cfg = _make(EmbedConfig, args, EMBED_OPTS)
    path = embed_captions(cfg) if args.command == "embed-captions" else embed_index(cfg)
    log.info("embedding table: %s", path)


TRAIN_OPTS = ("index", "targets", "model_type", "output_dir", "epochs", "device", "pca", "seed")


def cmd_train(args: argparse.Namespace) -> None:
    from fmri2img.experiments.train_decoder import TrainConfig, train_decoder

    cfg = _make(TrainConfig, args, TRAIN_OPTS)
    if args.no_zscore:
        cfg.zscore = False
    if args.imagery_index:
        from fmri2img.experiments.train_decoder import ImageryTraining

        cfg.imagery = ImageryTraining(**{k: v for k, v in {
            "index": args.imagery_index, "protocol": args.protocol, "n_folds": args.n_folds,
            "fold": args.fold, "data_fraction": args.data_fraction,
            "seed": args.seed}.items() if v is not None})
    if args.no_perception:
        cfg.include_perception = False
    if args.set:
        cfg.model = {**cfg.model, **_parse_sets(args.set)}
    train_decoder(cfg)


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as YAML (numbers, lists, booleans)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


EVAL_OPTS = ("index", "checkpoint", "targets", "mode", "split", "output_dir", "pool_size",
             "n_pools", "n_bootstrap", "n_permutations", "seed", "perception_metrics",
             "adapter_checkpoint", "adapter_type")

ADAPTER_OPTS = ("index", "checkpoint", "targets", "output_dir", "model_type", "adapter", "hidden",
                "dropout", "condition_token", "train_domain", "shuffle_domains", "epochs", "lr",
                "weight_decay", "batch_size", "loss", "early_stop_patience", "protocol",
                "n_folds", "fold", "data_fraction", "n_averages", "split_train", "split_val",
                "seed", "device")
FINETUNE_OPTS = ("index", "checkpoint", "targets", "output_dir", "epochs", "lr", "weight_decay",
                 "batch_size", "loss", "early_stop_patience", "protocol", "n_folds", "fold",
                 "data_fraction", "n_averages", "seed", "device")
ABLATE_OPTS = ("index", "checkpoint", "targets", "output_dir", "perception_index", "model_type",
               "subjects", "methods", "with_condition", "fractions", "protocol", "n_folds",
               "epochs", "seed", "n_bootstrap", "n_permutations", "scheduler")


def cmd_train_adapter(args: argparse.Namespace) -> None:
    from fmri2img.experiments.adapter_train import AdapterTrainConfig, train_adapter

    train_adapter(_make(AdapterTrainConfig, args, ADAPTER_OPTS))


def cmd_finetune(args: argparse.Namespace) -> None:
    from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder

    finetune_decoder(_make(FinetuneConfig, args, FINETUNE_OPTS))


def cmd_ablate(args: argparse.Namespace) -> None:
    from rich.console import Console

    from fmri2img.experiments.ablation import AblationConfig, run_ablation

    cfg = _make(AblationConfig, args, ABLATE_OPTS)
    run_ablation(cfg)
    console = Console()
    console.print((cfg.output_dir / "table_formatted.md").read_text())
    console.print((cfg.output_dir / "hypotheses.md").read_text())


def cmd_eval(args: argparse.Namespace) -> None:
    from fmri2img.experiments.evaluate import EvalConfig, evaluate

    cfg = _make(EvalConfig, args, EVAL_OPTS)
    if args.no_average:
        cfg.average = False
    evaluate(cfg)


def _add_cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, help="where beta caches live (default: "
                   "OUTPUT's folder/cache)")
    p.add_argument("--cache-dtype", choices=["float32", "float16"])
    p.add_argument("--config", type=Path, help="YAML file of options (flags override it)")


def _add_protocol_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=["leave-targets-out", "held-out-repetitions"])
    p.add_argument("--n-folds", type=int)
    p.add_argument("--fold", type=int)
    p.add_argument("--data-fraction", type=float, help="share of imagery training trials")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--loss", choices=["cosine", "mse", "hybrid"])
    p.add_argument("--early-stop-patience", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmri2img", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fmri2img {__version__}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated NSD + NSD-Imagery dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scale", choices=["small", "default", "nsd"], default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--null", action="store_true",
                   help="imagery statistically identical to perception (false-positive checks)")
    p.add_argument("--subjects", type=int, nargs="+", help="subset of 1 2 5 7")
    p.add_argument("--sessions", type=int, help="sessions per subject (default: the scale's)")
    p.add_argument("--formats", nargs="+", choices=["hdf5", "nifti"])
    p.add_argument("--no-images", action="store_true", help="skip rendering stimulus images")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("build-index", help="NSD perception or .mat data -> trial index + cache")
    p.add_argument("--nsd-root", type=Path)
    p.add_argument("--mat", type=Path)
    p.add_argument("--subject")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--dataset", help=".mat: dataset name (default: file stem)")
    p.add_argument("--betas-version")
    p.add_argument("--beta-format", choices=["auto", "hdf5", "nifti"])
    p.add_argument("--roi", help="ATLAS or ATLAS:NAME,... (default nsdgeneral)")
    p.add_argument("--sessions", type=int, nargs="+")
    p.add_argument("--average", choices=["none", "test", "all"],
                   help="average repetitions: none, test images only, or every image")
    p.add_argument("--zscore", choices=["session", "train", "none"])
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-cache-reuse", action="store_true")
    _add_cache_flags(p)
    p.set_defaults(func=cmd_build_index)

    p = sub.add_parser("build-imagery-index", help="NSD-Imagery -> trial index + cache")
    p.add_argument("--nsd-root", type=Path)
    p.add_argument("--subject")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--betas-version")
    p.add_argument("--beta-format", choices=["auto", "hdf5", "nifti"])
    p.add_argument("--roi")
    p.add_argument("--meta-dir", type=Path,
                   help="folder with nsdimagery_stiminfo.csv and subjNN_Imagery_Behavioralresponse"
                        ".csv")
    p.add_argument("--events", type=Path,
                   help="folder of official nsdimagery_subjXX_<run>.tsv files, or one event table")
    p.add_argument("--zscore", choices=["run", "session", "none"])
    p.add_argument("--no-cache-reuse", action="store_true")
    _add_cache_flags(p)
    p.set_defaults(func=cmd_build_imagery_index)

    p = sub.add_parser("summary", help="print the summary table of built indices")
    p.add_argument("index", type=Path, nargs="+")
    p.set_defaults(func=cmd_summary)

    for name, what in (("embed-images", "the index's stimulus images"),
                       ("embed-captions", "the index's stimulus captions")):
        p = sub.add_parser(name, help=f"embed {what} -> embedding table (cached)")
        p.add_argument("--index", type=Path)
        p.add_argument("--embedder", help="open_clip:ARCH:PRETRAINED, hf-clip:NAME_OR_DIR, "
                       "effnet-lite0, minilm, st:NAME_OR_DIR")
        p.add_argument("--output", type=Path)
        p.add_argument("--batch-size", type=int)
        p.add_argument("--device", help="cpu, cuda, cuda:N")
        p.add_argument("--normalize", action="store_true", default=None,
                       help="L2-normalise the embeddings")
        p.add_argument("--conceptual", choices=["auto", "text", "skip"],
                       help="targets without an image (NSD-Imagery set C): embed their word "
                            "with a text tower (auto/text) or leave them out")
        p.add_argument("--captions", type=Path, help="caption file (Parquet/CSV, or .npy by "
                       "stimulus_id)")
        p.add_argument("--no-reuse", dest="reuse", action="store_false", default=None,
                       help="recompute even when the table is up to date")
        p.add_argument("--rehash", action="store_true", default=None,
                       help="re-hash the sources instead of trusting size and mtime")
        p.add_argument("--config", type=Path)
        p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train", help="fit a decoder: index + target embeddings -> checkpoint")
    p.add_argument("--index", type=Path)
    p.add_argument("--targets", type=Path, help="embedding table (embed-images output, or the "
                   "simulator's targets/clip_like.parquet)")
    p.add_argument("--model-type", choices=["ridge", "mlp", "two_stage", "contrastive_mlp"])
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--epochs", type=int, help="torch decoders: maximum epochs")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--pca", type=int, nargs="?", const=512,
                   help="PCA on z-scored voxels, fitted on training trials (default k=512)")
    p.add_argument("--no-zscore", action="store_true", help="skip voxel z-scoring")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a decoder option, e.g. --set lr=3e-4 --set alphas=[1,10,100]")
    p.add_argument("--imagery-index", type=Path, help="add imagery trials of a protocol fold "
                   "(mixed training; with --no-perception: imagery only)")
    p.add_argument("--no-perception", action="store_true",
                   help="with --imagery-index: train on imagery trials alone")
    _add_protocol_flags(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--config", type=Path, help="YAML file of options (flags override it)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-adapter", help="adapter on a frozen decoder, trained on imagery")
    p.add_argument("--index", type=Path, help="NSD-Imagery index")
    p.add_argument("--checkpoint", type=Path, help="the frozen decoder")
    p.add_argument("--targets", type=Path)
    p.add_argument("--model-type", help="checked against the checkpoint")
    p.add_argument("--adapter", choices=["linear", "mlp"])
    p.add_argument("--hidden", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--condition-token", action="store_true", default=None,
                   help="learned per-domain vectors; trains on imagery and vision trials")
    p.add_argument("--train-domain", choices=["imagery", "perception"],
                   help="perception: train on the session's vision trials (a control)")
    p.add_argument("--shuffle-domains", action="store_true", default=None,
                   help="with --condition-token: permute the domain labels among the "
                        "training examples (a control with the same data)")
    p.add_argument("--output-dir", type=Path)
    _add_training_flags(p)
    _add_protocol_flags(p)
    p.add_argument("--n-averages", type=int, help="repetition averages per target (32)")
    p.add_argument("--split-train", help="use the index's split labels instead of a protocol")
    p.add_argument("--split-val")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_train_adapter)

    p = sub.add_parser("finetune", help="tune every weight of a decoder on imagery trials")
    p.add_argument("--index", type=Path, help="NSD-Imagery index")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--targets", type=Path)
    p.add_argument("--output-dir", type=Path)
    _add_training_flags(p)
    _add_protocol_flags(p)
    p.add_argument("--n-averages", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("ablate", help="every transfer strategy x subject, tables, figures, "
                       "hypothesis verdicts")
    p.add_argument("--index", help="NSD-Imagery index; may hold {subject}")
    p.add_argument("--checkpoint", help="perception decoder; may hold {subject}")
    p.add_argument("--perception-index", help="NSD perception index (mixed, imagery_only, "
                   "perception scores); may hold {subject}")
    p.add_argument("--targets", type=Path)
    p.add_argument("--model-type")
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--subjects", type=int, nargs="+")
    p.add_argument("--methods", nargs="+", help="direct adapter_linear adapter_mlp "
                   "adapter_mlp_cond adapter_mlp_cond_shuffled adapter_mlp_vision mixed "
                   "finetune imagery_only")
    p.add_argument("--with-condition", action="store_true", default=None,
                   help="add the conditioned mlp adapter")
    p.add_argument("--fractions", type=float, nargs="+",
                   help="shares of the imagery training trials, e.g. 0.1 0.2 0.5 1")
    p.add_argument("--protocol", choices=["leave-targets-out", "held-out-repetitions"])
    p.add_argument("--n-folds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--n-bootstrap", type=int)
    p.add_argument("--n-permutations", type=int)
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); default: "
                   "run cells in this process")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("eval", help="score a decoder on perception or imagery trials")
    p.add_argument("--index", type=Path)
    p.add_argument("--checkpoint", type=Path, nargs="+",
                   help="decoder, or one per fold of a protocol")
    p.add_argument("--adapter-checkpoint", type=Path, nargs="+",
                   help="adapter(s) applied to imagery trials, one per fold")
    p.add_argument("--adapter-type", choices=["auto", "linear", "mlp"])
    p.add_argument("--targets", type=Path)
    p.add_argument("--mode", choices=["perception", "imagery"])
    p.add_argument("--split")
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--pool-size", type=int, help="retrieval pool size (default 300)")
    p.add_argument("--n-pools", type=int, help="random pools averaged (default 30)")
    p.add_argument("--n-bootstrap", type=int)
    p.add_argument("--n-permutations", type=int)
    p.add_argument("--no-average", action="store_true",
                   help="perception: score single trials instead of per-image averages")
    p.add_argument("--perception-metrics", type=Path,
                   help="imagery: metrics.json of a perception eval, for the second ratio")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("study", help="the main job: simulate (or use --nsd-root), index, "
                       "summarise")
    p.add_argument("--out", type=Path)
    p.add_argument("--scale", choices=["small", "default", "nsd"])
    p.add_argument("--seed", type=int)
    p.add_argument("--null", action="store_true", default=None)
    p.add_argument("--subjects", type=int, nargs="+")
    p.add_argument("--nsd-root", type=Path, help="real NSD root instead of simulated data")
    p.add_argument("--roi")
    p.add_argument("--average", choices=["none", "test", "all"])
    p.add_argument("--models", nargs="*", choices=["ridge", "mlp", "two_stage", "contrastive_mlp"],
                   help="decoders trained per subject (default ridge mlp two_stage; none: "
                        "dataset summary only)")
    p.add_argument("--targets", type=Path, help="embedding table (default: the simulator's)")
    p.add_argument("--n-permutations", type=int)
    p.add_argument("--n-bootstrap", type=int)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
                        force=True)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except DataError as exc:
        log.error("error: %s", exc)
        return 2
    except ValidationError as exc:
        log.error("invalid options:\n%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished outputs are kept, unfinished ones were not written")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
