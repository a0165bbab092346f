"""Voxel preprocessing for the decoders: per-voxel z-score, then PCA.

Fit on training rows only: the mean, scale and components are statistics of the data and
would leak test information otherwise. PCA is an SVD of the standardised training matrix;
a randomised SVD (Halko, Martinsson & Tropp 2011) is used when only a few components of a
large matrix are wanted, which is the usual fMRI case (thousands of trials, tens of
thousands of voxels, a few hundred components).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

SvdSolver = Literal["auto", "full", "randomized"]


class Preprocessor:
    """``zscore`` each input value, then project on the top ``pca_components`` principal axes.

    Inputs are ``(n, *input_shape)``: voxels ``(n, n_voxels)``, or shaped samples such as
    EEG epochs ``(n, channels, times)``, whose values are standardised one by one (each
    channel at each time point) over the training rows. Fitted attributes: ``input_shape_``,
    ``mean_`` and ``scale_`` (n_features,) with ``n_features_in_ = prod(input_shape_)``,
    ``components_`` (n_components, n_features), ``explained_variance_`` (n_components,),
    ``explained_variance_ratio_``. ``transform`` returns float32
    ``((X - mean_) / scale_) @ components_.T`` of shape ``(n, n_components)``; with
    ``pca_components=None`` no projection is made and the input shape is kept
    (:attr:`output_shape_`); with ``zscore=False`` the scale is 1 (PCA still centres).
    """

    def __init__(self, zscore: bool = True, pca_components: int | None = 512, seed: int = 0,
                 svd_solver: SvdSolver = "auto", n_iter: int = 6):
        if pca_components is not None and pca_components < 1:
            raise ValueError(f"pca_components must be positive or None, got {pca_components}")
        if svd_solver not in ("auto", "full", "randomized"):
            raise ValueError(f"svd_solver must be auto, full or randomized, got {svd_solver!r}")
        self.zscore = zscore
        self.pca_components = pca_components
        self.seed = seed
        self.svd_solver = svd_solver
        self.n_iter = n_iter

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X: np.ndarray) -> Preprocessor:
        X = np.asarray(X)
        if X.ndim < 2 or X.shape[0] < 1:
            raise ValueError(f"expected a non-empty (n_samples, ...) array of samples, got "
                             f"{X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X holds NaN or infinite values")
        shape = tuple(int(s) for s in X.shape[1:])
        X = X.reshape(X.shape[0], -1)  # a view: one row of values per sample
        n, p = X.shape
        # moments in float64 whatever the input (float32 sums over thousands of rows lose
        # digits that the z-score then amplifies), a block of rows at a time so that no
        # float64 copy of the whole matrix is made
        mean = X.mean(axis=0, dtype=np.float64)
        var = np.zeros(p)
        for start, stop in _row_blocks(n, p):
            var += np.sum((X[start:stop] - mean) ** 2, axis=0)
        var /= n
        if self.zscore:
            scale = np.sqrt(var)
            # constant voxels (and ones constant up to rounding) are left centred at 0
            # instead of divided by ~0
            tiny = scale <= 1e3 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
            scale[tiny] = 1.0
        else:
            scale = np.ones(p)
        if self.pca_components is None and not self.zscore:
            mean = np.zeros(p)  # nothing to centre for: the transform is the identity
        self.input_shape_ = shape
        self.mean_ = mean
        self.scale_ = scale
        self.n_features_in_ = p
        self.n_samples_fit_ = n

        if self.pca_components is None:
            self.components_ = None
            self.explained_variance_ = None
            self.explained_variance_ratio_ = None
            self.n_components_ = p
            return self

        k = min(self.pca_components, n, p)
        if k < self.pca_components:
            logger.info("PCA: %d components asked, %d possible with %d rows x %d columns",
                        self.pca_components, k, n, p)
        work = np.float64 if X.dtype == np.float64 else np.float32
        Z = np.empty((n, p), dtype=work)
        for start, stop in _row_blocks(n, p):
            Z[start:stop] = (X[start:stop] - mean) / scale
        solver = self.svd_solver
        if solver == "auto":
            # exact SVD is cheap for small matrices and needed when most components are kept
            solver = "full" if min(n, p) <= 1000 or k > 0.5 * min(n, p) else "randomized"
        if solver == "full":
            _, s, vt = np.linalg.svd(Z, full_matrices=False)
            s, vt = s[:k], vt[:k]
        else:
            s, vt = _randomized_svd(Z, k, self.n_iter, self.seed)
        vt = _fix_signs(vt)
        # total variance of Z from the moments (sum of column variances, ddof=1 like PCA)
        total_var = float(np.sum(var / scale**2)) * n / max(n - 1, 1)
        self.components_ = vt.astype(np.float64)
        self.explained_variance_ = s.astype(np.float64) ** 2 / max(n - 1, 1)
        self.explained_variance_ratio_ = (self.explained_variance_ / total_var
                                          if total_var > 0 else np.zeros(k))
        self.n_components_ = k
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X)
        if X.shape[1:] != self.input_shape_:
            raise ValueError(f"expected inputs of shape (n, "
                             f"{', '.join(map(str, self.input_shape_))}), got {X.shape}")
        X = X.reshape(X.shape[0], -1)
        # centring in float64 (large offsets cancel exactly), projection in float32, a block
        # of rows at a time so that memory stays at the size of the float32 output
        n = X.shape[0]
        k = self.n_features_in_ if self.components_ is None else self.n_components_
        out = np.empty((n, k), dtype=np.float32)
        comps = None if self.components_ is None else self.components_.T.astype(np.float32)
        for start, stop in _row_blocks(n, self.n_features_in_):
            z = ((X[start:stop] - self.mean_) / self.scale_).astype(np.float32)
            out[start:stop] = z if comps is None else z @ comps
        return out.reshape(n, *self.output_shape_)

    @property
    def output_shape_(self) -> tuple[int, ...]:
        """Shape of one transformed sample: ``(n_components_,)`` after PCA, else the input's."""
        self._check_fitted()
        return self.input_shape_ if self.components_ is None else (self.n_components_,)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        arrays = {"mean": self.mean_, "scale": self.scale_}
        if self.components_ is not None:
            arrays["components"] = self.components_
            arrays["explained_variance"] = self.explained_variance_
            arrays["explained_variance_ratio"] = self.explained_variance_ratio_
        meta = {"zscore": self.zscore, "pca_components": self.pca_components,
                "seed": self.seed, "svd_solver": self.svd_solver, "n_iter": self.n_iter,
                "input_shape": list(self.input_shape_),
                "n_features_in": self.n_features_in_, "n_components": self.n_components_,
                "n_samples_fit": self.n_samples_fit_}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Preprocessor:
        self = cls(zscore=meta["zscore"], pca_components=meta["pca_components"],
                   seed=meta["seed"], svd_solver=meta.get("svd_solver", "auto"),
                   n_iter=meta.get("n_iter", 6))
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        comps = arrays.get("components")
        self.components_ = None if comps is None else np.asarray(comps, dtype=np.float64)
        ev = arrays.get("explained_variance")
        self.explained_variance_ = None if ev is None else np.asarray(ev, dtype=np.float64)
        evr = arrays.get("explained_variance_ratio")
        self.explained_variance_ratio_ = (None if evr is None
                                          else np.asarray(evr, dtype=np.float64))
        self.n_features_in_ = int(meta["n_features_in"])
        # checkpoints written before shaped inputs existed hold flat voxel vectors
        self.input_shape_ = tuple(int(s) for s in meta.get("input_shape",
                                                           [self.n_features_in_]))
        self.n_components_ = int(meta["n_components"])
        self.n_samples_fit_ = int(meta["n_samples_fit"])
        self._check_state()
        return self

    def _check_state(self) -> None:
        """Every restored array has the shape the recorded sizes give it (a ValueError
        naming the array otherwise)."""
        p, k = self.n_features_in_, self.n_components_
        if math.prod(self.input_shape_) != p or p < 1:
            raise ValueError(f"preprocessor input_shape {list(self.input_shape_)} does not "
                             f"hold n_features_in={p} values")
        expected: dict[str, tuple[np.ndarray | None, tuple[int, ...]]] = {
            "mean": (self.mean_, (p,)), "scale": (self.scale_, (p,))}
        if self.pca_components is not None or self.components_ is not None:
            expected.update({
                "components": (self.components_, (k, p)),
                "explained_variance": (self.explained_variance_, (k,)),
                "explained_variance_ratio": (self.explained_variance_ratio_, (k,))})
        for name, (array, shape) in expected.items():
            if array is None:
                raise ValueError(f"preprocessor array {name!r} is missing; expected shape "
                                 f"{shape}")
            if array.shape != shape:
                raise ValueError(f"preprocessor array {name!r} has shape {array.shape}; "
                                 f"expected {shape}")
        for name in ("mean", "scale", "components"):
            array = expected[name][0] if name in expected else None
            if array is not None and not np.isfinite(array).all():
                raise ValueError(f"preprocessor array {name!r} holds NaN or infinite values")
        if (self.scale_ <= 0).any():
            raise ValueError("preprocessor array 'scale' holds values <= 0; expected "
                             "positive standard deviations")

    def _check_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise RuntimeError("Preprocessor is not fitted; call fit() on training rows first")

    def __repr__(self) -> str:
        return (f"Preprocessor(zscore={self.zscore}, pca_components={self.pca_components}, "
                f"seed={self.seed})")


