"""Individual imagery fingerprints (analysis 5): the profile numerics against pandas and
scipy, the split halves, the validity of the permutation tests (reliability with domains
swapped within target, identification with relabelled halves), and the analysis on
simulated studies: subjects identified where each has its own imagery
(imagery_subject_gain_sd and its own voxels), nothing under --null, and the effect of
imagery_subject_gain_sd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis.fingerprints import (
    Elements,
    element_values,
    half_labels,
    half_profiles,
    identify,
    rank_correlation,
    spearman_brown,
    split_half_reliability,
    within_target_permutations,
)
from fmri2img.experiments.analyses.runner import run_analyze

N_RESAMPLES = 300


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _design(n_targets: int = 6, n_vis: int = 8, n_img: int = 16
            ) -> tuple[np.ndarray, np.ndarray]:
    tidx = np.repeat(np.arange(n_targets), n_vis + n_img)
    imagery = np.tile(np.r_[np.zeros(n_vis, bool), np.ones(n_img, bool)], n_targets)
    return tidx, imagery


def _elements(n_rows: int, n_targets: int) -> Elements:
    """One element per row (all targets) and one per target of the last row."""
    names = [f"roi:{r}" for r in range(n_rows)] + [f"target:{t}" for t in range(n_targets)]
    row = np.r_[np.arange(n_rows), np.full(n_targets, n_rows - 1)]
    target = np.r_[np.full(n_rows, -1), np.arange(n_targets)]
    return Elements(names, row, target)


# ------------------------------------------------------------------ numerics
def test_element_values_by_hand() -> None:
    vis, img, pooled = np.array([0.9, 0.5, 0.8]), np.array([0.7, 0.6, 0.8]), \
        np.array([0.75, 0.55, 0.5])
    np.testing.assert_allclose(element_values(vis, img, pooled, "ratio"),
                               [0.2 / 0.4, np.nan, 1.0])
    np.testing.assert_allclose(element_values(vis, img, pooled, "pooled"),
                               [-0.2 / 0.25, 0.1 / 0.05, np.nan])
    with pytest.raises(ValueError):
        element_values(vis, img, pooled, "difference")


def test_measure_matches_pandas() -> None:
    tidx, imagery = _design(5, 4, 6)
    rng = np.random.default_rng(0)
    scores = rng.random((3, tidx.size))
    keep = rng.random(tidx.size) > 0.3
    el = _elements(3, 5)
    vis, img, pool = (x[0] for x in el.measure(scores, tidx, imagery, keep[None], 5))
    for e, (r, t) in enumerate(zip(el.row, el.target, strict=True)):
        df = pd.DataFrame({"s": scores[r], "t": tidx, "img": imagery})[keep]
        cell = df.groupby(["img", "t"])["s"].mean()
        both = df.groupby("t")["s"].mean()
        if t < 0:
            assert vis[e] == pytest.approx(cell.loc[False].mean())
            assert img[e] == pytest.approx(cell.loc[True].mean())
            assert pool[e] == pytest.approx(both.mean())
        else:
            assert vis[e] == pytest.approx(cell.loc[(False, t)])
            assert img[e] == pytest.approx(cell.loc[(True, t)])
            assert pool[e] == pytest.approx(both.loc[t])


@settings(max_examples=30, deadline=None)
@given(n_vis=st.integers(1, 9), n_img=st.integers(1, 17), seed=st.integers(0, 1000))
def test_halves_are_equal_disjoint_and_drawn_per_cell(n_vis: int, n_img: int,
                                                      seed: int) -> None:
    tidx, imagery = _design(4, n_vis, n_img)
    labels = half_labels(tidx, imagery, 6, np.random.default_rng(seed))
    assert labels.shape == (6, tidx.size)
    for t in range(4):
        for kind, n in ((False, n_vis), (True, n_img)):
            cell = labels[:, (tidx == t) & (imagery == kind)]
            assert ((cell == 0).sum(axis=1) == n // 2).all()
            assert ((cell == 1).sum(axis=1) == n // 2).all()
            assert ((cell == -1).sum(axis=1) == n % 2).all()


def test_rank_correlation_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(20), rng.standard_normal(20)
    b[:5] = a[:5] * 3  # some agreement, and ties below
    a[7] = a[8]
    assert rank_correlation(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    a[3], b[11] = np.nan, np.nan
    ok = np.isfinite(a) & np.isfinite(b)
    assert rank_correlation(a, b) == pytest.approx(
        scipy.stats.spearmanr(a[ok], b[ok]).statistic)
    assert np.isnan(rank_correlation(a[:2], b[:2]))
    assert spearman_brown(0.5) == pytest.approx(2 / 3)


def test_permutations_keep_each_target_together() -> None:
    tidx, _ = _design(4, 3, 5)
    perms = within_target_permutations(tidx, 20, np.random.default_rng(0))
    for p in perms:
        assert sorted(p) == list(range(tidx.size)) and (tidx[p] == tidx).all()


def _null_scores(seed: int, n_targets: int = 8) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """Two ROIs of unequal decodability and per-target difficulty, some targets at the
    2-way ceiling; imagery trials drawn like vision ones (exchangeable domains)."""
    tidx, imagery = _design(n_targets)
    rng = np.random.default_rng(seed)
    ease = np.linspace(0.55, 1.2, n_targets)[tidx]
    scores = np.clip(np.stack([ease, 0.8 * ease + 0.1])
                     + 0.25 * rng.standard_normal((2, tidx.size)), 0, 1)
    return scores, tidx, imagery


def test_the_pooled_statistic_is_centred_under_exchangeable_domains() -> None:
    """The ratio's noisy denominator biases each element by its decodability; the pooled
    statistic stays at 0 (its numerator is uncorrelated with its denominator)."""
    el = _elements(2, 8)
    pooled, ratio = [], []
    for seed in range(300):
        scores, tidx, imagery = _null_scores(seed)
        labels = half_labels(tidx, imagery, 1, np.random.default_rng(seed))
        pooled.append(half_profiles(el, scores, tidx, imagery, labels, 8, "pooled")[0, 0])
        ratio.append(half_profiles(el, scores, tidx, imagery, labels, 8, "ratio")[0, 0])
    p, r = np.array(pooled), np.array(ratio)
    mid = slice(4, 10)  # targets 2..7 (the hardest two are often undefined in a half)
    se = np.nanstd(p[:, mid], axis=0) / np.sqrt(np.isfinite(p[:, mid]).sum(axis=0))
    assert (np.abs(np.nanmean(p[:, mid], axis=0)) < 3.5 * se).all()
    bias = np.nanmean(r[:, mid], axis=0) - 1  # falls as targets get easier
    assert bias[0] > 0.2 and scipy.stats.spearmanr(np.arange(6), bias).statistic < -0.9


def test_reliability_is_valid_under_the_null_and_finds_a_stable_profile() -> None:
    """Null (exchangeable domains, ceilings and skew included): about 5% of p < 0.05.
    Planted: imagery keeps a different share of each target (ratios 0 .. 1)."""
    el = _elements(2, 8)
    ps = []
    for seed in range(40):
        scores, tidx, imagery = _null_scores(seed)
        labels = half_labels(tidx, imagery, 4, np.random.default_rng(seed))
        rel = split_half_reliability(el, scores, tidx, imagery, labels, 8, "pooled", 100,
                                     np.random.default_rng(seed))
        ps.append(rel.p)
    assert (np.array(ps) < 0.05).mean() <= 0.15  # 2 expected of 40
    tidx, imagery = _design(8)
    rng = np.random.default_rng(5)
    keep = np.linspace(0.0, 1.0, 8)[tidx]
    mu = np.where(imagery, 0.5 + keep * 0.4, 0.9)
    scores = np.clip(np.stack([mu, mu]) + 0.15 * rng.standard_normal((2, tidx.size)), 0, 1)
    labels = half_labels(tidx, imagery, 6, rng)
    rel = split_half_reliability(el, scores, tidx, imagery, labels, 8, "pooled", 200, rng)
    assert rel.r_half > 0.5 and rel.p < 0.01
    assert rel.r_full == pytest.approx(2 * rel.r_half / (1 + rel.r_half))


def _subject_halves(n_subjects: int, individual: float, seed: int, n_splits: int = 5,
                    n_elements: int = 15) -> np.ndarray:
    """(n, S, 2, E): shared profile + ``individual`` * the subject's own + noise."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(n_elements)
    own = rng.standard_normal((n_subjects, n_elements))
    base = shared + individual * own
    return base[:, None, None, :] + 0.5 * rng.standard_normal(
        (n_subjects, n_splits, 2, n_elements))


