"""``fmri2img ablate``: every perception-to-imagery transfer strategy, one command.

Methods (each a configuration of the same machinery, scored by the same evaluation):

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
in-process or, with ``scheduler``, on a Dask distributed cluster.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from fmri2img.atomic import write_json, write_text
from fmri2img.config import StrictModel
from fmri2img.data.checksum import file_checksum
from fmri2img.data.nsd_layout import subject_name
from fmri2img.errors import DataError
from fmri2img.experiments.reuse import run_once

log = logging.getLogger(__name__)

ADAPTER_METHODS: dict[str, dict[str, Any]] = {
    "adapter_linear": {"adapter": "linear"},
    "adapter_mlp": {"adapter": "mlp"},
    "adapter_mlp_cond": {"adapter": "mlp", "condition_token": True},
    "adapter_mlp_cond_shuffled": {"adapter": "mlp", "condition_token": True,
                                  "shuffle_domains": True},
    "adapter_mlp_vision": {"adapter": "mlp", "train_domain": "perception"},
}
METHODS = ("direct", *ADAPTER_METHODS, "mixed", "finetune", "imagery_only")
STRATEGY = {"direct": "direct", "mixed": "mixed", "finetune": "finetune",
            "imagery_only": "imagery_only", **dict.fromkeys(ADAPTER_METHODS, "adapter")}
TABLE_METRICS = ("cosine", "two_way", "retrieval_top1")


class AblationConfig(StrictModel):
    # paths may hold "{subject}" (e.g. runs/demo/indices/{subject}_imagery.parquet)
    index: str  # NSD-Imagery index
    checkpoint: str  # perception decoder
    targets: Path
    output_dir: Path
    perception_index: str | None = None  # for mixed / imagery_only and perception scores
    model_type: str | None = None
    subjects: list[int] | None = None
    methods: list[str] = Field(default_factory=lambda: [
        "direct", "adapter_linear", "adapter_mlp", "adapter_mlp_vision", "mixed",
        "finetune", "imagery_only"])
    with_condition: bool = False  # add adapter_mlp_cond and its shuffled-label control
    fractions: list[float] = Field(default_factory=lambda: [1.0])
    protocol: Literal["leave-targets-out", "held-out-repetitions"] = "leave-targets-out"
    n_folds: int = Field(6, ge=2)
    epochs: int = Field(100, ge=1)
    seed: int = 0
    n_bootstrap: int = 2000
    n_permutations: int = 1000
    scheduler: str | None = None  # Dask scheduler address; None: in-process
    eval_figures: bool = False  # per-cell evaluation figures (the study's are always made)

    @field_validator("methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}; available: {list(METHODS)}")
        return v

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
    from fmri2img.experiments.trial_data import IndexData

    return [IndexData.open(cfg.index).subject]


def _cells(cfg: AblationConfig) -> list[dict[str, Any]]:
    cells = []
    for subj in _subjects(cfg):
        for method in cfg.all_methods():
            fractions = [1.0] if method == "direct" else cfg.fractions
            for f in fractions:
                cells.append({"config": cfg.resolved(), "subject": subj, "method": method,
                              "fraction": f})
    return cells


def cell_name(method: str, fraction: float) -> str:
    return method if fraction >= 1.0 else f"{method}_f{fraction:g}"


def _cmd(*parts: Any) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train (per fold) and evaluate one (subject, method, fraction); returns its record.

    A top-level function of plain data, so that Dask workers can run it.
    """
    from fmri2img.experiments.adapter_train import AdapterTrainConfig, train_adapter
    from fmri2img.experiments.evaluate import EvalConfig, evaluate
    from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder
    from fmri2img.experiments.train_decoder import (
        ImageryTraining,
        TrainConfig,
        checkpoint_path,
        train_decoder,
    )

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
    commands: list[str] = []
    decoders, adapters = [checkpoint], []
    train_seconds = 0.0
    n_params = None
    folds = range(cfg.n_folds if cfg.protocol == "leave-targets-out" else 2)
    n_folds = len(folds)
    if method in ADAPTER_METHODS:
        for k in folds:
            acfg = AdapterTrainConfig(
                index=index, checkpoint=checkpoint, targets=cfg.targets,
                output_dir=out / "adapters" / name / subj / f"fold{k}",
                model_type=cfg.model_type, epochs=cfg.epochs, protocol=cfg.protocol,
                n_folds=n_folds, fold=k, data_fraction=frac, seed=cfg.seed,
                **ADAPTER_METHODS[method])
            summary = run_once(acfg, "train_summary.json", train_adapter)
            adapters.append(Path(summary["adapter_best"]))
            train_seconds += summary["train_seconds"]
            n_params = summary["n_parameters"]
            commands.append(_cmd("fmri2img train-adapter", "--index", index, "--checkpoint",
                                 checkpoint, "--targets", cfg.targets, "--adapter",
                                 acfg.adapter, "--condition-token" if acfg.condition_token
                                 else "", "--shuffle-domains" if acfg.shuffle_domains else "",
                                 "--train-domain", acfg.train_domain,
                                 "--protocol", cfg.protocol, "--n-folds", n_folds, "--fold", k,
                                 "--data-fraction", frac, "--epochs", cfg.epochs, "--seed",
                                 cfg.seed, "--output-dir", acfg.output_dir))
    elif method == "finetune":
        decoders = []
        for k in folds:
            fcfg = FinetuneConfig(index=index, checkpoint=checkpoint, targets=cfg.targets,
                                  output_dir=out / "finetuned" / name / subj / f"fold{k}",
                                  epochs=cfg.epochs, protocol=cfg.protocol, n_folds=n_folds,
                                  fold=k, data_fraction=frac, seed=cfg.seed)
            summary = run_once(fcfg, "train_summary.json", finetune_decoder)
            decoders.append(Path(summary["checkpoint"]))
            train_seconds += summary["train_seconds"]
            n_params = summary["n_parameters"]
            commands.append(_cmd("fmri2img finetune", "--index", index, "--checkpoint",
                                 checkpoint, "--targets", cfg.targets, "--protocol",
                                 cfg.protocol, "--n-folds", n_folds, "--fold", k,
                                 "--data-fraction", frac, "--epochs", cfg.epochs, "--seed",
                                 cfg.seed, "--output-dir", fcfg.output_dir))
    elif method in ("mixed", "imagery_only"):
        if p_index is None:
            raise DataError(f"{method} needs the perception index (--perception-index)",
                            index)
        from fmri2img.models.pipeline import DecoderPipeline

        _, base_meta = DecoderPipeline.load(checkpoint)
        base_cfg = base_meta.get("config", {})
        decoders = []
        for k in folds:
            tcfg = TrainConfig(
                index=p_index, targets=cfg.targets, model_type=base_meta["model_type"],
                output_dir=out / "decoders" / name / subj / f"fold{k}",
                model=base_cfg.get("model", {}), zscore=base_cfg.get("zscore", True),
                pca=base_cfg.get("pca"), seed=cfg.seed,
                include_perception=method == "mixed",
                imagery=ImageryTraining(index=index, protocol=cfg.protocol, n_folds=n_folds,
                                        fold=k, data_fraction=frac, seed=cfg.seed))
            summary = run_once(tcfg, "train_summary.json", train_decoder)
            decoders.append(checkpoint_path(tcfg.output_dir))
            train_seconds += summary["fit_seconds"]
            commands.append(_cmd("fmri2img train", "--index", p_index, "--targets",
                                 cfg.targets, "--model-type", base_meta["model_type"],
                                 "--imagery-index", index, "--protocol", cfg.protocol,
                                 "--n-folds", n_folds, "--fold", k, "--data-fraction", frac,
                                 "--no-perception" if method == "imagery_only" else "",
                                 "--seed", cfg.seed, "--output-dir", tcfg.output_dir))
    results = {}
    modes = [("imagery", index)] + ([("perception", p_index)] if p_index is not None else [])
    for mode, idx in modes:
        ecfg = EvalConfig(index=idx, checkpoint=decoders, adapter_checkpoint=adapters,
                          targets=cfg.targets, mode=mode,
                          output_dir=out / "eval" / name / subj / mode, seed=cfg.seed,
                          n_bootstrap=cfg.n_bootstrap, n_permutations=cfg.n_permutations,
                          figures=cfg.eval_figures)
        results[mode] = run_once(ecfg, "metrics.json", evaluate)
        commands.append(_cmd("fmri2img eval", "--index", idx, "--checkpoint",
                             " ".join(map(str, decoders)), "--adapter-checkpoint" if adapters
                             else "", " ".join(map(str, adapters)), "--targets", cfg.targets,
                             "--mode", mode, "--output-dir", ecfg.output_dir))
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


