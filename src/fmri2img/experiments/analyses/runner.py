"""``fmri2img analyze``: the perception-vs-imagery analyses for any subjects, and
``fmri2img figures``: every figure again from the saved results.

Each (analysis, subject) is a cell run by the executor ``ablate`` uses (in-process, local
workers, or a Dask cluster); a cell's result is written with the config and input
checksums that made it, and reused while they are unchanged. Outputs under
``output_dir``: ``results/<analysis>.json`` (per-subject results, the group result, the
options), ``summary.md`` (one line per analysis), ``figures/<analysis>.{png,pdf}``,
``cells/`` (per-cell results) and ``work/<subject>/`` (intermediate products some
analyses share, e.g. per-ROI decoders).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.rois import RoiSelection
from fmri2img.errors import DataError
from fmri2img.experiments import analyses
from fmri2img.experiments.analyses.base import (
    COARSE_ROIS,
    HIERARCHY_ROIS,
    Common,
    SubjectInputs,
    check_group_result,
    check_subject_result,
)
from fmri2img.experiments.executor import execute
from fmri2img.io.atomic import write_json, write_text
from fmri2img.io.reuse import run_once

log = logging.getLogger(__name__)

RESULT = "result.json"


class AnalyzeConfig(StrictModel):
    """Options of ``fmri2img analyze``. Paths may hold ``{subject}`` (subj01, ...)."""

    imagery_index: str = Field(description="NSD-Imagery index; may hold {subject}")
    targets: Path = Field(description="embedding table of the decoders' targets")
    output_dir: Path
    perception_index: str | None = Field(
        None, description="NSD perception index (analyses that fit decoders); may hold "
                          "{subject}")
    checkpoints: dict[str, str] = Field(
        default_factory=dict, description="perception decoders by model type, e.g. "
                                          "ridge=DIR/{subject}/ridge/checkpoints/decoder.pt")
    semantic_table: Path | None = Field(
        None, description="embedding table (same space as targets) of category words or "
                          "captions: spans the semantic subspace of semantic_survival")
    image_autoencoder: Path | None = Field(
        None, description="folder of a diffusers AutoencoderKL: its latents become a "
                          "structural target family of dissociation")
    subjects: list[int] = Field(default_factory=lambda: [1, 2, 5, 7])
    analyses: list[str] = Field(default_factory=lambda: list(analyses.NAMES),
                                description="analyses to run")
    rois: dict[str, str] = Field(
        default_factory=lambda: {**COARSE_ROIS, **HIERARCHY_ROIS},
        description="ROI name -> selection on the cache's voxel table")
    hierarchy: list[str] = Field(default_factory=lambda: list(HIERARCHY_ROIS),
                                 description="ROI names along the visual hierarchy, low "
                                             "to high")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-analysis options, e.g. uncertainty="
                                          "'{n_passes: 50}'")
    seed: int = Field(0, ge=0)
    n_bootstrap: int = Field(1000, ge=100)
    n_permutations: int = Field(1000, ge=100)
    alpha: float = Field(0.05, gt=0, lt=1)
    dry_run: bool = Field(False, description="validate the configuration and its inputs, "
                                             "print what would run, run nothing")
    scheduler: str | None = Field(None, description="Dask scheduler address "
                                                    "(tcp://host:8786)")
    workers: int = Field(1, ge=1, description="without scheduler: local worker processes")
    figures: bool = Field(True, description="draw the figures")

    @field_validator("analyses")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in analyses.NAMES]
        if bad or not v:
            raise ValueError(f"analyses must be among {', '.join(analyses.NAMES)}; got {v}")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _check(self) -> AnalyzeConfig:
        for text in self.rois.values():
            RoiSelection.parse(text)
        missing = [r for r in self.hierarchy if r not in self.rois]
        if missing:
            raise ValueError(f"hierarchy names ROIs not in rois: {missing}")
        unknown = [k for k in self.options if k not in analyses.NAMES]
        if unknown:
            raise ValueError(f"options for unknown analyses: {unknown}")
        return self

    def common(self) -> Common:
        return Common(seed=self.seed, n_bootstrap=self.n_bootstrap,
                      n_permutations=self.n_permutations, alpha=self.alpha)

    def analysis_options(self, name: str) -> StrictModel:
        Options = analyses.get(name).Options
        try:
            return Options(**self.options.get(name, {}))
        except ValidationError as exc:
            raise DataError(f"invalid options of analysis {name}:\n{exc}") from exc

    def path(self, pattern: str | None, subject: str) -> Path | None:
        return None if pattern is None else Path(pattern.replace("{subject}", subject))


class CellConfig(StrictModel):
    """What one (analysis, subject) cell ran with: its reuse key."""

    analysis: str
    subject: str
    imagery_index: Path
    perception_index: Path | None
    targets: Path
    checkpoints: dict[str, Path]
    semantic_table: Path | None
    image_autoencoder: Path | None
    rois: dict[str, str]
    hierarchy: list[str]
    options: dict[str, Any]
    common: dict[str, Any]
    work_dir: Path
    output_dir: Path


def _need_files(cfg: AnalyzeConfig, name: str, subject: str) -> dict[str, Path]:
    """The files a cell needs, by what they are; a missing one stops the run before any
    work."""
    opts = cfg.analysis_options(name)
    files: dict[str, Path] = {"imagery index": cfg.path(cfg.imagery_index, subject),
                              "targets": cfg.targets}  # type: ignore[dict-item]
    for need in analyses.get(name).needs(opts):
        if need == "perception_index":
            if cfg.perception_index is None:
                raise DataError(f"analysis {name} needs perception_index (the NSD "
                                "perception index the decoders were trained on)")
            files["perception index"] = cfg.path(cfg.perception_index, subject)  # type: ignore[assignment]
        elif need.startswith("checkpoint:"):
            model = need.split(":", 1)[1]
            if model not in cfg.checkpoints:
                raise DataError(f"analysis {name} needs a {model} decoder: add "
                                f"checkpoints {model}=PATH")
            files[f"{model} checkpoint"] = cfg.path(cfg.checkpoints[model], subject)  # type: ignore[assignment]
        elif need == "semantic_table" and cfg.semantic_table is not None:
            files["semantic table"] = cfg.semantic_table
    for what, path in files.items():
        if not path.exists():
            raise DataError(f"{what} of {subject} for analysis {name} not found", path)
    return files


def _cells(cfg: AnalyzeConfig) -> list[dict[str, Any]]:
    out = []
    common = cfg.common().resolved()
    for name in cfg.analyses:
        opts = cfg.analysis_options(name)
        for s in cfg.subjects:
            subj = subject_name(s)
            _need_files(cfg, name, subj)
            ckpts = {m: cfg.path(p, subj) for m, p in cfg.checkpoints.items()}
            out.append(CellConfig(
                analysis=name, subject=subj,
                imagery_index=cfg.path(cfg.imagery_index, subj),
                perception_index=cfg.path(cfg.perception_index, subj),
                targets=cfg.targets,
                checkpoints={m: p for m, p in ckpts.items() if p is not None and p.exists()},
                semantic_table=cfg.semantic_table, image_autoencoder=cfg.image_autoencoder,
                rois=cfg.rois, hierarchy=cfg.hierarchy, options=opts.resolved(),
                common=common, work_dir=cfg.output_dir / "work" / subj,
                output_dir=cfg.output_dir / "cells" / name / subj).resolved())
    return out


def _run(ccfg: CellConfig) -> dict[str, Any]:
    analysis = analyses.get(ccfg.analysis)
    inputs = SubjectInputs(
        subject=ccfg.subject, imagery_index=ccfg.imagery_index,
        perception_index=ccfg.perception_index, targets_path=ccfg.targets,
        checkpoints=ccfg.checkpoints, rois=ccfg.rois, hierarchy=ccfg.hierarchy,
        work_dir=ccfg.work_dir, semantic_table=ccfg.semantic_table,
        image_autoencoder=ccfg.image_autoencoder)
    t0 = time.perf_counter()
    result = check_subject_result(ccfg.analysis, analysis.run(
        inputs, analysis.Options(**ccfg.options), Common(**ccfg.common)))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(ccfg.output_dir / RESULT, result)
    ccfg.save(ccfg.output_dir / "config_resolved.yaml")
    return result


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One (analysis, subject): a top-level function of plain data, for Dask."""
    ccfg = CellConfig(**cell)
    result = run_once(ccfg, RESULT, _run)
    return {"analysis": ccfg.analysis, "subject": ccfg.subject, "result": result}


