"""A fitted decoder with its preprocessing: fitted, saved, loaded and used as one.

:func:`fit_pipeline` is the one fitting path for every decoder and input shape:
preprocessing statistics from the training rows only, then the decoder on the
preprocessed rows (validation rows, when given, pass through the same preprocessing).
The checkpoint holds the preprocessor's arrays under ``pre/`` and the decoder's under
``model/``; its JSON metadata names the decoder type, both configurations and the data
the model was trained on (index, splits and target checksums), so evaluation can refuse
data that does not fit (another subject, another voxel selection, another embedding
space).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models import registry
from fmri2img.models.base import Decoder, model_entries
from fmri2img.models.preprocess import Preprocessor

KIND = "decoder"
PRE_PREFIX = "pre/"


class DecoderPipeline:
    def __init__(self, preprocessor: Preprocessor, decoder: Decoder) -> None:
        self.preprocessor = preprocessor
        self.decoder = decoder

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (``(n_voxels,)`` for fMRI)."""
        return tuple(self.preprocessor.input_shape_)

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return self.decoder.n_outputs

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"the decoder takes inputs of shape (n, "
                             f"{', '.join(map(str, self.input_shape))}), got {X.shape}")
        return self.decoder.predict(self.preprocessor.transform(X))

    def save(self, path: str | Path, meta: dict[str, Any]) -> Path:
        pre_arrays, pre_meta = self.preprocessor.state()
        tensors, entries = model_entries(self.decoder)
        tensors.update({f"{PRE_PREFIX}{k}": v for k, v in pre_arrays.items()})
        full = {"kind": KIND, **entries, "n_inputs": self.n_inputs,
                "preprocess": pre_meta, **meta}
        return save_checkpoint(path, tensors, full)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None
             ) -> tuple[DecoderPipeline, dict[str, Any]]:
        """The pipeline saved at ``path``; a torch decoder is placed on ``device`` (default:
        the one it was trained on), so a model trained on a GPU loads on a CPU machine.

        A checkpoint whose arrays do not have the shapes its recorded model gives them
        (preprocessor and decoder alike), whose metadata is incomplete, or whose weights
        predict NaN is refused here, before any prediction, with a DataError naming it.
        """
        arrays, meta = load_checkpoint(path)
        if meta.get("kind") != KIND:
            raise DataError(f"not a decoder checkpoint (kind {meta.get('kind')!r})", path)
        try:
            pipeline, meta = cls._restore(arrays, meta, device)
        except KeyError as exc:
            raise DataError(f"checkpoint metadata lacks {exc}; expected what fmri2img train "
                            "writes", path) from exc
        except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
            raise DataError(f"the checkpoint's arrays do not fit its recorded model: {exc}",
                            path) from exc
        return pipeline, meta

    @classmethod
    def _restore(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                 device: str | None) -> tuple[DecoderPipeline, dict[str, Any]]:
        for key in ("preprocess", "model_config", "model_meta"):
            if not isinstance(meta[key], dict):
                raise TypeError(f"metadata {key!r} is a {type(meta[key]).__name__}; expected "
                                "an object")
        for key in ("data", "targets", "train"):
            if meta.get(key) is not None and not isinstance(meta[key], dict):
                raise TypeError(f"metadata {key!r} is a {type(meta[key]).__name__}; expected "
                                "an object")
        pre = Preprocessor.from_state(
            {k[len(PRE_PREFIX):]: v for k, v in arrays.items() if k.startswith(PRE_PREFIX)},
            meta["preprocess"])
        if "input_shape" not in meta:  # written before shaped inputs: flat features
            meta = {**meta, "input_shape": [int(meta["n_features"])]}
        if device is not None and "device" in meta["model_config"]:
            meta = {**meta, "model_config": {**meta["model_config"], "device": device}}
        decoder = registry.decoders.from_entries(arrays, meta)
        if tuple(decoder.input_shape) != tuple(pre.output_shape_):
            raise ValueError(f"the preprocessor gives samples of shape "
                             f"{list(pre.output_shape_)} but the decoder takes "
                             f"{list(decoder.input_shape)}")
        if "n_inputs" in meta and int(meta["n_inputs"]) != pre.n_features_in_:
            raise ValueError(f"metadata n_inputs={meta['n_inputs']} but the preprocessor "
                             f"takes {pre.n_features_in_} values per sample")
        mean = meta.get("target_mean")
        if mean is not None and np.shape(mean) != (decoder.n_outputs,):
            raise ValueError(f"metadata target_mean has shape {np.shape(mean)}; expected "
                             f"({decoder.n_outputs},), one value per output")
        pipeline = cls(pre, decoder)
        _probe(pipeline)
        return pipeline, meta


def _probe(pipeline: DecoderPipeline) -> None:
    """Predict one all-zero sample: a decoder whose weights hold NaN or infinite values
    (or do not fit together) is found here rather than in the scores."""
    try:
        with np.errstate(all="ignore"):  # overflowing weights are reported below
            out = pipeline.predict(np.zeros((1, *pipeline.input_shape), dtype=np.float32))
    except RuntimeError as exc:  # torch: weights that do not fit the network
        raise ValueError(f"the decoder cannot predict with these weights ({exc})") from exc
    if out.shape != (1, pipeline.n_outputs) or not np.isfinite(out).all():
        raise ValueError("the decoder's weights hold NaN or infinite values: its prediction "
                         "for an all-zero input is not finite")


def fit_pipeline(
    model_type: str,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    X_val: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    zscore: bool = True,
    pca: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> DecoderPipeline:
    """Fit preprocessing on ``X`` (n, *input_shape), then the decoder ``model_type``
    (with ``options``) on the preprocessed rows and targets ``Y`` (n, dim).

    ``groups`` keeps a stimulus's rows together in the decoder's internal splits;
    ``X_val``/``Y_val`` are validation rows for decoders that stop early. ``X`` is
    released as soon as it is preprocessed, so pass it without keeping a reference when
    memory matters (a single-trial NSD matrix is gigabytes).
    """
    pre = Preprocessor(zscore=zscore, pca_components=pca, seed=seed).fit(X)
    Xp = pre.transform(X)
    del X
    fit_kw: dict[str, Any] = {"groups": groups}
    if X_val is not None:
        fit_kw["X_val"] = pre.transform(X_val)
        fit_kw["Y_val"] = Y_val
    decoder = registry.decoders.build(model_type, pre.output_shape_, Y.shape[1], options)
    decoder.fit(Xp, Y, **fit_kw)
    return DecoderPipeline(pre, decoder)
