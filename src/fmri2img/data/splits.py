"""Every split of the package, in one place: which rows train, validate and test.

One rule runs through all of them: a stimulus's repetitions stay on one side, because a
model validated or tested on an image it trained on (another repetition of it) is scored
on memory.

* :func:`assign_validation`: the index's own train / val / test labels (NSD: test = the
  shared images; validation = a seeded fraction of the other stimuli);
* :func:`grouped_folds`: K folds balanced in rows, whole groups per fold (ridge's
  internal cross-validation);
* :func:`grouped_holdout`: one seeded validation share of groups (early stopping);
* :func:`make_fold`: the NSD-Imagery protocols for anything trained on imagery trials.

NSD-Imagery has 18 targets, each imagined 16 times. Training on some repetitions of a
target and scoring the others measures, in part, memorisation of that target. Two
protocols, named in every output:

* ``leave-targets-out`` (default): the targets are dealt into ``n_folds`` folds, stratified
  by stimulus set; fold ``k`` is scored by a model trained on the other folds' targets
  only, so no scored target was ever seen in training. Early stopping watches one held-out
  target per stimulus set of the training targets (an inner leave-targets-out split).
* ``held-out-repetitions``: every target's repetitions are dealt into ``n_folds`` folds;
  fold ``k``'s repetitions are scored, the others train (one repetition per target is
  kept for early stopping). The scored targets *were* seen in training.

A fold says which index rows train and validate, and what it has seen (targets, and the
index's cache rows), so an evaluation can score each item only with models that did not
see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from fmri2img.errors import DataError


# -- the index's own splits ----------------------------------------------------------------
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


# -- grouped folds and hold-outs -------------------------------------------------
def grouped_folds(groups: np.ndarray | None, n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) of each of ``n`` rows; all rows of one group share a fold.

    Groups are shuffled with ``seed`` and then dealt, largest first, to whichever fold has
    the fewest rows so far, so folds are balanced in rows even when groups differ in size
    (e.g. an image shown 3 times next to one shown once). ``groups=None`` makes every row
    its own group. Deterministic given ``(groups, n_folds, seed)``.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if groups is None:
        codes = np.arange(n)
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        if groups.dtype.kind == "f" and not np.isfinite(groups).all():
            raise ValueError("groups contains NaN or infinite values")
        _, codes = np.unique(groups, return_inverse=True)
        codes = codes.reshape(-1)
    sizes = np.bincount(codes)
    n_groups = sizes.size
    if n_groups < n_folds:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds} groups, "
            f"got {n_groups}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    if sizes.min() == sizes.max():
        # equal sizes: the greedy rule below reduces to dealing round-robin
        fold_of_group[order] = np.arange(n_groups) % n_folds
    else:
        load = [0] * n_folds
        for g in order:
            f = min(range(n_folds), key=load.__getitem__)
            fold_of_group[g] = f
            load[f] += int(sizes[g])
    return fold_of_group[codes]


def grouped_holdout(
    n: int, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) with whole groups on one side.

    Repetitions of a stimulus share a group; splitting them would let the model be
    validated on the very images it trained on and stop too late. Without ``groups``
    every row is its own group. Returns an empty validation set when there are fewer than
    two groups or ``fraction`` is 0.
    """
    rows = np.arange(n)
    if fraction <= 0:
        return rows, rows[:0]
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}")
    labels = rows if groups is None else np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {labels.shape}")
    uniq, inverse = np.unique(labels, return_inverse=True)
    if uniq.size < 2:
        return rows, rows[:0]
    n_val = min(uniq.size - 1, max(1, int(round(fraction * uniq.size))))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA11D]))
    val_groups = rng.choice(uniq.size, size=n_val, replace=False)
    is_val = np.isin(inverse, val_groups)
    return rows[~is_val], rows[is_val]


