"""ROI hierarchy profile (analysis 7) and the per-ROI decoding stage it shares with the
fingerprints: the trend's numerics against numpy/scipy/pandas, the permutation test's
validity and power, the stage's cache, and the analysis on simulated studies: the planted
sign (imagery_participation rising from early to high-level cortex), nothing under
--null, and the slope reversing with the participation table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis.hierarchy import (
    contrast,
    group_mean,
    hierarchy_test,
    pooled_p,
    pooled_term,
    slope,
)
from fmri2img.experiments.analyses.runner import run_analyze

N_RESAMPLES = 300
ROIS = ["V1", "V2", "V3", "ventral", "lateral"]
# the stream of each hierarchy ROI in the simulator's tables (data/simulate/stream_tables)
STREAM_OF = {"V1": "early", "V2": "early", "V3": "early", "hV4": "midventral",
             "ventral": "ventral", "lateral": "lateral", "parietal": "parietal"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _design(n_targets: int = 12, n_vis: int = 8, n_img: int = 16
            ) -> tuple[np.ndarray, np.ndarray]:
    target = np.repeat(np.arange(n_targets), n_vis + n_img)
    imagery = np.tile(np.r_[np.zeros(n_vis, bool), np.ones(n_img, bool)], n_targets)
    return target, imagery


def _scores(vision: list[float], ratio: list[float], seed: int = 0, sd: float = 0.2
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, n) per-trial scores: ROI r's vision mean vision[r], imagery mean 0.5 +
    ratio[r] * (vision[r] - 0.5)."""
    target, imagery = _design()
    v = np.array(vision)[:, None]
    mu = np.where(imagery[None, :], 0.5 + np.array(ratio)[:, None] * (v - 0.5), v)
    rng = np.random.default_rng(seed)
    return np.clip(mu + sd * rng.standard_normal(mu.shape), 0, 1), target, imagery


# ------------------------------------------------------------------ numerics
def test_slope_and_contrast_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(0)
    x = np.array([0.0, 1, 2, 4, 5])
    y = rng.standard_normal((5, 7))
    ref = [scipy.stats.linregress(x, y[:, d]).slope for d in range(7)]
    np.testing.assert_allclose(slope(y, x), ref, rtol=1e-10)
    assert slope(y[:, 0], x) == pytest.approx(np.polyfit(x, y[:, 0], 1)[0])
    assert np.isnan(slope(np.array([1.0, np.nan, 2, 3, 4]), x))
    assert np.isnan(slope(np.array([1.0]), np.array([0.0])))
    high, low = np.array([0, 0, 0, 1, 1], bool), np.array([1, 0, 0, 0, 0], bool)
    np.testing.assert_allclose(contrast(y, high, low), y[3:].mean(axis=0) - y[0])


@settings(max_examples=60, deadline=None)
@given(vision=st.floats(0.55, 1.0), r=st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)),
       w=st.floats(0.1, 0.9))
def test_the_pooled_term_increases_with_the_ratio(vision: float, r: tuple[float, float],
                                                  w: float) -> None:
    """With pooled = w * vision + (1 - w) * imagery, the term is (r - 1) / (w + (1 - w)
    r): the same increasing function of the ratio at any vision score."""
    rs = np.array(r)
    img = 0.5 + rs * (vision - 0.5)
    pooled = w * vision + (1 - w) * img
    if (pooled <= 0.5 + 1e-6).any() or abs(rs[0] - rs[1]) < 1e-6:
        return
    term = pooled_term(np.full(2, vision), img, pooled)
    np.testing.assert_allclose(term, (rs - 1) / (w + (1 - w) * rs), rtol=1e-9, atol=1e-12)
    assert np.sign(term[1] - term[0]) == np.sign(rs[1] - rs[0])


