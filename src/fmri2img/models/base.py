"""The one signature every decoder shares.

``Decoder(n_inputs, n_outputs, config)`` stores its arguments and nothing else (the
scikit-learn rule); ``fit`` learns the ``*_`` attributes and returns ``self``;
``predict`` maps ``(n, n_inputs)`` to float32 ``(n, n_outputs)``. ``state`` and
``from_state`` turn a fitted decoder into named arrays plus JSON-able metadata and back,
which is all a checkpoint holds.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from fmri2img.config import StrictModel


class DecoderConfig(StrictModel):
    """Base of every decoder's options; subclasses add fields."""


class Decoder(abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type[DecoderConfig]] = DecoderConfig
    # False for decoders that tune themselves by internal cross-validation (ridge): the
    # training command then gives them the validation split as training data.
    uses_validation: ClassVar[bool] = True

    def __init__(self, n_inputs: int, n_outputs: int, config: DecoderConfig | None = None):
        self.n_inputs = int(n_inputs)
        self.n_outputs = int(n_outputs)
        self.config = config if config is not None else self.Config()

    # -- learning -------------------------------------------------------------------------
    @abc.abstractmethod
    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        Y_val: np.ndarray | None = None,
    ) -> Decoder:
        """Learn from ``X`` (n, n_inputs) and ``Y`` (n, n_outputs).

        ``groups`` (n,) names the stimulus of each row: any internal split (CV folds, early
        stopping) keeps a stimulus's repetitions on one side. ``X_val``/``Y_val`` are a
        held-out validation set for decoders that stop early.
        """
        ...

    @abc.abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        ...

    # -- persistence ----------------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(named arrays, JSON-able metadata) of a fitted decoder."""
        ...

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls, n_inputs: int, n_outputs: int, config: DecoderConfig,
        arrays: dict[str, np.ndarray], meta: dict[str, Any],
    ) -> Decoder:
        ...

    # -- helpers --------------------------------------------------------------------------
    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (n, {self.n_inputs}), "
                f"got {X.shape}"
            )
        return X

    def _check_XY(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = self._check_X(X)
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape != (X.shape[0], self.n_outputs):
            raise ValueError(
                f"{type(self).__name__} expects targets of shape ({X.shape[0]}, "
                f"{self.n_outputs}), got {Y.shape}"
            )
        return X, Y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_inputs} -> {self.n_outputs}, {self.config!r})"
