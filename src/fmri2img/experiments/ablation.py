"""``fmri2img ablate``: every perception-to-imagery transfer strategy, one command.

Methods: :data:`fmri2img.experiments.methods.METHODS` (direct transfer, adapters,
mixed training, fine-tuning, imagery-only decoders; cosine or InfoNCE losses), each run
with its matched control unless ``controls`` is off, and scored by the same evaluation
beside the mean-target controls.

Everything that learns from imagery does so per fold of the protocol (leave-targets-out
by default), and evaluation scores each target only with the fold models that never saw
it. A cell is (subject, method, fraction of the imagery training trials); a cell's outputs
are written atomically and reused when its resolved configuration is unchanged, so a
killed run restarted with the same command does only what is missing. Cells run
in-process or, with ``scheduler``, on a Dask distributed cluster. Each cell records the
commands that redo it (``commands.txt``), written from the configs that ran.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from fmri2img.analysis.hypotheses import PrimaryMetric, add_comparisons, hypotheses
from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.splits import Protocol
from fmri2img.data.trials import IndexData
from fmri2img.errors import DataError
from fmri2img.experiments.ablation_images import add_image_metrics, check_options
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.executor import execute
from fmri2img.experiments.methods import (
    ADAPTER,
    CONTROL_OF,
    DIRECT,
    METHODS,
    FoldPlan,
    check_methods,
    needs_gradient_decoder,
    needs_perception_index,
)
from fmri2img.experiments.recorded import recorded_targets
from fmri2img.flags import command_line
from fmri2img.io.atomic import write_json, write_text
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.io.checksum import file_checksum
from fmri2img.io.reuse import run_once
from fmri2img.models import registry
from fmri2img.report.ablation_figures import write_figures
from fmri2img.report.ablation_tables import write_tables
from fmri2img.report.hypotheses_report import render as render_hypotheses

log = logging.getLogger(__name__)

TABLE_METRICS = ("cosine", "two_way", "retrieval_top1")
# per-target values kept in each row, for the paired comparisons of the verdicts
PAIRED_METRICS = ("cosine", "two_way", "retrieval_top1", "cosine_centred")


class AblationConfig(StrictModel):
    # paths may hold "{subject}" (e.g. runs/demo/indices/{subject}_imagery.parquet)
    index: str = Field(description="NSD-Imagery index; may hold {subject}")
    checkpoint: str = Field(description="perception decoder; may hold {subject}")
    targets: Path | None = Field(None, description="embedding table (default: the one "
                                 "recorded in the decoder checkpoint)")
    output_dir: Path
    perception_index: str | None = Field(
        None, description="NSD perception index (mixed, imagery_only, perception scores); "
                          "may hold {subject}")
    model_type: str | None = Field(None, description="checked against the checkpoint")
    subjects: list[Annotated[int, Field(ge=1)]] | None = None
    methods: list[str] = Field(default_factory=lambda: [
        "direct", "adapter_linear", "adapter_mlp", "adapter_mlp_vision", "mixed",
        "finetune", "imagery_only"], description="methods to run")
    with_condition: bool = Field(False, description="add the conditioned mlp adapter and its "
                                                    "shuffled-label control")
    controls: bool = Field(True, description="run each method's matched control with it "
                                             "(vision trials of the same targets instead of "
                                             "imagery ones)")
    primary_metric: PrimaryMetric = Field(
        "two_way", description="what the verdicts judge by (cosine and retrieval reported "
                               "beside it)")
    fractions: list[float] = Field(default_factory=lambda: [1.0],
                                   description="shares of the imagery training trials")
    protocol: Protocol = "leave-targets-out"
    n_folds: int = Field(6, ge=2)
    epochs: int = Field(100, ge=1)
    seed: int = 0
    n_bootstrap: int = Field(2000, ge=1)
    n_permutations: int = Field(1000, ge=1)
    scheduler: str | None = Field(None, description="Dask scheduler address "
                                  "(tcp://host:8786); default: run cells in this process")
    workers: int = Field(1, ge=1, description="without scheduler: run cells in this many "
                                              "local worker processes, one thread each")
    eval_figures: bool = Field(False, description="per-cell evaluation and loss-curve "
                                                  "figures")
    reconstruct_pipeline: str | None = Field(
        None, description="diffusers pipeline folder: reconstruct every cell's imagery "
                          "predictions and put the image metrics in the table")
    reconstruct_backend: str = Field("unclip", description="unclip, ip_adapter, kandinsky")
    reconstruct_options: dict[str, Any] = Field(
        default_factory=dict, description="options of fmri2img reconstruct (generator, "
                                          "feature_nets, ...)")

    _reconstruct = field_validator("reconstruct_options")(
        classmethod(lambda cls, v: check_options(v)))
    _backend = field_validator("reconstruct_backend")(
        classmethod(lambda cls, v: registry.generators.check_name(v)))

    _known = field_validator("methods")(classmethod(lambda cls, v: check_methods(v)))

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError("fractions must lie in (0, 1]")
        return v

    def all_methods(self) -> list[str]:
        """The methods run: ``direct`` first, then each asked-for method followed by its
        control (unless ``controls`` is off)."""
        wanted = list(self.methods)
        if self.with_condition and "adapter_mlp_cond" not in wanted:
            at = wanted.index("adapter_mlp") + 1 if "adapter_mlp" in wanted else len(wanted)
            wanted.insert(at, "adapter_mlp_cond")
        out = ["direct"]
        for m in wanted:
            out.append(m)
            control = METHODS[m].control
            if control and (self.controls or m == "adapter_mlp_cond"):
                out.append(control)
        return [m for m in dict.fromkeys(out) if m not in self.skipped_methods()]

    def skipped_methods(self) -> list[str]:
        """Asked-for methods that cannot run with the inputs given (retraining the decoder
        needs ``perception_index``)."""
        if self.perception_index is not None:
            return []
        return [m for m in dict.fromkeys(self.methods) if needs_perception_index(m)
                ] + [c for m in self.methods if needs_perception_index(m)
                     and (c := METHODS[m].control) and c not in self.methods]

    def path(self, pattern: str | None, subject: str) -> Path | None:
        return None if pattern is None else Path(pattern.format(subject=subject))


# ----------------------------------------------------------------------------- cells
def _subjects(cfg: AblationConfig) -> list[str]:
    if cfg.subjects:
        return [subject_name(s) for s in cfg.subjects]
    if "{subject}" in cfg.index:
        raise DataError("the index path holds {subject}; give --subjects", cfg.index)
    return [IndexData.open(cfg.index).subject]


def _cells(cfg: AblationConfig) -> list[dict[str, Any]]:
    cells = []
    for subj in _subjects(cfg):
        for method in cfg.all_methods():
            fractions = [1.0] if METHODS[method].strategy is DIRECT else cfg.fractions
            for f in fractions:
                cells.append({"config": cfg.resolved(), "subject": subj, "method": method,
                              "fraction": f})
    return cells


def cell_name(method: str, fraction: float) -> str:
    return method if fraction >= 1.0 else f"{method}_f{fraction:g}"


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train (per fold) and evaluate one (subject, method, fraction); returns its record.

    A top-level function of plain data, so that Dask workers can run it.
    """
    cfg = AblationConfig(**cell["config"])
    subj, method, frac = cell["subject"], cell["method"], float(cell["fraction"])
    name = cell_name(method, frac)
    out = cfg.output_dir
    record_path = out / "eval" / name / subj / "cell.json"
    index, checkpoint = cfg.path(cfg.index, subj), cfg.path(cfg.checkpoint, subj)
    p_index = cfg.path(cfg.perception_index, subj)
    assert index is not None and checkpoint is not None
    if not checkpoint.exists():
        raise DataError("decoder checkpoint not found", checkpoint)
    # The inputs' contents, not just their paths: an index rebuilt in place must not be
    # answered with a table computed from its previous version.
    inputs = {role: file_checksum(p) for role, p in (("index", index), ("checkpoint", checkpoint),
              ("perception_index", p_index), ("targets", cfg.targets)) if p is not None}
    wanted = {"cell": {k: v for k, v in cell.items() if k != "config"},
              "config": _cell_config(cfg), "inputs": inputs}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("wanted") == wanted:
            log.info("%s %s: reusing %s", subj, name, record_path)
            return record
    t0 = time.perf_counter()
    m = METHODS[method]
    n_folds = cfg.n_folds if cfg.protocol == "leave-targets-out" else 2
    decoders: list[Path] = []
    adapters: list[Path] = []
    commands: list[str] = []
    train_seconds, n_params = 0.0, None
    if m.strategy.command is not None:
        for k in range(n_folds):
            plan = FoldPlan(cfg, subj, name, index, checkpoint, p_index, k, n_folds, frac)
            fcfg = m.strategy.config(plan, m.options)
            learned = m.strategy.learned(fcfg, run_once(fcfg, "train_summary.json",
                                                        m.strategy.run))
            decoders += [learned.decoder] if learned.decoder is not None else []
            adapters += [learned.adapter] if learned.adapter is not None else []
            train_seconds += learned.seconds
            n_params = learned.n_params
            commands.append(command_line(m.strategy.command, fcfg))
    decoders = decoders or [checkpoint]
    results = {}
    modes = [("imagery", index)] + ([("perception", p_index)] if p_index is not None else [])
    for mode, idx in modes:
        ecfg = EvalConfig(index=idx, checkpoint=decoders, adapter_checkpoint=adapters,
                          targets=cfg.targets, mode=mode,
                          output_dir=out / "eval" / name / subj / mode, seed=cfg.seed,
                          n_bootstrap=cfg.n_bootstrap, n_permutations=cfg.n_permutations,
                          figures=cfg.eval_figures)
        results[mode] = run_once(ecfg, "metrics.json", evaluate)
        commands.append(command_line("fmri2img eval", ecfg))
    record = {"wanted": wanted,
              "row": _row(subj, method, frac, cfg, results, train_seconds, n_params),
              "commands": commands, "seconds": round(time.perf_counter() - t0, 3)}
    write_json(record_path, record)
    return record


