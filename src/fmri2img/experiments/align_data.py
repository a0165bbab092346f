"""``fmri2img pair-images`` and ``fmri2img build-align-dataset``: the EEG-fMRI alignment data.

EEG (THINGS-EEG2) and fMRI (NSD) subjects never saw the same pictures by design; some
pictures are nevertheless near-duplicates. ``pair-images`` finds them by embedding cosine
(greedy one-to-one on the best scores, as Brain2Image does) and labels each pair with a
K-means cluster of the paired embeddings (the prototype loss's classes).
``build-align-dataset`` writes, per pair, the THINGS image's EEG epochs and the NSD image's
fMRI features (a decoder of this package applied to the betas, or a given linear
projection) into LMDB, split 80/10/10 by pair.

Pairs whose NSD image the fMRI decoder trained on get fMRI features that remember the
target embedding; they are counted and warned about (the simulator pairs only images no
decoder trains on).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from safetensors.numpy import load_file

from fmri2img.config import StrictModel
from fmri2img.data.align_lmdb import split_by_pair, write_align_lmdb
from fmri2img.data.keys import NSD_PREFIX, THINGS_PREFIX
from fmri2img.data.trials import IndexData, Targets
from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path, write_json
from fmri2img.models.pipeline import DecoderPipeline
from fmri2img.targets.pairing import cluster_labels, greedy_pairs

log = logging.getLogger(__name__)

PAIRS = "pairs.parquet"
PAIRS_CSV = "pairs.csv"
TRUTH = "ground_truth.json"


class PairConfig(StrictModel):
    """Options of ``fmri2img pair-images``."""

    eeg_index: Path = Field(description="THINGS-EEG2 index (build-eeg-index): its images")
    fmri_index: Path = Field(description="NSD index (build-index): the fMRI subject's images")
    targets: Path = Field(description="embedding table holding the THINGS images' keys")
    nsd_targets: Path | None = Field(None, description="table of the NSD images, in the same "
                                     "space (default: --targets)")
    output_dir: Path
    n_pairs: int = Field(1000, ge=1, description="pairs to keep (Brain2Image: 1000)")
    candidate_factor: int = Field(20, ge=1, description="scores kept before the greedy "
                                  "matching: n_pairs x this")
    n_clusters: int = Field(5, ge=1, description="K-means clusters of the paired embeddings")
    things_splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val"],
        description="EEG index splits whose images may pair (the test images stay the "
                    "EEG decoders' zero-shot test)")
    nsd_splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val", "test"])
    truth: Path | None = Field(None, description="simulated data: ground_truth.json with the "
                               "true pairs (default: found beside the EEG data)")
    seed: int = 42


def _images(data: IndexData, splits: list[str], prefix: str) -> pd.DataFrame:
    rows = data.select(splits=splits)
    rows = rows[rows["stimulus"].str.startswith(prefix + ":")]
    return rows.drop_duplicates("stimulus").sort_values("stimulus")[["stimulus",
                                                                     "stimulus_id"]]


def _truth_path(cfg: PairConfig, eeg: IndexData) -> Path | None:
    if cfg.truth is not None:
        return cfg.truth
    root = (eeg.meta.get("config") or {}).get("eeg_root")
    if root:
        for candidate in (Path(root) / TRUTH, Path(root).parent / TRUTH):
            if candidate.exists():
                return candidate
    return None


def pair_images(cfg: PairConfig) -> dict[str, Any]:
    """Write ``pairs.parquet`` (+ ``pairs.csv`` in Brain2Image's columns) and a summary."""
    eeg, fmri = IndexData.open(cfg.eeg_index), IndexData.open(cfg.fmri_index)
    t_things = Targets.open(cfg.targets)
    t_nsd = Targets.open(cfg.nsd_targets) if cfg.nsd_targets is not None else t_things
    if t_things.dim != t_nsd.dim or t_things.provenance()["model"] != t_nsd.provenance()[
            "model"]:
        raise DataError(f"the two embedding tables are not one space ({t_things.dim}-d "
                        f"{t_things.provenance()['model']} vs {t_nsd.dim}-d "
                        f"{t_nsd.provenance()['model']})", cfg.nsd_targets)
    a_rows = _images(eeg, cfg.things_splits, THINGS_PREFIX)
    b_rows = _images(fmri, cfg.nsd_splits, NSD_PREFIX)
    if a_rows.empty or b_rows.empty:
        raise DataError(f"nothing to pair: {len(a_rows)} THINGS images in splits "
                        f"{cfg.things_splits}, {len(b_rows)} NSD images in {cfg.nsd_splits}")
    a = t_things.rows(a_rows["stimulus"].tolist())
    b = t_nsd.rows(b_rows["stimulus"].tolist())
    ia, ib, scores = greedy_pairs(a, b, cfg.n_pairs, candidate_factor=cfg.candidate_factor)
    k = min(cfg.n_clusters, 2 * len(ia))
    labels = cluster_labels(a[ia], b[ib], k, cfg.seed)
    pairs = pd.DataFrame({
        "things_key": a_rows["stimulus"].to_numpy()[ia],
        "nsd_key": b_rows["stimulus"].to_numpy()[ib],
        "things_image_index": a_rows["stimulus_id"].to_numpy()[ia].astype(np.int64),
        "nsd_image_index": b_rows["stimulus_id"].to_numpy()[ib].astype(np.int64),
        "cosine": scores.astype(np.float64),
        "cluster_label": np.asarray(labels, dtype=np.int64),
    })
    out = Path(cfg.output_dir)
    with atomic_path(out / PAIRS) as tmp:
        pairs.to_parquet(tmp, index=False)
    with atomic_path(out / PAIRS_CSV) as tmp:
        pairs[["things_image_index", "nsd_image_index", "cluster_label"]].to_csv(tmp,
                                                                                  index=False)
    summary: dict[str, Any] = {
        "n_pairs": len(pairs), "n_things_images": len(a_rows), "n_nsd_images": len(b_rows),
        "cosine": {"min": float(scores.min()), "median": float(np.median(scores)),
                   "max": float(scores.max())},
        "clusters": {int(c): int(n) for c, n in pairs["cluster_label"].value_counts()
                     .sort_index().items()},
    }
    truth = _truth_path(cfg, eeg)
    if truth is not None:
        summary["truth"] = recovery(pairs, truth, set(a_rows["stimulus"]),
                                    set(b_rows["stimulus"]))
        log.info("true pairs recovered: %d of %d (%.1f%%); precision %.1f%%",
                 summary["truth"]["recovered"], summary["truth"]["n_true"],
                 100 * summary["truth"]["recall"], 100 * summary["truth"]["precision"])
    write_json(out / "pairs_summary.json", summary)
    cfg.save(out / "config_resolved.yaml")
    log.info("%d pairs (cosine %.3f..%.3f) -> %s", len(pairs), scores.min(), scores.max(),
             out / PAIRS)
    return summary


def recovery(pairs: pd.DataFrame, truth_path: Path, things: set[str], nsd: set[str]
             ) -> dict[str, Any]:
    """How many of the simulator's true pairs (both members among the candidates) were
    found, and how many found pairs are true."""
    try:
        true = json.loads(Path(truth_path).read_text())["pairs"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"not a simulation ground truth with 'pairs' ({exc})",
                        truth_path) from exc
    true_set = {(t, n) for t, n in true if t in things and n in nsd}
    found = set(zip(pairs["things_key"], pairs["nsd_key"], strict=True))
    hit = len(found & true_set)
    return {"n_true": len(true_set), "recovered": hit,
            "recall": hit / len(true_set) if true_set else float("nan"),
            "precision": hit / len(found) if found else float("nan"),
            "path": str(truth_path)}


# ----------------------------------------------------------------------------- dataset
class AlignDataConfig(StrictModel):
    """Options of ``fmri2img build-align-dataset``."""

    pairs: Path = Field(description="pair-images output folder or its pairs.parquet")
    eeg_index: Path
    fmri_index: Path
    fmri_checkpoint: Path | None = Field(None, description="decoder whose predictions are "
                                         "the fMRI features")
    fmri_projection: Path | None = Field(None, description="instead: .safetensors or .npz "
                                         "with weight (D, n_voxels) and bias (D,)")
    output: Path = Field(description="LMDB folder to write")
    eeg_mode: Literal["mean", "each"] = Field("each", description="one record per EEG "
                                              "repetition, or their mean")
    fmri_mode: Literal["mean", "each"] = Field("mean", description="one record per fMRI "
                                               "trial, or their mean (each x each: cross)")
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    device: str = "cpu"

    @model_validator(mode="after")
    def _check(self) -> AlignDataConfig:
        if (self.fmri_checkpoint is None) == (self.fmri_projection is None):
            raise ValueError("give exactly one of fmri_checkpoint and fmri_projection")
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6:
            raise ValueError(f"ratios must be >= 0 and sum to 1, got {self.ratios}")
        return self


def _pairs_file(path: Path) -> Path:
    return path / PAIRS if path.is_dir() else path


def _projection(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        arrays = load_file(str(path)) if path.suffix == ".safetensors" else dict(
            np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable projection file ({exc})", path) from exc
    if "weight" not in arrays or "bias" not in arrays:
        raise DataError(f"a projection file holds 'weight' and 'bias'; found "
                        f"{sorted(arrays)}", path)
    w, b = np.asarray(arrays["weight"], np.float32), np.asarray(arrays["bias"], np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise DataError(f"weight {w.shape} and bias {b.shape}: expected (D, n_voxels), (D,)",
                        path)
    return w, b


def _fmri_features(cfg: AlignDataConfig, fmri: IndexData, rows: pd.DataFrame
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    X = fmri.betas(rows)
    if cfg.fmri_projection is not None:
        w, b = _projection(cfg.fmri_projection)
        if w.shape[1] != X.shape[1]:
            raise DataError(f"projection takes {w.shape[1]} voxels, the index has "
                            f"{X.shape[1]}", cfg.fmri_projection)
        return X @ w.T + b, {"kind": "projection", "path": str(cfg.fmri_projection.resolve())}
    assert cfg.fmri_checkpoint is not None
    pipe, meta = DecoderPipeline.load(cfg.fmri_checkpoint, device=cfg.device)
    if pipe.n_inputs != fmri.n_voxels:
        raise DataError(f"the decoder takes {pipe.n_inputs} inputs, the fMRI index has "
                        f"{fmri.n_voxels}", cfg.fmri_checkpoint)
    return pipe.predict(X), {"kind": "decoder", "path": str(cfg.fmri_checkpoint.resolve()),
                             "model_type": meta.get("model_type"),
                             "trained_on": meta.get("data", {}).get("index"),
                             "train_splits": meta.get("train", {}).get("splits")}


def _seen_by_decoder(fmri: IndexData, info: dict[str, Any], keys: set[str]) -> int:
    """Paired NSD images among the rows the fMRI decoder trained on."""
    if info.get("kind") != "decoder" or info.get("trained_on") != str(fmri.path.resolve()):
        return 0
    rows = fmri.select(splits=info.get("train_splits") or ["train"])
    return len(keys & set(rows["stimulus"]))


def build_align_dataset(cfg: AlignDataConfig) -> dict[str, Any]:
    """Write the LMDB; returns its ``meta_info``."""
    pairs = pd.read_parquet(_pairs_file(cfg.pairs))
    eeg, fmri = IndexData.open(cfg.eeg_index), IndexData.open(cfg.fmri_index)
    if len(eeg.sample_shape) != 2:
        raise DataError(f"not an EEG index (samples of shape {eeg.sample_shape})",
                        cfg.eeg_index)
    e_rows = eeg.frame[eeg.frame["stimulus"].isin(set(pairs["things_key"]))]
    e_rows = e_rows[e_rows["n_averaged"] == 1] if (e_rows["n_averaged"] == 1).any() else e_rows
    f_rows = fmri.frame[fmri.frame["stimulus"].isin(set(pairs["nsd_key"]))]
    missing = set(pairs["things_key"]) - set(e_rows["stimulus"]) | (
        set(pairs["nsd_key"]) - set(f_rows["stimulus"]))
    if missing:
        raise DataError(f"{len(missing)} paired images have no trials in the indexes (first "
                        f"{sorted(missing)[0]}); pair with the same indexes", cfg.pairs)
    feats, fmri_info = _fmri_features(cfg, fmri, f_rows)
    seen = _seen_by_decoder(fmri, fmri_info, set(pairs["nsd_key"]))
    if seen:
        log.warning("%d of %d paired NSD images were in the fMRI decoder's training data: "
                    "their features remember the target embedding", seen, len(pairs))
    split = split_by_pair(pairs["things_image_index"].to_numpy(),
                          pairs["nsd_image_index"].to_numpy(), cfg.ratios, cfg.seed)
    f_pos = {k: np.flatnonzero(f_rows["stimulus"].to_numpy() == k) for k in pairs["nsd_key"]}
    e_groups = {k: g for k, g in e_rows.groupby("stimulus")}

    def records() -> Any:
        for p, pair in enumerate(pairs.itertuples()):
            g = e_groups[pair.things_key]
            x = eeg.betas(g).astype(np.float32)
            y = feats[f_pos[pair.nsd_key]].astype(np.float32)
            xs = x.mean(axis=0, keepdims=True) if cfg.eeg_mode == "mean" else x
            ys = y.mean(axis=0, keepdims=True) if cfg.fmri_mode == "mean" else y
            k = 0
            for i in range(len(xs)):
                for j in range(len(ys)):
                    meta = {"pair": p, "label": int(pair.cluster_label),
                            "things_idx": int(pair.things_image_index),
                            "nsd_idx": int(pair.nsd_image_index),
                            "things_key": pair.things_key, "nsd_key": pair.nsd_key}
                    yield f"{split[p]}_{p:05d}_{k:05d}", {"eeg": xs[i], "fmri": ys[j]}, meta
                    k += 1

    meta_info = {
        "format": "fmri2img-align-lmdb", "version": 1,
        "config": cfg.resolved(), "eeg": eeg.provenance(), "fmri": fmri.provenance(),
        "fmri_features": {**fmri_info, "dim": int(feats.shape[1])},
        "sample_shape": list(eeg.sample_shape), "n_pairs": len(pairs),
        "pairs_per_split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "paired_images_seen_by_fmri_decoder": seen,
        "mix": f"eeg {cfg.eeg_mode} x fmri {cfg.fmri_mode}",
    }
    n = write_align_lmdb(cfg.output, records(), meta_info)
    meta_info["counts"] = n
    log.info("alignment dataset: %s records of %d pairs (%s) -> %s", n, len(pairs),
             meta_info["pairs_per_split"], cfg.output)
    return meta_info
