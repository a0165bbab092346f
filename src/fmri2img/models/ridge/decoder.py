"""The ``ridge`` decoder: linear map from voxels to an embedding, alpha chosen by grouped CV.

Ridge is the baseline every fMRI decoding paper reports, and with ~10k trials and ~16k
voxels it is also the decoder whose fitting time matters most, so this is our own solver
(:mod:`.cv`) rather than a wrapper: the folds are grouped by
stimulus (repetitions of an image never straddle train and validation, which would leak
the image into its own validation score), every alpha is scored from shared
factorisations, and the refit on all rows comes out of the same computation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from fmri2img.data.splits import grouped_folds
from fmri2img.devices import check_device_name
from fmri2img.models.base import Decoder, DecoderConfig, FitReport, Shape
from fmri2img.models.registry import decoders
from fmri2img.models.ridge.cv import ridge_cv
from fmri2img.models.ridge.targets import file_rows, read_rows

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def default_alphas() -> list[float]:
    """1e-1 .. 1e8, one per decade: brackets the ~1e5 that works for z-scored voxels
    (MIRAGE) by several decades on both sides without reaching alphas so small that float32
    cannot resolve them against a kernel whose eigenvalues reach ~1e7."""
    return [10.0**e for e in range(-1, 9)]


class RidgeConfig(DecoderConfig):
    """Options of :class:`Ridge`."""

    alphas: list[float] = Field(default_factory=default_alphas, min_length=1)
    alpha_per_target: bool = True
    n_folds: int = Field(5, ge=2)
    fit_intercept: bool = True
    solver: Literal["auto", "primal", "dual"] = "auto"
    factorization: Literal["auto", "eigh", "cholesky", "eigh_full"] = "auto"
    scoring: Literal["r2", "neg_mse"] = "r2"
    dtype: Literal["float32", "float64"] = "float32"
    backend: Literal["numpy", "torch"] = "torch"
    device: str = "cpu"
    seed: int = 0
    target_block: int | None = Field(None, ge=1)
    coef_storage: Literal["auto", "memory", "file"] = "auto"
    coef_dir: str | None = None

    @field_validator("alphas")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not all(np.isfinite(a) and a > 0 for a in v):
            raise ValueError(f"alphas must be finite and positive, got {v}")
        return v

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))

    @model_validator(mode="after")
    def _numpy_on_cpu(self) -> RidgeConfig:
        if self.backend == "numpy" and self.device != "cpu":
            raise ValueError(f"backend 'numpy' runs on the CPU only, got device={self.device!r}")
        return self


@decoders.register
class Ridge(Decoder):
    """Ridge regression with per-target (or shared) alpha chosen by grouped K-fold CV.

    Options (:class:`RidgeConfig`): ``alphas`` (grid), ``alpha_per_target``, ``n_folds``,
    ``fit_intercept``, ``solver`` ("auto" = dual when n < p), ``factorization`` ("eigh":
    one eigendecomposition of the kernel, or of each fold's Gram in the primal form;
    "cholesky": one Cholesky factor per alpha, and per fold in the primal form;
    "eigh_full": one eigendecomposition of the full Gram, folds scored by the
    leave-block-out identity; "auto" picks the cheapest by a cost model), ``scoring``
    ("r2" or "neg_mse"), ``dtype``, ``backend`` ("numpy" or "torch"), ``device`` (torch
    only), ``seed`` (fold assignment), ``target_block`` (targets solved at a time; None:
    from the available memory), ``coef_storage`` ("file": the weights go to a ``.npy``
    file in ``coef_dir``, default the temporary directory, and are read back
    memory-mapped; a checkpoint keeps them in a file beside it; "auto": a file when they
    would take more than a quarter of the available memory).

    Inputs of any shape are read as flat rows of ``n_inputs`` values. Fitted attributes:
    ``coef_`` (n_inputs, n_outputs), ``intercept_`` (n_outputs,), ``alpha_`` (n_outputs,),
    ``cv_scores_`` (n_alphas, n_outputs; the mean over folds of each fold's validation
    score) and ``fit_info_`` (solver used, timings, flop estimate).
    """

    name = "ridge"
    Config = RidgeConfig
    config: RidgeConfig
    uses_validation = False  # alphas come from grouped CV on the training rows

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        Y_val: np.ndarray | None = None,
    ) -> Ridge:
        """Choose alpha(s) by CV over folds grouped by ``groups``, then refit on all rows.

        ``X_val``/``Y_val`` are not used: ridge has no early stopping, and its alphas are
        chosen on the training rows' own grouped folds (a given validation set can be
        appended to the training rows by the caller if it should count).
        """
        cfg = self.config
        X, Y = self._check_XY(X, Y)
        X = _as_float(X.reshape(X.shape[0], -1), "X")
        Y = _as_float(Y, "Y")
        n = X.shape[0]
        # A NaN or infinity anywhere in X makes its column's sum non-finite: one cheap pass
        # instead of a boolean copy of the whole matrix.
        if not np.all(np.isfinite(X.sum(axis=0, dtype=np.float64))):
            raise ValueError("X contains NaN or infinite values")
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y contains NaN or infinite values")
        if X_val is not None or Y_val is not None:
            log.debug("ridge: X_val/Y_val ignored; alphas are chosen by grouped CV")
        folds = grouped_folds(groups, n, cfg.n_folds, cfg.seed)
        result = ridge_cv(
            X, Y, folds, np.asarray(cfg.alphas, dtype=np.float64),
            alpha_per_target=cfg.alpha_per_target, fit_intercept=cfg.fit_intercept,
            solver=cfg.solver, factorization=cfg.factorization, scoring=cfg.scoring,
            dtype=cfg.dtype, backend=cfg.backend, device=cfg.device,
            target_block=cfg.target_block, coef_storage=cfg.coef_storage,
            coef_dir=cfg.coef_dir,
        )
        self.coef_ = result.coef
        self.intercept_ = result.intercept
        self.alpha_ = result.alpha
        self.cv_scores_ = result.cv_scores
        self.fit_info_ = dict(result.info, n_train=n)
        log.info("ridge: %d -> %d fitted on %d rows; median alpha %g", self.n_inputs,
                 self.n_outputs, n, float(np.median(self.alpha_)))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``X @ coef_ + intercept_`` as float32 (computed in the fitted dtype)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("Ridge.predict called before fit")
        X = self._check_X(X)
        X = _as_float(X.reshape(X.shape[0], -1), "X").astype(self.coef_.dtype, copy=False)
        rows = file_rows(self.coef_)
        if rows is None:
            return (X @ self.coef_ + self.intercept_).astype(np.float32, copy=False)
        # weights in a file: read a block of targets at a time, never the whole map
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        step = max(1, (256 * 2**20) // max(1, rows.shape[1] * rows.dtype.itemsize))
        for j0 in range(0, self.n_outputs, step):
            j1 = min(self.n_outputs, j0 + step)
            out[:, j0:j1] = X @ read_rows(rows, j0, j1).T + self.intercept_[j0:j1]
        return out

    def fit_report(self) -> FitReport:
        """The alphas grouped CV chose (median and range over targets)."""
        if not hasattr(self, "alpha_"):
            return FitReport()
        alpha = np.atleast_1d(np.asarray(self.alpha_, dtype=float))
        return FitReport(chosen={"alpha_median": float(np.median(alpha)),
                                 "alpha_min": float(alpha.min()),
                                 "alpha_max": float(alpha.max())})

    # -- fine-tuning ----------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        """An ``nn.Linear`` holding the coefficients (``predict`` is ``X @ coef_ + b``)."""
        import torch  # only fine-tuning needs torch; fitting and prediction are numpy
        from torch import nn

        if not hasattr(self, "coef_"):
            raise RuntimeError("Ridge.trainable_module called before fit")
        layer = nn.Linear(self.n_inputs, self.n_outputs)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.asarray(self.coef_, np.float32).T))
            layer.bias.copy_(torch.from_numpy(np.asarray(self.intercept_, np.float32)))
        return layer

    def with_module(self, module: nn.Module) -> Ridge:
        arrays, meta = self.state()
        dtype = np.asarray(arrays["coef"]).dtype
        arrays = dict(arrays)
        arrays["coef"] = module.weight.detach().cpu().numpy().T.astype(dtype)
        arrays["intercept"] = module.bias.detach().cpu().numpy().astype(dtype)
        return type(self).from_state(self.input_shape, self.n_outputs, self.config, arrays,
                                     meta)

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if not hasattr(self, "coef_"):
            raise RuntimeError("Ridge.state called before fit")
        arrays = {"coef": self.coef_, "intercept": self.intercept_, "alpha": self.alpha_,
                  "cv_scores": self.cv_scores_}
        meta = {k: v for k, v in getattr(self, "fit_info_", {}).items()
                if isinstance(v, (str, int, float, bool)) or v is None}
        return arrays, meta

    @classmethod
    def from_state(
        cls, input_shape: Shape, n_outputs: int, config: DecoderConfig,
        arrays: dict[str, np.ndarray], meta: dict[str, Any],
    ) -> Ridge:
        if not isinstance(config, RidgeConfig):
            config = RidgeConfig(**config.model_dump())
        self = cls(input_shape, n_outputs, config)
        n_inputs = self.n_inputs
        missing = {"coef", "intercept", "alpha", "cv_scores"} - set(arrays)
        if missing:
            raise ValueError(f"ridge state lacks arrays {sorted(missing)}")
        coef = arrays["coef"]  # kept as given: a memory map of a side file stays one
        if not isinstance(coef, np.ndarray):
            coef = np.asarray(coef)
        if coef.shape != (n_inputs, n_outputs):
            raise ValueError(f"ridge state: coef has shape {coef.shape}, expected "
                             f"({n_inputs}, {n_outputs})")
        for key in ("intercept", "alpha"):
            if np.shape(arrays[key]) != (n_outputs,):
                raise ValueError(f"ridge state: {key} has shape {np.shape(arrays[key])}, "
                                 f"expected ({n_outputs},)")
        cv = np.asarray(arrays["cv_scores"])
        if cv.ndim != 2 or cv.shape[1] != n_outputs:
            raise ValueError(f"ridge state: cv_scores has shape {cv.shape}, expected "
                             f"(n_alphas, {n_outputs})")
        self.coef_ = coef
        self.intercept_ = np.asarray(arrays["intercept"])
        self.alpha_ = np.asarray(arrays["alpha"])
        self.cv_scores_ = cv
        self.fit_info_ = dict(meta)
        return self


def _as_float(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind == "f":
        return a
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
