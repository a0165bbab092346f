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
predictions (upper), and shuffled targets and random vectors (lower).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from fmri2img.atomic import write_json, write_text
from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.eval import metrics as M
from fmri2img.eval import stats as S
from fmri2img.experiments.predictors import Predictor
from fmri2img.experiments.trial_data import IndexData, Targets

log = logging.getLogger(__name__)

# metrics whose chance level is subtracted before taking ratios
PRIMARY_RATIO_METRIC = "cosine"


class EvalConfig(StrictModel):
    index: Path
    # one decoder, or one per cross-validation fold (each scores only what it did not see)
    checkpoint: list[Path]
    # adapters on the decoder output (imagery trials only), one per fold
    adapter_checkpoint: list[Path] = Field(default_factory=list)
    adapter_type: Literal["auto", "linear", "mlp"] = "auto"
    targets: Path
    mode: Literal["perception", "imagery"] = "perception"
    split: str = "test"
    output_dir: Path
    pool_size: int = 300
    n_pools: int = 30
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 50])
    n_bootstrap: int = 2000
    n_permutations: int = 1000
    seed: int = 0
    average: bool = True  # average repetitions per stimulus before predicting
    scored_sets: list[str] = Field(default_factory=lambda: ["simple", "complex"])
    n_subsets: int = 20  # draws of matched repetition subsets for the transfer ratio
    perception_metrics: Path | None = None  # metrics.json of a perception eval
    figures: bool = True  # similarity distributions and retrieval examples

    @field_validator("checkpoint", "adapter_checkpoint", mode="before")
    @classmethod
    def _as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v


