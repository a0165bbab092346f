"""``fmri2img ablate``: every perception-to-imagery transfer strategy, one command.

Methods (each a configuration of the same machinery, scored by the same evaluation; the
table :data:`METHODS` says which strategy learns how, from what):

* ``direct``: the perception decoder as it is (no adaptation);
* ``adapter_linear``, ``adapter_mlp``: an adapter on the frozen decoder, trained on imagery;
* ``adapter_mlp_cond``: the mlp adapter with per-domain vectors, trained on imagery and
  on the session's vision trials (``with_condition``);
* ``adapter_mlp_cond_shuffled``: its control (added with it), the same examples with the
  domain labels permuted, so only the extra data, not the domain, can help;
* ``adapter_mlp_vision``: control, the mlp adapter trained on the session's *vision*
  trials of the same targets. An imagery adapter that beats it has learnt something about
  imagery, not only about the 18 targets;
* ``mixed``: the decoder retrained on perception + imagery trials;
* ``finetune``: every decoder weight tuned on imagery, from the perception solution;
* ``imagery_only``: the decoder type trained on imagery trials alone.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fmri2img.analysis.hypotheses import add_comparisons, hypotheses
from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.splits import Protocol
from fmri2img.data.trials import IndexData
from fmri2img.errors import DataError
from fmri2img.experiments.adapter_train import AdapterTrainConfig, train_adapter
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder
from fmri2img.flags import command_line
from fmri2img.io.atomic import write_json, write_text
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.io.checksum import file_checksum
from fmri2img.io.reuse import run_once
from fmri2img.progress import progress
from fmri2img.report.ablation_figures import write_figures
from fmri2img.report.ablation_tables import write_tables
from fmri2img.report.hypotheses_report import render as render_hypotheses

log = logging.getLogger(__name__)

TABLE_METRICS = ("cosine", "two_way", "retrieval_top1")


# ----------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class FoldPlan:
    """Where one fold of one cell reads and writes."""

    cfg: AblationConfig
    subject: str
    name: str  # the cell's name (method, fraction)
    index: Path  # NSD-Imagery index
    checkpoint: Path  # the perception decoder
    perception_index: Path | None
    fold: int
    n_folds: int
    fraction: float

    def folder(self, kind: str) -> Path:
        return self.cfg.output_dir / kind / self.name / self.subject / f"fold{self.fold}"


@dataclass(frozen=True)
class Learned:
    """What one fold's training hands to evaluation."""

    decoder: Path | None = None  # replaces the perception decoder for this fold
    adapter: Path | None = None  # applied on top of it
    seconds: float = 0.0
    n_params: int | None = None


@dataclass(frozen=True)
class Strategy:
    """How one kind of method learns from a fold: the config of the command that trains
    it, that command's runner and CLI name, and what its summary hands to evaluation."""

    name: str
    command: str | None = None  # None: nothing is trained (the decoder is used as it is)
    config: Callable[[FoldPlan, dict[str, Any]], StrictModel] | None = None
    run: Callable[[Any], dict[str, Any]] | None = None
    learned: Callable[[Any, dict[str, Any]], Learned] | None = None


def _adapter_config(f: FoldPlan, options: dict[str, Any]) -> AdapterTrainConfig:
    return AdapterTrainConfig(
        index=f.index, checkpoint=f.checkpoint, targets=f.cfg.targets,
        output_dir=f.folder("adapters"), model_type=f.cfg.model_type, epochs=f.cfg.epochs,
        protocol=f.cfg.protocol, n_folds=f.n_folds, fold=f.fold, data_fraction=f.fraction,
        seed=f.cfg.seed, **options)


def _finetune_config(f: FoldPlan, options: dict[str, Any]) -> FinetuneConfig:
    return FinetuneConfig(
        index=f.index, checkpoint=f.checkpoint, targets=f.cfg.targets,
        output_dir=f.folder("finetuned"), epochs=f.cfg.epochs, protocol=f.cfg.protocol,
        n_folds=f.n_folds, fold=f.fold, data_fraction=f.fraction, seed=f.cfg.seed, **options)