def test_ratios_match_pandas_and_a_planted_trend_is_found() -> None:
    """Ratios rising 0.1 -> 0.9 over five ROIs: slope 0.2 per position and contrast 0.7
    inside their CIs (scores rarely clipped, so the planted means hold)."""
    ratio = [0.1, 0.3, 0.5, 0.7, 0.9]
    scores, target, imagery = _scores([0.75, 0.8, 0.75, 0.8, 0.75], ratio, seed=1, sd=0.1)
    res = hierarchy_test(scores, target, imagery, ROIS, [0, 1, 2, 3, 4], ["ventral",
                         "lateral"], ["V1"], n_bootstrap=N_RESAMPLES,
                         n_permutations=N_RESAMPLES, seed=0)
    for r in range(5):
        df = pd.DataFrame({"s": scores[r], "t": target, "img": imagery})
        cell = df.groupby(["img", "t"])["s"].mean()
        vis, img = cell.loc[False].mean(), cell.loc[True].mean()
        assert res.vision[r] == pytest.approx(vis)
        assert res.ratio[r] == pytest.approx((img - 0.5) / (vis - 0.5))
        assert res.ratio_ci[r, 0] < res.ratio[r] < res.ratio_ci[r, 1]
    assert res.used.all()
    assert res.slope_ci[0] < 0.2 < res.slope_ci[1]
    assert res.p < 0.01 and res.t_slope > 0 and res.p_contrast < 0.01
    assert res.contrast == pytest.approx(res.ratio[3:].mean() - res.ratio[0])
    assert res.contrast_ci[0] < 0.7 < res.contrast_ci[1]
    # the group helpers over two copies reproduce the subject
    mean, ci = group_mean([res.slope, res.slope], [res.bootstrap_slope] * 2)
    assert mean == pytest.approx(res.slope) and ci[0] < mean < ci[1]
    assert pooled_p([res.t_slope] * 2, [res.null_slope, res.null_slope[::-1]]) < 0.01


def test_permutation_p_is_uniform_when_domains_are_exchangeable() -> None:
    """Null: every ROI's imagery trials are drawn like its vision trials (ratio 1), with
    decodability falling along the hierarchy (the selection must not create a trend)."""
    ps = []
    for seed in range(100):
        scores, target, imagery = _scores([0.56, 0.6, 0.7, 0.85, 0.95], [1.0] * 5,
                                          seed=seed)
        res = hierarchy_test(scores, target, imagery, ROIS, [0, 1, 2, 3, 4],
                             ["ventral", "lateral"], ["V1"], n_bootstrap=100,
                             n_permutations=200, seed=seed)
        ps.append(res.p)
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.1  # 5 expected of 100
    assert 0.35 < np.median(ps) < 0.65


def test_rois_without_signal_leave_the_trend() -> None:
    scores, target, imagery = _scores([0.5, 0.9, 0.9, 0.9, 0.9], [1.0, 0.2, 0.4, 0.6, 0.8],
                                      seed=2, sd=0.05)
    res = hierarchy_test(scores, target, imagery, ROIS, [0, 1, 2, 3, 4], ["ventral"],
                         ["V1"], min_signal=0.05, n_bootstrap=100, n_permutations=100)
    assert not res.used[0] and res.used[1:].all()
    assert np.isnan(res.contrast)  # its only low ROI has no signal
    assert res.slope == pytest.approx(slope(res.ratio[1:], np.arange(1, 5)))


# ------------------------------------------------------------------ on simulated studies
def _run(study, out: Path, names: tuple[str, ...] = ("roi_hierarchy",), **kwargs):
    cfg = study.analyze_config(out, list(names), n_bootstrap=N_RESAMPLES,
                               n_permutations=N_RESAMPLES, **kwargs)
    return run_analyze(cfg)


def _planted_slope_sign(config: dict, rois: list[str]) -> float:
    """Sign of the slope of the planted imagery_participation of each ROI's stream
    against its hierarchy position."""
    part = [config["imagery_participation"][STREAM_OF[r]] for r in rois]
    return float(np.sign(slope(np.array(part), np.arange(len(rois), dtype=float))))