def test_identification_finds_individual_profiles_exactly() -> None:
    res = identify(_subject_halves(4, 1.5, 0), n_permutations=1000)
    assert res.accuracy == 1.0 and res.chance == 0.25 and res.exact
    assert res.p == pytest.approx(1 / 24) and res.null.size == 24
    assert res.i_diff > 0.5 and res.p_i_diff == pytest.approx(1 / 24)
    # many subjects: sampled relabellings
    many = identify(_subject_halves(9, 1.5, 1), n_permutations=300, seed=1)
    assert not many.exact and many.p < 0.01 and many.accuracy > 0.8


def test_identification_is_at_chance_without_individual_profiles() -> None:
    """A shared profile only (what centring removes): accuracy about chance, p about
    uniform over seeds."""
    accs, ps = [], []
    for seed in range(60):
        res = identify(_subject_halves(6, 0.0, seed), n_permutations=200, seed=seed)
        accs.append(res.accuracy)
        ps.append(res.p)
    assert abs(np.mean(accs) - 1 / 6) < 0.05
    assert (np.array(ps) < 0.05).mean() <= 0.12  # 3 expected of 60


# ------------------------------------------------------------------ on simulated studies
def _run(study, out: Path, **kwargs):
    cfg = study.analyze_config(out, ["fingerprints"], n_bootstrap=N_RESAMPLES,
                               n_permutations=N_RESAMPLES, **kwargs)
    return run_analyze(cfg)["fingerprints"]


