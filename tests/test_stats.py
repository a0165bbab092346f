"""Bootstrap, permutation and paired-comparison statistics, checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as sps

from fmri2img.eval import pairwise as PW
from fmri2img.eval import permutation as P
from fmri2img.eval import stats as S

FAST = settings(max_examples=30, deadline=None)


def _relative_gap(ours: tuple[float, float], ref: tuple[float, float]) -> float:
    width = ref[1] - ref[0]
    return max(abs(ours[0] - ref[0]), abs(ours[1] - ref[1])) / width


# -------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize(("method", "scipy_method"), [("percentile", "percentile"),
                                                       ("bca", "BCa")])
@pytest.mark.parametrize("statistic", [np.mean, np.std])
def test_bootstrap_matches_scipy(method: str, scipy_method: str, statistic) -> None:
    x = np.random.default_rng(0).exponential(2.0, size=80)  # skewed: BCa differs
    ours = S.bootstrap_ci(x, statistic, n_resamples=20000, seed=1, method=method)
    ref = sps.bootstrap((x,), statistic, n_resamples=20000, method=scipy_method,
                        confidence_level=0.95, rng=np.random.default_rng(2))
    ci = (ref.confidence_interval.low, ref.confidence_interval.high)
    assert _relative_gap(ours, ci) < 0.05, (ours, ci)


def test_bootstrap_contains_true_mean_at_nominal_rate() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for seed in range(200):
        x = rng.normal(3.0, 1.0, size=40)
        low, high = S.bootstrap_ci(x, n_resamples=1000, seed=seed)
        covered += low <= 3.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_deterministic_by_seed() -> None:
    x = np.random.default_rng(4).normal(size=50)
    assert S.bootstrap_ci(x, seed=7) == S.bootstrap_ci(x, seed=7)
    assert S.bootstrap_ci(x, seed=7) != S.bootstrap_ci(x, seed=8)
    groups = np.repeat(np.arange(10), 5)
    assert S.bootstrap_ci(x, groups=groups, seed=7) == S.bootstrap_ci(x, groups=groups, seed=7)


def test_cluster_bootstrap_equals_bootstrap_of_groups() -> None:
    """Equal-size groups with constant values: resampling groups = resampling group values."""
    level = np.random.default_rng(5).normal(size=12)
    x = np.repeat(level, 4)
    groups = np.repeat(np.array(list("abcdefghijkl")), 4)
    for statistic in (np.mean, np.median):  # fast path and generic path
        grouped = S.bootstrap_ci(x, statistic, n_resamples=500, seed=9, groups=groups)
        plain = S.bootstrap_ci(level, statistic, n_resamples=500, seed=9)
        np.testing.assert_allclose(grouped, plain, rtol=1e-12)
    bca = S.bootstrap_ci(x, n_resamples=500, seed=9, groups=groups, method="bca")
    np.testing.assert_allclose(bca, S.bootstrap_ci(level, n_resamples=500, seed=9,
                                                   method="bca"), rtol=1e-12)


def test_cluster_bootstrap_widens_for_correlated_trials() -> None:
    rng = np.random.default_rng(6)
    level = rng.normal(size=20)
    x = np.repeat(level, 10) + 0.1 * rng.normal(size=200)
    groups = np.repeat(np.arange(20), 10)
    naive = S.bootstrap_ci(x)
    cluster = S.bootstrap_ci(x, groups=groups)
    assert cluster[1] - cluster[0] > 2.0 * (naive[1] - naive[0])


@FAST
@given(hnp.arrays(np.float64, st.integers(2, 30), elements=st.floats(-100, 100)))
def test_bootstrap_interval_ordered_and_within_range(x: np.ndarray) -> None:
    low, high = S.bootstrap_ci(x, n_resamples=200)
    assert x.min() - 1e-9 <= low <= high <= x.max() + 1e-9


# ------------------------------------------------------------------- permutation test


def _paired(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(n, 16))
    return targets + noise * rng.normal(size=(n, 16)), targets


def test_permutation_strong_decoder_has_minimal_p() -> None:
    pred, targets = _paired(40, 0.5, 10)
    res = P.permutation_test_vs_chance(PW.two_way_metric, pred, targets, n_permutations=999)
    assert res.observed > 0.95
    assert res.p_value == pytest.approx(1 / 1000)
    assert res.null.shape == (999,)
    assert abs(res.null_mean - 0.5) < 0.02


def test_permutation_null_p_values_roughly_uniform() -> None:
    p_values = []
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        pred, targets = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
        res = P.permutation_test_vs_chance(PW.two_way_metric, pred, targets,
                                           n_permutations=200, seed=seed)
        p_values.append(res.p_value)
    p = np.array(p_values)
    assert 0.35 < p.mean() < 0.65
    assert np.mean(p < 0.05) <= 0.15
    assert np.mean(p > 0.5) >= 0.3


def test_permutation_fast_path_equals_generic_path() -> None:
    pred, targets = _paired(15, 2.0, 11)
    for metric in (PW.two_way_metric, PW.cosine_metric, PW.top_k_metric(3)):
        fast = P.permutation_test_vs_chance(metric, pred, targets, n_permutations=300, seed=4)
        slow = P.permutation_test_vs_chance(
            lambda p, t, m=metric: m(p, t), pred, targets, n_permutations=300, seed=4
        )
        assert fast.observed == pytest.approx(slow.observed)
        np.testing.assert_allclose(fast.null, slow.null, atol=1e-12)
        assert fast.p_value == slow.p_value


def test_permutation_generic_metric_and_alternative() -> None:
    pred, targets = _paired(20, 1.0, 12)

    def distance(p: np.ndarray, t: np.ndarray) -> float:
        return float(np.mean(np.linalg.norm(p - t, axis=1)))

    res = P.permutation_test_vs_chance(distance, pred, targets, n_permutations=199,
                                       alternative="less")
    assert res.p_value == pytest.approx(1 / 200)
    wrong_way = P.permutation_test_vs_chance(distance, pred, targets, n_permutations=199)
    assert wrong_way.p_value > 0.9
    again = P.permutation_test_vs_chance(distance, pred, targets, n_permutations=199,
                                         alternative="less")
    np.testing.assert_array_equal(res.null, again.null)


def test_permutation_fast_for_large_n() -> None:
    pred, targets = _paired(1000, 4.0, 13)
    res = P.permutation_test_vs_chance(PW.two_way_metric, pred, targets)
    assert res.null.shape == (1000,)
    assert res.p_value == pytest.approx(1 / 1001)


# ------------------------------------------------------------------------------ ratio


def test_ratio_ci_paired_and_independent() -> None:
    rng = np.random.default_rng(14)
    item = rng.normal(size=300)
    perception = 0.9 + 0.05 * item + 0.02 * rng.normal(size=300)
    imagery = 0.7 + 0.05 * item + 0.02 * rng.normal(size=300)
    truth = (0.7 - 0.5) / (0.9 - 0.5)
    paired = S.ratio_ci(imagery, perception, baseline=0.5)
    independent = S.ratio_ci(imagery, perception, baseline=0.5, paired=False)
    expected = (imagery.mean() - 0.5) / (perception.mean() - 0.5)
    assert paired.estimate == pytest.approx(expected)
    assert independent.estimate == pytest.approx(expected)
    for res in (paired, independent):
        assert res.ci[0] <= truth <= res.ci[1]
    assert paired.ci[1] - paired.ci[0] < independent.ci[1] - independent.ci[0]
    estimate, (low, high) = S.ratio_ci(imagery[:50], perception, paired=False)
    assert low <= estimate <= high


def test_ratio_ci_warns_when_denominator_reaches_baseline() -> None:
    rng = np.random.default_rng(15)
    with pytest.warns(RuntimeWarning, match="denominator"):
        S.ratio_ci(rng.normal(1.0, 1.0, 10), rng.normal(0.1, 1.0, 10))
    with pytest.raises(ValueError, match="equal lengths"):
        S.ratio_ci(np.ones(3), np.ones(4))


# -------------------------------------------------------------------- paired difference


def test_paired_difference_exact_sign_flip() -> None:
    res = S.paired_difference_test([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert res.exact
    assert res.p_value == pytest.approx(2 / 16)  # all-positive or all-negative pattern
    greater = S.paired_difference_test([1.0, 2.0, 3.0, 4.0], [0.0] * 4, alternative="greater")
    assert greater.p_value == pytest.approx(1 / 16)
    assert res.mean_difference == pytest.approx(2.5)
    assert res.cohens_dz == pytest.approx(2.5 / np.std([1, 2, 3, 4], ddof=1))
    assert res.ci[0] <= 2.5 <= res.ci[1]


def test_paired_difference_matches_scipy_permutation_test() -> None:
    rng = np.random.default_rng(16)
    a, b = rng.normal(0.6, 1.0, 9), rng.normal(0.0, 1.0, 9)
    ours = S.paired_difference_test(a, b)
    ref = sps.permutation_test((a - b,), np.mean, permutation_type="samples",
                               n_resamples=10000)
    assert ours.exact
    assert ours.p_value == pytest.approx(ref.pvalue)


def test_paired_difference_random_flips_and_null() -> None:
    rng = np.random.default_rng(17)
    a = rng.normal(size=200)
    strong = S.paired_difference_test(a + 0.5 + 0.1 * rng.normal(size=200), a,
                                      n_permutations=2000)
    assert not strong.exact
    assert strong.p_value == pytest.approx(1 / 2001)
    assert strong.cohens_dz > 3
    null = S.paired_difference_test(a + rng.normal(size=200), a + rng.normal(size=200))
    assert null.p_value > 0.05
    assert null.ci[0] < 0 < null.ci[1]
    same = S.paired_difference_test(a, a)
    assert same.p_value == 1.0
    assert np.isnan(same.cohens_dz)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="1-D"):
        S.bootstrap_ci(np.ones((2, 2)))
    with pytest.raises(ValueError, match="groups"):
        S.bootstrap_ci(np.ones(4), groups=[0, 1])
    with pytest.raises(ValueError, match="confidence"):
        S.bootstrap_ci(np.ones(4), confidence=1.5)
    with pytest.raises(ValueError, match="method"):
        S.bootstrap_ci(np.ones(4), method="basic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number"):
        P.permutation_test_vs_chance(PW.two_way_metric, np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="pair up"):
        S.paired_difference_test([1.0, 2.0], [1.0])


# ------------------------------------------------------------------ stratified bootstrap
@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=4),
       levels=st.lists(st.floats(-5, 5), min_size=4, max_size=4))
def test_stratified_bootstrap_keeps_stratum_sizes(sizes: list[int], levels: list[float]) -> None:
    # Values constant within strata: every stratified resample has the full sample's mean,
    # so the interval collapses onto it; an unstratified one would not.
    strata = np.repeat(np.arange(len(sizes)), sizes)
    x = np.asarray(levels)[strata]
    low, high = S.bootstrap_ci(x, n_resamples=200, seed=1, strata=strata)
    assert low == pytest.approx(x.mean(), abs=1e-9)
    assert high == pytest.approx(x.mean(), abs=1e-9)


def test_single_stratum_is_the_plain_bootstrap() -> None:
    x = np.random.default_rng(0).normal(size=15)
    assert S.bootstrap_ci(x, seed=3, strata=np.zeros(15)) == S.bootstrap_ci(x, seed=3)


def test_stratified_paired_test_narrows_between_set_spread() -> None:
    rng = np.random.default_rng(2)
    sets = np.repeat(["simple", "complex"], 6)
    a = np.where(sets == "simple", 0.4, -0.05) + rng.normal(0, 0.02, 12)
    b = np.zeros(12)
    plain = S.paired_difference_test(a, b, seed=0)
    strat = S.paired_difference_test(a, b, seed=0, strata=sets)
    assert strat.mean_difference == plain.mean_difference
    assert strat.p_value == plain.p_value  # the sign-flip test ignores strata
    assert strat.ci[1] - strat.ci[0] < 0.5 * (plain.ci[1] - plain.ci[0])
    assert strat.ci[0] > 0


def test_strata_and_groups_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        S.bootstrap_ci(np.ones(4), groups=[0, 0, 1, 1], strata=[0, 1, 0, 1])
    with pytest.raises(ValueError, match="one label per value"):
        S.bootstrap_ci(np.ones(4), strata=[0, 1])
