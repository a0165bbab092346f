"""GroupedRidgeCV: scikit-learn's estimator contract, and the registry ridge's answers."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fmri2img.models.registry import decoders
from fmri2img.models.ridge.estimator import GroupedRidgeCV

NUMPY64 = {"backend": "numpy", "dtype": "float64"}


@parametrize_with_checks([GroupedRidgeCV(**NUMPY64)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def _problem(n_groups: int, reps: int, p: int, k: int, seed: int = 0):
    """Rows that repeat each stimulus ``reps`` times with noise, as in fMRI trials."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((p, k))
    stim = rng.standard_normal((n_groups, p))
    groups = np.repeat(np.arange(n_groups), reps)
    X = stim[groups] + 0.5 * rng.standard_normal((groups.size, p))
    Y = stim[groups] @ W + 2.0 * rng.standard_normal((groups.size, k))
    X_test = rng.standard_normal((7, p))
    order = rng.permutation(groups.size)  # a stimulus's rows need not be adjacent
    return X[order], Y[order], groups[order], X_test


@pytest.mark.parametrize("p, options", [
    (40, {**NUMPY64, "alpha_per_target": True}),  # n < p: dual form
    (40, {**NUMPY64, "alpha_per_target": False, "factorization": "eigh"}),
    (8, {**NUMPY64, "n_folds": 3, "scoring": "neg_mse"}),  # n >= p: primal form
    (8, {**NUMPY64, "fit_intercept": False, "seed": 3}),
])
def test_same_as_registry_ridge(p, options):
    X, Y, groups, X_test = _problem(n_groups=10, reps=3, p=p, k=4)
    dec = decoders.build("ridge", p, Y.shape[1], options).fit(X, Y, groups=groups)
    est = GroupedRidgeCV(**options).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(est.alpha_, dec.alpha_)
    np.testing.assert_array_equal(est.coef_, dec.coef_.T)
    np.testing.assert_array_equal(est.intercept_, dec.intercept_)
    np.testing.assert_array_equal(est.cv_scores_, dec.cv_scores_)
    pred = est.predict(X_test)
    assert pred.dtype == np.float64
    np.testing.assert_array_equal(pred.astype(np.float32), dec.predict(X_test))
    np.testing.assert_allclose(pred, dec.predict(X_test), rtol=1e-6, atol=1e-6)
    assert est.fit_info_["solver"] == ("dual" if p > X.shape[0] else "primal")


def test_groups_change_the_folds():
    X, Y, groups, _ = _problem(n_groups=10, reps=3, p=8, k=4)
    grouped = GroupedRidgeCV(**NUMPY64).fit(X, Y, groups=groups)
    rows = GroupedRidgeCV(**NUMPY64).fit(X, Y)
    # Repetitions in other folds make every alpha look better: the scores must differ.
    assert not np.allclose(grouped.cv_scores_, rows.cv_scores_)


def test_default_float32_torch_predicts_float64():
    X, Y, groups, X_test = _problem(n_groups=10, reps=2, p=8, k=3)
    est = GroupedRidgeCV().fit(X, Y, groups=groups)
    dec = decoders.build("ridge", 8, 3).fit(X, Y, groups=groups)
    assert est.coef_.dtype == np.float32
    pred = est.predict(X_test)
    assert pred.dtype == np.float64
    np.testing.assert_array_equal(est.alpha_, dec.alpha_)
    np.testing.assert_array_equal(pred.astype(np.float32), dec.predict(X_test))


def test_one_dimensional_y():
    X, Y, groups, X_test = _problem(n_groups=10, reps=3, p=8, k=1)
    est = GroupedRidgeCV(**NUMPY64).fit(X, Y[:, 0], groups=groups)
    assert est.coef_.shape == (8,)
    assert isinstance(est.intercept_, float) and isinstance(est.alpha_, float)
    assert est.cv_scores_.shape == (10,)
    pred = est.predict(X_test)
    assert pred.shape == (7,)
    two_d = GroupedRidgeCV(**NUMPY64).fit(X, Y, groups=groups)
    np.testing.assert_allclose(pred, two_d.predict(X_test)[:, 0], rtol=1e-12)


def test_in_pipeline_with_groups():
    X, Y, groups, X_test = _problem(n_groups=12, reps=3, p=8, k=3)
    pipe = make_pipeline(StandardScaler(), GroupedRidgeCV(**NUMPY64))
    pipe.fit(X, Y, groupedridgecv__groups=groups)
    Xs = StandardScaler().fit(X).transform
    alone = GroupedRidgeCV(**NUMPY64).fit(Xs(X), Y, groups=groups)
    np.testing.assert_allclose(pipe.predict(X_test), alone.predict(Xs(X_test)), rtol=1e-12)
    assert pipe.score(X, Y) > 0.3


def test_grid_search():
    X, Y, groups, _ = _problem(n_groups=12, reps=3, p=8, k=3)
    search = GridSearchCV(GroupedRidgeCV(**NUMPY64),
                          {"n_folds": [2, 3], "alpha_per_target": [True, False]},
                          cv=GroupKFold(n_splits=3))
    search.fit(X, Y, groups=groups)
    assert set(search.best_params_) == {"n_folds", "alpha_per_target"}
    assert search.best_estimator_.coef_.shape == (3, 8)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_grid_search_routes_groups_to_the_inner_cv():
    X, Y, groups, _ = _problem(n_groups=12, reps=3, p=8, k=3)
    with sklearn.config_context(enable_metadata_routing=True):
        est = GroupedRidgeCV(**NUMPY64).set_fit_request(groups=True)
        search = GridSearchCV(est, {"n_folds": [2, 3]}, cv=GroupKFold(n_splits=3))
        search.fit(X, Y, groups=groups)
    refit = GroupedRidgeCV(**NUMPY64, **search.best_params_).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(search.best_estimator_.alpha_, refit.alpha_)
    np.testing.assert_array_equal(search.best_estimator_.coef_, refit.coef_)


def test_small_data_and_bad_parameters():
    X, Y, groups, _ = _problem(n_groups=3, reps=2, p=4, k=2)
    est = GroupedRidgeCV(**NUMPY64).fit(X, Y, groups=groups)  # 5 folds asked, 3 groups
    assert est.n_folds_ == 3
    with pytest.raises(ValueError, match="at least 2 groups"):
        GroupedRidgeCV(**NUMPY64).fit(X, Y, groups=np.zeros(len(X)))
    with pytest.raises(ValueError, match="groups must have shape"):
        GroupedRidgeCV(**NUMPY64).fit(X, Y, groups=groups[:-1])
    for bad in ({"alphas": [1.0, -1.0]}, {"n_folds": 1}, {"solver": "qr"},
                {"backend": "numpy", "device": "cuda"}, {"alphas": ["x"]}):
        with pytest.raises(ValueError, match="invalid parameters for GroupedRidgeCV"):
            GroupedRidgeCV(**{**NUMPY64, **bad}).fit(X, Y)
    assert GroupedRidgeCV(alphas=10.0, **NUMPY64).fit(X, Y).alpha_.tolist() == [10.0, 10.0]
