"""Dimensionality gap (analysis 1): the signal-spectrum numerics against direct
references, and the analysis on planted, null and changed simulated data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis.dimensionality import (
    TrialCells,
    dimensionality_test,
    draw_parts,
    n_components,
    part_grams,
    part_weights,
    participation_ratio,
    pr_terms,
    signal_spectrum,
    spectrum_direct,
)
from fmri2img.experiments.analyses.runner import run_analyze

FAST = {"n_permutations": 200, "n_bootstrap": 200}
OPTIONS = {"dimensionality": {"rois": ["nsdgeneral"], "decoded": False}}


@settings(max_examples=25, deadline=None)
@given(T=st.integers(3, 12), V=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_spectrum_from_small_matrices_equals_direct(T: int, V: int, seed: int) -> None:
    """The (2T x 2T) route gives the eigenvalues of the (V x V) symmetrised
    cross-covariance (the non-zero ones; the rest are 0)."""
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((T, V)), rng.standard_normal((T, V))
    X = np.vstack([A - A.mean(0), B - B.mean(0)])
    got = signal_spectrum(X @ X.T)
    want = spectrum_direct(A, B)
    k = min(got.size, want.size)
    np.testing.assert_allclose(got[:k], want[:k], atol=1e-9 * max(1, want.max()))
    assert np.allclose(want[k:], 0, atol=1e-9 * max(1, want.max()))


def test_pr_and_n90_against_numpy() -> None:
    lam = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    assert participation_ratio(lam) == pytest.approx(8.0**2 / 22.0)
    assert n_components(lam) == 4  # 7/8 < 0.9 <= 8/8
    iso = np.ones(10)
    assert participation_ratio(iso) == pytest.approx(10)
    assert np.isnan(participation_ratio(np.zeros(3)))


def test_part_grams_match_explicit_means() -> None:
    """The gathered Gram equals the Gram of explicitly averaged, centred part means."""
    rng = np.random.default_rng(0)
    target = np.r_[np.repeat(np.arange(5), 8), np.repeat(np.arange(5), 16)]
    imagery = np.r_[np.zeros(40, bool), np.ones(80, bool)]
    X = rng.standard_normal((120, 7))
    cells = TrialCells.of(target, imagery, min_trials=4)
    h, _ = cells.half_sizes(True, 4)
    vi, _ = draw_parts(cells, 2, 1, rng, n_parts=4)
    G = part_grams(X @ X.T, vi, part_weights(h, 4))
    Q = X[vi[1, 0]].mean(axis=2)  # (4, T, V)
    Q = Q - Q.mean(axis=1, keepdims=True)
    M = Q.reshape(-1, 7)
    np.testing.assert_allclose(G[1, 0], M @ M.T, atol=1e-10)
    # parts of a split are disjoint, and subsample the 16 imagery trials to 8
    for t in range(5):
        assert len(set(vi[1, 0, :, t].ravel())) == 8


def test_pr_terms_are_unbiased() -> None:
    """Averaged over noise draws, the four-part terms estimate (tr S)^2 and tr S^2 of
    the signal covariance however strong the noise (the clipped spectrum does not)."""
    rng = np.random.default_rng(1)
    T, V, n_rep = 10, 30, 8
    signal = rng.standard_normal((T, 3)) @ rng.standard_normal((3, V))
    Sc = signal - signal.mean(0)
    S = Sc.T @ Sc  # the centred signal's scatter
    num_t, den_t = np.trace(S) ** 2, np.trace(S @ S)
    target = np.repeat(np.arange(T), n_rep)
    nums, dens, clipped = [], [], []
    for _ in range(300):
        X = signal[target] + 3.0 * rng.standard_normal((T * n_rep, V))
        Q = X.reshape(T, 4, 2, V).mean(axis=2).transpose(1, 0, 2)
        Q = Q - Q.mean(axis=1, keepdims=True)
        M = Q.reshape(-1, V)
        num, den = pr_terms(M @ M.T)
        nums.append(num)
        dens.append(den)
        clipped.append(participation_ratio(spectrum_direct(Q[0] + Q[1], Q[2] + Q[3])))
    assert np.mean(nums) == pytest.approx(num_t, rel=0.1)
    assert np.mean(dens) == pytest.approx(den_t, rel=0.1)
    true_pr = num_t / den_t
    assert np.mean(clipped) > 1.5 * true_pr  # why the clipped spectrum is not the test


def test_permutation_and_bootstrap_are_calibrated_on_exchangeable_trials() -> None:
    """Vision and imagery trials drawn alike (8 vs 16 per target): over seeds, p < 0.05
    about 5% of the time and the difference's CI covers 0."""
    ps, cover = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        T = 12
        target = np.r_[np.repeat(np.arange(T), 8), np.repeat(np.arange(T), 16)]
        imagery = np.r_[np.zeros(8 * T, bool), np.ones(16 * T, bool)]
        signal = rng.standard_normal((T, 40))
        X = signal[target] + 2 * rng.standard_normal((len(target), 40))
        r = dimensionality_test(X @ X.T, target, imagery, n_bootstrap=100,
                                n_permutations=100, seed=seed)
        ps.append(r.p)
        cover.append(r.ci_difference[0] < 0 < r.ci_difference[1])
    assert np.mean(np.array(ps) < 0.05) <= 0.2
    assert np.mean(ps) == pytest.approx(0.5, abs=0.15)
    assert np.mean(cover) >= 0.85


