"""Every exact route of the ridge solver, targets in blocks, and weights in a file: the same
weights as scikit-learn's ``Ridge`` at the chosen alphas and the same CV scores as an
explicit grouped loop, whatever the route and the block size (including one that does
not divide the number of targets); a memory-mapped weight file that predicts what the
in-memory weights predict, survives a checkpoint and is removed when no longer used."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest
from test_ridge import ALPHAS, problem, sklearn_loop_scores, sklearn_refit

from fmri2img.data.splits import grouped_folds
from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models.base import model_entries
from fmri2img.models.registry import decoders
from fmri2img.models.ridge import cv as ridge_cv_module
from fmri2img.models.ridge import primal as ridge_primal
from fmri2img.models.ridge import targets as ridge_targets
from fmri2img.models.ridge.cv import block_plan, ridge_cv
from fmri2img.models.ridge.linalg import choose_primal_factorization, primal_costs
from fmri2img.models.ridge.targets import FileCoefStore, file_rows, target_blocks

ROUTES = [  # (solver, factorization, n, p)
    ("primal", "cholesky", 90, 24), ("primal", "eigh", 90, 24), ("primal", "eigh_full", 90, 24),
    ("dual", "eigh", 45, 80), ("dual", "cholesky", 45, 80),
]
K = 7


def fit(X, Y, groups, **options):
    cfg = dict(alphas=ALPHAS, dtype="float64", backend="numpy", coef_storage="memory")
    cfg.update(options)
    return decoders.build("ridge", X.shape[1], Y.shape[1], cfg).fit(X, Y, groups=groups)


@pytest.mark.parametrize("block", [None, 1, 3, K])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(("solver", "factorization", "n", "p"), ROUTES)
def test_every_route_and_block_size_equals_sklearn(solver, factorization, n, p, fit_intercept,
                                                    block):
    X, Y, groups = problem(n, p, K, seed=n + p + K)
    model = fit(X, Y, groups, solver=solver, factorization=factorization,
                fit_intercept=fit_intercept, target_block=block)
    info = model.fit_info_
    assert info["solver"] == solver
    assert info["n_target_blocks"] == len(target_blocks(K, block or K))
    if solver == "primal":
        assert info["primal_route"] == factorization
    else:
        assert info["factorization"] == factorization
    # the alphas an explicit grouped loop of sklearn fits picks, with its CV scores
    folds = grouped_folds(groups, n, 5, seed=0)
    scores = sklearn_loop_scores(X, Y, folds, ALPHAS, fit_intercept=fit_intercept)
    np.testing.assert_allclose(model.cv_scores_, scores, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(model.alpha_, np.asarray(ALPHAS)[scores.argmax(axis=0)])
    assert len(np.unique(model.alpha_)) > 1  # targets disagree: the refit groups them
    coef, intercept = sklearn_refit(X, Y, model.alpha_, fit_intercept)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-6, atol=1e-9 * np.abs(coef).max())
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("solver", "factorization", "n", "p"), ROUTES)
def test_one_shared_alpha_across_blocks(solver, factorization, n, p, backend):
    X, Y, groups = problem(n, p, K, seed=4)
    opts = dict(solver=solver, factorization=factorization, alpha_per_target=False,
                backend=backend)
    whole = fit(X, Y, groups, **opts)
    blocks = fit(X, Y, groups, target_block=2, **opts)
    assert len(np.unique(blocks.alpha_)) == 1
    np.testing.assert_array_equal(blocks.alpha_, whole.alpha_)
    np.testing.assert_allclose(blocks.cv_scores_, whole.cv_scores_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(blocks.coef_, whole.coef_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(blocks.intercept_, whole.intercept_, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("solver", "factorization", "n", "p"), [ROUTES[0], ROUTES[3]])
def test_weights_in_a_file_predict_what_memory_predicts(tmp_path, solver, factorization, n,
                                                        p):
    X, Y, groups = problem(n, p, K, seed=8)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    opts = dict(solver=solver, factorization=factorization, dtype="float32")
    mem = fit(X32, Y32, groups, **opts)
    filed = fit(X32, Y32, groups, target_block=3, coef_storage="file",
                coef_dir=str(tmp_path / "w"), **opts)
    assert filed.fit_info_["coef_storage"] == "file"
    rows = file_rows(filed.coef_)
    assert rows is not None and not filed.coef_.flags.writeable
    assert filed.coef_.shape == (p, K) and rows.shape == (K, p)
    np.testing.assert_allclose(filed.coef_, mem.coef_, rtol=1e-5, atol=1e-6)
    X_new = np.random.default_rng(3).standard_normal((9, p)).astype(np.float32) + 2
    np.testing.assert_allclose(filed.predict(X_new), mem.predict(X_new), rtol=1e-5, atol=1e-5)

    # a checkpoint keeps the weights in a side file and maps them back
    ckpt = tmp_path / "ckpt" / "decoder.pt"
    tensors, meta = model_entries(filed)
    save_checkpoint(ckpt, tensors, meta)
    side = ckpt.with_name("decoder.pt.model-coef.npy")
    assert side.exists() and ckpt.stat().st_size < side.stat().st_size + 10_000
    arrays, meta = load_checkpoint(ckpt)
    back = decoders.from_entries(arrays, meta)
    assert file_rows(back.coef_) is not None
    np.testing.assert_array_equal(back.predict(X_new), filed.predict(X_new))

    # the fit's own file goes away with the model; the side file stays
    (tmp_file,) = list((tmp_path / "w").iterdir())
    del filed, rows, tensors
    gc.collect()
    assert not tmp_file.exists() and side.exists()

    del back, arrays
    gc.collect()
    side.unlink()
    with pytest.raises(DataError, match="side file"):
        load_checkpoint(ckpt)


def test_file_store_writes_scattered_targets(tmp_path):
    store = FileCoefStore(5, 9, np.float32, tmp_path)
    coef = np.arange(45, dtype=np.float32).reshape(5, 9)
    store.write(np.array([8, 0, 1, 2, 5]), coef[:, [8, 0, 1, 2, 5]])
    store.write(slice(3, 5), coef[:, 3:5])
    store.write(np.array([7, 6]), coef[:, [7, 6]])
    out = store.result()
    np.testing.assert_array_equal(out, coef)
    assert store.finite
    path = Path(file_rows(out).filename)
    del out
    gc.collect()
    assert not path.exists()


def test_blocks_and_storage_follow_the_available_memory(monkeypatch):
    monkeypatch.setattr(ridge_targets, "available_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(ridge_cv_module, "available_memory", lambda: 8 * 2**30)
    # 512 targets from 15,724 voxels: in memory, one block
    assert block_plan(9000, 15724, 512, "dual", 4, None, "auto") == (512, "memory")
    # 257 x 768 targets: 12.4 GB of weights go to a file, in blocks
    block, storage = block_plan(9000, 15724, 257 * 768, "dual", 4, None, "auto")
    assert storage == "file" and 1000 < block < 257 * 768
    assert block * (4 * 9000 + 3 * 15724) * 4 <= 0.125 * 8 * 2**30
    assert block_plan(9000, 15724, 257 * 768, "dual", 4, 5000, "memory") == (5000, "memory")


def test_auto_storage_writes_a_file_when_weights_would_not_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(ridge_cv_module, "available_memory", lambda: 4000)
    X, Y, groups = problem(40, 30, K, seed=1)
    folds = grouped_folds(groups, 40, 4, seed=0)
    res = ridge_cv(X, Y, folds, np.asarray(ALPHAS), backend="numpy", dtype="float64",
                   coef_storage="auto", coef_dir=tmp_path, target_block=2)
    assert res.info["coef_storage"] == "file" and file_rows(res.coef) is not None
    assert os.path.dirname(file_rows(res.coef).filename) == str(tmp_path)


def test_primal_cost_model_routes():
    five = lambda n: np.full(5, n // 5)  # noqa: E731
    # NSD single trials: one eigendecomposition with the leave-block-out identity or a
    # Cholesky per fold and alpha, never six eigendecompositions
    costs = primal_costs(27000, 15724, 512, five(27000), 10)
    assert min(costs, key=costs.get) != "eigh"
    assert costs["eigh"] > 1.5 * min(costs.values())
    # rows far beyond features: the identity's fold-sized systems are the dearest; with
    # many alphas one small eigendecomposition per fold beats a Cholesky per alpha
    costs = primal_costs(200_000, 400, 64, five(200_000), 10)
    assert costs["eigh_full"] > 10 * min(costs.values())
    assert choose_primal_factorization(200_000, 2000, 64, five(200_000), 200) == "eigh"
    # many alphas favour factorisations shared by all alphas
    assert choose_primal_factorization(27000, 15724, 512, five(27000), 200) != "cholesky"


@pytest.mark.parametrize("block", [None, 3])
def test_primal_refit_by_one_eigendecomposition(monkeypatch, block):
    """The refit's other route (one eigendecomposition of the Gram instead of a Cholesky
    factor per distinct alpha) gives the same weights."""
    X, Y, groups = problem(90, 24, K, seed=12)
    chol = fit(X, Y, groups, solver="primal", factorization="cholesky", target_block=block)
    monkeypatch.setattr(ridge_primal, "refit_factorization", lambda *a: "eigh")
    eigh = fit(X, Y, groups, solver="primal", factorization="cholesky", target_block=block)
    assert "eigh" in eigh.fit_info_["factorization"]
    np.testing.assert_array_equal(eigh.alpha_, chol.alpha_)
    np.testing.assert_allclose(eigh.coef_, chol.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(eigh.intercept_, chol.intercept_, rtol=1e-7, atol=1e-10)