# -- NSD-Imagery protocols --------------------------------------------------------
Protocol = Literal["leave-targets-out", "held-out-repetitions"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


@dataclass
class Fold:
    protocol: str
    fold: int
    n_folds: int
    train: pd.DataFrame
    val: pd.DataFrame
    test_targets: list[str]

    @property
    def seen_targets(self) -> list[str]:
        """Targets whose trials (of any domain) trained or validated the model."""
        return sorted(set(self.train["stimulus"]) | set(self.val["stimulus"]))

    @property
    def seen_rows(self) -> list[int]:
        return sorted(int(r) for r in pd.concat([self.train, self.val])["cache_row"])

    def describe(self, index_checksum: str | None) -> dict[str, Any]:
        """What a checkpoint records so that evaluation can exclude what it saw."""
        return {
            "protocol": self.protocol, "fold": self.fold, "n_folds": self.n_folds,
            "index_checksum": index_checksum,
            "seen_targets": self.seen_targets if self.protocol == "leave-targets-out" else [],
            "seen_rows": self.seen_rows,
            "test_targets": self.test_targets,
            "n_train_rows": len(self.train), "n_val_rows": len(self.val),
            "train_targets": sorted(set(self.train["stimulus"])),
            "val_targets": sorted(set(self.val["stimulus"])),
        }


def usable_rows(frame: pd.DataFrame, domains: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Rows of the given domains with a target, outside the excluded split."""
    keep = frame["domain"].isin(list(domains)) & (frame["split"] != "excluded")
    keep &= frame["stimulus"].notna() & (frame["stimulus"].astype(str) != "")
    return frame[keep]


def target_folds(rows: pd.DataFrame, n_folds: int, seed: int) -> dict[str, int]:
    """target -> fold, dealt round-robin after a seeded shuffle within each stimulus set,
    so every fold holds about as many targets of each set."""
    targets = rows.drop_duplicates("stimulus")[["stimulus", "stimulus_set"]]
    n_targets = len(targets)
    if not 2 <= n_folds <= n_targets:
        raise ValueError(f"n_folds must lie in [2, {n_targets}] (the number of targets), "
                         f"got {n_folds}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1A6]))
    out: dict[str, int] = {}
    position = 0
    for _, group in sorted(targets.groupby(targets["stimulus_set"].fillna("")),
                           key=lambda kv: str(kv[0])):
        keys = sorted(group["stimulus"].astype(str))
        for key in rng.permutation(keys):
            out[str(key)] = position % n_folds
            position += 1
    return out


def _subsample(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``fraction`` of each target's trials (at least one), drawn with a seed."""
    if fraction >= 1.0:
        return rows
    if not 0 < fraction:
        raise ValueError(f"data fraction must lie in (0, 1], got {fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF4AC]))
    keep = []
    for _, group in rows.groupby("stimulus", sort=True):
        n = max(1, int(round(fraction * len(group))))
        keep.append(group.iloc[np.sort(rng.choice(len(group), size=n, replace=False))])
    return pd.concat(keep).sort_index()


def make_fold(frame: pd.DataFrame, *, protocol: str = "leave-targets-out", fold: int = 0,
              n_folds: int = 6, seed: int = 0, data_fraction: float = 1.0,
              domains: tuple[str, ...] | list[str] = ("imagery",),
              source: Any = None) -> Fold:
    """Training, validation and scored parts of an imagery index for one fold.

    ``domains`` are the trial types used for training (``imagery``; ``perception`` for the
    session's vision trials, e.g. for conditioned adapters or a control). Folds are always
    built from the imagery trials' targets, so the same fold number holds out the same
    targets whatever the domains. ``data_fraction`` keeps that share of each target's
    training trials (validation is left whole).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must lie in [0, {n_folds}), got {fold}")
    imagery = usable_rows(frame, ["imagery"])
    if imagery["stimulus"].nunique() < 2:
        raise DataError("the index holds fewer than 2 imagery targets; an imagery index "
                        "(fmri2img build-imagery-index) is needed", source)
    rows = usable_rows(frame, domains)
    if protocol == "leave-targets-out":
        assign = target_folds(imagery, n_folds, seed)
        test = sorted(k for k, f in assign.items() if f == fold)
        train_targets = [k for k, f in assign.items() if f != fold]
        sets = imagery.drop_duplicates("stimulus").set_index("stimulus")["stimulus_set"]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), fold, 0x7A1]))
        val_targets = []
        for _, group in sorted(sets[train_targets].groupby(sets[train_targets].fillna("")),
                               key=lambda kv: str(kv[0])):
            candidates = sorted(group.index)
            if len(candidates) > 1:
                val_targets.append(str(rng.choice(candidates)))
        pool = rows[rows["stimulus"].isin(train_targets)]
        val = pool[pool["stimulus"].isin(val_targets)]
        train = pool[~pool["stimulus"].isin(val_targets)]
    else:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4E9]))
        test_idx, train_idx, val_idx = [], [], []
        for _, group in rows.groupby(["domain", "stimulus"], sort=True):
            order = group.sort_values(["run", "trial"]).index.to_numpy()
            order = order[rng.permutation(len(order))]
            part = np.arange(len(order)) % n_folds
            test_idx += list(order[part == fold])
            rest = list(order[part != fold])
            if len(rest) > 1:
                val_idx.append(rest[0])
                rest = rest[1:]
            train_idx += rest
        train, val = rows.loc[sorted(train_idx)], rows.loc[sorted(val_idx)]
        test = sorted(set(imagery["stimulus"]))
    train = _subsample(train, data_fraction, seed + fold)
    if len(train) == 0:
        raise DataError(f"fold {fold} of {protocol} has no training trials of domains "
                        f"{list(domains)}", source)
    return Fold(protocol, fold, n_folds, train, val, [str(t) for t in test])
