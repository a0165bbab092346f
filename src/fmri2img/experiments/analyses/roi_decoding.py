"""Per-ROI perception decoders and their per-trial NSD-Imagery scores: the stage shared by
the ROI hierarchy profile and the imagery fingerprints.

Per subject and ROI (the config's ``hierarchy`` ROIs and ``nsdgeneral``): a ridge decoder
(``fit_pipeline("ridge", ...)``, z-scored voxels, alpha by CV grouped by stimulus, the
package's defaults unless ``alphas`` is given) trained on the NSD perception index's
train + val trials restricted to the ROI's voxels; then every scored NSD-Imagery vision
and imagery trial is scored by 2-way identification against the session's target
embeddings (one per target code: the key its imagery trials carry), so vision and
imagery are compared one repetition against one. ROIs with fewer than ``min_voxels``
voxels are not testable, with why.

The scores are cached under ``work_dir/roi_decoding/`` (an ``.npz`` with the arrays and a
``.json`` with the configuration, both named by a key over the configuration and the
checksums of both indices and the targets; the JSON is written last, so a complete pair
is the only thing ever read), so both analyses, and a rerun, fit the decoders once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xxhash

from fmri2img.errors import DataError
from fmri2img.eval.metrics import two_way_per_item
from fmri2img.experiments.analyses.base import IMAGERY, VISION, SubjectInputs
from fmri2img.experiments.analyses.uncertainty import gallery_of
from fmri2img.io.atomic import atomic_path, write_json
from fmri2img.io.checksum import file_checksum
from fmri2img.models.pipeline import fit_pipeline

log = logging.getLogger(__name__)

# Sets whose vision trials show the imagined target itself (the conceptual set's show
# exemplar images of the concept): the package's scored sets (fmri2img eval imagery)
IMAGE_SETS = ("simple", "complex")
WHOLE = "nsdgeneral"  # the whole-visual-cortex decoder (per-target profiles)
FOLDER = "roi_decoding"
VERSION = 1  # bump when the stored arrays change meaning


@dataclass
class RoiScores:
    """Per-trial 2-way scores of each testable ROI's decoder on the imagery session."""

    rois: list[str]  # testable ROIs, in the order asked
    scores: np.ndarray  # (len(rois), n) per-trial 2-way identification
    target: np.ndarray  # (n,) target codes
    imagery: np.ndarray  # (n,) True for imagery trials
    stimulus_set: np.ndarray  # (n,) simple / complex / conceptual
    n_voxels: dict[str, int]  # every ROI asked
    not_testable: dict[str, str] = field(default_factory=dict)  # ROI -> why
    fit: dict[str, Any] = field(default_factory=dict)  # ROI -> alpha summary, seconds

    def of(self, roi: str) -> np.ndarray:
        return self.scores[self.rois.index(roi)]


def stage_rois(inputs: SubjectInputs) -> list[str]:
    """The stage's ROIs: the hierarchy, then ``nsdgeneral``."""
    return list(dict.fromkeys([*inputs.hierarchy, WHOLE]))


def _masks(inputs: SubjectInputs, names: list[str]) -> dict[str, np.ndarray]:
    """Masks over the perception index's voxels, checked against the imagery index's:
    the decoders are trained on one and applied to the other, so the two must hold the
    same voxels in the same order."""
    n_perc = inputs.perception.cache.n_voxels
    n_img = inputs.imagery.cache.n_voxels
    if n_perc != n_img:
        raise DataError(f"the perception index has {n_perc} voxels, the imagery index "
                        f"{n_img}; build both with the same ROI", inputs.perception_index)
    configured = [n for n in names if n in inputs.rois]
    perc = inputs.roi_masks(configured, data=inputs.perception)
    img = inputs.roi_masks(configured, data=inputs.imagery)
    for name in configured:
        if int(perc[name].sum()) != int(img[name].sum()):
            raise DataError(f"ROI {name} has {int(perc[name].sum())} voxels in the "
                            f"perception index and {int(img[name].sum())} in the imagery "
                            "index", inputs.imagery_index)
    out = {}
    for name in names:
        if name in perc:
            out[name] = perc[name]
        elif name == WHOLE:  # not configured: the index's own voxels are nsdgeneral's
            out[name] = np.ones(n_perc, dtype=bool)
        else:
            raise DataError(f"ROI {name} is not in the config's rois")
    return out


