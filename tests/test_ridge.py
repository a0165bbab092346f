"""The ``ridge`` decoder against scikit-learn: same weights at the chosen alpha, same alpha
as an explicit grouped-CV loop, folds that never split a stimulus, and the plumbing
(registry, state, bad input). Small synthetic problems only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics import r2_score

from fmri2img.data.splits import grouped_folds
from fmri2img.models.registry import decoders
from fmri2img.models.ridge import Ridge, RidgeConfig
from fmri2img.models.ridge import linalg as ridge_linalg
from fmri2img.models.ridge.backends import make_ops
from fmri2img.models.ridge.linalg import choose_factorization

ALPHAS = [1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4]


def problem(n: int, p: int, k: int, seed: int = 0, reps: int = 3):
    """Rows in groups of ``reps`` (a stimulus seen several times), an offset in X and Y so
    that the intercept matters, and targets of different signal-to-noise ratios so that
    they prefer different alphas."""
    rng = np.random.default_rng(seed)
    n_stim = -(-n // reps)
    stim = rng.standard_normal((n_stim, p))
    groups = np.repeat(np.arange(n_stim), reps)[:n]
    X = stim[groups] + 0.5 * rng.standard_normal((n, p)) + 2.0
    W = rng.standard_normal((p, k)) / np.sqrt(p) * np.logspace(-1, 1, k)
    Y = X @ W + rng.standard_normal((n, k)) + 3.0
    return X, Y, groups


def sklearn_loop_scores(X, Y, folds, alphas, fit_intercept=True, scoring="r2"):
    """Mean over folds of each fold's validation score, fitting sklearn Ridge per alpha."""
    n_folds = folds.max() + 1
    scores = np.zeros((len(alphas), Y.shape[1]))
    for a, alpha in enumerate(alphas):
        for v in range(n_folds):
            tr, va = folds != v, folds == v
            pred = SkRidge(alpha=alpha, fit_intercept=fit_intercept).fit(X[tr], Y[tr])
            pred = pred.predict(X[va])
            if scoring == "r2":
                scores[a] += r2_score(Y[va], pred, multioutput="raw_values")
            else:
                scores[a] -= ((Y[va] - pred) ** 2).mean(axis=0)
    return scores / n_folds


def sklearn_refit(X, Y, alpha_per_target, fit_intercept):
    """coef (p, k) and intercept (k,) of sklearn Ridge at each target's alpha."""
    coef = np.empty((X.shape[1], Y.shape[1]))
    intercept = np.empty(Y.shape[1])
    for alpha in np.unique(alpha_per_target):
        cols = np.flatnonzero(alpha_per_target == alpha)
        m = SkRidge(alpha=alpha, fit_intercept=fit_intercept).fit(X, Y[:, cols])
        coef[:, cols] = np.reshape(m.coef_, (len(cols), -1)).T
        intercept[cols] = np.reshape(m.intercept_, -1)
    return coef, intercept


