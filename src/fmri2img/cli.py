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

    names = ("out", "scale", "seed", "null", "subjects", "nsd_root", "roi", "average")
    cfg = _make(StudyConfig, args, names)
    run_study(cfg)


def _add_cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, help="where beta caches live (default: "
                   "OUTPUT's folder/cache)")
    p.add_argument("--cache-dtype", choices=["float32", "float16"])
    p.add_argument("--config", type=Path, help="YAML file of options (flags override it)")


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
    p.add_argument("--zscore", choices=["run", "none"])
    p.add_argument("--no-cache-reuse", action="store_true")
    _add_cache_flags(p)
    p.set_defaults(func=cmd_build_imagery_index)

    p = sub.add_parser("summary", help="print the summary table of built indices")
    p.add_argument("index", type=Path, nargs="+")
    p.set_defaults(func=cmd_summary)

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