def _row_blocks(n: int, p: int, budget: int = 2**25) -> list[tuple[int, int]]:
    """(start, stop) row spans of about ``budget`` elements (256 MB of float64)."""
    rows = max(1, budget // max(p, 1))
    return [(s, min(s + rows, n)) for s in range(0, n, rows)]


def _randomized_svd(Z: np.ndarray, k: int, n_iter: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` singular values and right vectors of ``Z`` by randomised range finding.

    Oversampling and a few power iterations (re-orthonormalised each time, otherwise the
    small directions drown in rounding) make the leading subspace accurate when the
    spectrum decays, as fMRI spectra do.
    """
    n, p = Z.shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9CA]))
    size = min(k + max(10, k // 10), min(n, p))
    Q = Z @ rng.standard_normal((p, size)).astype(Z.dtype)
    Q, _ = np.linalg.qr(Q)
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(Z.T @ Q)
        Q, _ = np.linalg.qr(Z @ Q)
    B = Q.T @ Z  # (size, p): small
    _, s, vt = np.linalg.svd(B, full_matrices=False)
    return s[:k], vt[:k]


def _fix_signs(vt: np.ndarray) -> np.ndarray:
    """Make each component's largest-magnitude entry positive (SVD signs are arbitrary;
    a fixed convention makes refits on the same data identical)."""
    idx = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1
    return vt * signs[:, None]