VARIANTS = [  # (solver, factorization)
    ("primal", "auto"), ("dual", "eigh"), ("dual", "cholesky"), ("auto", "auto"),
]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("solver", "factorization"), VARIANTS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(("n", "p"), [(45, 80), (90, 24)])
def test_weights_equal_sklearn_at_chosen_alpha(n, p, fit_intercept, solver, factorization,
                                               backend):
    X, Y, groups = problem(n, p, 6, seed=n + p)
    model = decoders.build("ridge", p, 6, dict(
        alphas=ALPHAS, dtype="float64", backend=backend, solver=solver,
        factorization=factorization, fit_intercept=fit_intercept,
    )).fit(X, Y, groups=groups)
    expected_solver = solver if solver != "auto" else ("dual" if n < p else "primal")
    assert model.fit_info_["solver"] == expected_solver
    coef, intercept = sklearn_refit(X, Y, model.alpha_, fit_intercept)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-6, atol=1e-9 * np.abs(coef).max())
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-6, atol=1e-9)
    X_new = np.random.default_rng(1).standard_normal((7, p)) + 2.0
    expected = X_new @ coef + intercept
    pred = model.predict(X_new)
    assert pred.dtype == np.float32 and pred.shape == (7, 6)
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("scoring", ["r2", "neg_mse"])
@pytest.mark.parametrize("alpha_per_target", [True, False])
@pytest.mark.parametrize(("solver", "factorization", "backend"), [
    ("primal", "auto", "numpy"), ("dual", "eigh", "torch"), ("dual", "cholesky", "numpy"),
])
def test_cv_picks_the_alpha_of_an_explicit_grouped_loop(solver, factorization, backend,
                                                        alpha_per_target, scoring):
    n, p, k = (60, 90, 8) if solver == "dual" else (80, 20, 8)
    X, Y, _ = problem(n, p, k, seed=3)
    # uneven groups: sizes 1..4
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(n), rng.integers(1, 5, size=n))[:n]
    cfg = dict(alphas=ALPHAS, dtype="float64", backend=backend, solver=solver,
               factorization=factorization, alpha_per_target=alpha_per_target,
               scoring=scoring, n_folds=4, seed=11)
    model = decoders.build("ridge", p, k, cfg).fit(X, Y, groups=groups)

    folds = grouped_folds(groups, n, 4, seed=11)
    scores = sklearn_loop_scores(X, Y, folds, ALPHAS, scoring=scoring)
    np.testing.assert_allclose(model.cv_scores_, scores, rtol=1e-7, atol=1e-9)
    if alpha_per_target:
        expected = np.asarray(ALPHAS)[scores.argmax(axis=0)]
    else:
        expected = np.full(k, ALPHAS[int(scores.mean(axis=1).argmax())])
    np.testing.assert_array_equal(model.alpha_, expected)
    if alpha_per_target:  # the data are built so that targets disagree
        assert len(np.unique(model.alpha_)) > 1


def test_float32_close_to_float64():
    X, Y, groups = problem(120, 200, 10, seed=7)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    X_new = np.random.default_rng(2).standard_normal((20, 200)).astype(np.float32) + 2
    preds = {}
    for backend in ("numpy", "torch"):
        for dtype in ("float32", "float64"):
            m = decoders.build("ridge", 200, 10, dict(alphas=ALPHAS, dtype=dtype, backend=backend))
            m.fit(X, Y, groups=groups)
            assert m.coef_.dtype == np.dtype(dtype)
            preds[backend, dtype] = (m.predict(X_new), m.alpha_, m.cv_scores_)
    ref_pred, ref_alpha, ref_cv = preds["numpy", "float64"]
    scale = np.abs(ref_pred).max()
    for key, (pred, alpha, cv) in preds.items():
        np.testing.assert_array_equal(alpha, ref_alpha, err_msg=str(key))
        np.testing.assert_allclose(cv, ref_cv, atol=1e-4, err_msg=str(key))
        np.testing.assert_allclose(pred, ref_pred, atol=1e-4 * scale, err_msg=str(key))


