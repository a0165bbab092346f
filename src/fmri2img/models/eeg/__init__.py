"""EEG models: the CBraMod backbone, pooling heads over its channel tokens, and two EEG ->
embedding decoders.

- :mod:`.backbone`: braindecode's CBraMod as an encoder (``(B, C, T)`` ->
  ``(B, C, T // 200, 200)``) and strict loading of its pretrained weights (a file, a
  directory or, when allowed, the Hugging Face Hub), with a record of where they came from.
- :mod:`.heads`: Brain2Image's ``flatten``, ``attention`` and ``multitoken_vit`` heads,
  tokens -> embedding, found by name in :data:`.heads.heads`.
- :mod:`.decoders`: the registered decoders ``eeg_conv`` (a NICE/ATM-style convolutional
  encoder, fast on a CPU) and ``cbramod`` (backbone + head), both for
  ``(n, channels, times)`` inputs.

braindecode (``pip install fmri2img[eeg]``) is needed only to build a CBraMod backbone.
"""

from __future__ import annotations

from fmri2img.models.eeg.backbone import (
    PATCH,
    BackboneConfig,
    build_cbramod,
    init_record,
    load_backbone_weights,
)
from fmri2img.models.eeg.decoders import (
    CBraModConfig,
    CBraModDecoder,
    EEGConvConfig,
    EEGConvDecoder,
)
from fmri2img.models.eeg.heads import (
    AttentionHead,
    FlattenHead,
    HeadConfig,
    MultiTokenViTHead,
    PoolingHead,
    build_head,
    heads,
)

__all__ = [
    "PATCH",
    "AttentionHead",
    "BackboneConfig",
    "CBraModConfig",
    "CBraModDecoder",
    "EEGConvConfig",
    "EEGConvDecoder",
    "FlattenHead",
    "HeadConfig",
    "MultiTokenViTHead",
    "PoolingHead",
    "build_cbramod",
    "build_head",
    "heads",
    "init_record",
    "load_backbone_weights",
]