def _describe(record: dict[str, Any]) -> str:
    return f"{record['analysis']} {record['subject']}"


def dry_run_lines(cfg: AnalyzeConfig, cells: list[dict[str, Any]]) -> list[str]:
    lines = []
    for name in cfg.analyses:
        mine = [c for c in cells if c["analysis"] == name]
        analysis = analyses.get(name)
        needs = ["imagery index", "targets",
                 *analysis.needs(cfg.analysis_options(name))]
        lines.append(f"{name}: {analysis.title}; subjects "
                     f"{', '.join(c['subject'] for c in mine)}; needs {', '.join(needs)}; "
                     f"options {json.dumps(cfg.analysis_options(name).resolved())}")
    return lines


def run_analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Every cell, then per analysis the group result, ``results/<analysis>.json``, the
    figure, and ``summary.md``; returns ``{analysis: results}`` (or, with ``dry_run``,
    the lines that would run)."""
    t0 = time.perf_counter()
    if cfg.output_dir.resolve() in {Path(p).resolve() for p in (cfg.targets,)}:
        raise DataError("output_dir is an input file", cfg.output_dir)
    cells = _cells(cfg)
    if cfg.dry_run:
        return {"dry_run": dry_run_lines(cfg, cells)}
    records = execute(run_cell, cells, cfg.scheduler, cfg.workers, "analysis cells",
                      _describe)
    common = cfg.common()
    out: dict[str, Any] = {}
    for name in cfg.analyses:
        analysis = analyses.get(name)
        opts = cfg.analysis_options(name)
        per_subject = {r["subject"]: r["result"] for r in records if r["analysis"] == name}
        group = check_group_result(name, analysis.combine(per_subject, opts, common))
        result = {"analysis": name, "title": analysis.title, "options": opts.resolved(),
                  "common": common.resolved(), "subjects": per_subject, "group": group}
        write_json(cfg.output_dir / "results" / f"{name}.json", result)
        out[name] = result
    write_text(cfg.output_dir / "summary.md", render_summary(out))
    if cfg.figures:
        draw_figures(out, cfg.output_dir / "figures")
    cfg.save(cfg.output_dir / "config_resolved.yaml")
    log.info("analyze: %d cells in %.1f s -> %s", len(cells), time.perf_counter() - t0,
             cfg.output_dir)
    return out


def render_summary(results: dict[str, dict[str, Any]]) -> str:
    lines = ["# Perception vs imagery: analyses", ""]
    for name, res in results.items():
        lines.append(f"- **{res['title']}** (`{name}`): {res['group']['finding']}")
    return "\n".join(lines) + "\n"


def draw_figures(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    files: list[Path] = []
    for name, res in results.items():
        files += analyses.get(name).draw(res, out / name)
    return files


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The saved results of an analyze run (its ``results/`` folder, or the run's
    folder)."""
    results_dir = Path(results_dir)
    if (results_dir / "results").is_dir():
        results_dir = results_dir / "results"
    found = {}
    for name in analyses.NAMES:
        path = results_dir / f"{name}.json"
        if path.exists():
            try:
                found[name] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise DataError(f"not a readable results file: {exc}", path) from exc
    if not found:
        raise DataError("no analysis results here (expected <analysis>.json files from "
                        "fmri2img analyze)", results_dir)
    return found


class FiguresConfig(StrictModel):
    """Options of ``fmri2img figures``."""

    results_dir: Path = Field(description="an analyze output folder (or its results/)")
    output_dir: Path | None = Field(None, description="default: the run's figures/")


def redraw_figures(cfg: FiguresConfig) -> list[Path]:
    results = load_results(cfg.results_dir)
    run_dir = cfg.results_dir.parent if cfg.results_dir.name == "results" \
        else cfg.results_dir
    return draw_figures(results, cfg.output_dir or run_dir / "figures")
