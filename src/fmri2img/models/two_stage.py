"""``two_stage``: a residual trunk on a fixed width, then a projection head.

Stage one lifts the voxels (or their PCA scores) to ``width`` and refines them with
residual blocks ``x + Dropout(GELU(LayerNorm(Linear(x))))``; the skips let the trunk be
deeper than a plain MLP without losing the near-linear brain-to-embedding mapping that
dominates fMRI decoding. Stage two projects the trunk's features to the embedding.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from fmri2img.models.base import DecoderConfig
from fmri2img.models.registry import decoders
from fmri2img.models.torch_decoder import TorchDecoder, TorchDecoderConfig


class TwoStageConfig(TorchDecoderConfig):
    width: int = Field(1024, ge=1, description="width of the residual trunk")
    n_blocks: int = Field(2, ge=0, description="residual blocks in the trunk")
    head_hidden: int | None = Field(
        None, ge=1, description="hidden width of the projection head; None: one Linear")


class ResidualBlock(nn.Module):
    """``x + Dropout(GELU(LayerNorm(Linear(x))))``."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.act(self.norm(self.linear(x))))


class TwoStageNet(nn.Module):
    def __init__(self, n_inputs: int, n_outputs: int, cfg: TwoStageConfig):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(n_inputs, cfg.width), nn.LayerNorm(cfg.width),
                                  nn.GELU(), nn.Dropout(cfg.dropout))
        self.blocks = nn.Sequential(*(ResidualBlock(cfg.width, cfg.dropout)
                                      for _ in range(cfg.n_blocks)))
        head: list[nn.Module] = [nn.LayerNorm(cfg.width)]
        width = cfg.width
        if cfg.head_hidden is not None:
            head += [nn.Linear(width, cfg.head_hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.head_hidden
        head.append(nn.Linear(width, n_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@decoders.register
class TwoStageDecoder(TorchDecoder):
    name = "two_stage"
    Config: ClassVar[type[DecoderConfig]] = TwoStageConfig
    config: TwoStageConfig

    def _build_body(self) -> nn.Module:
        return TwoStageNet(self.n_inputs, self.n_outputs, self.config)