def _adapter_domains(method: str) -> list[str]:
    opts = ADAPTER_METHODS[method]
    if opts.get("condition_token"):
        return ["imagery", "perception"]
    return [opts.get("train_domain", "imagery")]


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
        "subject": subj, "method": method, "strategy": STRATEGY[method], "fraction": frac,
        "protocol": img.get("protocol") or "none (perception only)",
        "imagery": {k: _metric(img, k) for k in img["overall"]},
        "by_set": {s: {k: v.get(k) for k in TABLE_METRICS}
                   for s, v in img["by_stimulus_set"].items()},
        "perception": ({k: _metric(perc, k) for k in TABLE_METRICS} if perc else None),
        "perception_per_item": ({k: v["cosine"] for k, v in perc["by_stimulus"].items()}
                                if perc else None),
        "per_target_cosine": per_target,
        "per_target_set": {k: img["by_stimulus"][k].get("stimulus_set") for k in per_target},
        "adapter_domains": (_adapter_domains(method) if method in ADAPTER_METHODS else None),
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
        from fmri2img.progress import progress

        return [run_cell(c) for c in progress(cells, "ablation cells")]
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a declared dependency
        raise RuntimeError("--scheduler needs dask[distributed]: pip install "
                           "'dask[distributed]'") from exc
    log.info("running %d cells on the Dask cluster at %s", len(cells), scheduler)
    with Client(scheduler) as client:
        futures = client.map(run_cell, cells, pure=False)
        return client.gather(futures)


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    from fmri2img.experiments.hypotheses import add_comparisons, write_hypotheses
    from fmri2img.report.ablation_report import write_figures, write_tables

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
    hyp = write_hypotheses(rows, out, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    cfg.save(out / "config_resolved.yaml")
    log.info("ablation: %d cells in %.1f s -> %s", len(cells), time.perf_counter() - t0, out)
    return {"rows": rows, "hypotheses": hyp, "seconds": round(time.perf_counter() - t0, 1)}