def _key(inputs: SubjectInputs, names: list[str], min_voxels: int,
         alphas: list[float] | None, seed: int) -> tuple[str, dict[str, Any]]:
    config = {"version": VERSION, "rois": {n: inputs.rois.get(n, "all voxels")
                                           for n in names},
              "min_voxels": min_voxels, "alphas": alphas, "seed": seed}
    parts = {**config, "perception": inputs.perception.index_checksum,
             "imagery": inputs.imagery.index_checksum,
             "targets": file_checksum(inputs.targets_path)}
    key = xxhash.xxh3_64_hexdigest(json.dumps(parts, sort_keys=True).encode())
    return key, parts


def _load(stem: Path, key: str) -> RoiScores | None:
    meta_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not (meta_path.exists() and npz_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    with np.load(npz_path) as z:
        return RoiScores(rois=list(meta["rois"]), scores=z["scores"], target=z["target"],
                         imagery=z["imagery"], stimulus_set=z["stimulus_set"],
                         n_voxels=meta["n_voxels"], not_testable=meta["not_testable"],
                         fit=meta["fit"])


def _save(stem: Path, key: str, parts: dict[str, Any], res: RoiScores) -> None:
    with atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, scores=res.scores, target=res.target, imagery=res.imagery,
                 stimulus_set=res.stimulus_set)
    write_json(stem.with_suffix(".json"), {
        "key": key, "inputs": parts, "rois": res.rois, "n_voxels": res.n_voxels,
        "not_testable": res.not_testable, "fit": res.fit})


def _training_rows(inputs: SubjectInputs) -> pd.DataFrame:
    df = inputs.perception.frame
    known = set(inputs.targets.keys)
    keep = (df["split"].isin(["train", "val"]) & df["stimulus"].notna()
            & df["stimulus"].isin(known))
    rows = df[keep]
    if rows["stimulus"].nunique() < 10:
        raise DataError(f"only {rows['stimulus'].nunique()} perception train/val stimuli "
                        "with targets", inputs.perception_index)
    return rows


def roi_scores(inputs: SubjectInputs, *, min_voxels: int = 10,
               alphas: list[float] | None = None, seed: int = 0) -> RoiScores:
    """The stage (module docstring): per-trial scores of every testable ROI, from the
    cache when its key matches."""
    names = stage_rois(inputs)
    key, parts = _key(inputs, names, min_voxels, alphas, seed)
    stem = inputs.work_dir / FOLDER / f"scores-{key}"
    cached = _load(stem, key)
    if cached is not None:
        log.info("roi decoding %s: cached scores %s", inputs.subject, stem.name)
        return cached
    masks = _masks(inputs, names)
    rows = pd.concat([inputs.trials(VISION), inputs.trials(IMAGERY)])
    keys, true = gallery_of(rows)
    if len(keys) < 2:
        raise DataError(f"{len(keys)} imagery targets with embeddings: nothing to "
                        "identify", inputs.imagery_index)
    gallery = inputs.targets.rows(keys)
    train = _training_rows(inputs)
    X_train = inputs.betas(train, data=inputs.perception)
    Y = inputs.targets.rows(list(train["stimulus"]))
    X_test = inputs.betas(rows)
    groups = train["stimulus"].to_numpy()
    options = {} if alphas is None else {"alphas": list(alphas)}
    testable, scores, fit, why = [], [], {}, {}
    n_voxels = {n: int(m.sum()) for n, m in masks.items()}
    for name in names:
        if n_voxels[name] < min_voxels:
            why[name] = f"{n_voxels[name]} voxels (min_voxels={min_voxels})"
            continue
        t0 = time.perf_counter()
        pipe = fit_pipeline("ridge", X_train[:, masks[name]], Y, groups=groups,
                            seed=seed, options=options)
        pred = pipe.predict(X_test[:, masks[name]])
        scores.append(two_way_per_item(pred, gallery, true))
        alpha = np.asarray(pipe.decoder.alpha_, dtype=np.float64)
        fit[name] = {"seconds": round(time.perf_counter() - t0, 2),
                     "alpha_median": float(np.median(alpha)),
                     "n_train": int(len(train))}
        testable.append(name)
        log.info("roi decoding %s %s: %d voxels, %.1f s", inputs.subject, name,
                 n_voxels[name], fit[name]["seconds"])
    res = RoiScores(
        rois=testable,
        scores=np.stack(scores) if scores else np.empty((0, len(rows))),
        target=rows["target_code"].to_numpy(dtype=str),
        imagery=(rows["domain"] == IMAGERY).to_numpy(),
        stimulus_set=rows["stimulus_set"].to_numpy(dtype=str),
        n_voxels=n_voxels, not_testable=why, fit=fit)
    _save(stem, key, parts, res)
    return res