def test_planted_subjects_are_identified(planted_study, tmp_path: Path) -> None:
    """Reads imagery_subject_gain_sd (0.2: each subject's own low-level, semantic and
    structural imagery gains), with each subject's own voxel model (participation draws,
    tuning): profiles are reliable within subject and identify their subject above
    chance (with 4 subjects the exact permutation p cannot go below 1/24)."""
    assert planted_study.truth.info["config"]["imagery_subject_gain_sd"] > 0
    res = _run(planted_study, tmp_path / "out")
    group = res["group"]
    assert group["effect"]["value"] > group["chance"] + 0.2
    assert group["significant"] and group["effect"]["p"] == pytest.approx(1 / 24)
    assert group["i_diff"]["value"] > 0
    assert group["reliability"]["r_half"] > 0.3 and group["reliability"]["p"] < 0.05
    for subject in res["subjects"].values():
        assert subject["testable"] and len(subject["halves"]) == 20
        assert subject["sets"] == ["simple", "complex"]
    assert (tmp_path / "out" / "figures" / "fingerprints.png").exists()


def test_null_study_has_no_fingerprint(null_study, tmp_path: Path) -> None:
    """--null: imagery_subject_gain_sd 0, imagery identical to perception."""
    config = null_study.truth.info["config"]
    assert config["null"]
    group = _run(null_study, tmp_path / "out", figures=False)["group"]
    assert group["significant"] is False
    assert group["reliability"]["p"] >= 0.05
    assert group["similarity"]["p"] >= 0.05


def test_subject_gains_make_profiles_individual(tmp_path: Path) -> None:
    """imagery_subject_gain_sd 0 against 1.0 (seed 0). Measured on simulator seeds 0, 1,
    2: identification accuracy rises (0.55 -> 0.63, 0.28 -> 0.42, 0.33 -> 0.35), the
    subjects' profiles grow apart (between-subject similarity 0.69 -> 0.49, 0.71 -> 0.17,
    0.90 -> 0.84) and the within-subject reliability falls with them (0.59 -> 0.51, 0.57
    -> 0.32, 0.80 -> 0.70: the reliable part of a profile is mostly the shared one)."""
    from analysis_fixture import build_study

    found = {}
    for sd in (0.0, 1.0):
        study = build_study(tmp_path / str(sd), models=(), imagery_subject_gain_sd=sd)
        assert study.truth.info["config"]["imagery_subject_gain_sd"] == sd
        found[sd] = _run(study, tmp_path / str(sd) / "out", figures=False)["group"]
    low, high = found[0.0], found[1.0]
    assert high["effect"]["value"] > low["effect"]["value"]
    assert high["i_diff"]["value"] > low["i_diff"]["value"]
    assert high["similarity"]["mean"] < low["similarity"]["mean"]
    assert high["reliability"]["r_half"] < low["reliability"]["r_half"]