def _primary(result: dict) -> dict:
    return result["dimensionality"]["group"]["representations"]["nsdgeneral"]


def test_planted_imagery_is_lower_dimensional(planted_study, tmp_path) -> None:
    """Ground truth: ``imagery_sem_rank`` (imagery keeps semantics in a rank-4 subspace)
    and ``imagery_low_gain`` (low-level features attenuated): imagery's signal PR in
    nsdgeneral is below vision's, in every subject and significantly."""
    torch.set_num_threads(1)
    cfg = planted_study.truth.info["config"]
    assert cfg["imagery_sem_rank"] < cfg["sem_dim"]
    res = run_analyze(planted_study.analyze_config(tmp_path, ["dimensionality"],
                                                   options=OPTIONS, **FAST))
    g = _primary(res)
    assert g["difference"] < 0 and g["p"] < 0.05
    assert g["n_lower"] == len(planted_study.subjects)
    assert res["dimensionality"]["group"]["significant"] is True
    assert (tmp_path / "figures" / "dimensionality.png").exists()


def test_null_reports_no_gap(null_study, tmp_path) -> None:
    """Ground truth: ``null`` (imagery statistically identical to vision): no
    significant PR difference."""
    torch.set_num_threads(1)
    res = run_analyze(null_study.analyze_config(tmp_path, ["dimensionality"],
                                                options=OPTIONS, **FAST))
    assert res["dimensionality"]["group"]["significant"] is False
    assert _primary(res)["p"] >= 0.05


def test_full_semantic_rank_raises_imagery_dimensionality(planted_study, tmp_path) -> None:
    """Ground truth: ``imagery_sem_rank`` set to ``sem_dim`` (imagery keeps every
    semantic dimension) instead of 4: imagery's signal PR rises towards vision's."""
    from analysis_fixture import build_study
    torch.set_num_threads(1)
    sem_dim = planted_study.truth.info["config"]["sem_dim"]
    subjects = (1, 2)
    full = build_study(tmp_path / "full", subjects=subjects, imagery_sem_rank=sem_dim)
    assert full.truth.info["config"]["imagery_sem_rank"] == sem_dim
    base_cfg = planted_study.analyze_config(tmp_path / "a", ["dimensionality"],
                                            options=OPTIONS, **FAST)
    base = run_analyze(base_cfg.model_copy(update={"subjects": list(subjects)}))
    changed = run_analyze(full.analyze_config(tmp_path / "b", ["dimensionality"],
                                              options=OPTIONS, **FAST))
    assert _primary(changed)["pr_imagery"] > _primary(base)["pr_imagery"]
    assert _primary(changed)["difference"] > _primary(base)["difference"]
