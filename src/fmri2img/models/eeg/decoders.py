"""EEG -> embedding decoders: ``eeg_conv`` (a small convolutional encoder) and ``cbramod``
(the pretrained CBraMod backbone and a pooling head).

Both read ``(n, channels, times)`` epochs, as preprocessed (z-scored) by the pipeline, and
predict L2-normalised embeddings, trained by default like ``contrastive_mlp``: symmetric
InfoNCE with a learnt temperature, the objective of the EEG-image retrieval papers.

``eeg_conv`` follows the encoders of NICE and ATM: a temporal convolution, a spatial one
across all channels, average pooling over time, a 1x1 projection and a residual projection
head. The temporal and spatial filters are kept as separate (factored) parameters, as in
those models, but applied as one convolution whose kernel is their product: the two are
linear and adjacent, so this is the same function, about ten times faster on a CPU than the
two convolutions in turn, which keeps an epoch over a few thousand 63-channel trials to
seconds on one core.

``cbramod`` is :func:`.backbone.build_cbramod` plus :func:`.heads.build_head` over its
channel tokens, with pretrained weights read when the decoder is fitted (the weights'
origin and checksum go into the decoder's metadata, ``backbone_init``).
"""

from __future__ import annotations

import contextvars
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fmri2img.models.base import DecoderConfig, Shape
from fmri2img.models.eeg.backbone import (
    D_MODEL,
    PATCH,
    BackboneConfig,
    build_cbramod,
    init_record,
    load_backbone_weights,
)
from fmri2img.models.eeg.conv import ConvBackbone, ConvBackboneConfig
from fmri2img.models.eeg.heads import HeadConfig, build_head
from fmri2img.models.registry import decoders
from fmri2img.models.torch_decoder import LossName, TorchDecoder, TorchDecoderConfig

# set while a saved decoder is rebuilt: its checkpoint holds the weights, so the pretrained
# file (which may have moved, changed or need the network) is not read again
_RESTORING: contextvars.ContextVar[bool] = contextvars.ContextVar("restoring", default=False)


def _eeg_shape(decoder: TorchDecoder) -> tuple[int, int]:
    """(channels, times) of a decoder's input shape; anything else is refused."""
    shape = decoder.input_shape
    if len(shape) != 2:
        raise ValueError(
            f"{decoder.name} reads EEG epochs of shape (channels, times); got input shape "
            f"{shape}. Give it (n, channels, times) data without PCA (pca: null)")
    return int(shape[0]), int(shape[1])


# -- eeg_conv -------------------------------------------------------------------------------
class EEGConvConfig(ConvBackboneConfig, TorchDecoderConfig):
    """Sizes of the convolutional encoder (defaults: NICE's), and contrastive training."""

    proj_dim: int = Field(1024, ge=1, description="width of the residual projection head")
    dropout: float = Field(0.5, ge=0, lt=1, description="after pooling and in the head")
    loss: LossName = "infonce"
    learn_temperature: bool = True
    batch_size: int = Field(256, ge=2, description="larger batches give more negatives")


class _ResidualProjection(nn.Module):
    """Linear -> (GELU -> Linear -> Dropout, added back) -> LayerNorm (NICE's head)."""

    def __init__(self, n_in: int, width: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(n_in, width)
        self.block = nn.Sequential(nn.GELU(), nn.Linear(width, width), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.norm(y + self.block(y))


@decoders.register
class EEGConvDecoder(TorchDecoder):
    name = "eeg_conv"
    Config: ClassVar[type[DecoderConfig]] = EEGConvConfig
    config: EEGConvConfig
    normalize_output = True
    flat_inputs = False

    def _build_body(self) -> nn.Module:
        n_chans, n_times = _eeg_shape(self)
        cfg = self.config
        conv = ConvBackbone(n_chans, n_times, ConvBackboneConfig(**{
            k: getattr(cfg, k) for k in ConvBackboneConfig.model_fields}))  # its own fields
        width = conv.n_tokens * conv.d_token
        # the trainer never gives BatchNorm a one-row batch (it merges such a tail)
        return nn.Sequential(
            conv, nn.Flatten(),
            _ResidualProjection(width, cfg.proj_dim, cfg.dropout),
            nn.Linear(cfg.proj_dim, self.n_outputs),
        )


# -- cbramod --------------------------------------------------------------------------------
class CBraModConfig(TorchDecoderConfig):
    """The backbone, the head and training (Brain2Image's batch size, lr and decay).

    The shared ``dropout`` option is not used: ``backbone.drop_prob`` and ``head.dropout``
    set the dropout of each part.
    """

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    loss: LossName = "infonce"
    learn_temperature: bool = True
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)


class CBraModBody(nn.Module):
    """Backbone tokens ``(B, C, P, 200)`` -> ``(B, C, P * 200)`` -> head -> ``(B, out)``.

    The attribute names ``backbone`` and ``head`` are what a caller matches to give the
    backbone its own learning rate.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(2))


@decoders.register
class CBraModDecoder(TorchDecoder):
    name = "cbramod"
    Config: ClassVar[type[DecoderConfig]] = CBraModConfig
    config: CBraModConfig
    normalize_output = True
    flat_inputs = False

    def _build_body(self) -> nn.Module:
        n_chans, n_times = _eeg_shape(self)
        cfg = self.config
        backbone = build_cbramod(n_chans, n_times, cfg.backbone)
        if cfg.backbone.pretrained is not None and not _RESTORING.get():
            self.backbone_init_ = load_backbone_weights(backbone, cfg.backbone.pretrained,
                                                        allow_hub=cfg.backbone.allow_hub)
        elif cfg.backbone.pretrained is None:
            self.backbone_init_ = init_record(cfg.backbone)
        # No input scaling: Brain2Image divides EEG by 100 (CBraMod's 100 uV units), but the
        # pipeline hands this decoder z-scored channels, already of order 1.
        head = build_head(n_chans, (n_times // PATCH) * D_MODEL, self.n_outputs, cfg.head)
        return CBraModBody(backbone, head)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().state()
        meta["backbone_init"] = dict(self.backbone_init_)
        return arrays, meta

    @classmethod
    def from_state(
        cls, input_shape: Shape, n_outputs: int, config: DecoderConfig,
        arrays: dict[str, np.ndarray], meta: dict[str, Any],
    ) -> CBraModDecoder:
        token = _RESTORING.set(True)
        try:
            self = super().from_state(input_shape, n_outputs, config, arrays, meta)
        finally:
            _RESTORING.reset(token)
        assert isinstance(self, CBraModDecoder)
        # the record of the fit that produced the weights, not of this rebuild
        self.backbone_init_ = dict(meta.get("backbone_init", {"init": "unknown"}))
        return self
