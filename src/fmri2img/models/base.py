"""The one signature every model shares: decoders (brain -> embedding) and adapters
(embedding -> embedding).

``Model(input_shape, n_outputs, config)`` stores its arguments and nothing else (the
scikit-learn rule). Inputs are ``(n, *input_shape)``: ``(n_voxels,)`` or ``(n_components,)``
for the fMRI decoders, ``(channels, times)`` for an EEG backbone. ``state`` and
``from_state`` turn a fitted model into named arrays plus JSON-able metadata and back,
which is all a checkpoint holds (:func:`model_entries`, and
:meth:`fmri2img.models.registry.Registry.from_entries` back).

A :class:`Decoder` is also fitted (``fit`` learns the ``*_`` attributes and returns
``self``), predicts float32 ``(n, n_outputs)``, says what its fit chose
(:meth:`~Decoder.fit_report`) and, where it can be trained by gradient, hands over a torch
module computing its predictions (:meth:`~Decoder.trainable_module`, for fine-tuning).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from fmri2img.config import StrictModel

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, ...]


def as_shape(shape: int | Sequence[int]) -> Shape:
    """``7`` or ``(7,)`` -> ``(7,)``; ``(63, 250)`` -> ``(63, 250)``; sizes must be >= 1."""
    out = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if not out or any(s < 1 for s in out):
        raise ValueError(f"an input shape needs at least one axis, each of size >= 1; got "
                         f"{shape!r}")
    return out


class DecoderConfig(StrictModel):
    """Base of every model's options; subclasses add fields."""


@dataclass
class FitReport:
    """What a fit chose and how it went, for summaries and figures.

    ``history``: one record per epoch (``epoch``, ``train_loss``, ``val_loss``, ...) for
    models trained by gradient; ``chosen``: hyper-parameters the fit selected itself
    (ridge: the alphas of its internal cross-validation).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)


class StatefulModel(Protocol):
    """What a checkpoint needs of a model (decoders and adapters alike)."""

    name: ClassVar[str]
    input_shape: Shape
    n_outputs: int

    @property
    def config(self) -> StrictModel: ...

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...


class Decoder(abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type[DecoderConfig]] = DecoderConfig
    # False for decoders that tune themselves by internal cross-validation (ridge): the
    # training command then gives them the validation split as training data.
    uses_validation: ClassVar[bool] = True

    def __init__(self, input_shape: int | Sequence[int], n_outputs: int,
                 config: DecoderConfig | None = None):
        self.input_shape = as_shape(input_shape)
        self.n_outputs = int(n_outputs)
        self.config = config if config is not None else self.Config()

    @property
    def n_inputs(self) -> int:
        """Values per input sample (the product of ``input_shape``)."""
        return math.prod(self.input_shape)

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
        """Learn from ``X`` (n, *input_shape) and ``Y`` (n, n_outputs).

        ``groups`` (n,) names the stimulus of each row: any internal split (CV folds, early
        stopping) keeps a stimulus's repetitions on one side. ``X_val``/``Y_val`` are a
        held-out validation set for decoders that stop early.
        """

    @abc.abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """float32 ``(n, n_outputs)`` predictions for ``X`` of shape ``(n, *input_shape)``."""

    def fit_report(self) -> FitReport:
        """What the last fit chose and recorded; empty for decoders with nothing to say."""
        return FitReport()

    # -- fine-tuning ----------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        """A new torch module that computes :meth:`predict` and can be trained by gradient
        (full fine-tuning); the decoder itself is left untouched."""
        raise TypeError(f"{type(self).__name__} has no form that can be trained by gradient, "
                        "so it cannot be fine-tuned")

    def with_module(self, module: nn.Module) -> Decoder:
        """A new decoder of this type and configuration holding ``module``'s weights
        (``module`` as returned by :meth:`trainable_module`, then trained)."""
        raise TypeError(f"{type(self).__name__} cannot take weights from a torch module")

    # -- persistence ----------------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(named arrays, JSON-able metadata) of a fitted decoder."""

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls, input_shape: Shape, n_outputs: int, config: DecoderConfig,
        arrays: dict[str, np.ndarray], meta: dict[str, Any],
    ) -> Decoder:
        """The fitted decoder that :meth:`state` described."""

    # -- helpers --------------------------------------------------------------------------
    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 1 + len(self.input_shape) or X.shape[1:] != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (n, "
                f"{', '.join(map(str, self.input_shape))}), got {X.shape}"
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
        shape = "x".join(map(str, self.input_shape))
        return f"{type(self).__name__}({shape} -> {self.n_outputs}, {self.config!r})"


# -- checkpoint entries ------------------------------------------------------------------
MODEL_PREFIX = "model/"


def model_entries(model: StatefulModel, prefix: str = MODEL_PREFIX
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A fitted model as checkpoint tensors (under ``prefix``) and metadata, one layout for
    decoders and adapters: ``model_type``, ``input_shape``, ``n_outputs``,
    ``model_config`` and the model's own ``model_meta``."""
    arrays, meta = model.state()
    tensors = {f"{prefix}{k}": v for k, v in arrays.items()}
    return tensors, {"model_type": model.name, "input_shape": list(model.input_shape),
                     "n_outputs": int(model.n_outputs),
                     "model_config": model.config.resolved(), "model_meta": meta}


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays stored under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
