"""``mlp``: a feed-forward decoder, Linear -> LayerNorm -> GELU -> Dropout per hidden layer.

LayerNorm (not BatchNorm) keeps training and inference identical and works with any batch
size; it also tames the scale of PCA inputs whose leading components dominate.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from torch import nn

from fmri2img.models.base import DecoderConfig
from fmri2img.models.registry import decoders
from fmri2img.models.torch_decoder import TorchDecoder, TorchDecoderConfig


class MLPConfig(TorchDecoderConfig):
    hidden: list[int] = Field(default_factory=lambda: [2048],
                              description="hidden layer widths; [] gives a linear model")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden widths must be positive, got {v}")
        return v


def mlp_body(n_inputs: int, n_outputs: int, hidden: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


@decoders.register
class MLPDecoder(TorchDecoder):
    name = "mlp"
    Config: ClassVar[type[DecoderConfig]] = MLPConfig
    config: MLPConfig

    def _build_body(self) -> nn.Module:
        return mlp_body(self.n_inputs, self.n_outputs, self.config.hidden, self.config.dropout)