def _retrain_config(f: FoldPlan, options: dict[str, Any]) -> TrainConfig:
    """The perception decoder's own training, on perception and/or imagery trials."""
    if f.perception_index is None:
        raise DataError(f"{f.name} needs the perception index (--perception-index)", f.index)
    _, base = load_checkpoint(f.checkpoint)
    trained = base.get("config", {})
    return TrainConfig(
        index=f.perception_index, targets=f.cfg.targets, model_type=base["model_type"],
        output_dir=f.folder("decoders"), model=trained.get("model", {}),
        zscore=trained.get("zscore", True), pca=trained.get("pca"), seed=f.cfg.seed,
        imagery_index=f.index, protocol=f.cfg.protocol, n_folds=f.n_folds, fold=f.fold,
        data_fraction=f.fraction, **options)


DIRECT = Strategy("direct")
ADAPTER = Strategy(
    "adapter", "fmri2img train-adapter", _adapter_config, train_adapter,
    lambda c, s: Learned(adapter=Path(s["adapter_best"]), seconds=s["train_seconds"],
                         n_params=s["n_parameters"]))
FINETUNE = Strategy(
    "finetune", "fmri2img finetune", _finetune_config, finetune_decoder,
    lambda c, s: Learned(decoder=Path(s["checkpoint"]), seconds=s["train_seconds"],
                         n_params=s["n_parameters"]))
RETRAIN = Strategy(
    "retrain", "fmri2img train", _retrain_config, train_decoder,
    lambda c, s: Learned(decoder=checkpoint_path(c.output_dir), seconds=s["fit_seconds"]))


@dataclass(frozen=True)
class Method:
    strategy: Strategy
    options: dict[str, Any] = field(default_factory=dict)  # fields of the strategy's config
    label: str | None = None  # the strategy column of the tables (default: the strategy's)

    @property
    def kind(self) -> str:
        return self.label or self.strategy.name


METHODS: dict[str, Method] = {
    "direct": Method(DIRECT),
    "adapter_linear": Method(ADAPTER, {"adapter": "linear"}),
    "adapter_mlp": Method(ADAPTER, {"adapter": "mlp"}),
    "adapter_mlp_cond": Method(ADAPTER, {"adapter": "mlp", "condition_token": True}),
    "adapter_mlp_cond_shuffled": Method(ADAPTER, {"adapter": "mlp", "condition_token": True,
                                                  "shuffle_domains": True}),
    "adapter_mlp_vision": Method(ADAPTER, {"adapter": "mlp", "train_domain": "perception"}),
    "mixed": Method(RETRAIN, {"perception": True}, label="mixed"),
    "finetune": Method(FINETUNE),
    "imagery_only": Method(RETRAIN, {"perception": False}, label="imagery_only"),
}


def check_methods(names: list[str]) -> list[str]:
    """``names`` if every one is in :data:`METHODS`; a ValueError naming the others."""
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; available: {list(METHODS)}")
    return names


class AblationConfig(StrictModel):
    # paths may hold "{subject}" (e.g. runs/demo/indices/{subject}_imagery.parquet)
    index: str = Field(description="NSD-Imagery index; may hold {subject}")
    checkpoint: str = Field(description="perception decoder; may hold {subject}")
    targets: Path
    output_dir: Path
    perception_index: str | None = Field(
        None, description="NSD perception index (mixed, imagery_only, perception scores); "
                          "may hold {subject}")
    model_type: str | None = Field(None, description="checked against the checkpoint")
    subjects: list[int] | None = None
    methods: list[str] = Field(default_factory=lambda: [
        "direct", "adapter_linear", "adapter_mlp", "adapter_mlp_vision", "mixed",
        "finetune", "imagery_only"], description="methods to run")
    with_condition: bool = Field(False, description="add the conditioned mlp adapter and its "
                                                    "shuffled-label control")
    fractions: list[float] = Field(default_factory=lambda: [1.0],
                                   description="shares of the imagery training trials")
    protocol: Protocol = "leave-targets-out"
    n_folds: int = Field(6, ge=2)
    epochs: int = Field(100, ge=1)
    seed: int = 0
    n_bootstrap: int = 2000
    n_permutations: int = 1000
    scheduler: str | None = Field(None, description="Dask scheduler address "
                                  "(tcp://host:8786); default: run cells in this process")
    eval_figures: bool = Field(False, description="per-cell evaluation figures")

    _known = field_validator("methods")(classmethod(lambda cls, v: check_methods(v)))

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 1 for f in v):
            raise ValueError("fractions must lie in (0, 1]")
        return v

    def all_methods(self) -> list[str]:
        out = list(dict.fromkeys(["direct", *self.methods]))
        if self.with_condition:
            at = out.index("adapter_mlp") + 1 if "adapter_mlp" in out else 1
            for m in ("adapter_mlp_cond_shuffled", "adapter_mlp_cond"):
                if m not in out:
                    out.insert(at, m)
        return out

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
    for key in ("scheduler", "methods", "fractions", "subjects", "with_condition"):
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


