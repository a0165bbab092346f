"""Train / validation / test assignment, grouped by stimulus, with the seed recorded."""

from __future__ import annotations

from typing import Any

import numpy as np


def assign_validation(
    stimulus: np.ndarray, is_test: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split trials into train / val / test.

    ``is_test`` marks the dataset's own test trials. A seeded fraction of the *other
    stimuli* becomes validation, so every repetition of an image lands on one side.
    Returns (split per trial, manifest for the splits file).
    """
    stimulus = np.asarray(stimulus)
    is_test = np.asarray(is_test, dtype=bool)
    test_stim = np.unique(stimulus[is_test])
    train_pool = np.setdiff1d(np.unique(stimulus[~is_test]), test_stim)
    overlap = np.intersect1d(np.unique(stimulus[~is_test]), test_stim)
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * train_pool.size))
    val_stim = (np.sort(rng.choice(train_pool, size=n_val, replace=False)) if n_val
                else train_pool[:0])
    split = np.where(is_test, "test", np.where(np.isin(stimulus, val_stim), "val", "train"))
    split = split.astype(object)
    manifest: dict[str, Any] = {
        "seed": seed,
        "val_fraction": val_fraction,
        "counts": {
            name: {"trials": int((split == name).sum()),
                   "stimuli": int(np.unique(stimulus[split == name]).size)}
            for name in ("train", "val", "test")
        },
        "stimuli": {
            "val": [_plain(v) for v in val_stim],
            "test": [_plain(v) for v in test_stim],
        },
        "train_test_overlap_stimuli": int(overlap.size),
    }
    return split, manifest


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
