"""``fmri2img eval``: score a decoder on perception or imagery trials of an index.

Protocols (see README, "Evaluation"):

* **perception**: test-split trials of the perception domain, betas averaged per image over
  its repetitions (MindEye2 / MIRAGE), one prediction per image; retrieval against the test
  images' targets in pools of ``pool_size`` (capped at the gallery), both directions; 2-way
  identification over all test images.
* **imagery** (NSD-Imagery, MIRAGE scoring): imagery trials averaged per target over all
  their repetitions, scored on the simple + complex targets (N = 12, the ones with an
  image); conceptual targets are reported apart. The vision trials of the same session are
  scored the same way, and the **transfer ratio** compares imagery with vision on the same
  targets at a matched number of averaged repetitions (random subsets of imagery
  repetitions, averaged over ``n_subsets`` draws). A second ratio, against a perception
  result of the NSD test set (``perception_metrics``), is labelled as such: other images,
  other gallery size.

Every figure comes with a bootstrap CI over items and a permutation p-value against chance
(target assignments shuffled), plus reference bounds: the true target embeddings as
predictions (upper), and shuffled targets and random vectors (lower). The numbers come from
:mod:`fmri2img.eval.scoring` and :mod:`fmri2img.eval.transfer`; this module chooses the
rows, predicts, and writes ``metrics.json``, ``per_trial.csv``, a README and figures
(:mod:`fmri2img.report.eval_report`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.config import StrictModel
from fmri2img.data.trials import IndexData, Targets
from fmri2img.devices import check_device_name
from fmri2img.errors import DataError
from fmri2img.eval.scoring import Scoring, by_group, mean_target_control, trial_scores
from fmri2img.eval.transfer import ratio_to_reference, transfer_ratios
from fmri2img.experiments.eval_outputs import (
    embedding_spec,
    small_sample,
    stimulus_images,
    write_predictions,
)
from fmri2img.experiments.image_scoring import score_reconstruction_folder
from fmri2img.experiments.predictors import Predictor
from fmri2img.experiments.recorded import targets_for
from fmri2img.io.atomic import write_json, write_text
from fmri2img.models import registry
from fmri2img.report.eval_report import render_readme, write_figures

log = logging.getLogger(__name__)

# the metric the transfer ratio is reported on first (chance subtracted before the ratio):
# identification, as the NSD-Imagery benchmark judges; cosine credits the mean target
PRIMARY_RATIO_METRIC = "two_way"


class EvalConfig(StrictModel):
    index: Path
    # one decoder, or one per cross-validation fold (each scores only what it did not see)
    checkpoint: list[Path] = Field(description="decoder, or one per fold of a protocol")
    adapter_checkpoint: list[Path] = Field(
        default_factory=list, description="adapter(s) applied to imagery trials, one per fold")
    adapter_type: str = Field("auto", description="checked against the adapter checkpoints")
    model_type: str = Field("auto", description="checked against the decoder checkpoint "
                            "(auto: whatever it holds)")
    targets: Path | None = Field(None, description="embedding table (default: the one "
                                 "recorded in the decoder checkpoint)")
    device: str | None = Field(None, description="where torch decoders and adapters run "
                               "(cpu, cuda, cuda:N, mps; default: cpu)")
    mode: Literal["perception", "imagery"] = "perception"
    split: str = "test"
    output_dir: Path
    reconstructions: Path | None = Field(
        None, description="a reconstruct output folder of these predictions: its images "
                          "scored against the stimuli (PixCorr, SSIM, PSNR, 2-way)")
    pool_size: int = Field(300, ge=2, description="retrieval pool size")
    n_pools: int = Field(30, ge=1, description="random pools averaged")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 50],
                          description="top-k of retrieval")
    n_bootstrap: int = Field(2000, ge=1)
    n_permutations: int = Field(1000, ge=1)
    seed: int = 0
    average: bool = Field(True, description="perception: average repetitions per image "
                                            "(off: score single trials)")
    scored_sets: list[str] = Field(default_factory=lambda: ["simple", "complex"],
                                   description="imagery: stimulus sets in the overall score")
    n_subsets: int = Field(20, ge=1, description="draws of matched repetition subsets for "
                                                 "the transfer ratio")
    perception_metrics: Path | None = Field(
        None, description="imagery: metrics.json of a perception eval, for the second ratio")
    figures: bool = Field(True, description="similarity distributions and retrieval examples")

    @field_validator("checkpoint", "adapter_checkpoint", mode="before")
    @classmethod
    def _as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    _adapter_type = field_validator("adapter_type")(
        classmethod(lambda cls, v: v if v == "auto" else registry.adapters.check_name(v)))
    _model_type = field_validator("model_type")(
        classmethod(lambda cls, v: v if v == "auto" else registry.decoders.check_name(v)))
    _device = field_validator("device")(
        classmethod(lambda cls, v: v if v is None else check_device_name(v)))

    def scoring(self) -> Scoring:
        return Scoring(ks=tuple(self.ks), pool_size=self.pool_size, n_pools=self.n_pools,
                       n_bootstrap=self.n_bootstrap, n_permutations=self.n_permutations,
                       seed=self.seed)


@dataclass
class Scored:
    """One mode's result: ``metrics`` (what metrics.json holds), one row per trial, and
    the scored items' predictions and targets for the figures."""

    metrics: dict[str, Any]
    per_trial: pd.DataFrame
    items: pd.DataFrame
    pred: np.ndarray
    targets: np.ndarray
    # (items, predictions, targets) of every domain scored, the mode's own first
    domains: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = field(
        default_factory=dict)