# ----------------------------------------------------------------------------- scoring
def score_items(pred: np.ndarray, targets: np.ndarray, cfg: EvalConfig,
                gallery: np.ndarray | None = None,
                target_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-item metrics; paired (row i's target is ``targets[i]``) unless a gallery is
    given with ``target_rows``."""
    if gallery is None:
        gallery, target_rows = targets, np.arange(len(targets))
    return M.score_all(pred, target_rows, gallery, ks=cfg.ks, pool_size=cfg.pool_size,
                       n_pools=cfg.n_pools, seed=cfg.seed)


def summarize(per_item: dict[str, np.ndarray], pred: np.ndarray, gallery: np.ndarray,
              target_rows: np.ndarray, cfg: EvalConfig, *, with_p: bool = True,
              groups: np.ndarray | None = None) -> dict[str, Any]:
    """overall means, bootstrap CIs over items, chance levels and permutation p-values."""
    overall = {k: float(np.mean(v)) for k, v in per_item.items()}
    ci = {k: [float(x) for x in S.bootstrap_ci(v, n_resamples=cfg.n_bootstrap,
                                              seed=cfg.seed, groups=groups)]
          for k, v in per_item.items()}
    chance = M.chance_levels(cfg.ks, cfg.pool_size, gallery_size=len(gallery),
                             n_predictions=len(pred))
    out: dict[str, Any] = {"overall": overall, "ci": ci,
                           "chance": {k: chance.get(k) for k in per_item},
                           "n_items": len(pred), "gallery_size": len(gallery)}
    if with_p:
        out["p_vs_chance"] = permutation_p_values(pred, gallery, target_rows, overall, cfg)
    return out


def permutation_p_values(pred: np.ndarray, gallery: np.ndarray, target_rows: np.ndarray,
                         observed: dict[str, float], cfg: EvalConfig) -> dict[str, float]:
    """One-sided p of each metric against chance: the items' target assignments are
    shuffled, keeping predictions and gallery fixed.

    Paired items (one distinct target each) use the pair-score matrices, computed once;
    retrieval is tested with its whole-gallery n-way form (a valid statistic for the same
    null, without the pools' Monte Carlo noise).
    """
    paired = len(gallery) == len(pred) and np.array_equal(target_rows, np.arange(len(pred)))
    out: dict[str, float] = {}
    if paired:
        for k in observed:
            if k == "cosine":
                metric, a, b = M.cosine_metric, pred, gallery
            elif k == "two_way":
                metric, a, b = M.two_way_metric, pred, gallery
            elif k.startswith("brain_retrieval_top"):
                metric, a, b = M.top_k_metric(int(k.rsplit("top", 1)[1])), gallery, pred
            elif k.startswith("retrieval_top"):
                metric, a, b = M.top_k_metric(int(k.rsplit("top", 1)[1])), pred, gallery
            else:
                continue
            res = S.permutation_test_vs_chance(metric, a, b, n_permutations=cfg.n_permutations,
                                               seed=cfg.seed)
            out[k] = float(res.p_value)
        return out
    # several items share a target (single trials): recompute everything per permutation,
    # retrieval over the whole gallery on both sides of the comparison
    full = M.score_all(pred, target_rows, gallery, ks=cfg.ks, pool_size=len(gallery),
                       n_pools=1, seed=cfg.seed)
    observed = {k: float(np.mean(v)) for k, v in full.items() if k in observed}
    rng = np.random.default_rng(cfg.seed + 7919)
    exceed = dict.fromkeys(observed, 0)
    for _ in range(cfg.n_permutations):
        perm = rng.permutation(target_rows)
        scores = M.score_all(pred, perm, gallery, ks=cfg.ks, pool_size=len(gallery),
                             n_pools=1, seed=cfg.seed)
        for k in observed:
            if k in scores and np.mean(scores[k]) >= observed[k]:
                exceed[k] += 1
    return {k: (1 + exceed[k]) / (1 + cfg.n_permutations) for k in observed}


def bounds(targets: np.ndarray, cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Reference bounds with the same scoring: true targets as predictions (upper),
    targets shuffled across items and random Gaussian vectors (lower)."""
    rng = np.random.default_rng(cfg.seed + 1)
    shuffled = targets[rng.permutation(len(targets))]
    random = rng.standard_normal(targets.shape).astype(np.float32)
    out = {}
    for name, pred in (("upper_true_targets", targets), ("lower_shuffled_targets", shuffled),
                       ("lower_random", random)):
        out[name] = {k: float(np.mean(v)) for k, v in score_items(pred, targets, cfg).items()}
    return out


# ----------------------------------------------------------------------------- modes
def _check_fit(predictor: Predictor, data: IndexData, targets: Targets,
               cfg: EvalConfig) -> None:
    for member in predictor.members:
        _check_member(member.pipeline, member.meta, data, targets, cfg)


def _check_member(pipeline: Any, meta: dict[str, Any], data: IndexData,
                  targets: Targets, cfg: EvalConfig) -> None:
    trained = meta.get("data", {})
    if pipeline.n_inputs != data.n_voxels:
        raise DataError(
            f"the decoder was trained on {pipeline.n_inputs} voxels ({trained.get('subject')}, "
            f"ROI {trained.get('roi')}) but this index's cache has {data.n_voxels} "
            f"({data.subject}); use an index of the same subject and voxel selection",
            cfg.index)
    if trained.get("subject") and trained["subject"] != data.subject:
        raise DataError(f"the decoder was trained on {trained['subject']}, the index holds "
                        f"{data.subject}", cfg.index)
    if pipeline.n_outputs != targets.dim:
        raise DataError(f"the decoder predicts {pipeline.n_outputs}-d embeddings but the "
                        f"target table holds {targets.dim}-d ones", cfg.targets)
    want = (meta.get("targets") or {}).get("checksum")
    if want and targets.meta.get("checksum") and want != targets.meta["checksum"]:
        log.warning("target table %s differs from the one the decoder was trained with (%s)",
                    cfg.targets, (meta.get("targets") or {}).get("path"))


def _scorable(predictor: Predictor, data: IndexData, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows some model did not see in training (all rows without imagery training)."""
    if len(predictor.members) == 1 and not predictor.first.seen:
        return rows
    return rows[predictor.keep(rows, data.index_checksum)]


def _predict_items(predictor: Predictor, data: IndexData, rows: pd.DataFrame,
                   targets: Targets, average: bool, domain: str
                   ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(item table, item predictions, item targets, single-trial predictions)."""
    X = data.betas(rows)
    single = predictor.predict_trials(rows, X, domain, data.index_checksum)
    if average:
        info, pred = predictor.predict_items(rows, X, domain, data.index_checksum)
    else:
        info = rows[["stimulus", "stimulus_set", "target_code", "stimulus_id"]].reset_index(
            drop=True).assign(n_trials=1)
        pred = single
    T = targets.rows(info["stimulus"].tolist())
    return info, pred, T, single


def _per_trial_frame(rows: pd.DataFrame, single_pred: np.ndarray, items: pd.DataFrame,
                     item_targets: np.ndarray, cfg: EvalConfig, domain: str) -> pd.DataFrame:
    """One row per trial: cosine to its target, 2-way and rank among the scored items."""
    lookup = {k: i for i, k in enumerate(items["stimulus"])}
    idx = np.array([lookup[k] for k in rows["stimulus"]])
    cos = M.cosine_per_item(single_pred, item_targets[idx])
    two_way = M.two_way_per_item(single_pred, item_targets, idx)
    sims = M.cosine_matrix(single_pred, item_targets)
    rank = 1 + (sims > sims[np.arange(len(idx)), idx][:, None]).sum(axis=1)
    cols = ["subject", "session", "run", "trial", "stimulus", "stimulus_set", "target_code",
            "repetition", "vividness", "split"]
    out = rows[[c for c in cols if c in rows.columns]].reset_index(drop=True).copy()
    out.insert(0, "domain", domain)
    out["cosine"] = cos
    out["two_way"] = two_way
    out["retrieval_rank"] = rank
    out["gallery_size"] = len(item_targets)
    return out


def _by_groups(per_item: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    out = {}
    for lab in pd.unique(labels):
        sel = labels == lab
        out[str(lab)] = {"n_items": int(sel.sum()),
                         **{k: float(np.mean(v[sel])) for k, v in per_item.items()}}
    return out


def _by_stimulus(items: pd.DataFrame, per_item: dict[str, np.ndarray]) -> dict[str, dict]:
    return {
        str(key): {"stimulus_set": items["stimulus_set"].iloc[i],
                   "n_trials": int(items["n_trials"].iloc[i]),
                   **{k: float(v[i]) for k, v in per_item.items()}}
        for i, key in enumerate(items["stimulus"])
    }


def evaluate_perception(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                        targets: Targets) -> tuple[dict[str, Any], pd.DataFrame]:
    rows = _scorable(predictor, data, data.select(splits=[cfg.split], domains=["perception"]))
    if len(rows) < 2:
        raise DataError(f"{len(rows)} perception trials in split {cfg.split!r}", cfg.index)
    items, pred, T, single = _predict_items(predictor, data, rows, targets, cfg.average,
                                            "perception")
    if not cfg.average and items["stimulus"].duplicated().any():
        # single trials share targets: score them against the unique targets
        uniq = list(dict.fromkeys(items["stimulus"]))
        gallery = targets.rows(uniq)
        target_rows = np.array([uniq.index(k) for k in items["stimulus"]])
    else:
        gallery, target_rows = T, np.arange(len(T))
    per_item = score_items(pred, T, cfg, gallery, target_rows)
    result = summarize(per_item, pred, gallery, target_rows, cfg,
                       groups=items["stimulus"].to_numpy() if not cfg.average else None)
    sets = items["stimulus_set"].fillna("all").to_numpy()
    result["by_stimulus_set"] = _by_groups(per_item, sets)
    result["by_stimulus"] = _by_stimulus(items, per_item)
    result["bounds"] = bounds(gallery, cfg)
    result["_figure_data"] = (items, pred, T)
    per_trial = _per_trial_frame(rows, single, items.drop_duplicates("stimulus")
                                 if not cfg.average else items,
                                 T if cfg.average else gallery, cfg, "perception")
    return result, per_trial


def _domain_block(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                  targets: Targets, domain: str) -> tuple[dict[str, Any], pd.DataFrame, dict]:
    """Scored (simple + complex) items of one domain of the imagery session, plus the
    conceptual items scored against all of that domain's targets."""
    rows = _scorable(predictor, data, data.select(splits=[cfg.split], domains=[domain],
                                                  stimulus_sets=cfg.scored_sets))
    if rows["stimulus"].nunique() < 2:
        raise DataError(f"{rows['stimulus'].nunique()} scored {domain} targets in split "
                        f"{cfg.split!r} (sets {cfg.scored_sets}) that the model did not see "
                        "in training", cfg.index)
    items, pred, T, single = _predict_items(predictor, data, rows, targets, True, domain)
    per_item = score_items(pred, T, cfg)
    block = summarize(per_item, pred, T, np.arange(len(T)), cfg)
    by_set = _by_groups(per_item, items["stimulus_set"].to_numpy())
    per_trial = _per_trial_frame(rows, single, items, T, cfg, domain)
    others = _scorable(predictor, data, data.select(splits=[cfg.split], domains=[domain]))
    others = others[~others["stimulus_set"].isin(cfg.scored_sets)]
    if len(others):
        all_rows = data.select(splits=[cfg.split], domains=[domain])
        o_items, o_pred, _, _ = _predict_items(predictor, data, others, targets, True, domain)
        all_keys = list(dict.fromkeys(sorted(all_rows["stimulus"])))
        gallery = targets.rows(all_keys)
        idx = np.array([all_keys.index(k) for k in o_items["stimulus"]])
        o_scores = M.score_all(o_pred, idx, gallery, ks=cfg.ks, pool_size=cfg.pool_size,
                               n_pools=cfg.n_pools, seed=cfg.seed)
        o_scores.pop("brain_retrieval_top1", None)
        for lab, vals in _by_groups(o_scores, o_items["stimulus_set"].to_numpy()).items():
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
    return block, per_trial, {"items": items, "pred": pred, "targets": T, "rows": rows}


def transfer_ratio(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                   targets: Targets, vis_rows: pd.DataFrame,
                   img_rows: pd.DataFrame) -> dict[str, Any]:
    """Imagery over vision on the same targets, both averaged over the same number of
    repetitions (random subsets, ``n_subsets`` draws); paired bootstrap CI over targets."""
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
            for k, v in score_items(pred, T, cfg).items():
                acc[name].setdefault(k, []).append(v)
    per_target = {name: {k: np.mean(v, axis=0) for k, v in d.items()} for name, d in acc.items()}
    chance = M.chance_levels(cfg.ks, cfg.pool_size, gallery_size=len(T), n_predictions=len(T))
    ratios = {}
    for k in per_target["imagery"]:
        c = chance.get(k) or 0.0
        img = per_target["imagery"][k] - c
        vis = per_target["vision"][k] - c
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                est, (lo, hi) = S.ratio_ci(img, vis, paired=True,
                                           n_resamples=cfg.n_bootstrap, seed=cfg.seed)
        except ValueError:  # vision at chance (e.g. top-k with k >= pool): undefined
            est, lo, hi = np.nan, np.nan, np.nan
        ratios[k] = {"ratio": _num(est), "ci": [_num(lo), _num(hi)],
                     "imagery": float(np.mean(per_target["imagery"][k])),
                     "vision": float(np.mean(per_target["vision"][k])), "chance": c or None}
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


def _num(x: float) -> float | None:
    """JSON has no NaN: undefined values are written as null."""
    return None if not np.isfinite(x) else float(x)


def _ratio_to_perception(imagery_overall: dict[str, float], path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError("perception metrics.json not found", path)
    perc = json.loads(path.read_text())
    chance = perc.get("chance", {})
    out = {}
    for k in (PRIMARY_RATIO_METRIC, "two_way"):
        if k in imagery_overall and k in perc.get("overall", {}):
            c = chance.get(k) or 0.0
            denom = perc["overall"][k] - c
            out[k] = float((imagery_overall[k] - c) / denom) if denom else None
    return {"label": "imagery (NSD-Imagery targets) over perception (NSD test images): "
                     "other stimuli, other gallery sizes, other repetition counts; not like "
                     "for like", "perception_metrics": str(path), "ratios": out}


def evaluate_imagery(cfg: EvalConfig, predictor: Predictor, data: IndexData,
                     targets: Targets) -> tuple[dict[str, Any], pd.DataFrame]:
    img, img_trials, img_raw = _domain_block(cfg, predictor, data, targets, "imagery")
    vis, vis_trials, vis_raw = _domain_block(cfg, predictor, data, targets, "perception")
    result = dict(img)
    result["vision"] = {k: vis[k] for k in ("overall", "ci", "p_vs_chance", "by_stimulus_set",
                                            "n_items")}
    result["transfer"] = transfer_ratio(cfg, predictor, data, targets, vis_raw["rows"],
                                        img_raw["rows"])
    if cfg.perception_metrics is not None:
        result["transfer"]["vs_perception_test"] = _ratio_to_perception(
            img["overall"], cfg.perception_metrics)
    result["bounds"] = bounds(img_raw["targets"], cfg)
    result["_figure_data"] = (img_raw["items"], img_raw["pred"], img_raw["targets"])
    return result, pd.concat([img_trials, vis_trials], ignore_index=True)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    predictor = Predictor.load(cfg.checkpoint, cfg.adapter_checkpoint, cfg.adapter_type)
    meta = predictor.first.meta
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    _check_fit(predictor, data, targets, cfg)
    fn = evaluate_perception if cfg.mode == "perception" else evaluate_imagery
    result, per_trial = fn(cfg, predictor, data, targets)
    figure_data = result.pop("_figure_data")
    result = {
        "mode": cfg.mode,
        "split": cfg.split,
        "subject": data.subject,
        "model_type": meta["model_type"],
        **result,
        "config": cfg.resolved(),
        "checkpoint": {"path": ", ".join(str(p) for p in cfg.checkpoint),
                       "trained_on": meta.get("data"), "train": meta.get("train")},
        "protocol": predictor.protocol(),
        "adapter": _adapter_summary(predictor, cfg),
        "data": data.provenance(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    out = Path(cfg.output_dir)
    write_json(out / "metrics.json", result)
    write_text(out / "per_trial.csv", per_trial.to_csv(index=False))
    write_text(out / "README.md", render_readme(result))
    cfg.save(out / "config_resolved.yaml")
    if cfg.figures:
        write_figures(out / "figures", cfg, *figure_data,
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
        "type": metas[0]["adapter_type"],
        "condition": bool(metas[0]["adapter_config"].get("condition")),
        "n_parameters": metas[0]["n_parameters"],
        "applied_to": "imagery trials only (perception and vision trials: adapter off)",
    }


# ----------------------------------------------------------------------------- figures
def write_figures(folder: Path, cfg: EvalConfig, items: pd.DataFrame, pred: np.ndarray,
                  targets: np.ndarray, title: str) -> None:
    """Similarity distributions (own vs other targets) and, when the index's stimulus
    images can be read, retrieval examples (stimulus, then its top-5 retrieved)."""
    from fmri2img.report import figures

    sims = M.cosine_matrix(pred, targets)
    own = np.eye(len(sims), dtype=bool)
    figures.similarity_distributions(sims[own], sims[~own], folder / "similarity_distributions",
                                     title=title)
    try:
        from fmri2img.targets.images import index_stimuli

        found = index_stimuli(cfg.index)
        by_key = {st.key: st for st in found.stimuli}
        wanted = [by_key.get(k) for k in items["stimulus"]]
        if any(w is None or not w.has_image for w in wanted):
            log.info("retrieval examples skipped: some scored stimuli have no image")
            return
        images = np.stack(found.load_images(wanted))
    except (DataError, OSError, KeyError, ValueError) as exc:
        log.info("retrieval examples skipped: stimulus images not readable (%s)", exc)
        return
    figures.retrieval_examples(images, sims, folder / "retrieval_examples", title=title)


# ----------------------------------------------------------------------------- report
def _fmt(result: dict[str, Any], k: str) -> str:
    v = result["overall"][k]
    lo, hi = result["ci"][k]
    p = result.get("p_vs_chance", {}).get(k)
    ch = result.get("chance", {}).get(k)
    return (f"| {k} | {v:.3f} | [{lo:.3f}, {hi:.3f}] | "
            f"{'-' if ch is None else f'{ch:.3f}'} | {'-' if p is None else f'{p:.4f}'} |")


def render_readme(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"# Evaluation: {result['model_type']} on {result['subject']}, {result['mode']} "
        f"({result['split']} split)",
        "",
        f"Checkpoint `{result['checkpoint']['path']}`, index `{cfg['index']}`, targets "
        f"`{cfg['targets']}`.",
        "",
        f"{result['n_items']} scored items; retrieval pools of {cfg['pool_size']} "
        f"(capped at the gallery of {result['gallery_size']}), {cfg['n_pools']} pools; "
        f"CIs: {cfg['n_bootstrap']} bootstrap resamples over items (95%); p: "
        f"{cfg['n_permutations']} permutations of the item-target pairing (one-sided).",
        "",
        "| metric | value | 95% CI | chance | p vs chance |",
        "|---|---|---|---|---|",
        *[_fmt(result, k) for k in result["overall"]],
        "",
    ]
    if result["mode"] == "imagery":
        tr = result["transfer"]
        lines += ["## Vision trials of the same session", "",
                  "| metric | value | 95% CI | chance | p vs chance |", "|---|---|---|---|---|",
                  *[_fmt({**result["vision"], "chance": result["chance"]}, k)
                    for k in result["vision"]["overall"]], "",
                  "## Transfer ratio", "", tr["definition"] + ".", "",
                  "| metric | imagery | vision | ratio | 95% CI |", "|---|---|---|---|---|"]
        for k, v in tr["metrics"].items():
            if v["ratio"] is None:
                continue
            lines.append(f"| {k} | {v['imagery']:.3f} | {v['vision']:.3f} | {v['ratio']:.3f} | "
                         f"[{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] |")
        if "vs_perception_test" in tr:
            vp = tr["vs_perception_test"]
            lines += ["", f"Against the perception test result ({vp['label']}): " + ", ".join(
                f"{k} {v:.3f}" for k, v in vp["ratios"].items() if v is not None) + "."]
        lines.append("")
    lines += ["## By stimulus set", "", "| set | items | cosine | two_way | retrieval_top1 |",
              "|---|---|---|---|---|"]
    for name, v in result["by_stimulus_set"].items():
        lines.append(f"| {name} | {v['n_items']} | {v.get('cosine', float('nan')):.3f} | "
                     f"{v.get('two_way', float('nan')):.3f} | "
                     f"{v.get('retrieval_top1', float('nan')):.3f} |")
    lines += ["", "## Reference bounds (same scoring)", "",
              "| predictions | cosine | two_way | retrieval_top1 |", "|---|---|---|---|"]
    for name, v in result["bounds"].items():
        lines.append(f"| {name} | {v['cosine']:.3f} | {v['two_way']:.3f} | "
                     f"{v['retrieval_top1']:.3f} |")
    lines += ["", "Files: `metrics.json` (everything above, plus per-stimulus values), "
              "`per_trial.csv` (single-trial predictions: cosine to their target, 2-way and "
              "retrieval rank among the scored targets), `config_resolved.yaml`.", ""]
    return "\n".join(lines)
