"""Shared machinery of the torch decoders (``mlp``, ``two_stage``, ``contrastive_mlp``).

A subclass only says how to build its network (``_build_body``, mapping
``(batch, *input_shape)`` to ``(batch, n_outputs)``); fitting (validation split, loss, the
training loop), prediction, fine-tuning and persistence live here. Inputs are expected to
be preprocessed already (z-scored and usually PCA-reduced, see
:mod:`fmri2img.models.preprocess`); the decoders do not rescale them.
"""

from __future__ import annotations

import abc
import copy
import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from fmri2img.data.splits import grouped_holdout
from fmri2img.devices import check_device_name, resolve_device
from fmri2img.models.base import Decoder, DecoderConfig, FitReport, Shape
from fmri2img.training.config import TrainerConfig
from fmri2img.training.losses import LossFn, get_loss, symmetric_infonce
from fmri2img.training.resume import RESUME_FREE
from fmri2img.training.seeding import seed_everything
from fmri2img.training.trainer import train

logger = logging.getLogger(__name__)

LossName = Literal["mse", "cosine", "hybrid", "infonce"]

# CLIP clamps its logit scale at 100; the same bounds keep a learnt temperature from
# collapsing to 0 (logits blow up) or growing past 1 (no contrast left).
TEMPERATURE_MIN = 0.01
TEMPERATURE_MAX = 1.0
_PREDICT_ROWS = 8192  # rows per forward pass in predict(): bounds memory, not results