def _cell_config(cfg: AblationConfig) -> dict[str, Any]:
    """The options that change a cell's result (not where or how cells are run)."""
    out = cfg.resolved()
    for key in ("scheduler", "workers", "methods", "fractions", "subjects", "with_condition",
                "controls", "primary_metric", "reconstruct_pipeline", "reconstruct_backend",
                "reconstruct_options"):
        out.pop(key, None)
    return out


def _metric(block: dict[str, Any], k: str) -> dict[str, Any] | None:
    if k not in block.get("overall", {}):
        return None
    return {"value": block["overall"][k], "ci": block["ci"][k],
            "p": block.get("p_vs_chance", {}).get(k)}


def _adapter_domains(method: str) -> list[str] | None:
    """The trial domains an adapter method trains on (None for other strategies)."""
    m = METHODS[method]
    if m.strategy is not ADAPTER:
        return None
    if m.options.get("condition_token"):
        return ["imagery", "perception"]
    return [m.options.get("train_domain", "imagery")]


def _per_key(block: dict[str, Any], keep: set[str] | None = None) -> dict[str, dict]:
    """{metric: {item: value}} of a block's ``by_stimulus`` (only ``keep`` items)."""
    out: dict[str, dict[str, float]] = {}
    for key, v in block["by_stimulus"].items():
        if keep is not None and v.get("stimulus_set") not in keep:
            continue
        for m in PAIRED_METRICS:
            if m in v:
                out.setdefault(m, {})[key] = v[m]
    return out


