"""``contrastive_mlp``: the seed decoder, trained to pick its stimulus out of a batch.

input -> 2048 -> 1024 -> embedding with BatchNorm1d, GELU and Dropout, the output
L2-normalised, trained by default with the symmetric InfoNCE loss (CLIP's objective) and
a learnt temperature. Only directions matter for retrieval, hence the normalisation; the
prediction is a unit vector, not an embedding of the target's scale.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from torch import nn

from fmri2img.models.base import DecoderConfig
from fmri2img.models.registry import decoders
from fmri2img.models.torch_decoder import LossName, TorchDecoder, TorchDecoderConfig


class ContrastiveMLPConfig(TorchDecoderConfig):
    hidden: list[int] = Field(default_factory=lambda: [2048, 1024],
                              description="hidden layer widths")
    loss: LossName = "infonce"
    learn_temperature: bool = True
    dropout: float = Field(0.3, ge=0, lt=1)
    batch_size: int = Field(256, ge=2, description="larger batches give more negatives")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden widths must be positive, got {v}")
        return v


@decoders.register
class ContrastiveMLPDecoder(TorchDecoder):
    name = "contrastive_mlp"
    Config: ClassVar[type[DecoderConfig]] = ContrastiveMLPConfig
    config: ContrastiveMLPConfig
    normalize_output = True

    def _build_body(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.n_inputs
        for h in self.config.hidden:
            # BatchNorm's batch statistics are a mild regulariser at these batch sizes;
            # training batches never have a single row (the trainer merges such a tail)
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.GELU(),
                       nn.Dropout(self.config.dropout)]
            width = h
        layers.append(nn.Linear(width, self.n_outputs))
        return nn.Sequential(*layers)
