"""Every split of the package (fmri2img.data.splits), tested in one place: a stimulus's
repetitions never straddle two sides, and each split is seeded and deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmri2img.data.splits import (
    assign_validation,
    grouped_folds,
    grouped_holdout,
    make_fold,
    target_folds,
    usable_rows,
)


def imagery_frame(seed: int = 0) -> pd.DataFrame:
    """An NSD-Imagery-like index: 18 targets in 3 stimulus sets, each imagined 16 times over
    two runs and seen 8 times, plus attention trials (excluded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, name in enumerate(("simple", "complex", "conceptual")):
        for t in range(6):
            key = f"nsdimagery:{name}{t}"
            for rep in range(16):
                rows.append(("imagery", key, name, 4 * s + 2 + rep % 2, "test"))
            rows += [("perception", key, name, 4 * s + 1, "test")] * 8
            rows.append(("attention", key, name, 4 * s + 4, "excluded"))
    df = pd.DataFrame(rows, columns=["domain", "stimulus", "stimulus_set", "run", "split"])
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    df["trial"] = df.groupby("run").cumcount() + 1
    df["cache_row"] = np.arange(len(df))
    return df


# -- the index's own splits ----------------------------------------------------------------
def test_validation_stimuli_are_drawn_whole_and_test_kept() -> None:
    stimulus = np.repeat(np.arange(100), 3)
    is_test = stimulus < 10
    split, manifest = assign_validation(stimulus, is_test, 0.2, seed=5)
    assert (split[is_test] == "test").all() and not (split[~is_test] == "test").any()
    for s in np.unique(stimulus):
        assert len(set(split[stimulus == s])) == 1
    assert manifest["counts"]["val"]["stimuli"] == 18  # 20% of the 90 non-test stimuli
    again, _ = assign_validation(stimulus, is_test, 0.2, seed=5)
    np.testing.assert_array_equal(split, again)
    other, _ = assign_validation(stimulus, is_test, 0.2, seed=6)
    assert not np.array_equal(split, other)


# -- grouped folds and hold-outs -----------------------------------------------------------
def test_grouped_folds_never_split_a_group() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, size=300)
    names = np.array([f"img{i:04d}" for i in range(300)])
    groups = rng.permutation(np.repeat(names, sizes))
    folds = grouped_folds(groups, len(groups), 5, seed=2)
    assert set(np.unique(folds)) == set(range(5))
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    counts = np.bincount(folds)
    assert counts.max() - counts.min() <= sizes.max()
    # deterministic given the seed, different across seeds
    np.testing.assert_array_equal(folds, grouped_folds(groups, len(groups), 5, seed=2))
    assert not np.array_equal(folds, grouped_folds(groups, len(groups), 5, seed=3))
    # no groups: every row is its own group, folds as equal as possible
    solo = grouped_folds(None, 23, 5, seed=0)
    assert sorted(np.bincount(solo)) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="at least 5 groups"):
        grouped_folds(np.array([1, 1, 2, 2, 3, 3]), 6, 5, seed=0)


def test_grouped_holdout_keeps_groups_whole() -> None:
    groups = np.repeat(np.arange(50), 3)
    tr, va = grouped_holdout(groups.size, groups, 0.2, seed=4)
    assert np.intersect1d(groups[tr], groups[va]).size == 0
    assert np.unique(groups[va]).size == 10
    assert np.union1d(tr, va).size == groups.size
    _, va2 = grouped_holdout(groups.size, groups, 0.2, seed=4)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, grouped_holdout(groups.size, groups, 0.2, seed=5)[1])
    # no groups: rows are their own groups; one group: nothing to hold out
    assert grouped_holdout(10, None, 0.3, 0)[1].size == 3
    assert grouped_holdout(6, np.zeros(6), 0.5, 0)[1].size == 0


# -- NSD-Imagery protocols -----------------------------------------------------------------
def test_leave_targets_out_folds_never_share_targets() -> None:
    frame = imagery_frame()
    imagery = usable_rows(frame, ["imagery"])
    assert "attention" not in set(usable_rows(frame, ["imagery", "attention"])["domain"])
    assign = target_folds(imagery, 6, seed=0)
    assert sorted(set(assign.values())) == list(range(6))
    for k in range(6):  # each fold holds one target of each stimulus set
        sets = {imagery.loc[imagery["stimulus"] == t, "stimulus_set"].iloc[0]
                for t, f in assign.items() if f == k}
        assert sets == {"simple", "complex", "conceptual"}
    seen_test = []
    for k in range(6):
        fold = make_fold(frame, fold=k, n_folds=6, domains=("imagery", "perception"))
        test = set(fold.test_targets)
        seen_test += fold.test_targets
        assert not test & set(fold.train["stimulus"]) and not test & set(fold.val["stimulus"])
        assert fold.val["stimulus"].nunique() == 3  # one per stimulus set
        assert set(fold.describe("x")["seen_targets"]) == set(fold.seen_targets)
    assert sorted(seen_test) == sorted(imagery["stimulus"].unique())
    half = make_fold(frame, fold=0, n_folds=6, data_fraction=0.5)
    full = make_fold(frame, fold=0, n_folds=6)
    assert len(half.train) == pytest.approx(len(full.train) / 2, abs=len(full.test_targets))
    assert set(half.train["stimulus"]) == set(full.train["stimulus"])
    # the fold number holds out the same targets whatever the training domains
    assert full.test_targets == make_fold(frame, fold=0, n_folds=6,
                                          domains=("perception",)).test_targets


def test_held_out_repetitions_split_trials_not_targets() -> None:
    frame = imagery_frame()
    fold = make_fold(frame, protocol="held-out-repetitions", fold=1, n_folds=2)
    used = set(fold.seen_rows)
    test_rows = usable_rows(frame, ["imagery"])
    test_rows = test_rows[~test_rows["cache_row"].isin(used)]
    assert len(test_rows) > 0 and set(test_rows["stimulus"]) == set(fold.train["stimulus"])
    assert fold.describe("x")["seen_targets"] == []  # every target was seen: none excluded


def test_bad_protocol_arguments_fail_clearly() -> None:
    frame = imagery_frame()
    with pytest.raises(ValueError, match="unknown protocol"):
        make_fold(frame, protocol="leave-one-out")
    with pytest.raises(ValueError, match="fold must lie"):
        make_fold(frame, fold=6, n_folds=6)
    with pytest.raises(ValueError, match="n_folds must lie"):
        target_folds(usable_rows(frame, ["imagery"]), 19, seed=0)
