"""Topological signatures (analysis 4): persistence against a second library, the
diagram distance against gudhi's, the cross-validated geometry and kNN preservation
against direct computations, and the analysis on planted, null and changed data."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis import topology as topo
from fmri2img.experiments.analyses.runner import run_analyze

FAST = {"n_permutations": 200, "n_bootstrap": 200}
OPTIONS = {"topology": {"ph_permutations": 50}}


def _cloud(seed: int = 0) -> np.ndarray:
    """A fixture cloud: a noisy circle (one long H1 bar) and clusters, in 16 dims."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, 60)
    circle = np.c_[np.cos(angle), np.sin(angle)] * 3
    blobs = rng.standard_normal((40, 2)) * 0.3 + rng.choice([-6, 6], (40, 1))
    x = np.zeros((100, 16))
    x[:, :2] = np.r_[circle, blobs]
    return x + 0.05 * rng.standard_normal(x.shape)


def test_diagrams_identical_across_libraries() -> None:
    """H0 and H1 of one fixture cloud agree between every installed library."""
    found = topo.available_backends()
    if len(found) < 2:
        pytest.skip(f"needs two of {topo.BACKENDS}, found {found}")
    x = _cloud()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = topo.persistence(x, backend=found[0])
        assert len(ref[1]) >= 1 and (ref[1][:, 1] - ref[1][:, 0]).max() > 1.0  # the circle
        for other in found[1:]:
            got = topo.persistence(x, backend=other)
            for k in range(2):
                np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-9)


def test_missing_backend_names_the_package(monkeypatch) -> None:
    import builtins
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == "ripser":  # the backend probe's import
            raise ImportError("no ripser")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(topo.importlib, "import_module", lambda n: fake(n))
    with pytest.raises(ImportError, match="pip install ripser"):
        topo.persistence(_cloud(), backend="ripser")


def _diagram(rng: np.random.Generator, n: int) -> np.ndarray:
    b = rng.uniform(0, 1, n)
    return np.c_[b, b + rng.exponential(0.5, n)]


def test_wasserstein_and_bottleneck_match_gudhi() -> None:
    gudhi = pytest.importorskip("gudhi")
    from gudhi.hera import wasserstein_distance
    rng = np.random.default_rng(0)
    for m, n in ((0, 5), (7, 7), (12, 4), (30, 25)):
        a, b = _diagram(rng, m), _diagram(rng, n)
        for q in (1.0, 2.0):
            assert topo.wasserstein(a, b, q) == pytest.approx(
                wasserstein_distance(a, b, order=q, internal_p=np.inf), rel=1e-9, abs=1e-12)
        assert topo.wasserstein(a, b, np.inf) == pytest.approx(
            gudhi.bottleneck_distance(a, b), rel=1e-9, abs=1e-12)
    # essential classes: matched by birth, a count mismatch is infinitely far
    a = np.r_[_diagram(rng, 5), [[0.0, np.inf]]]
    b = np.r_[_diagram(rng, 6), [[0.25, np.inf]]]
    assert topo.wasserstein(a, b) == pytest.approx(
        topo.wasserstein(a[:-1], b[:-1]) + 0.25)
    assert topo.wasserstein(a, b[:-1]) == np.inf


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 8), n=st.integers(0, 8), k=st.integers(0, 8),
       seed=st.integers(0, 10_000))