class TorchDecoderConfig(DecoderConfig):
    """Training options shared by every torch decoder (architecture fields live in the
    subclasses' configs)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=2, description="contrastive losses need >= 2 rows")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    loss: LossName = "hybrid"
    hybrid_weight: float = Field(0.5, ge=0, le=1, description="weight of the cosine term")
    temperature: float = Field(0.07, ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX,
                               description="InfoNCE temperature (initial value if learnt)")
    learn_temperature: bool = False
    dropout: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    early_stop_patience: int | None = Field(10, ge=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    val_fraction: float = Field(
        0.1, ge=0, lt=1,
        description="share of stimuli held out for early stopping when fit() gets no X_val")
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: Path | None = Field(
        None, description="resume state folder (last.pt, best.pt): a killed fit restarted "
                          "with the same options and data continues where it stopped; does "
                          "not change the result")

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))


class DecoderNetwork(nn.Module):
    """A decoder's body plus the (fixed or learnt) InfoNCE temperature.

    The temperature sits in the module so that it is optimised with the weights and saved
    in the same state dict.
    """

    def __init__(self, body: nn.Module, normalize: bool, temperature: float,
                 learn_temperature: bool, flatten: bool = True):
        super().__init__()
        self.body = body
        self.normalize = normalize
        self.flatten = flatten
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x.flatten(1) if self.flatten else x)
        return F.normalize(y, dim=-1) if self.normalize else y

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(TEMPERATURE_MIN, TEMPERATURE_MAX)


class TorchDecoder(Decoder):
    """Base class: subclasses set ``name``, ``Config`` and implement ``_build_body``."""

    Config: ClassVar[type[DecoderConfig]] = TorchDecoderConfig
    normalize_output: ClassVar[bool] = False
    # True: the body sees each sample flattened to n_inputs values (MLPs); False: it gets
    # (batch, *input_shape) as it is (convolutional or sequence backbones)
    flat_inputs: ClassVar[bool] = True

    config: TorchDecoderConfig

    # -- to implement -----------------------------------------------------------------------
    @abc.abstractmethod
    def _build_body(self) -> nn.Module:
        """Network mapping (batch, n_inputs), or (batch, *input_shape) when not
        ``flat_inputs``, to (batch, n_outputs)."""

    # -- building -------------------------------------------------------------------------
    def _build_network(self) -> DecoderNetwork:
        cfg = self.config
        return DecoderNetwork(self._build_body(), self.normalize_output, cfg.temperature,
                              cfg.learn_temperature, flatten=self.flat_inputs)

    def _loss(self, net: DecoderNetwork) -> LossFn:
        cfg = self.config
        if cfg.loss == "infonce":
            # read the temperature at every call: it may be a parameter being learnt
            def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return symmetric_infonce(pred, target, net.temperature())
            return loss
        if cfg.loss == "hybrid":
            return get_loss("hybrid", weight=cfg.hybrid_weight)
        return get_loss(cfg.loss)

    def _trainer_config(self) -> TrainerConfig:
        cfg = self.config
        return TrainerConfig(
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, warmup_fraction=cfg.warmup_fraction,
            grad_clip=cfg.grad_clip, early_stop_patience=cfg.early_stop_patience,
            seed=cfg.seed, device=cfg.device, checkpoint_dir=cfg.checkpoint_dir,
            description=f"fit {self.name}",
        )

    def _resume_identity(self) -> dict[str, Any]:
        """What a resume state must have been written for besides the trainer's options:
        options the trainer does not see (loss, dropout, architecture, ...) change the
        result too, so a state left by other ones must not be continued."""
        options = {k: v for k, v in self.config.resolved().items() if k not in RESUME_FREE}
        return {"decoder": self.name, "options": options}

    # -- learning -------------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        Y_val: np.ndarray | None = None,
    ) -> TorchDecoder:
        X, Y = self._check_XY(X, Y)
        _check_finite(X, "X")
        _check_finite(Y, "Y")
        cfg = self.config
        if (X_val is None) != (Y_val is None):
            raise ValueError("give both X_val and Y_val, or neither")
        if X_val is not None:
            X_val, Y_val = self._check_XY(X_val, Y_val)
            _check_finite(X_val, "X_val")
            _check_finite(Y_val, "Y_val")
            X_tr, Y_tr = X, Y
        else:
            tr, va = grouped_holdout(X.shape[0], groups, cfg.val_fraction, cfg.seed)
            X_tr, Y_tr = X[tr], Y[tr]
            X_val, Y_val = (X[va], Y[va]) if va.size else (None, None)
        if X_tr.shape[0] < 2:
            raise ValueError(f"{self.name} needs at least 2 training rows, got {X_tr.shape[0]}")

        # seed before building so that the initial weights depend on the seed alone
        seed_everything(cfg.seed)
        net = self._build_network()
        val = (_f32(X_val), _f32(Y_val)) if X_val is not None else None
        result = train(net, self._loss(net), (_f32(X_tr), _f32(Y_tr)), val,
                       self._trainer_config(), extra_meta=self._resume_identity())
        net.eval()
        self.network_ = net
        self.history_ = result.history
        self.training_ = {
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "epochs_run": result.epochs_run,
            "resumed_from": result.resumed_from,
            "seconds": result.seconds,
            "train_rows": int(X_tr.shape[0]),
            "val_rows": int(X_val.shape[0]) if X_val is not None else 0,
            "temperature": float(net.temperature().detach()),
        }
        logger.info("%s: %d epochs (best %s, val loss %s) in %.1fs", self.name,
                    result.epochs_run, result.best_epoch, result.best_val_loss, result.seconds)
        return self

    def fit_report(self) -> FitReport:
        """The per-epoch training history of the last fit."""
        return FitReport(history=list(getattr(self, "history_", [])))

    def predict(self, X: np.ndarray) -> np.ndarray:
        net = self._fitted()
        X = self._check_X(X)
        device = next(net.parameters()).device
        net.eval()
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, X.shape[0], _PREDICT_ROWS):
                xb = _f32(X[start:start + _PREDICT_ROWS]).to(device)
                out[start:start + xb.shape[0]] = net(xb).float().cpu().numpy()
        return out

    # -- fine-tuning ----------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        """A copy of the fitted network on the CPU, in training mode."""
        net = copy.deepcopy(self._fitted()).cpu()
        net.train()
        return net

    def with_module(self, module: nn.Module) -> TorchDecoder:
        _, meta = self.state()
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
        return type(self).from_state(self.input_shape, self.n_outputs, self.config, arrays,
                                     meta)

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        net = self._fitted()
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        meta = {
            "decoder": self.name,
            "input_shape": list(self.input_shape),
            "n_outputs": self.n_outputs,
            "config": self.config.resolved(),
            "training": self.training_,
            "history": self.history_,
        }
        return arrays, meta

    @classmethod
    def from_state(
        cls, input_shape: Shape, n_outputs: int, config: DecoderConfig,
        arrays: dict[str, np.ndarray], meta: dict[str, Any],
    ) -> TorchDecoder:
        self = cls(input_shape, n_outputs, config)
        net = self._build_network()
        try:
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        except RuntimeError as exc:
            raise ValueError(f"saved {cls.name} weights do not fit {self!r}: {exc}") from exc
        net.to(resolve_device(self.config.device))
        net.eval()
        self.network_ = net
        self.history_ = list(meta.get("history", []))
        self.training_ = dict(meta.get("training", {}))
        return self

    # -- helpers --------------------------------------------------------------------------
    def _fitted(self) -> DecoderNetwork:
        net = getattr(self, "network_", None)
        if net is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        return net


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