# ----------------------------------------------------------------------------- checks
def _check_fit(predictor: Predictor, data: IndexData, targets: Targets,
               cfg: EvalConfig) -> None:
    for member in predictor.members:
        pipeline, trained = member.pipeline, member.meta.get("data", {})
        if pipeline.n_inputs != data.n_voxels:
            raise DataError(
                f"the decoder was trained on {pipeline.n_inputs} voxels "
                f"({trained.get('subject')}, ROI {trained.get('roi')}) but this index's cache "
                f"has {data.n_voxels} ({data.subject}); use an index of the same subject and "
                "voxel selection", cfg.index)
        if trained.get("subject") and trained["subject"] != data.subject:
            raise DataError(f"the decoder was trained on {trained['subject']}, the index "
                            f"holds {data.subject}", cfg.index)
        if pipeline.n_outputs != targets.dim:
            raise DataError(f"the decoder predicts {pipeline.n_outputs}-d embeddings but the "
                            f"target table holds {targets.dim}-d ones", cfg.targets)
        want = (member.meta.get("targets") or {}).get("checksum")
        if want and targets.meta.get("checksum") and want != targets.meta["checksum"]:
            log.warning("target table %s differs from the one the decoder was trained with "
                        "(%s)", cfg.targets, (member.meta.get("targets") or {}).get("path"))


