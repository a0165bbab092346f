"""A fitted decoder with its preprocessing, saved and loaded as one checkpoint.

The checkpoint holds the preprocessor's arrays under ``pre/`` and the decoder's under
``model/``; its JSON metadata names the decoder type, both configurations and the data the
model was trained on (index, splits and target checksums), so evaluation can refuse data
that does not fit (another subject, another voxel selection, another embedding space).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.errors import DataError
from fmri2img.models import registry
from fmri2img.models.base import Decoder
from fmri2img.models.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models.preprocess import Preprocessor

KIND = "decoder"


class DecoderPipeline:
    def __init__(self, preprocessor: Preprocessor, decoder: Decoder) -> None:
        self.preprocessor = preprocessor
        self.decoder = decoder

    @property
    def n_inputs(self) -> int:
        return int(self.preprocessor.n_features_in_)

    @property
    def n_outputs(self) -> int:
        return self.decoder.n_outputs

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"the decoder takes (n, {self.n_inputs}) voxels, got {X.shape}")
        return self.decoder.predict(self.preprocessor.transform(X))

    def save(self, path: str | Path, meta: dict[str, Any]) -> Path:
        pre_arrays, pre_meta = self.preprocessor.state()
        arrays, model_meta = self.decoder.state()
        tensors = {f"pre/{k}": v for k, v in pre_arrays.items()}
        tensors.update({f"model/{k}": v for k, v in arrays.items()})
        full = {
            "kind": KIND,
            "model_type": self.decoder.name,
            "n_inputs": self.n_inputs,
            "n_features": self.decoder.n_inputs,
            "n_outputs": self.decoder.n_outputs,
            "model_config": self.decoder.config.resolved(),
            "model_meta": model_meta,
            "preprocess": pre_meta,
            **meta,
        }
        return save_checkpoint(path, tensors, full)

    @classmethod
    def load(cls, path: str | Path) -> tuple[DecoderPipeline, dict[str, Any]]:
        arrays, meta = load_checkpoint(path)
        if meta.get("kind") != KIND:
            raise DataError(f"not a decoder checkpoint (kind {meta.get('kind')!r})", path)
        pre = Preprocessor.from_state(
            {k[4:]: v for k, v in arrays.items() if k.startswith("pre/")}, meta["preprocess"])
        try:
            dec_cls = registry.get(meta["model_type"])
        except KeyError as exc:
            raise DataError(str(exc), path) from exc
        config = dec_cls.Config(**meta["model_config"])
        decoder = dec_cls.from_state(
            int(meta["n_features"]), int(meta["n_outputs"]), config,
            {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, meta["model_meta"])
        return cls(pre, decoder), meta
