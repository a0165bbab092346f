"""``GroupedRidgeCV``: the ``ridge`` decoder's solver as a scikit-learn estimator.

The registry's ``ridge`` (:class:`fmri2img.models.ridge.decoder.Ridge`) speaks the
package's decoder protocol (input shape and output count fixed at construction, float32
predictions, checkpoints). This class runs the very same code (:func:`.cv.ridge_cv` on
folds from :func:`fmri2img.data.splits.grouped_folds`), so it chooses the same alphas and
predicts the same values, but behind scikit-learn's API: it can sit in a ``Pipeline``, be
cloned by ``GridSearchCV`` and be scored by ``cross_val_score``, like himalaya's
estimators. As in the decoder, the internal CV keeps every group (the repetitions of one
stimulus) in one fold, so an image never validates the alpha it was trained with::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fmri2img.models.ridge.estimator import GroupedRidgeCV

    model = make_pipeline(StandardScaler(), GroupedRidgeCV(n_folds=5, backend="numpy"))
    model.fit(X, Y, groupedridgecv__groups=stimulus_ids)
    Y_hat = model.predict(X_test)

This module imports scikit-learn at module level; ``fmri2img.models.ridge`` does not
import it, so the rest of the package does not need scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from fmri2img.data.splits import grouped_folds
from fmri2img.models.ridge.cv import ridge_cv
from fmri2img.models.ridge.decoder import RidgeConfig, default_alphas


class GroupedRidgeCV(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Ridge regression, alpha per target (or shared) chosen by grouped K-fold CV.

    Parameters are those of :class:`~fmri2img.models.ridge.decoder.RidgeConfig`, with the
    same defaults; ``alphas=None`` means :func:`~fmri2img.models.ridge.decoder.default_alphas`.
    They are validated in :meth:`fit` (``ValueError``), not here, as scikit-learn requires.

    ``fit(X, y, groups=None)``: rows sharing a value of ``groups`` stay in one CV fold;
    without ``groups`` every row is its own group. The number of folds used is
    ``min(n_folds, number of groups)`` so that small data (a ``GridSearchCV`` split, a
    handful of stimuli) still fits; fewer than 2 groups is a ``ValueError``, since no CV
    is possible.

    Fitted attributes, laid out as in ``sklearn.linear_model.Ridge``: ``coef_``
    (n_targets, n_features), ``intercept_`` (n_targets,), ``alpha_`` (n_targets,),
    ``cv_scores_`` (n_alphas, n_targets; mean over folds of each fold's score),
    ``n_folds_`` (folds actually used), ``fit_info_`` (solver used, timings),
    ``n_features_in_`` and ``feature_names_in_``. For a 1-D ``y``, ``coef_`` is
    (n_features,), ``cv_scores_`` (n_alphas,) and ``intercept_`` and ``alpha_`` are floats.
    ``coef_`` and ``intercept_`` keep the working ``dtype``.

    :meth:`predict` computes ``X @ coef_.T + intercept_`` in the working ``dtype`` (as the
    decoder does) and returns it as **float64**, whatever ``dtype``: scikit-learn's scorers
    and checks expect float64 predictions. Cast to float32 it is exactly the decoder's.
    """

    def __init__(
        self,
        *,
        alphas: Sequence[float] | np.ndarray | None = None,
        alpha_per_target: bool = True,
        n_folds: int = 5,
        fit_intercept: bool = True,
        solver: str = "auto",
        factorization: str = "auto",
        scoring: str = "r2",
        dtype: str = "float32",
        backend: str = "torch",
        device: str = "cpu",
        seed: int = 0,
        target_block: int | None = None,
        coef_storage: str = "auto",
        coef_dir: str | None = None,
    ) -> None:
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.n_folds = n_folds
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.factorization = factorization
        self.scoring = scoring
        self.dtype = dtype
        self.backend = backend
        self.device = device
        self.seed = seed
        self.target_block = target_block
        self.coef_storage = coef_storage
        self.coef_dir = coef_dir

    def _config(self) -> RidgeConfig:
        """The parameters, checked by the decoder's own config so both accept the same."""
        params: dict[str, Any] = self.get_params()
        try:
            alphas = default_alphas() if self.alphas is None else (
                np.asarray(self.alphas, dtype=np.float64).ravel().tolist())
            params["alphas"] = alphas
            return RidgeConfig(**params)
        except (ValidationError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid parameters for {type(self).__name__}: {exc}") from exc

    def fit(self, X: Any, y: Any, groups: Any = None) -> GroupedRidgeCV:
        """Choose alpha(s) by CV over folds grouped by ``groups``, then refit on all rows."""
        cfg = self._config()
        # Two rows at least: one per fold of the smallest CV (and the error then names
        # the sample count, which is what scikit-learn's checks look for).
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                             y_numeric=True, ensure_min_samples=2)
        y = np.asarray(y)
        if y.dtype.kind != "f":
            y = y.astype(np.float64)
        one_d = y.ndim == 1
        Y = y.reshape(-1, 1) if one_d else y
        n = X.shape[0]
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        n_groups = n if groups is None else int(np.unique(groups).size)
        n_folds = min(cfg.n_folds, n_groups)
        if n_folds < 2:
            raise ValueError(f"grouped CV needs at least 2 groups, got {n_groups}")
        folds = grouped_folds(groups, n, n_folds, cfg.seed)
        result = ridge_cv(
            X, Y, folds, np.asarray(cfg.alphas, dtype=np.float64),
            alpha_per_target=cfg.alpha_per_target, fit_intercept=cfg.fit_intercept,
            solver=cfg.solver, factorization=cfg.factorization, scoring=cfg.scoring,
            dtype=cfg.dtype, backend=cfg.backend, device=cfg.device,
            target_block=cfg.target_block, coef_storage=cfg.coef_storage,
            coef_dir=cfg.coef_dir,
        )
        # The transpose is a view: predict multiplies by the solver's own (p, k) array,
        # exactly as the decoder does, so the two agree bit for bit.
        self.coef_ = result.coef.T
        self.intercept_: Any = result.intercept
        self.alpha_: Any = result.alpha
        self.cv_scores_ = result.cv_scores
        if one_d:
            self.coef_ = self.coef_[0]
            self.intercept_ = float(result.intercept[0])
            self.alpha_ = float(result.alpha[0])
            self.cv_scores_ = result.cv_scores[:, 0]
        self.n_folds_ = n_folds
        self.fit_info_ = dict(result.info, n_train=n)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``X @ coef_.T + intercept_``, computed in the fitted dtype, returned as float64."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        coef = np.asarray(self.coef_)
        X = X.astype(coef.dtype, copy=False)
        return np.asarray(X @ coef.T + self.intercept_, dtype=np.float64)
