"""``multi_target``: one shared trunk, one linear head per target family.

The trunk is the ``mlp`` decoder's body without its read-out (Linear -> LayerNorm -> GELU
-> Dropout per hidden layer); each family (a semantic embedding, downsampled pixels,
low-level image features, autoencoder latents, ...) gets its own Linear head from the
trunk's last layer. The prediction is the heads' outputs concatenated in the order of
``families``, so the model keeps the one signature ``fit(X, Y)`` / ``predict(X)`` with
``Y`` the families' targets side by side.

The loss is the weighted sum over families of the torch decoders' loss (``loss``: mse,
cosine, hybrid or infonce) on that family's columns: a family's loss is computed on its
own columns only, so cosine and InfoNCE compare directions within a family, never across
families of different scales. With one family of weight 1 the model is the ``mlp``
decoder (same initial weights for the same seed, same loss), which the tests check.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.models.base import DecoderConfig, Shape
from fmri2img.models.registry import decoders
from fmri2img.models.torch_decoder import (
    DecoderNetwork,
    LossName,
    TorchDecoder,
    TorchDecoderConfig,
)
from fmri2img.training.losses import LossFn


class TargetFamily(StrictModel):
    """One block of output columns and its weight in the loss."""

    name: str = Field(min_length=1)
    dim: int = Field(ge=1, description="columns of this family in Y")
    weight: float = Field(1.0, ge=0, description="weight of this family's loss")


class MultiTargetConfig(TorchDecoderConfig):
    hidden: list[int] = Field(default_factory=lambda: [512],
                              description="trunk widths; [] gives linear heads on the inputs")
    families: list[TargetFamily] = Field(
        default_factory=list,
        description="target families in output order; their dims must sum to the outputs. "
                    "Empty: one family 'all' spanning every output")
    # z-scored families of different sizes: mse per element weighs each family by its
    # weight alone, whatever its dimension
    loss: LossName = "mse"

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden widths must be positive, got {v}")
        return v

    @field_validator("families")
    @classmethod
    def _distinct(cls, v: list[TargetFamily]) -> list[TargetFamily]:
        names = [f.name for f in v]
        if len(set(names)) != len(names):
            raise ValueError(f"family names must be distinct, got {names}")
        if v and sum(f.weight for f in v) <= 0:
            raise ValueError("at least one family needs a positive loss weight")
        return v


class MultiHead(nn.Module):
    """trunk -> [head_f] -> concatenation."""

    def __init__(self, trunk: nn.Module, heads: list[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([head(h) for head in self.heads], dim=-1)


@decoders.register
class MultiTargetDecoder(TorchDecoder):
    name = "multi_target"
    Config: ClassVar[type[DecoderConfig]] = MultiTargetConfig
    config: MultiTargetConfig

    def __init__(self, input_shape: int | Shape, n_outputs: int,
                 config: DecoderConfig | None = None) -> None:
        super().__init__(input_shape, n_outputs, config)
        total = sum(f.dim for f in self.families)
        if total != self.n_outputs:
            raise ValueError(
                f"multi_target families {[(f.name, f.dim) for f in self.families]} sum to "
                f"{total} columns, but the targets have {self.n_outputs}")

    @property
    def families(self) -> list[TargetFamily]:
        return self.config.families or [TargetFamily(name="all", dim=self.n_outputs)]

    def slices(self) -> dict[str, slice]:
        """Each family's columns in ``Y`` and in the predictions."""
        out, start = {}, 0
        for f in self.families:
            out[f.name] = slice(start, start + f.dim)
            start += f.dim
        return out

    def _build_body(self) -> nn.Module:
        # the same layers, built in the same order, as mlp_body: with one family the
        # initial weights equal the mlp decoder's for the same seed
        layers: list[nn.Module] = []
        width = self.n_inputs
        for h in self.config.hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(),
                       nn.Dropout(self.config.dropout)]
            width = h
        heads: list[nn.Module] = [nn.Linear(width, f.dim) for f in self.families]
        return MultiHead(nn.Sequential(*layers), heads)

    def _loss(self, net: DecoderNetwork) -> LossFn:
        family_loss = super()._loss(net)
        parts = [(s, f.weight) for f, s in zip(self.families, self.slices().values(),
                                              strict=True) if f.weight > 0]

        def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            total = pred.new_zeros(())
            for s, w in parts:
                total = total + w * family_loss(pred[:, s], target[:, s])
            return total
        return loss

    def family_losses(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Each family's (unweighted) loss on ``pred`` against ``target`` (diagnostics)."""
        family_loss = super()._loss(self._fitted())
        with torch.no_grad():
            return {name: float(family_loss(pred[:, s], target[:, s]))
                    for name, s in self.slices().items()}