def test_planted_participation_gives_a_rising_profile(planted_study, tmp_path: Path) -> None:
    """Reads imagery_participation (early 0.35 -> ventral 0.85, lateral 0.75, parietal
    0.6): the ratio rises along the hierarchy (slope > 0, ventral+lateral above V1), and
    the ROIs' mean ratios are ordered like their streams' participation."""
    config = planted_study.truth.info["config"]
    res = _run(planted_study, tmp_path / "out")["roi_hierarchy"]
    group = res["group"]
    hierarchy = group["hierarchy"]
    assert _planted_slope_sign(config, hierarchy) == 1.0
    assert group["significant"] and group["effect"]["value"] > 0
    assert group["effect"]["ci"][0] > 0
    assert group["overall"]["contrast"]["value"] > 0 and group["overall"]["contrast"]["p"] < 0.05
    rois = {n: e for n, e in group["overall"]["rois"].items() if e["ratio"] is not None}
    rho = scipy.stats.spearmanr([config["imagery_participation"][STREAM_OF[n]] for n in rois],
                                [e["ratio"] for e in rois.values()]).statistic
    assert rho > 0.5
    assert set(group["by_set"]) == {"simple", "complex", "conceptual"}
    for subject in res["subjects"].values():
        assert subject["testable"] and subject["overall"]["slope"] > 0
        # the small simulation's hV4 has < 10 voxels: reported, not tested
        assert "hV4" in subject["not_testable_rois"]
    assert (tmp_path / "out" / "figures" / "roi_hierarchy.png").exists()


def test_null_study_has_no_hierarchy_trend(null_study, tmp_path: Path) -> None:
    """--null: imagery_participation 1 in every stream, all gains 1."""
    config = null_study.truth.info["config"]
    assert config["null"]
    group = _run(null_study, tmp_path / "out", figures=False)["roi_hierarchy"]["group"]
    assert group["significant"] is False
    assert abs(group["effect"]["value"]) < 0.05
    assert group["overall"]["contrast"]["p"] >= 0.05


def test_reversed_participation_reverses_the_slope(tmp_path: Path) -> None:
    """imagery_participation reversed (early 1.0, mid 0.6, ventral/lateral/parietal
    0.15): the slope turns negative, where the planted table gives a positive one."""
    from analysis_fixture import build_study

    reverse = {"early": 1.0, "midventral": 0.6, "midlateral": 0.6, "midparietal": 0.6,
               "ventral": 0.15, "lateral": 0.15, "parietal": 0.15}
    study = build_study(tmp_path / "reversed", subjects=(1, 2), models=(),
                        imagery_participation=reverse)
    config = study.truth.info["config"]
    group = _run(study, tmp_path / "reversed" / "out", figures=False)["roi_hierarchy"]["group"]
    assert _planted_slope_sign(config, group["hierarchy"]) == -1.0
    assert group["effect"]["value"] < 0 and group["significant"]
    assert group["overall"]["contrast"]["value"] < 0


def test_the_stage_is_cached_and_shared(planted_study, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """roi_hierarchy fits the ROI decoders once; fingerprints (and a rerun with other
    resampling counts) read the cached per-trial scores."""
    cfg = planted_study.analyze_config(tmp_path / "out", ["roi_hierarchy"], n_bootstrap=200,
                                       n_permutations=200, figures=False)
    cfg = cfg.model_copy(update={"subjects": [1]})
    first = run_analyze(cfg)["roi_hierarchy"]["subjects"]["subj01"]
    cached = list((tmp_path / "out" / "work" / "subj01" / "roi_decoding").glob("*"))
    assert sorted(p.suffix for p in cached) == [".json", ".npz"]

    import fmri2img.experiments.analyses.roi_decoding as stage

    def no_fit(*args, **kwargs):
        raise AssertionError("the cached ROI scores should have been used")

    monkeypatch.setattr(stage, "fit_pipeline", no_fit)
    again = run_analyze(cfg.model_copy(update={"n_bootstrap": 250, "analyses": [
        "roi_hierarchy", "fingerprints"]}))
    second = again["roi_hierarchy"]["subjects"]["subj01"]
    assert second["fit"] == first["fit"]
    assert second["overall"]["rois"]["V1"]["vision"] == first["overall"]["rois"]["V1"]["vision"]
    assert again["fingerprints"]["subjects"]["subj01"]["testable"]
    # one subject: the group fingerprint tests say why they cannot run
    assert again["fingerprints"]["group"]["effect"] is None
    assert ">= 3" in again["fingerprints"]["group"]["finding"]
