"""Uncertainty as vividness: the MC-dropout numerics against an analytic reference,
Spearman and the permutation tests against scipy, the real NSD-Imagery behaviour file of
subject 7 (no vividness variance), and the analysis on planted, null and changed
simulated data (ground truth: the simulator's ``vividness_effect``)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from torch import nn

from fmri2img.analysis.uncertainty import (
    calibration,
    dropout_rates,
    mc_dropout,
    pooled_test,
    spearman,
    spearman_test,
    vividness_problem,
)
from fmri2img.experiments.analyses import uncertainty as unc
from fmri2img.experiments.analyses.base import Common, SubjectInputs
from fmri2img.experiments.analyses.runner import run_analyze

REAL_BEHAVIOUR = (Path(__file__).resolve().parents[2] / "shared" / "data"
                  / "nsd_imagery_meta" / "subj07_Imagery_Behavioralresponse.csv")
FAST = {"n_permutations": 300, "n_bootstrap": 300}


def test_mc_dropout_matches_the_analytic_variance() -> None:
    """Dropout then a linear map: Var(y_j) = sum_i W_ji^2 x_i^2 (1 - q) / q, q = keep."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.Dropout(0.3), nn.Linear(6, 4))
    net.eval()
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    with torch.no_grad():
        h = net[1](net[0](torch.from_numpy(x))).double().numpy()  # LayerNorm in eval
        w = net[3].weight.double().numpy()
        exact_mean = net(torch.from_numpy(x)).double().numpy()
    q = 0.7
    exact_var = ((h**2) @ (w**2).T * (1 - q) / q).mean(axis=1)
    mean, var = mc_dropout(net, x, n_passes=20000, seed=1)
    np.testing.assert_allclose(var, exact_var, rtol=0.05)
    np.testing.assert_allclose(mean, exact_mean, atol=0.05)
    assert not net.training  # the module's mode is restored


def test_mc_dropout_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.set_num_threads(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    x = np.ones((300, 5), dtype=np.float32)  # two blocks of trials, two of passes
    state = torch.get_rng_state()
    a = mc_dropout(net, x, 40, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    b = mc_dropout(net, x, 40, seed=3)
    c = mc_dropout(net, x, 40, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert np.unique(a[1]).size > 1  # each trial gets its own masks
    assert not np.allclose(a[1], c[1])
    assert dropout_rates(net) == [0.5]
    with pytest.raises(ValueError, match="no active dropout"):
        mc_dropout(nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.0)), x, 10)


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=5, max_size=40), st.integers(0, 10**6))
def test_spearman_matches_scipy_with_ties(v: list[int], seed: int) -> None:
    m = np.random.default_rng(seed).normal(size=len(v))
    ref = spearmanr(m, v).statistic
    got = spearman(m, np.array(v, dtype=float))
    assert (np.isnan(ref) and np.isnan(got)) or got == pytest.approx(ref, abs=1e-10)


def test_permutation_is_within_target_and_valid_under_the_null() -> None:
    """A measure that depends on the target only (difficulty), vividness that depends on
    the target only too: a naive correlation is strong, the within-target null holds it
    (p = 1: shuffling within targets cannot change anything)."""
    rng = np.random.default_rng(0)
    target = np.repeat(np.arange(6), 16)
    measure = target + rng.normal(0, 1e-3, target.size)
    vivid = (target >= 3).astype(float)
    r = spearman_test(measure, vivid, target, n_bootstrap=200, n_permutations=200, seed=0)
    assert r.rho > 0.8 and r.p == 1.0
    # under independence p-values are roughly uniform: few below 0.05
    ps = [spearman_test(rng.normal(size=96), rng.integers(0, 2, 96).astype(float), target,
                        n_bootstrap=100, n_permutations=200, seed=k).p for k in range(60)]
    assert np.mean(np.array(ps) < 0.05) < 0.15


def test_pooled_test_sums_independent_null_draws() -> None:
    nulls = [np.array([0.1, -0.2, 0.3]), np.array([-0.1, 0.0, 0.25])]
    rho, ci, p = pooled_test([0.2, 0.3], [np.array([0.1, 0.3]), np.array([0.2, 0.4])],
                             nulls)
    assert rho == pytest.approx(0.25)
    # |sum| of draws vs 0.5: 0.0, 0.2, 0.55 -> one as extreme
    assert p == pytest.approx((1 + 1) / (1 + 3))
    assert ci[0] <= ci[1]


