"""What ``eval`` leaves beside its metrics for the steps after it: the predictions it scored
(``predictions.npz`` + ``predictions.json``, which ``reconstruct`` takes directly), the
stimulus images of the scored items, and the small-sample label.

``predictions.npz`` holds ``keys``, ``predictions`` and ``targets`` of the mode's scored
items (imagery mode: the imagery trials) and, in imagery mode, ``vision_keys``,
``vision_predictions`` and ``vision_targets`` of the same session's vision trials.
``predictions.json`` says which is which, and what the predictions are: the index, the
decoder checkpoint(s), and the embedding the decoder was trained on (model, dimension,
token count, normalisation), so that an image generator can be checked against it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path, write_json
from fmri2img.targets.images import index_stimuli

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.npz"
PREDICTIONS_META = "predictions.json"
# below these a result is labelled: 2 items give 2-way and top-1 of 1.00 half the time
MIN_ITEMS = 6
MIN_POOL = 10
# array-name prefix of each domain in predictions.npz (the mode's own domain has none)
DOMAIN_PREFIX = {"perception": "", "imagery": "", "vision": "vision_"}


def small_sample(n_items: int, pool: int) -> str | None:
    """Why a result scored on ``n_items`` items in retrieval pools of ``pool`` cannot be
    read as a decoding figure (None when it can)."""
    why = []
    if n_items < MIN_ITEMS:
        why.append(f"only {n_items} items scored (fewer than {MIN_ITEMS})")
    if pool < MIN_POOL:
        why.append(f"retrieval pool of {pool} (smaller than {MIN_POOL}; chance top-1 "
                   f"{1 / max(pool, 1):.2f})")
    if not why:
        return None
    return ("SMALL SAMPLE: " + " and ".join(why) + ". Scores near 1 are expected by chance "
            "alone; read the CIs and p-values, and score every target (a protocol's folds "
            "together, e.g. train-adapter without --fold).")


def embedding_spec(checkpoint_meta: dict[str, Any]) -> dict[str, Any]:
    """The embedding a decoder was trained on, from its checkpoint's ``targets`` record
    (older checkpoints lack tokens and normalisation: one token, unknown)."""
    rec = checkpoint_meta.get("targets") or {}
    return {"model": rec.get("model"), "dim": rec.get("dim"),
            "tokens": int(rec.get("tokens", 1)),
            "normalization": rec.get("normalization", "unknown"),
            "table": rec.get("path"), "checksum": rec.get("checksum")}


def write_predictions(out: Path, domains: dict[str, tuple[pd.DataFrame, np.ndarray,
                                                          np.ndarray]],
                      meta: dict[str, Any]) -> None:
    """``domains[name] = (items, predictions, targets)``, the mode's own domain first."""
    arrays: dict[str, np.ndarray] = {}
    info = {}
    for name, (items, pred, targets) in domains.items():
        prefix = DOMAIN_PREFIX[name]
        keys = items["stimulus"].astype(str).tolist()
        arrays[f"{prefix}keys"] = np.array(keys)
        arrays[f"{prefix}predictions"] = pred
        arrays[f"{prefix}targets"] = targets
        info[name] = {"prefix": prefix, "n_items": len(keys),
                      "stimulus_set": items["stimulus_set"].fillna("").astype(str).tolist()
                      if "stimulus_set" in items else None}
    with atomic_path(out / PREDICTIONS) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    write_json(out / PREDICTIONS_META, {"format": "fmri2img.predictions", "version": 1,
                                        "domains": info, **meta})


def stimulus_images(index: Path, keys: list[str]) -> np.ndarray | None:
    """The scored stimuli's images, for retrieval examples; None when some cannot be read."""
    try:
        found = index_stimuli(index)
        by_key = {st.key: st for st in found.stimuli}
        wanted = [by_key.get(k) for k in keys]
        if any(w is None or not w.has_image for w in wanted):
            log.info("retrieval examples skipped: some scored stimuli have no image")
            return None
        return np.stack(found.load_images(wanted))
    except (DataError, OSError, KeyError, ValueError) as exc:
        log.info("retrieval examples skipped: stimulus images not readable (%s)", exc)
        return None
