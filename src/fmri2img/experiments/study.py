"""The main job: simulate (or reuse) a dataset, build every subject's indices, summarise.

Each step is skipped when its outputs exist and are up to date (the simulator's resolved
config and completion marker, the caches' manifests), so a killed run restarted with the
same command picks up where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator
from rich.console import Console

from fmri2img.analysis.decoders import compare_decoders
from fmri2img.analysis.hypotheses import PrimaryMetric
from fmri2img.config import StrictModel
from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.simulate import SimulationConfig, simulate
from fmri2img.data.summary import summarize_imagery, summarize_perception, write_summary
from fmri2img.errors import DataError
from fmri2img.experiments import analyses
from fmri2img.experiments.ablation import (
    AblationConfig,
    check_methods,
    needs_gradient_decoder,
    run_ablation,
)
from fmri2img.experiments.analyses.runner import AnalyzeConfig, run_analyze
from fmri2img.experiments.h1 import H1Config, run_h1
from fmri2img.experiments.imagery_rsa import ImageryRSAConfig, run_imagery_rsa
from fmri2img.experiments.reconstruct import ReconstructConfig
from fmri2img.experiments.study_eeg import EEGStudyOptions, run_study_eeg
from fmri2img.experiments.study_images import run_study_reconstruction
from fmri2img.experiments.train_decoder import checkpoint_path
from fmri2img.io.atomic import write_json, write_text
from fmri2img.models import registry
from fmri2img.report.console import make_console, print_h1_table, print_summary
from fmri2img.report.study_page import write_study_report

log = logging.getLogger(__name__)
DONE_MARKER = ".simulation_complete"


class StudyConfig(StrictModel):
    out: Path = Field(Path("runs/demo"), description="output folder")
    scale: Literal["small", "default", "nsd"] = Field("default",
                                                      description="simulated dataset size")
    seed: int = 0
    null: bool = Field(False, description="simulate imagery statistically identical to "
                                          "perception (false-positive checks)")
    subjects: list[int] = Field(default_factory=lambda: [1, 2, 5, 7])
    nsd_root: Path | None = Field(None, description="real NSD root instead of the simulator")
    roi: str = Field("nsdgeneral", description="ATLAS or ATLAS:NAME,...")
    average: Literal["none", "test", "all"] = Field(
        "none", description="average repetitions: none, test images only, or every image")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    models: list[str] = Field(
        default_factory=lambda: ["ridge", "mlp", "two_stage"],
        description="decoders trained per subject (H1); none: dataset summary only")
    targets: Path | None = Field(None, description="embedding table (default: the "
                                                   "simulator's targets/clip_like.parquet)")
    # decoder options per model type; sized for a 2-core CPU at the default scale
    model_options: dict[str, dict[str, Any]] = Field(default_factory=lambda: {
        "mlp": {"epochs": 30, "hidden": [512]},
        "two_stage": {"epochs": 30, "width": 512},
        "contrastive_mlp": {"epochs": 30}}, description="decoder options per model type")
    n_permutations: int = Field(1000, ge=1)
    n_bootstrap: int = Field(2000, ge=1)
    ablation_model: str | None = Field(
        "ridge", description="transfer ablation (H2, H3) on this decoder; none: skip it")
    # sized for 10 minutes on 2 cores; adapter_mlp_cond (and its shuffled-label control)
    # and adapter_linear_infonce are one flag away
    ablation_methods: list[str] = Field(default_factory=lambda: [
        "direct", "adapter_linear", "adapter_mlp", "adapter_mlp_infonce", "mixed",
        "mixed_infonce", "finetune", "finetune_infonce", "imagery_only"],
        description="ablation methods (each runs with its matched control; mixed_infonce "
                    "only on a gradient-trained decoder)")
    rsa: bool = Field(True, description="the vision-imagery RSA table of the imagery indices "
                                        "(imagery-rsa)")
    primary_metric: PrimaryMetric = Field(
        "two_way", description="what H1-H3 and the methods' verdicts judge by")
    ablation_permutations: int = Field(
        200, ge=1, description="permutations per ablation cell (H1 keeps n_permutations)")
    ablation_workers: int = Field(1, ge=1, description="local worker processes running the "
                                                       "ablation's cells, one thread each")

    analyses: list[str] = Field(default_factory=lambda: list(analyses.NAMES),
                                description="perception-vs-imagery analyses run after the "
                                            "ablation (fmri2img analyze); none: skip them")
    analysis_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-analysis options (see fmri2img analyze)")
    eeg: bool = Field(True, description="the EEG part: THINGS-EEG2 index, EEG-to-image "
                                        "decoders (zero-shot), image pairing, alignment")
    eeg_options: dict[str, Any] = Field(default_factory=dict,
                                        description="options of the EEG part (models, "
                                                    "model_options, n_pairs, aligner, "
                                                    "align_train, ...)")

    reconstruct: bool = Field(True, description="images from the first subject's imagery-"
                              "session predictions (stimulus | perception | imagery grid)")
    reconstruct_pipeline: str | None = Field(
        None, description="diffusers pipeline folder (or hub:<id> with reconstruct_options "
        "allow_hub) for the reconstructions; default: a tiny pipeline with random weights, "
        "labelled as an untrained test pipeline")
    reconstruct_backend: str = Field("unclip", description="unclip, ip_adapter or kandinsky")
    reconstruct_options: dict[str, Any] = Field(
        default_factory=dict, description="options of fmri2img reconstruct (generator, "
        "feature_nets, weights_dir, device, ...)")

    @field_validator("reconstruct_backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return registry.generators.check_name(v)

    @field_validator("reconstruct_options")
    @classmethod
    def _reconstruct_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        own = {"predictions", "pipeline", "backend", "output_dir"} & set(v)
        if own:
            raise ValueError(f"{sorted(own)} are set by the study")
        ReconstructConfig(predictions=Path("predictions"), pipeline="pipeline",
                          output_dir=Path("reconstruction"), **v)
        return v

    @field_validator("eeg_options")
    @classmethod
    def _eeg_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        return EEGStudyOptions(**v).resolved()

    _models = field_validator("models")(
        classmethod(lambda cls, v: [registry.decoders.check_name(m) for m in v]))
    _model_options = field_validator("model_options")(
        classmethod(lambda cls, v: registry.decoders.check_options(v)))
    _methods = field_validator("ablation_methods")(classmethod(lambda cls, v: check_methods(v)))

    @field_validator("analyses")
    @classmethod
    def _analyses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in analyses.NAMES]
        if bad:
            raise ValueError(f"analyses must be among {', '.join(analyses.NAMES)}; got {bad}")
        return v


def ensure_simulated(cfg: StudyConfig) -> Path:
    root = cfg.out / "data"
    sim_cfg = SimulationConfig.from_scale(cfg.scale, seed=cfg.seed, null=cfg.null,
                                          subjects=tuple(cfg.subjects))
    wanted = sim_cfg.model_dump(mode="json")
    marker = root / DONE_MARKER
    if marker.exists() and yaml.safe_load(marker.read_text()) == wanted:
        log.info("reusing simulated dataset in %s", root)
        return root
    t0 = time.perf_counter()
    simulate(root, sim_cfg)
    write_text(marker, yaml.safe_dump(wanted, sort_keys=True))
    log.info("simulated %s-scale dataset in %.1f s", cfg.scale, time.perf_counter() - t0)
    return root


def run_study_ablation(cfg: StudyConfig, idx_dir: Path, targets: Path,
                       console: Console) -> dict[str, Any]:
    """The transfer ablation on every subject, from the H1 decoders; prints the table and
    the H1-H3 verdicts."""
    methods = cfg.ablation_methods
    fields = registry.decoders.get(str(cfg.ablation_model)).Config.model_fields
    if "loss" not in fields:
        dropped = [m for m in methods if needs_gradient_decoder(m)]
        if dropped:
            log.info("%s: not run on %s, which is fitted in closed form", ", ".join(dropped),
                     cfg.ablation_model)
        methods = [m for m in methods if m not in dropped]
    acfg = AblationConfig(
        index=str(idx_dir / "{subject}_imagery.parquet"),
        perception_index=str(idx_dir / "{subject}_nsd.parquet"),
        checkpoint=str(checkpoint_path(cfg.out / "decoders" / "{subject}" /
                                       str(cfg.ablation_model))),
        targets=targets, output_dir=cfg.out / "ablation", subjects=cfg.subjects,
        methods=methods, primary_metric=cfg.primary_metric, seed=cfg.seed,
        n_bootstrap=cfg.n_bootstrap, n_permutations=cfg.ablation_permutations,
        workers=cfg.ablation_workers)
    out = run_ablation(acfg)
    console.print(f"[bold]Transfer ablation ({cfg.ablation_model}, leave-targets-out)[/bold]")
    console.print((acfg.output_dir / "results_table.md").read_text())
    console.print((acfg.output_dir / "hypotheses.md").read_text())
    return {"output_dir": str(acfg.output_dir), "hypotheses": out["hypotheses"],
            "seconds": out["seconds"]}


def run_study_rsa(cfg: StudyConfig, idx_dir: Path, console: Console) -> dict[str, Any] | None:
    """The vision-imagery RSA table; skipped with a warning where the indices lack an
    atlas it needs (the main job goes on)."""
    rcfg = ImageryRSAConfig(
        imagery_index=[idx_dir / f"{subject_name(s)}_imagery.parquet" for s in cfg.subjects],
        output_dir=cfg.out / "rsa", seed=cfg.seed, n_bootstrap=cfg.n_bootstrap)
    try:
        rsa = run_imagery_rsa(rcfg)
    except DataError as exc:
        log.warning("vision-imagery RSA table skipped: %s", exc)
        return None
    console.print((rcfg.output_dir / "rsa.md").read_text())
    return {k: rsa[k] for k in ("group", "contrasts", "second_order")}


def run_study_analyses(cfg: StudyConfig, root: Path, idx_dir: Path, targets: Path,
                       console: Console) -> dict[str, Any]:
    """The analyses on the study's indices and decoders; those that need a decoder the
    study did not train are left out with a note."""
    checkpoints = {m: str(checkpoint_path(cfg.out / "decoders" / "{subject}" / m))
                   for m in cfg.models}
    words = root / "targets" / "clip_like_words.parquet"
    semantic = words if cfg.nsd_root is None and cfg.targets is None and words.exists() \
        else None
    chosen = []
    for name in cfg.analyses:
        opts = analyses.get(name).Options(**cfg.analysis_options.get(name, {}))
        lacking = [n.split(":", 1)[1] for n in analyses.get(name).needs(opts)
                   if n.startswith("checkpoint:") and n.split(":", 1)[1] not in checkpoints]
        if lacking:
            log.info("analysis %s left out: it needs the %s decoder (--models)", name,
                     ", ".join(lacking))
        else:
            chosen.append(name)
    if not chosen:
        return {}
    acfg = AnalyzeConfig(
        imagery_index=str(idx_dir / "{subject}_imagery.parquet"),
        perception_index=str(idx_dir / "{subject}_nsd.parquet"), targets=targets,
        checkpoints=checkpoints, semantic_table=semantic, subjects=cfg.subjects,
        analyses=chosen, options={k: v for k, v in cfg.analysis_options.items()
                                  if k in chosen},
        output_dir=cfg.out / "analyses", seed=cfg.seed)
    t0 = time.perf_counter()
    found = run_analyze(acfg)
    console.print((acfg.output_dir / "summary.md").read_text(), soft_wrap=True)
    return {"output_dir": str(acfg.output_dir), "seconds": round(time.perf_counter() - t0, 1),
            "findings": {k: v["group"]["finding"] for k, v in found.items()}}


def run_study_eeg_part(cfg: StudyConfig, root: Path, idx_dir: Path,
                       console: Console) -> dict[str, Any]:
    opts = EEGStudyOptions(**cfg.eeg_options)
    fsub = subject_name(opts.fmri_subject)
    ckpt = (checkpoint_path(cfg.out / "decoders" / fsub / opts.fmri_decoder)
            if opts.fmri_decoder in cfg.models and opts.fmri_subject in cfg.subjects else None)
    return run_study_eeg(opts, root=root, out=cfg.out,
                         targets=cfg.targets or root / "targets" / "clip_like.parquet",
                         fmri_index=idx_dir / f"{fsub}_nsd.parquet", fmri_checkpoint=ckpt,
                         scale=cfg.scale, seed=cfg.seed, n_permutations=cfg.n_permutations,
                         n_bootstrap=cfg.n_bootstrap, console=console)


def run_study(cfg: StudyConfig, console: Console | None = None) -> dict:
    console = console or make_console()
    t0 = time.perf_counter()
    root = cfg.nsd_root if cfg.nsd_root is not None else ensure_simulated(cfg)
    idx_dir = cfg.out / "indices"
    perception, imagery = [], []
    for s in cfg.subjects:
        subj = subject_name(s)
        p_path = idx_dir / f"{subj}_nsd.parquet"
        build_nsd_index(NSDIndexConfig(
            nsd_root=root, subject=s, output=p_path, roi=cfg.roi, average=cfg.average,
            val_fraction=cfg.val_fraction, seed=cfg.seed, cache_dir=cfg.out / "cache"))
        perception.append(summarize_perception(p_path))
        i_path = idx_dir / f"{subj}_imagery.parquet"
        build_imagery_index(ImageryIndexConfig(
            nsd_root=root, subject=s, output=i_path, roi=cfg.roi, cache_dir=cfg.out / "cache"))
        imagery.append(summarize_imagery(i_path))
    cfg.save(cfg.out / "study_config.yaml")
    write_summary(cfg.out / "summary.json", perception, imagery)
    print_summary(perception, imagery, console)
    result: dict[str, Any] = {"root": str(root), "perception": perception, "imagery": imagery}
    if cfg.rsa:
        result["rsa"] = run_study_rsa(cfg, idx_dir, console)
    if cfg.models:
        targets = cfg.targets or root / "targets" / "clip_like.parquet"
        rows = run_h1(H1Config(out=cfg.out, indices=idx_dir, targets=targets,
                               subjects=cfg.subjects, models=cfg.models,
                               model_options=cfg.model_options, seed=cfg.seed,
                               n_permutations=cfg.n_permutations, n_bootstrap=cfg.n_bootstrap))
        result["h1"] = rows
        result["h1_decoders"] = [
            {"subject": subj, **c} for subj in dict.fromkeys(r["subject"] for r in rows)
            for c in compare_decoders({r["model"]: r["perception_per_item"] for r in rows
                                       if r["subject"] == subj},
                                      n_resamples=cfg.n_bootstrap, seed=cfg.seed)]
        print_h1_table(rows, console, result["h1_decoders"])
        if cfg.ablation_model in cfg.models and cfg.ablation_methods:
            result["ablation"] = run_study_ablation(cfg, idx_dir, targets, console)
        if cfg.analyses:
            result["analyses"] = run_study_analyses(cfg, root, idx_dir, targets, console)
        if cfg.reconstruct:
            model = cfg.ablation_model if cfg.ablation_model in cfg.models else cfg.models[0]
            result["reconstruction"] = run_study_reconstruction(
                cfg.out, subject=cfg.subjects[0], model=str(model), targets=targets,
                pipeline=cfg.reconstruct_pipeline, backend=cfg.reconstruct_backend,
                options=cfg.reconstruct_options, seed=cfg.seed, n_bootstrap=cfg.n_bootstrap,
                console=console)
    if cfg.eeg:
        result["eeg"] = run_study_eeg_part(cfg, root, idx_dir, console)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(cfg.out / "study_result.json", result)
    page = write_study_report(cfg.out)
    console.print(f"done in {result['seconds']} s; outputs in {cfg.out}")
    console.print(f"report: {page}", markup=False, soft_wrap=True)
    return result
