"""Preprocessor against scikit-learn's StandardScaler and PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models.preprocess import Preprocessor


def _low_rank(n: int = 120, p: int = 80, rank: int = 10, seed: int = 0) -> np.ndarray:
    """Data with a decaying spectrum, offsets and unequal voxel scales, like betas."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n, rank)) * np.geomspace(10, 1, rank)
    X = U @ rng.standard_normal((rank, p)) + 0.1 * rng.standard_normal((n, p))
    return X * rng.uniform(0.5, 5, p) + rng.uniform(-100, 100, p)


def _match_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    """Columns of ``a`` equal columns of ``b`` after flipping signs."""
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a * signs, b, atol=atol)


def test_zscore_matches_standard_scaler() -> None:
    X = _low_rank()
    pre = Preprocessor(zscore=True, pca_components=None).fit(X)
    ref = StandardScaler().fit(X)
    np.testing.assert_allclose(pre.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(pre.scale_, ref.scale_, rtol=1e-10)
    out = pre.transform(X)
    assert out.dtype == np.float32 and out.shape == X.shape
    np.testing.assert_allclose(out, ref.transform(X), atol=1e-5)


def test_exact_pca_matches_sklearn() -> None:
    X = _low_rank()
    k = 12
    pre = Preprocessor(pca_components=k, svd_solver="full").fit(X)
    Z = StandardScaler().fit_transform(X)
    ref = PCA(n_components=k, svd_solver="full").fit(Z)
    assert pre.components_.shape == (k, X.shape[1])
    _match_up_to_sign(pre.components_.T, ref.components_.T, atol=1e-8)
    np.testing.assert_allclose(pre.explained_variance_, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(pre.explained_variance_ratio_, ref.explained_variance_ratio_,
                               rtol=1e-8)
    X_new = _low_rank(seed=1)  # transform of unseen rows uses the training statistics
    _match_up_to_sign(pre.transform(X_new), ref.transform(StandardScaler().fit(X)
                                                          .transform(X_new)), atol=1e-3)


def test_randomized_pca_finds_leading_subspace() -> None:
    X = _low_rank(n=300, p=200, rank=8).astype(np.float32)
    k = 8
    pre = Preprocessor(pca_components=k, svd_solver="randomized", seed=3).fit(X)
    ref = PCA(n_components=k, svd_solver="full").fit(StandardScaler().fit_transform(X))
    # principal angles between the subspaces: all cosines ~ 1
    cosines = np.linalg.svd(pre.components_ @ ref.components_.T, compute_uv=False)
    assert cosines.min() > 0.999
    np.testing.assert_allclose(pre.explained_variance_, ref.explained_variance_, rtol=1e-3)
    # and same seed, same answer
    again = Preprocessor(pca_components=k, svd_solver="randomized", seed=3).fit(X)
    np.testing.assert_array_equal(again.components_, pre.components_)


def test_components_capped_and_constant_voxels_safe() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 40))
    X[:, 3] = 7.0  # a constant voxel
    X[:, 5] = 0.0
    pre = Preprocessor(pca_components=512).fit(X)
    assert pre.n_components_ == 15 and pre.components_.shape == (15, 40)
    assert pre.scale_[3] == 1.0 and pre.scale_[5] == 1.0
    out = pre.transform(X)
    assert out.shape == (15, 15) and np.isfinite(out).all()
    zs = Preprocessor(pca_components=None).fit(X).transform(X)
    assert np.all(zs[:, 3] == 0) and np.all(zs[:, 5] == 0)


def test_without_zscore_pca_only_centres() -> None:
    X = _low_rank()
    pre = Preprocessor(zscore=False, pca_components=5, svd_solver="full").fit(X)
    ref = PCA(n_components=5, svd_solver="full").fit(X)
    np.testing.assert_array_equal(pre.scale_, 1.0)
    _match_up_to_sign(pre.transform(X), ref.transform(X), atol=1e-3)
    ident = Preprocessor(zscore=False, pca_components=None).fit(X)
    np.testing.assert_allclose(ident.transform(X), X.astype(np.float32))


def test_state_round_trip(tmp_path: Path) -> None:
    X = _low_rank()
    pre = Preprocessor(pca_components=6, seed=2).fit(X[:100])
    arrays, meta = pre.state()
    save_checkpoint(tmp_path / "pre.pt", arrays, meta)
    back = Preprocessor.from_state(*load_checkpoint(tmp_path / "pre.pt"))
    np.testing.assert_array_equal(back.transform(X[100:]), pre.transform(X[100:]))
    assert back.n_components_ == 6 and repr(back) == repr(pre)


def test_rejects_bad_input() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Preprocessor().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Preprocessor().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    pre = Preprocessor(pca_components=2).fit(np.random.default_rng(0).standard_normal((5, 4)))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        pre.transform(np.zeros((3, 5)))