def _row(subj: str, method: str, frac: float, cfg: AblationConfig,
         results: dict[str, dict[str, Any]], train_seconds: float,
         n_params: int | None) -> dict[str, Any]:
    img = results["imagery"]
    perc = results.get("perception")
    scored = set(img["config"]["scored_sets"])
    per_target = {k: v["cosine"] for k, v in img["by_stimulus"].items()
                  if v.get("stimulus_set") in scored}
    tr = img["transfer"]["metrics"][img["transfer"]["primary"]]
    ks = img["config"]["ks"]
    return {
        "subject": subj, "method": method, "strategy": METHODS[method].kind,
        "fraction": frac,
        "protocol": img.get("protocol") or "none (perception only)",
        "imagery": {k: _metric(img, k) for k in img["overall"]},
        "by_set": {s: {k: v.get(k) for k in TABLE_METRICS}
                   for s, v in img["by_stimulus_set"].items()},
        "perception": ({k: _metric(perc, k) for k in TABLE_METRICS} if perc else None),
        "perception_per_item": ({k: v["cosine"] for k, v in perc["by_stimulus"].items()}
                                if perc else None),
        "per_target_cosine": per_target,
        "per_target_set": {k: img["by_stimulus"][k].get("stimulus_set") for k in per_target},
        "adapter_domains": _adapter_domains(method),
        "vision": {k: _metric(img["vision"], k) for k in ("cosine", "two_way")},
        "transfer_ratio": {"value": tr["ratio"], "ci": tr["ci"]},
        "train_seconds": round(train_seconds, 3) if method != "direct" else None,
        "n_params": n_params,
        "retrieval_curve": {str(k): img["overall"].get(f"retrieval_top{k}") for k in ks
                            if f"retrieval_top{k}" in img["overall"]},
        "chance": img["chance"],
        "n_items": img["n_items"],
    }



# ----------------------------------------------------------------------------- execution
def _execute(cells: list[dict[str, Any]], scheduler: str | None) -> list[dict[str, Any]]:
    if scheduler is None:
        return [run_cell(c) for c in progress(cells, "ablation cells")]
    try:
        from distributed import Client  # dask is needed only to run on a cluster
    except ImportError as exc:  # pragma: no cover - dask is a declared dependency
        raise RuntimeError("--scheduler needs dask[distributed]: pip install "
                           "'dask[distributed]'") from exc
    log.info("running %d cells on the Dask cluster at %s", len(cells), scheduler)
    with Client(scheduler) as client:
        futures = client.map(run_cell, cells, pure=False)
        return client.gather(futures)


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = cfg.output_dir
    cells = _cells(cfg)
    records = _execute(cells, cfg.scheduler)
    rows = add_comparisons([r["row"] for r in records], n_resamples=cfg.n_bootstrap,
                           seed=cfg.seed)
    write_json(out / "metrics_all.json", {"config": cfg.resolved(), "rows": rows})
    write_text(out / "commands.txt", "\n".join(c for r in records for c in r["commands"])
               + "\n")
    table_rows = [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    write_tables(table_rows, out)
    write_figures(rows, out / "figures")
    hyp = hypotheses(rows, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    write_json(out / "hypotheses.json", hyp)
    write_text(out / "hypotheses.md", render_hypotheses(hyp))
    cfg.save(out / "config_resolved.yaml")
    log.info("ablation: %d cells in %.1f s -> %s", len(cells), time.perf_counter() - t0, out)
    return {"rows": rows, "hypotheses": hyp, "seconds": round(time.perf_counter() - t0, 1)}
