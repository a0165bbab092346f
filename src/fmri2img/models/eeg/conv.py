"""A small convolutional EEG encoder (NICE's temporal-spatial convolution), as tokens.

``ConvBackbone`` maps epochs (B, channels, times) to (B, proj_channels, pooled_len): a
temporal (1 x k) then spatial (C x 1) convolution, BatchNorm, ELU, average pooling over
time, dropout and a 1 x 1 projection. The ``eeg_conv`` decoder reads it out with an MLP;
the EEG-fMRI aligner pools its rows as tokens. It trains in seconds per epoch on a CPU,
where a randomly initialised CBraMod learns little in the same time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fmri2img.config import StrictModel


class ConvBackboneConfig(StrictModel):
    temporal_filters: int = Field(40, ge=1, le=1024, description="temporal kernels")
    temporal_kernel: int = Field(25, ge=1, le=2000, description="samples per temporal "
                                                                "kernel; <= n_times")
    spatial_filters: int = Field(40, ge=1, le=1024, description="outputs of the spatial "
                                                                "convolution")
    pool_kernel: int = Field(51, ge=1, le=2000, description="average-pooling window, "
                                                            "in samples of a pool_reference-"
                                                            "sample epoch")
    pool_stride: int = Field(5, ge=1, le=2000, description="pooling stride, likewise")
    pool_reference: int = Field(
        250, ge=1, description="epoch length the pool sizes are given for: both scale with "
                               "n_times / pool_reference (at least 1), so the pooled length, "
                               "and the read-out's size, stay about the same for any n_times")
    proj_channels: int = Field(40, ge=1, le=1024, description="outputs of the 1x1 projection")
    dropout: float = Field(0.5, ge=0, lt=1, description="after pooling (eeg_conv: also in "
                                                        "its head)")


class _FactoredConv(nn.Module):
    """Temporal (1 x k) then spatial (C x 1) convolution, computed as one Conv1d over the
    channels with the product kernel (module docstring)."""

    def __init__(self, n_chans: int, filters: int, kernel: int, out_channels: int):
        super().__init__()
        self.temporal = nn.Parameter(torch.empty(filters, kernel))
        self.spatial = nn.Parameter(torch.empty(out_channels, filters, n_chans))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # the fan-ins of the two convolutions they stand for
        nn.init.kaiming_uniform_(self.temporal.view(filters, 1, kernel), a=5 ** 0.5)
        nn.init.kaiming_uniform_(self.spatial, a=5 ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, out, T - k + 1)
        kernel = torch.einsum("ofc,fk->ock", self.spatial, self.temporal)
        return F.conv1d(x, kernel, self.bias)



class ConvBackbone(nn.Module):
    """(B, C, T) -> (B, n_tokens = proj_channels, d_token = pooled length)."""

    def __init__(self, n_chans: int, n_times: int, cfg: ConvBackboneConfig) -> None:
        super().__init__()
        if cfg.temporal_kernel > n_times:
            raise ValueError(f"temporal_kernel={cfg.temporal_kernel} is longer than the "
                             f"epochs (n_times={n_times}); lower it")
        conv_len = n_times - cfg.temporal_kernel + 1
        scale = n_times / cfg.pool_reference
        pool_k = min(conv_len, max(1, round(cfg.pool_kernel * scale)))
        pool_s = max(1, round(cfg.pool_stride * scale))
        self.n_tokens = cfg.proj_channels
        self.d_token = (conv_len - pool_k) // pool_s + 1
        self.layers = nn.Sequential(
            _FactoredConv(n_chans, cfg.temporal_filters, cfg.temporal_kernel,
                          cfg.spatial_filters),
            nn.BatchNorm1d(cfg.spatial_filters), nn.ELU(),
            nn.AvgPool1d(pool_k, pool_s), nn.Dropout(cfg.dropout),
            nn.Conv1d(cfg.spatial_filters, cfg.proj_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