def test_calibration_matches_pandas_qcut() -> None:
    rng = np.random.default_rng(1)
    u, a = rng.random(200), rng.random(200)
    cal = calibration(u, a, n_bins=5)
    ref = pd.DataFrame({"a": a, "b": pd.qcut(u, 5, labels=False)}).groupby("b")["a"].mean()
    np.testing.assert_allclose(cal.accuracy, ref.to_numpy())
    assert cal.count.sum() == 200


def test_real_subject7_answered_vivid_on_every_trial() -> None:
    """The real NSD-Imagery behaviour file of subject 7: vividness has no variance."""
    if not REAL_BEHAVIOUR.exists():
        pytest.skip(f"real behaviour file not here: {REAL_BEHAVIOUR}")
    from fmri2img.data.imagery import beta_layout
    table = pd.read_csv(REAL_BEHAVIOUR)
    vivid = table["Value"].to_numpy(dtype=float)[
        (beta_layout()["task"] == "imagery").to_numpy()]
    assert vivid.size == 288
    why = vividness_problem(vivid)
    assert why is not None and "vividness is 1 on all 287" in why and "1 without" in why
    assert vividness_problem(np.r_[np.ones(50), np.zeros(2)], min_each=3) is not None
    assert vividness_problem(np.r_[np.ones(50), np.zeros(10)]) is None


def _group(study, tmp: Path, name: str = "u") -> dict:
    cfg = study.analyze_config(tmp / name, ["uncertainty"], **FAST)
    return run_analyze(cfg)["uncertainty"]


def test_planted_accuracy_rises_with_vividness(planted_study, tmp_path: Path) -> None:
    """Ground truth: ``vividness_effect`` (0.8 in the small preset) scales each imagery
    trial's signal by its latent vividness: accuracy-vividness rho > 0, significant. The
    uncertainty rho is reported whatever it is (an empirical question)."""
    torch.set_num_threads(1)
    assert planted_study.truth.info["config"]["vividness_effect"] > 0
    res = _group(planted_study, tmp_path)
    g = res["group"]
    assert g["accuracy_effect"]["value"] > 0 and g["accuracy_significant"]
    assert g["effect"]["name"].startswith("uncertainty") and g["effect"]["p"] is not None
    for r in res["subjects"].values():
        m = r["models"]["mlp"]
        assert m["testable"] and m["accuracy"]["rho"] > 0
        assert m["by_answer"]["1"]["accuracy"] > m["by_answer"]["0"]["accuracy"]
    assert (tmp_path / "u" / "figures" / "uncertainty.png").exists()


def test_null_reports_no_vividness_effect(null_study, tmp_path: Path) -> None:
    """Ground truth: under --null ``vividness_effect`` is 0: neither rho significant."""
    torch.set_num_threads(1)
    g = _group(null_study, tmp_path)["group"]
    assert not g["significant"] and not g["accuracy_significant"]


def test_decoder_without_dropout_is_not_testable(planted_study, tmp_path: Path) -> None:
    """A decoder with p = 0 has no MC-dropout variance: not testable, with the reason
    (ground truth: the fixture's mlp has dropout 0.2, set to 0 here)."""
    torch.set_num_threads(1)
    s = planted_study
    inputs = SubjectInputs("subj01", Path(s.imagery_index("subj01")), None, s.targets,
                           {"mlp": Path(s.checkpoint("mlp", "subj01"))}, {}, [],
                           tmp_path)
    pipe = copy.deepcopy(inputs.decoder("mlp"))
    for m in pipe.decoder.network_.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    inputs._cache["decoder:mlp"] = pipe
    r = unc.run(inputs, unc.Options(), Common(n_bootstrap=100, n_permutations=100))
    assert not r["testable"] and "no dropout" in r["why"]
    g = unc.combine({"subj01": r}, unc.Options(), Common())
    assert g["effect"] is None and g["significant"] is None and "subj01" in g["finding"]


@pytest.fixture(scope="module")
def vividness_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict]:
    from analysis_fixture import build_study
    out = {}
    for v in (0.0, 1.0):
        study = build_study(tmp_path_factory.mktemp(f"vivid{v:g}"), models=("mlp",),
                            subjects=(1, 5), vividness_effect=v)
        out[v] = _group(study, tmp_path_factory.mktemp(f"vivid{v:g}_out"))["group"]
    return out


def test_vividness_effect_moves_the_accuracy_correlation(vividness_settings) -> None:
    """Ground truth: ``vividness_effect`` 0 (answers carry no signal) vs 1 (signal
    proportional to latent vividness): the accuracy rho rises with it, significant only
    at 1."""
    off, on = vividness_settings[0.0], vividness_settings[1.0]
    assert on["accuracy_effect"]["value"] > off["accuracy_effect"]["value"] + 0.1
    assert on["accuracy_significant"] and not off["accuracy_significant"]