def test_cholesky_failure_falls_back_to_the_eigendecomposition(monkeypatch):
    X, Y, groups = problem(50, 70, 4, seed=9)
    cfg = dict(alphas=ALPHAS, dtype="float64", backend="numpy", solver="dual")
    eigh = decoders.build("ridge", 70, 4, dict(cfg, factorization="eigh")).fit(X, Y, groups=groups)
    real_solve = ridge_linalg.CholeskyFactor.solve

    def solve(self, alpha):  # as if K + alpha I were not numerically positive definite
        return None if alpha < 10 else real_solve(self, alpha)

    monkeypatch.setattr(ridge_linalg.CholeskyFactor, "solve", solve)
    chol = decoders.build("ridge", 70, 4, dict(cfg, factorization="cholesky"))
    chol.fit(X, Y, groups=groups)
    assert chol.fit_info_["factorization"] == "cholesky+eigh"
    np.testing.assert_allclose(chol.cv_scores_, eigh.cv_scores_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(chol.alpha_, eigh.alpha_)
    np.testing.assert_allclose(chol.coef_, eigh.coef_, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cholesky_reports_indefinite_matrices(backend):
    ops = make_ops(backend, "float64")
    bad = ops.asarray(np.array([[1.0, 2.0], [2.0, 1.0]]))
    assert ops.cholesky(bad) is None
    good = np.array([[4.0, 2.0], [2.0, 3.0]])
    x = ops.numpy(ops.spd_solve(ops.asarray(good), ops.asarray(np.eye(2))))
    np.testing.assert_allclose(x, np.linalg.inv(good))


def test_auto_factorization_cost_model():
    sizes = np.full(5, 1800)
    assert choose_factorization(9000, 512, sizes, 10) == "cholesky"
    assert choose_factorization(9000, 512, sizes, 40) == "eigh"


def test_registry_and_config_validation():
    assert decoders.get("ridge") is Ridge
    model = decoders.build("ridge", 30, 4, {"alphas": [1.0, 10.0], "alpha_per_target": False,
                                   "backend": "numpy"})
    assert isinstance(model, Ridge) and isinstance(model.config, RidgeConfig)
    assert (model.n_inputs, model.n_outputs) == (30, 4)
    assert not hasattr(model, "coef_")  # the constructor stores its arguments only
    for bad in ({"alpha": 1.0}, {"alphas": [1.0, -1.0]}, {"alphas": []},
                {"n_folds": 1}, {"backend": "jax"}, {"device": "gpu0"},
                {"backend": "numpy", "device": "cuda"}):
        with pytest.raises(ValueError, match="invalid options for decoder 'ridge'"):
            decoders.build("ridge", 30, 4, bad)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_state_round_trip(backend):
    X, Y, groups = problem(40, 60, 5, seed=4)
    model = decoders.build("ridge", 60, 5, {"backend": backend}).fit(X, Y, groups=groups)
    arrays, meta = model.state()
    assert set(arrays) == {"coef", "intercept", "alpha", "cv_scores"}
    assert arrays["cv_scores"].shape == (10, 5)
    json.dumps(meta)
    restored = Ridge.from_state(60, 5, model.config, {k: v.copy() for k, v in arrays.items()},
                                json.loads(json.dumps(meta)))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    np.testing.assert_array_equal(restored.alpha_, model.alpha_)
    with pytest.raises(ValueError, match="coef has shape"):
        Ridge.from_state(61, 5, model.config, arrays, meta)


def test_bad_input_is_rejected_clearly():
    X, Y, groups = problem(40, 60, 3, seed=1)
    model = decoders.build("ridge", 60, 3, {"backend": "numpy"})
    with pytest.raises(RuntimeError, match="before fit"):
        model.predict(X)
    with pytest.raises(ValueError, match=r"inputs of shape \(n, 60\)"):
        model.fit(X[:, :59], Y)
    with pytest.raises(ValueError, match="targets of shape"):
        model.fit(X, Y[:30])
    X_nan = X.copy()
    X_nan[3, 7] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        model.fit(X_nan, Y)
    Y_inf = Y.copy()
    Y_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="Y contains NaN"):
        model.fit(X, Y_inf)
    with pytest.raises(ValueError, match="groups must have shape"):
        model.fit(X, Y, groups=groups[:-1])
    with pytest.raises(ValueError, match="at least 5 groups"):
        model.fit(X, Y, groups=np.arange(40) % 3)
    model.fit(X, Y, groups=groups)
    with pytest.raises(ValueError, match=r"inputs of shape \(n, 60\)"):
        model.predict(X[:, :10])


def test_cuda_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, Y, groups = problem(300, 500, 16, seed=2)
    cfg = dict(alphas=ALPHAS, dtype="float64", backend="torch")
    cpu = decoders.build("ridge", 500, 16, cfg).fit(X, Y, groups=groups)
    for fac in ("eigh", "cholesky"):
        gpu = decoders.build("ridge", 500, 16, dict(cfg, device="cuda", factorization=fac))
        gpu.fit(X, Y, groups=groups)
        np.testing.assert_array_equal(gpu.alpha_, cpu.alpha_)
        np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-6, atol=1e-9)


def test_no_groups_means_one_group_per_row():
    X, Y, _ = problem(40, 60, 3, seed=6)
    cfg = {"backend": "numpy", "alphas": ALPHAS}
    a = decoders.build("ridge", 60, 3, cfg).fit(X, Y, X_val=X[:5], Y_val=Y[:5])  # X_val: unused
    b = decoders.build("ridge", 60, 3, cfg).fit(X, Y, groups=np.arange(40) * 7)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