# ----------------------------------------------------------------------------- items
def _scorable(predictor: Predictor, data: IndexData, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows some model did not see in training (all rows without imagery training)."""
    if len(predictor.members) == 1 and not predictor.first.seen:
        return rows
    return rows[predictor.keep(rows, data.index_checksum)]


@dataclass
class Items:
    """What one block scores: the item table, predictions and targets, the single-trial
    predictions, and per item the mean training target of the models that score it
    (``centre``: the decoder's; ``fold_mean``: the imagery fold's; None when unrecorded)."""

    info: pd.DataFrame
    pred: np.ndarray
    targets: np.ndarray
    single: np.ndarray
    centre: np.ndarray | None
    fold_mean: np.ndarray | None


def _predict_items(predictor: Predictor, data: IndexData, rows: pd.DataFrame,
                   targets: Targets, average: bool, domain: str) -> Items:
    X = data.betas(rows)
    single = predictor.predict_trials(rows, X, domain, data.index_checksum)
    if average:
        info, pred = predictor.predict_items(rows, X, domain, data.index_checksum)
    else:
        info = rows[["stimulus", "stimulus_set", "target_code", "stimulus_id"]].reset_index(
            drop=True).assign(n_trials=1)
        pred = single
    T = targets.rows(info["stimulus"].tolist())
    means = [predictor.item_mean_targets(rows, info, data.index_checksum, kind)
             for kind in ("decoder", "fold")]
    return Items(info, pred, T, single, *means)


def _controls(scoring: Scoring, it: Items, targets: np.ndarray,
              centre: np.ndarray | None) -> dict[str, Any]:
    """The mean-target controls of a block, scored on ``targets`` (the block's distinct
    items): the decoder's mean training target, and the imagery fold's where models
    trained on one."""
    out = {}
    for name, means, what in (
            ("mean_target", it.centre, "the mean of the decoder's training targets"),
            ("mean_target_fold", it.fold_mean, "the mean of the imagery targets the fold's "
                                               "models trained on")):
        if means is not None:
            res = mean_target_control(scoring, means, targets, centre)
            per_item = res.pop("per_item")
            keys = it.info["stimulus"].tolist()
            out[name] = {"prediction": what, **res,
                         "by_stimulus": {k: {m: float(v[i]) for m, v in per_item.items()}
                                         for i, k in enumerate(keys)}}
    return out


def _per_trial_frame(rows: pd.DataFrame, single_pred: np.ndarray, items: pd.DataFrame,
                     item_targets: np.ndarray, domain: str) -> pd.DataFrame:
    """One row per trial: cosine to its target, 2-way and rank among the scored items."""
    lookup = {k: i for i, k in enumerate(items["stimulus"])}
    scores = trial_scores(single_pred, item_targets,
                          np.array([lookup[k] for k in rows["stimulus"]]))
    cols = ["subject", "session", "run", "trial", "stimulus", "stimulus_set", "target_code",
            "repetition", "vividness", "split"]
    out = rows[[c for c in cols if c in rows.columns]].reset_index(drop=True).copy()
    out.insert(0, "domain", domain)
    for name, values in scores.items():
        out[name] = values
    out["gallery_size"] = len(item_targets)
    return out


def _by_stimulus(items: pd.DataFrame, per_item: dict[str, np.ndarray]) -> dict[str, dict]:
    return {
        str(key): {"stimulus_set": items["stimulus_set"].iloc[i],
                   "n_trials": int(items["n_trials"].iloc[i]),
                   **{k: float(v[i]) for k, v in per_item.items()}}
        for i, key in enumerate(items["stimulus"])
    }


# ----------------------------------------------------------------------------- modes
def evaluate_perception(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                        targets: Targets) -> Scored:
    scoring = cfg.scoring()
    rows = _scorable(predictor, data, data.select(splits=[cfg.split], domains=["perception"]))
    if len(rows) < 2:
        raise DataError(f"{len(rows)} perception trials in split {cfg.split!r}", cfg.index)
    it = _predict_items(predictor, data, rows, targets, cfg.average, "perception")
    items, pred, T = it.info, it.pred, it.targets
    first = np.arange(len(T))
    if not cfg.average and items["stimulus"].duplicated().any():
        # single trials share targets: score them against the unique targets
        keys = items["stimulus"].tolist()
        first_row: dict[str, int] = {}
        for i, k in enumerate(keys):
            first_row.setdefault(k, i)
        uniq = list(first_row)
        gallery = targets.rows(uniq)
        position = {k: j for j, k in enumerate(uniq)}
        target_rows = np.array([position[k] for k in keys])
        first = np.array(list(first_row.values()))
    else:
        gallery, target_rows = T, np.arange(len(T))
    per_item = scoring.items(pred, T, gallery, target_rows, centre=it.centre)
    result = scoring.summarize(per_item, pred, gallery, target_rows,
                               groups=items["stimulus"].to_numpy() if not cfg.average else None,
                               centre=it.centre)
    result["by_stimulus_set"] = by_group(per_item, items["stimulus_set"].fillna("all")
                                         .to_numpy())
    result["by_stimulus"] = _by_stimulus(items, per_item)
    result["bounds"] = scoring.bounds(gallery)
    at = Items(items.iloc[first], pred[first], gallery, it.single,
               None if it.centre is None else it.centre[first], None)
    result["controls"] = _controls(scoring, at, gallery, at.centre)
    per_trial = _per_trial_frame(rows, it.single, items.drop_duplicates("stimulus")
                                 if not cfg.average else items,
                                 T if cfg.average else gallery, "perception")
    return Scored(result, per_trial, items, pred, T, {"perception": (items, pred, T)})


def _domain_block(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                  targets: Targets, domain: str) -> tuple[Scored, pd.DataFrame]:
    """Scored (simple + complex) items of one domain of the imagery session, plus the
    conceptual items scored against all of that domain's targets; also returns the
    scored rows."""
    scoring = cfg.scoring()
    rows = _scorable(predictor, data, data.select(splits=[cfg.split], domains=[domain],
                                                  stimulus_sets=cfg.scored_sets))
    if rows["stimulus"].nunique() < 2:
        raise DataError(f"{rows['stimulus'].nunique()} scored {domain} targets in split "
                        f"{cfg.split!r} (sets {cfg.scored_sets}) that the model did not see "
                        "in training", cfg.index)
    it = _predict_items(predictor, data, rows, targets, True, domain)
    items, pred, T = it.info, it.pred, it.targets
    per_item = scoring.items(pred, T, centre=it.centre)
    block = scoring.summarize(per_item, pred, T, np.arange(len(T)), centre=it.centre)
    block["controls"] = _controls(scoring, it, T, it.centre)
    by_set = by_group(per_item, items["stimulus_set"].to_numpy())
    per_trial = _per_trial_frame(rows, it.single, items, T, domain)
    others = _scorable(predictor, data, data.select(splits=[cfg.split], domains=[domain]))
    others = others[~others["stimulus_set"].isin(cfg.scored_sets)]
    if len(others):
        all_rows = data.select(splits=[cfg.split], domains=[domain])
        o_it = _predict_items(predictor, data, others, targets, True, domain)
        o_items = o_it.info
        all_keys = list(dict.fromkeys(sorted(all_rows["stimulus"])))
        gallery = targets.rows(all_keys)
        idx = np.array([all_keys.index(k) for k in o_items["stimulus"]])
        o_scores = scoring.items(o_it.pred, gallery, gallery, idx, centre=o_it.centre)
        o_scores.pop("brain_retrieval_top1", None)
        for lab, vals in by_group(o_scores, o_items["stimulus_set"].to_numpy()).items():
            vals["note"] = (f"not in the overall score; scored against all {len(all_keys)} "
                            "targets of the session")
            by_set[lab] = vals
        per_item_all = {k: np.concatenate([v, o_scores[k]]) for k, v in per_item.items()
                        if k in o_scores}
        items_all = pd.concat([items, o_items], ignore_index=True)
    else:
        per_item_all, items_all = per_item, items
    block["by_stimulus_set"] = by_set
    block["by_stimulus"] = _by_stimulus(items_all, per_item_all)
    return Scored(block, per_trial, items, pred, T), rows


def transfer_ratio(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                   targets: Targets, vis_rows: pd.DataFrame,
                   img_rows: pd.DataFrame) -> dict[str, Any]:
    """Imagery over vision on the same targets, both averaged over the same number of
    repetitions (random subsets, ``n_subsets`` draws); paired bootstrap CI over targets."""
    scoring = cfg.scoring()
    common = sorted(set(vis_rows["stimulus"]) & set(img_rows["stimulus"]))
    if len(common) < 2:
        raise DataError("fewer than 2 targets have both vision and imagery trials", cfg.index)
    vis_rows = vis_rows[vis_rows["stimulus"].isin(common)]
    img_rows = img_rows[img_rows["stimulus"].isin(common)]
    m = int(min(vis_rows.groupby("stimulus").size().min(),
                img_rows.groupby("stimulus").size().min()))
    rng = np.random.default_rng(cfg.seed + 11)
    X_vis, X_img = data.betas(vis_rows), data.betas(img_rows)
    T = targets.rows(common)
    # Runs matched too: NSD-Imagery shows each target's vision trials in one run and its
    # imagery trials in two. Averaging over two runs also averages out run-level noise,
    # which would favour imagery, so each draw takes a target's imagery repetitions from
    # one of its runs when that run alone holds enough of them.
    full_runs: dict[str, list[Any]] = {}  # target -> its runs holding >= m repetitions
    if "run" in img_rows:
        for (k, r), n in img_rows.groupby(["stimulus", "run"]).size().items():
            if n >= m:
                full_runs.setdefault(k, []).append(r)
    match_runs = set(full_runs) == set(common)
    acc: dict[str, dict[str, list[np.ndarray]]] = {"vision": {}, "imagery": {}}
    for _ in range(cfg.n_subsets):
        sel = np.ones(len(img_rows), bool)
        if match_runs:
            pick = {k: rng.choice(runs) for k, runs in full_runs.items()}
            sel = (img_rows["run"].to_numpy() == img_rows["stimulus"].map(pick).to_numpy())
        for name, rows, X, domain in (("vision", vis_rows, X_vis, "perception"),
                                      ("imagery", img_rows[sel], X_img[sel], "imagery")):
            items, pred = predictor.predict_items(rows, X, domain, data.index_checksum, m, rng)
            assert list(items["stimulus"]) == common
            for k, v in scoring.items(pred, T).items():
                acc[name].setdefault(k, []).append(v)
    per_target = {name: {k: np.mean(v, axis=0) for k, v in d.items()} for name, d in acc.items()}
    ratios = transfer_ratios(per_target["imagery"], per_target["vision"],
                             scoring.chance(len(T), len(T)), n_resamples=cfg.n_bootstrap,
                             seed=cfg.seed)
    return {
        "definition": "(imagery - chance) / (vision - chance), per metric, on the same "
                      f"{len(common)} targets of the NSD-Imagery session, each averaged over "
                      f"{m} repetitions (random subsets, {cfg.n_subsets} draws"
                      + ("; imagery ones from one run per target and draw, as vision's"
                         if match_runs else "") + "); CI: paired bootstrap over targets",
        "runs_matched": match_runs,
        "primary": PRIMARY_RATIO_METRIC,
        "repetitions_matched": m,
        "n_targets": len(common),
        "metrics": ratios,
    }


def _ratio_to_perception(imagery_overall: dict[str, float], path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError("perception metrics.json not found", path)
    perc = json.loads(path.read_text())
    ratios = ratio_to_reference(imagery_overall, perc.get("overall", {}),
                                perc.get("chance", {}), ("two_way", "cosine"))
    return {"label": "imagery (NSD-Imagery targets) over perception (NSD test images): "
                     "other stimuli, other gallery sizes, other repetition counts; not like "
                     "for like", "perception_metrics": str(path), "ratios": ratios}


def evaluate_imagery(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                     targets: Targets) -> Scored:
    img, img_rows = _domain_block(cfg, predictor, data, targets, "imagery")
    vis, vis_rows = _domain_block(cfg, predictor, data, targets, "perception")
    result = dict(img.metrics)
    result["vision"] = {k: vis.metrics[k] for k in ("overall", "ci", "p_vs_chance",
                                                    "by_stimulus_set", "n_items", "controls")}
    result["transfer"] = transfer_ratio(cfg, predictor, data, targets, vis_rows, img_rows)
    if cfg.perception_metrics is not None:
        result["transfer"]["vs_perception_test"] = _ratio_to_perception(
            img.metrics["overall"], cfg.perception_metrics)
    result["bounds"] = cfg.scoring().bounds(img.targets)
    per_trial = pd.concat([img.per_trial, vis.per_trial], ignore_index=True)
    return Scored(result, per_trial, img.items, img.pred, img.targets,
                  {"imagery": (img.items, img.pred, img.targets),
                   "vision": (vis.items, vis.pred, vis.targets)})


# ----------------------------------------------------------------------------- command
def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = cfg.model_copy(update={"targets": targets_for(cfg.targets, cfg.checkpoint)})
    assert cfg.targets is not None
    predictor = Predictor.load(cfg.checkpoint, cfg.adapter_checkpoint, cfg.adapter_type,
                               cfg.device)
    meta = predictor.first.meta
    if cfg.model_type != "auto" and meta["model_type"] != cfg.model_type:
        raise DataError(f"--model-type {cfg.model_type} given, but the checkpoint holds a "
                        f"{meta['model_type']} decoder", cfg.checkpoint[0])
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    _check_fit(predictor, data, targets, cfg)
    fn = evaluate_perception if cfg.mode == "perception" else evaluate_imagery
    scored = fn(cfg, predictor, data, targets)
    warning = small_sample(int(scored.metrics["n_items"]),
                           min(cfg.pool_size, int(scored.metrics["gallery_size"])))
    if warning:
        log.warning("%s", warning)
    result = {
        "warning": warning,
        "mode": cfg.mode,
        "split": cfg.split,
        "subject": data.subject,
        "model_type": meta["model_type"],
        **scored.metrics,
        "config": cfg.resolved(),
        "checkpoint": {"path": ", ".join(str(p) for p in cfg.checkpoint),
                       "trained_on": meta.get("data"), "train": meta.get("train")},
        "protocol": predictor.protocol(),
        "adapter": _adapter_summary(predictor, cfg),
        "data": data.provenance(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if cfg.reconstructions is not None:
        result["image_metrics"] = score_reconstruction_folder(
            cfg.reconstructions, cfg.index, list(scored.domains), n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed)
    out = Path(cfg.output_dir)
    write_json(out / "metrics.json", result)
    write_text(out / "per_trial.csv", scored.per_trial.to_csv(index=False))
    write_predictions(out, scored.domains, {
        "mode": cfg.mode, "split": cfg.split, "subject": data.subject,
        "model_type": meta["model_type"], "index": str(Path(cfg.index).resolve()),
        "checkpoint": [str(Path(c).resolve()) for c in cfg.checkpoint],
        "adapter": bool(cfg.adapter_checkpoint), "embedding": embedding_spec(meta)})
    write_text(out / "README.md", render_readme(result))
    cfg.save(out / "config_resolved.yaml")
    if cfg.figures:
        write_figures(out / "figures", scored.pred, scored.targets,
                      stimulus_images(cfg.index, scored.items["stimulus"].tolist()),
                      title=f"{meta['model_type']}, {data.subject}, {cfg.mode}")
    log.info("%s %s %s: %s", data.subject, meta["model_type"], cfg.mode,
             ", ".join(f"{k} {v:.3f}" for k, v in result["overall"].items()
                       if k in ("cosine", "retrieval_top1", "two_way")))
    return result


def _adapter_summary(predictor: Predictor, cfg: EvalConfig) -> dict[str, Any] | None:
    if not predictor.has_adapter:
        return None
    metas = [m.adapter_meta for m in predictor.members if m.adapter_meta]
    return {
        "checkpoints": [str(p) for p in cfg.adapter_checkpoint],
        "type": metas[0]["model_type"],
        "condition": bool(metas[0]["model_config"].get("condition")),
        "n_parameters": metas[0]["model_meta"].get("n_parameters"),
        "applied_to": "imagery trials only (perception and vision trials: adapter off)",
    }
