"""Honest splits of an NSD-Imagery session for anything trained on imagery trials.

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
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from fmri2img.config import StrictModel
from fmri2img.errors import DataError

Protocol = Literal["leave-targets-out", "held-out-repetitions"]
PROTOCOLS: tuple[str, ...] = ("leave-targets-out", "held-out-repetitions")


class FoldTrainingOptions(StrictModel):
    """Options shared by everything trained by gradient on one protocol fold (adapters,
    fine-tuning)."""

    epochs: int = Field(100, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    batch_size: int = Field(32, ge=1)
    loss: Literal["cosine", "mse", "hybrid"] = "cosine"
    early_stop_patience: int | None = Field(10, ge=1)
    protocol: Literal["leave-targets-out", "held-out-repetitions"] = "leave-targets-out"
    n_folds: int = Field(6, ge=2)
    fold: int = Field(0, ge=0)
    data_fraction: float = Field(1.0, gt=0, le=1)
    n_averages: int = Field(32, ge=1, description="repetition averages per target")
    seed: int = 0
    device: str = "cpu"


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