def test_wasserstein_is_a_metric(m: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b, c = _diagram(rng, m), _diagram(rng, n), _diagram(rng, k)
    assert topo.wasserstein(a, a) == pytest.approx(0, abs=1e-12)
    assert topo.wasserstein(a, b) == pytest.approx(topo.wasserstein(b, a))
    assert topo.wasserstein(a, c) <= topo.wasserstein(a, b) + topo.wasserstein(b, c) + 1e-9


def test_cv_geometry_and_mean_distance() -> None:
    """Cross-validated squared distances equal (a_i - a_j).(b_i - b_j), their mean the
    trace identity, and they are unbiased for the true means' squared distances."""
    rng = np.random.default_rng(3)
    T, V = 6, 9
    A, B = rng.standard_normal((T, V)), rng.standard_normal((T, V))
    X = np.vstack([A - A.mean(0), B - B.mean(0)])
    d2 = topo.cv_geometry(X @ X.T)
    for i, j in combinations(range(T), 2):
        assert d2[i, j] == pytest.approx((A[i] - A[j]) @ (B[i] - B[j]))
    msd = topo.mean_sq_distance(X @ X.T)
    assert msd == pytest.approx(2 / (T - 1) * np.sum(X[:T] * X[T:]))
    mu = rng.standard_normal((T, V))
    true = np.mean([np.sum((mu[i] - mu[j]) ** 2) for i, j in combinations(range(T), 2)])
    est = []
    for _ in range(2000):
        A, B = mu + rng.standard_normal((T, V)), mu + rng.standard_normal((T, V))
        X = np.vstack([A - A.mean(0), B - B.mean(0)])
        est.append(topo.mean_sq_distance(X @ X.T))
    assert np.mean(est) == pytest.approx(true, rel=0.03)


def test_knn_overlap_against_brute_force() -> None:
    rng = np.random.default_rng(4)
    T, k = 10, 3
    pa, pb = rng.standard_normal((T, 4)), rng.standard_normal((T, 4))
    da = ((pa[:, None] - pa[None]) ** 2).sum(-1)
    db = ((pb[:, None] - pb[None]) ** 2).sum(-1)
    want = np.mean([len(set(np.argsort(np.where(np.arange(T) == t, np.inf, da[t]))[:k])
                        & set(np.argsort(np.where(np.arange(T) == t, np.inf, db[t]))[:k]))
                    / k for t in range(T)])
    assert topo.knn_overlap(da, db, k) == pytest.approx(want)
    assert topo.knn_overlap(da, da, k) == 1.0
    obs, p, null = topo.knn_test(da, da, k, 200, rng)
    assert obs == 1.0 and p < 0.02
    assert null.mean() == pytest.approx(k / (T - 1), abs=0.05)
    # the null's relabelling equals permuting the matrix
    perm = rng.permutation(T)
    assert topo.knn_overlap(da, db[np.ix_(perm, perm)], k) == pytest.approx(
        topo.knn_overlap(da[np.ix_(np.argsort(perm), np.argsort(perm))], db, k))


def test_planted_imagery_geometry_is_contracted(planted_study, tmp_path) -> None:
    """Ground truth: ``imagery_sem_gain`` (0.6) and ``imagery_low_gain`` (0.15) attenuate
    the imagery signal: the contraction ratio is below 1, in every subject and
    significantly; kNN structure survives above chance."""
    torch.set_num_threads(1)
    cfg = planted_study.truth.info["config"]
    assert cfg["imagery_sem_gain"] < 1 and cfg["imagery_low_gain"] < 1
    res = run_analyze(planted_study.analyze_config(tmp_path, ["topology"],
                                                   options=OPTIONS, **FAST))["topology"]
    g = res["group"]
    assert g["effect"]["value"] < 1 and g["effect"]["ci"][1] < 1
    assert g["significant"] is True and g["n_below_one"] == len(planted_study.subjects)
    assert g["knn"]["overlap"] > g["knn"]["chance"]
    assert (tmp_path / "figures" / "topology.png").exists()


def test_null_reports_no_contraction(null_study, tmp_path) -> None:
    """Ground truth: ``null`` (imagery statistically identical to vision): ratio ~1, not
    significant, and the diagrams no further apart than under relabelling."""
    torch.set_num_threads(1)
    res = run_analyze(null_study.analyze_config(tmp_path, ["topology"],
                                                options=OPTIONS, **FAST))["topology"]
    g = res["group"]
    assert g["significant"] is False
    assert g["effect"]["ci"][0] < 1 < g["effect"]["ci"][1]
    assert g["diagram_distance"]["H1"]["p"] >= 0.05


def test_stronger_imagery_semantics_contract_less(planted_study, tmp_path) -> None:
    """Ground truth: ``imagery_sem_gain`` raised from 0.6 to 1.2 (imagery semantics as
    strong as vision's and more): the contraction ratio rises."""
    from analysis_fixture import build_study
    torch.set_num_threads(1)
    subjects = (1, 2)
    strong = build_study(tmp_path / "strong", subjects=subjects, imagery_sem_gain=1.2)
    assert strong.truth.info["config"]["imagery_sem_gain"] == 1.2
    base_cfg = planted_study.analyze_config(tmp_path / "a", ["topology"], options=OPTIONS,
                                            **FAST)
    base = run_analyze(base_cfg.model_copy(update={"subjects": list(subjects)}))
    changed = run_analyze(strong.analyze_config(tmp_path / "b", ["topology"],
                                                options=OPTIONS, **FAST))
    assert (changed["topology"]["group"]["effect"]["value"]
            > base["topology"]["group"]["effect"]["value"])