def _control_rows(img: dict[str, Any], perc: dict[str, Any] | None) -> dict[str, Any]:
    """The cell's mean-target controls, in the row's own layout."""
    out = {}
    for name, c in (img.get("controls") or {}).items():
        pc = (perc or {}).get("controls", {}).get(name)
        out[name] = {
            "prediction": c["prediction"],
            "imagery": {k: _metric(c, k) for k in c["overall"]},
            "per_target": {m: {k: v[m] for k, v in c["by_stimulus"].items() if m in v}
                           for m in PAIRED_METRICS if m in c["overall"]},
            "perception": ({k: _metric(pc, k) for k in TABLE_METRICS} if pc else None),
            "vision": ({k: _metric(img["vision"]["controls"][name], k)
                        for k in ("cosine", "two_way")}
                       if name in (img["vision"].get("controls") or {}) else None)}
    return out


def _row(subj: str, method: str, frac: float, cfg: AblationConfig,
         results: dict[str, dict[str, Any]], train_seconds: float,
         n_params: int | None) -> dict[str, Any]:
    img = results["imagery"]
    perc = results.get("perception")
    scored = set(img["config"]["scored_sets"])
    per_target = _per_key(img, scored)
    ks = img["config"]["ks"]
    m = METHODS[method]
    return {
        "subject": subj, "method": method, "strategy": m.kind,
        "fraction": frac,
        "loss": m.loss if m.strategy is not DIRECT else None,
        "control": m.control,
        "control_of": CONTROL_OF.get(method),
        "protocol": img.get("protocol") or "none (perception only)",
        "imagery": {k: _metric(img, k) for k in img["overall"]},
        "by_set": {s: {k: v.get(k) for k in TABLE_METRICS}
                   for s, v in img["by_stimulus_set"].items()},
        "perception": ({k: _metric(perc, k) for k in TABLE_METRICS} if perc else None),
        "perception_per_item": _per_key(perc) if perc else None,
        "per_target": per_target,
        "per_target_set": {k: img["by_stimulus"][k].get("stimulus_set")
                           for k in per_target.get("cosine", {})},
        "controls": _control_rows(img, perc),
        "adapter_domains": _adapter_domains(method),
        "vision": {k: _metric(img["vision"], k) for k in ("cosine", "two_way")},
        "transfer_ratios": {k: {"value": v["ratio"], "ci": v["ci"]}
                            for k, v in img["transfer"]["metrics"].items()},
        "train_seconds": round(train_seconds, 3) if method != "direct" else None,
        "n_params": n_params,
        "retrieval_curve": {str(k): img["overall"].get(f"retrieval_top{k}") for k in ks
                            if f"retrieval_top{k}" in img["overall"]},
        "chance": img["chance"],
        "n_items": img["n_items"],
    }


