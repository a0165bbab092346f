"""Known answers and properties of the per-item evaluation metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import hypergeom

from fmri2img.eval import metrics as M
from fmri2img.eval import pairwise as PW
from fmri2img.eval.stats import bootstrap_ci

FAST = settings(max_examples=40, deadline=None)


def _data(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _noisy(targets: np.ndarray, noise: float, seed: int) -> np.ndarray:
    return targets + noise * np.random.default_rng(seed).standard_normal(targets.shape)


@st.composite
def paired_sets(draw: st.DrawFn, min_n: int = 2, max_n: int = 12) -> tuple[np.ndarray, ...]:
    """Small integer-valued (pred, targets) pairs: exact ties and constant rows happen."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(2, 6))
    ints = hnp.arrays(np.int64, (n, d), elements=st.integers(-4, 4))
    return draw(ints).astype(float), draw(ints).astype(float)


# ------------------------------------------------------------------------- identity


def test_identity_predictions_score_perfectly() -> None:
    targets = _data(200, 32, 0)
    out = M.score_all(targets, np.arange(200), targets, pool_size=50, n_pools=5)
    for name, values in out.items():
        assert values.shape == (200,)
        np.testing.assert_allclose(values, 1.0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(M.cosine_per_item(targets, targets), 1.0)
    np.testing.assert_allclose(M.two_way_per_item(targets, targets), 1.0)
    assert M.retrieval_hits(targets, targets, np.arange(200))[1].min() == 1.0
    assert M.brain_retrieval_hits(targets, targets)[1].min() == 1.0


def test_score_all_names_and_consistency() -> None:
    targets = _data(60, 16, 1)
    pred = _noisy(targets, 2.0, 2)
    out = M.score_all(pred, np.arange(60), targets, pool_size=30, n_pools=7, seed=3)
    expected = ["cosine"]
    expected += [f"retrieval_top{k}" for k in (1, 5, 10, 50)]
    expected += [f"brain_retrieval_top{k}" for k in (1, 5, 10, 50)]
    expected += ["two_way"]
    assert list(out) == expected
    np.testing.assert_allclose(out["cosine"], M.cosine_per_item(pred, targets), atol=1e-12)
    np.testing.assert_allclose(out["two_way"], M.two_way_per_item(pred, targets), atol=1e-12)
    fwd = M.retrieval_hits(pred, targets, np.arange(60), pool_size=30, n_pools=7, seed=3)
    bwd = M.brain_retrieval_hits(pred, targets, pool_size=30, n_pools=7, seed=3)
    for k in (1, 5, 10, 50):
        np.testing.assert_allclose(out[f"retrieval_top{k}"], fwd[k])
        np.testing.assert_allclose(out[f"brain_retrieval_top{k}"], bwd[k])
    assert set(out) == set(M.chance_levels()) - {"cosine_centred"}  # needs a centre


def test_score_all_single_trials_skip_brain_retrieval() -> None:
    gallery = _data(40, 8, 4)
    rows = np.repeat(np.arange(10), 3)  # 3 trials per target, 30 unused gallery rows
    pred = _noisy(gallery[rows], 0.5, 5)
    out = M.score_all(pred, rows, gallery, ks=(1, 5))
    assert list(out) == ["cosine", "retrieval_top1", "retrieval_top5", "two_way"]
    assert all(v.shape == (30,) for v in out.values())


# ------------------------------------------------------------------------- retrieval


def test_brain_retrieval_is_forward_with_roles_swapped() -> None:
    targets = _data(50, 8, 6)
    pred = _noisy(targets, 1.5, 7)
    bwd = M.brain_retrieval_hits(pred, targets, ks=(1, 3), pool_size=20, n_pools=9, seed=1)
    fwd = M.retrieval_hits(targets, pred, np.arange(50), ks=(1, 3), pool_size=20,
                           n_pools=9, seed=1)
    for k in (1, 3):
        np.testing.assert_array_equal(bwd[k], fwd[k])


def _rank_counts(pred: np.ndarray, gallery: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """How many gallery rows beat each prediction's own target (loop reference)."""
    out = []
    for i, p in enumerate(pred):
        sims = [np.dot(p, g) / (np.linalg.norm(p) * np.linalg.norm(g)) for g in gallery]
        out.append(sum(s > sims[idx[i]] for j, s in enumerate(sims) if j != idx[i]))
    return np.array(out)


def test_pool_capped_at_gallery_size_is_exact_rank_test() -> None:
    gallery = _data(20, 6, 8)
    idx = np.arange(20)[::-1].copy()
    pred = _noisy(gallery[idx], 1.0, 9)
    greater = _rank_counts(pred, gallery, idx)
    for seed in (0, 1):
        hits = M.retrieval_hits(pred, gallery, idx, ks=(1, 3, 20, 50), pool_size=300,
                                n_pools=4, seed=seed)
        np.testing.assert_array_equal(hits[1], (greater < 1).astype(float))
        np.testing.assert_array_equal(hits[3], (greater < 3).astype(float))
        np.testing.assert_array_equal(hits[20], 1.0)  # k >= pool: always a hit
        np.testing.assert_array_equal(hits[50], 1.0)
    same = M.retrieval_hits(pred, gallery, idx, ks=(1, 3), pool_size=20, n_pools=4)
    np.testing.assert_array_equal(same[3], hits[3])


def test_pooled_hits_match_exact_expectation_and_explicit_pools() -> None:
    """Sampling hit counts is equivalent to drawing explicit pools of distractors."""
    gallery = _data(40, 5, 10)
    pred = _noisy(gallery[:6], 1.2, 11)
    idx = np.arange(6)
    pool, n_pools = 10, 3000
    greater = _rank_counts(pred, gallery, idx)
    hits = M.retrieval_hits(pred, gallery, idx, ks=(1, 3), pool_size=pool, n_pools=n_pools)
    rng = np.random.default_rng(0)
    sims = M.cosine_matrix(pred, gallery)
    for k in (1, 3):
        exact = hypergeom.cdf(k - 1, 39, greater, pool - 1)
        np.testing.assert_allclose(hits[k], exact, atol=0.04)
        explicit = np.zeros(6)
        for i in range(6):
            others = np.delete(np.arange(40), i)
            for _ in range(n_pools):
                drawn = rng.choice(others, pool - 1, replace=False)
                explicit[i] += np.sum(sims[i, drawn] > sims[i, i]) < k
        np.testing.assert_allclose(explicit / n_pools, exact, atol=0.04)


def test_random_predictions_are_at_chance() -> None:
    gallery = _data(400, 32, 12)
    pred = _data(400, 32, 13)
    out = M.score_all(pred, np.arange(400), gallery, ks=(1, 5, 10), pool_size=50, n_pools=30)
    chance = M.chance_levels(ks=(1, 5, 10), pool_size=50, gallery_size=400)
    for name, values in out.items():
        if chance[name] is None:
            continue
        low, high = bootstrap_ci(values, seed=1)
        assert low <= chance[name] <= high, (name, low, high, chance[name])


def test_ties_are_broken_in_expectation() -> None:
    gallery = _data(10, 4, 14)
    pred = np.zeros((3, 4))  # no direction: similar to nothing, tied with everything
    hits = M.retrieval_hits(pred, gallery, np.array([0, 4, 9]), ks=(1, 5), pool_size=10)
    np.testing.assert_allclose(hits[1], 0.1)
    np.testing.assert_allclose(hits[5], 0.5)
    np.testing.assert_allclose(M.two_way_per_item(pred, gallery[:3]), 0.5)
    np.testing.assert_allclose(M.cosine_per_item(pred, gallery[:3]), 0.0)


def test_duplicate_gallery_rows_tie() -> None:
    base = _data(5, 4, 15)
    gallery = np.vstack([base, base[:1]])  # row 5 duplicates row 0
    hits = M.retrieval_hits(base[:1], gallery, np.array([0]), ks=(1, 2), pool_size=6)
    assert hits[1][0] == pytest.approx(0.5)
    assert hits[2][0] == pytest.approx(1.0)


def test_retrieval_deterministic_by_seed() -> None:
    gallery = _data(100, 8, 16)
    pred = _noisy(gallery, 2.0, 17)
    idx = np.arange(100)
    a = M.retrieval_hits(pred, gallery, idx, ks=(5,), pool_size=20, n_pools=3, seed=5)
    b = M.retrieval_hits(pred, gallery, idx, ks=(5,), pool_size=20, n_pools=3, seed=5)
    c = M.retrieval_hits(pred, gallery, idx, ks=(5,), pool_size=20, n_pools=3, seed=6)
    np.testing.assert_array_equal(a[5], b[5])
    assert not np.array_equal(a[5], c[5])


@FAST
@given(paired_sets(), st.integers(1, 12), st.integers(0, 2**16))
def test_retrieval_bounded_and_monotone_in_k(
    data: tuple[np.ndarray, np.ndarray], pool_size: int, seed: int
) -> None:
    pred, targets = data
    ks = (1, 2, 3, 5, 50)
    for hits in (
        M.retrieval_hits(pred, targets, np.arange(len(pred)), ks, pool_size, 4, seed),
        M.brain_retrieval_hits(pred, targets, ks, pool_size, 4, seed),
    ):
        for k in ks:
            assert np.all((hits[k] >= 0) & (hits[k] <= 1))
        for small, large in itertools.pairwise(ks):
            assert np.all(hits[small] <= hits[large] + 1e-12)
        assert np.all(hits[50] == 1.0)  # 50 >= any pool here


# --------------------------------------------------------------------------- two-way


def _two_way_reference(pred: np.ndarray, targets: np.ndarray) -> np.ndarray:
    n = len(pred)
    out = np.zeros(n)
    for i in range(n):
        r = [np.corrcoef(pred[i], targets[j])[0, 1] for j in range(n)]
        out[i] = sum(r[j] < r[i] for j in range(n) if j != i) / (n - 1)
    return out


def test_two_way_matches_loop_reference() -> None:
    targets = _data(15, 10, 18)
    pred = _noisy(targets, 3.0, 19)
    np.testing.assert_allclose(M.two_way_per_item(pred, targets),
                               _two_way_reference(pred, targets))


def test_two_way_gallery_form() -> None:
    gallery = _data(12, 6, 20)
    rows = np.array([3, 3, 7])
    pred = _noisy(gallery[rows], 1.0, 21)
    got = M.two_way_per_item(pred, gallery, rows)
    corr = M.pearson_matrix(pred, gallery)
    want = [(np.delete(corr[i], r) < corr[i, r]).mean() for i, r in enumerate(rows)]
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(
        M.two_way_per_item(gallery[rows], gallery[rows]), [0.75, 0.75, 1.0]
    )  # repeated targets as a paired set compete with copies of themselves


@FAST
@given(
    paired_sets(),
    st.floats(0.25, 8.0),
    st.floats(-5.0, 5.0),
)
def test_two_way_bounded_and_pearson_invariant(
    data: tuple[np.ndarray, np.ndarray], scale: float, shift: float
) -> None:
    pred, targets = data
    base = M.two_way_per_item(pred, targets)
    assert np.all((base >= 0) & (base <= 1))
    factors = scale * np.linspace(1.0, 2.0, len(pred))[:, None]
    moved = pred * factors + shift * np.arange(len(pred))[:, None]
    np.testing.assert_allclose(M.two_way_per_item(moved, targets), base)


@FAST
@given(paired_sets(), st.floats(0.25, 8.0))
def test_cosine_bounded_and_scale_invariant(
    data: tuple[np.ndarray, np.ndarray], scale: float
) -> None:
    pred, targets = data
    base = M.cosine_per_item(pred, targets)
    assert np.all((base >= -1) & (base <= 1))
    factors = scale * np.linspace(1.0, 3.0, len(pred))[:, None]
    np.testing.assert_allclose(M.cosine_per_item(pred * factors, targets), base, atol=1e-12)


# ------------------------------------------------------------- pairwise + chance


@FAST
@given(paired_sets(min_n=3), st.integers(0, 2**16))
def test_pairwise_metrics_decompose_over_permutations(
    data: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    pred, targets = data
    perm = np.random.default_rng(seed).permutation(len(pred))
    rows = np.arange(len(pred))
    two_way = PW.two_way_metric.pair_scores(pred, targets)
    np.testing.assert_allclose(two_way[rows, perm], M.two_way_per_item(pred, targets[perm]))
    cosine = PW.cosine_metric.pair_scores(pred, targets)
    np.testing.assert_allclose(cosine[rows, perm], M.cosine_per_item(pred, targets[perm]),
                               atol=1e-12)
    n = len(pred)
    top2 = PW.top_k_metric(2)
    full = M.retrieval_hits(pred, targets[perm], rows, ks=(2,), pool_size=n, n_pools=1)
    np.testing.assert_allclose(top2.pair_scores(pred, targets)[rows, perm], full[2])
    assert PW.two_way_metric(pred, targets) == pytest.approx(
        M.two_way_per_item(pred, targets).mean())


def test_chance_levels() -> None:
    chance = M.chance_levels()
    assert chance["cosine"] is None
    assert chance["two_way"] == 0.5
    assert chance["retrieval_top1"] == pytest.approx(1 / 300)
    assert chance["brain_retrieval_top50"] == pytest.approx(50 / 300)
    capped = M.chance_levels(ks=(1, 5, 50), gallery_size=12, n_predictions=40)
    assert capped["retrieval_top1"] == pytest.approx(1 / 12)
    assert capped["retrieval_top50"] == 1.0
    assert capped["brain_retrieval_top5"] == pytest.approx(5 / 40)


def test_input_validation() -> None:
    x = _data(4, 3, 22)
    with pytest.raises(ValueError, match="2-D"):
        M.cosine_per_item(x[0], x[0])
    with pytest.raises(ValueError, match="paired"):
        M.cosine_per_item(x, x[:3])
    with pytest.raises(ValueError, match="dims"):
        M.retrieval_hits(x, x[:, :2], np.arange(4))
    with pytest.raises(ValueError, match="true_index"):
        M.retrieval_hits(x, x, np.array([0, 1, 2, 9]))
    with pytest.raises(ValueError, match="NaN"):
        M.two_way_per_item(np.full((4, 3), np.nan), x)
    with pytest.raises(ValueError, match="ks"):
        M.retrieval_hits(x, x, np.arange(4), ks=(0,))
    with pytest.raises(ValueError, match="pool_size"):
        M.retrieval_hits(x, x, np.arange(4), pool_size=0)