def _describe(record: dict[str, Any]) -> str:
    row = record["row"]
    return f"{row['subject']} {cell_name(row['method'], row['fraction'])}"


def _check_decoder(cfg: AblationConfig) -> None:
    """Methods that retrain the decoder with a loss need a gradient-trained decoder."""
    wanted = [m for m in cfg.all_methods() if needs_gradient_decoder(m)]
    if not wanted:
        return
    for subj in _subjects(cfg):
        path = cfg.path(cfg.checkpoint, subj)
        assert path is not None
        if not path.exists():
            continue  # run_cell names the missing checkpoint
        _, meta = load_checkpoint(path)
        fields = registry.decoders.get(meta["model_type"]).Config.model_fields
        if "loss" not in fields:
            raise DataError(f"{', '.join(wanted)} retrain the decoder with a loss of their "
                            f"own, but {meta['model_type']} is fitted in closed form; drop "
                            "them or ablate a gradient-trained decoder (mlp, two_stage)", path)


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = cfg.output_dir
    skipped = cfg.skipped_methods()
    if skipped:
        log.warning("skipping %s: they retrain the decoder on perception trials; give "
                    "--perception-index to run them", ", ".join(skipped))
    if cfg.targets is None:
        checkpoints = [cfg.path(cfg.checkpoint, s) for s in _subjects(cfg)]
        cfg = cfg.model_copy(update={"targets": recorded_targets(
            [c for c in checkpoints if c is not None and c.exists()] or checkpoints)})
    _check_decoder(cfg)
    cells = _cells(cfg)
    records = execute(run_cell, cells, cfg.scheduler, cfg.workers, "ablation cells",
                      _describe)
    rows = add_comparisons([r["row"] for r in records], cfg.primary_metric,
                           n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    if cfg.reconstruct_pipeline is not None:
        add_image_metrics(rows, out, cfg.reconstruct_pipeline, cfg.reconstruct_backend,
                          cfg.reconstruct_options, cell_name)
    write_json(out / ABLATION_RESULTS, {
        "config": cfg.resolved(), "rows": rows,
        "skipped": {m: "needs --perception-index (retrains the decoder)" for m in skipped}})
    write_text(out / "commands.txt", "\n".join(c for r in records for c in r["commands"])
               + "\n")
    table_rows = [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    write_tables(table_rows, out)
    write_figures(rows, out / "figures")
    hyp = hypotheses(rows, cfg.primary_metric, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    write_json(out / "hypotheses.json", hyp)
    write_text(out / "hypotheses.md", render_hypotheses(hyp))
    cfg.save(out / "config_resolved.yaml")
    log.info("ablation: %d cells in %.1f s -> %s", len(cells), time.perf_counter() - t0, out)
    return {"rows": rows, "hypotheses": hyp, "seconds": round(time.perf_counter() - t0, 1)}


ABLATION_RESULTS = "metrics_all.json"


def redraw_ablation(ablation_dir: Path, output_dir: Path | None = None) -> list[Path]:
    """The ablation's tables and figures again, from its ``metrics_all.json`` alone, into
    ``output_dir`` (default: the ablation's ``figures/``)."""
    path = Path(ablation_dir) / ABLATION_RESULTS
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"not a readable ablation result ({exc})", path) from exc
    out = Path(output_dir) if output_dir is not None else Path(ablation_dir) / "figures"
    tables = write_tables([{k: v for k, v in r.items() if k != "train_seconds"} for r in rows],
                          out)
    return [*tables.values(), *write_figures(rows, out)]
