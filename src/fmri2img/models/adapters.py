"""Adapters: small networks on the output of a frozen decoder, same dimension in and out.

* ``linear``: ``W x + b`` with ``W`` initialised to the identity and ``b`` to zero.
* ``mlp``: ``x + MLP(LayerNorm(x))``, its last layer initialised to zero.

Both start as the identity, so an untrained adapter changes nothing and training moves it
only as far as the data ask. With ``condition=True`` a learned vector per domain
(perception / imagery, zero at start) is added to the output of either; the ``mlp`` also
adds a second one to the normalised input of its branch. The output vectors matter most:
the branch's last layer starts at zero, so the input vectors get no gradient until it has
moved, and with a few hundred training examples early stopping often ends training first
(then input vectors alone leave the adapter equal to its shuffled-label control).
Conditioned adapters take *packed* inputs, the embedding plus one last column holding the
domain code (:func:`pack`), so that the one training loop (``(inputs, targets)`` batches)
serves every adapter.

Adapters are models like the decoders: built as ``cls(input_shape, n_outputs, config)``
with ``input_shape == (dim,)`` and ``n_outputs == dim``, found through
:data:`fmri2img.models.registry.adapters`, and saved in the decoders' checkpoint layout
(``model_type``, ``model_config``, tensors under ``model/``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models.base import MODEL_PREFIX, Shape, as_shape, model_entries
from fmri2img.models.registry import adapters

KIND = "adapter"
DOMAINS: tuple[str, ...] = ("perception", "imagery")


class AdapterConfig(StrictModel):
    hidden: int = Field(256, ge=1, description="mlp: width of the hidden layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="mlp: dropout after the activation")
    condition: bool = Field(False, description="learned per-domain vectors")


def pack(x: np.ndarray, domains: np.ndarray | list[str]) -> np.ndarray:
    """Embeddings plus a last column with each row's domain code (conditioned adapters)."""
    codes = np.array([DOMAINS.index(str(d)) for d in domains], dtype=np.float32)
    return np.concatenate([np.asarray(x, dtype=np.float32), codes[:, None]], axis=1)


class Adapter(nn.Module, abc.ABC):
    """Base: ``forward`` splits packed inputs and calls ``_adapt(x, domain_codes)``."""

    name: ClassVar[str]
    Config: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, input_shape: int | Sequence[int], n_outputs: int,
                 config: AdapterConfig | None = None) -> None:
        super().__init__()
        shape = as_shape(input_shape)
        if shape != (int(n_outputs),):
            raise ValueError(f"an adapter maps dim-d embeddings to dim-d ones; got input "
                             f"shape {shape} and {n_outputs} outputs")
        self.input_shape: Shape = shape
        self.n_outputs = int(n_outputs)
        self.config = config if config is not None else self.Config()
        dim = self.dim
        self.condition = (nn.Parameter(torch.zeros(len(DOMAINS), dim))
                          if self.config.condition else None)

    @property
    def dim(self) -> int:
        return self.n_outputs

    @property
    def n_inputs(self) -> int:
        """Columns of the input: the embedding, plus the domain code when conditioned."""
        return self.dim + (1 if self.condition is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.condition is None:
            return self._adapt(x, None)
        return self._adapt(x[:, :-1], x[:, -1].long())

    @abc.abstractmethod
    def _adapt(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """Map (batch, dim) embeddings; ``codes`` is each row's domain index, or None when
        the adapter is not conditioned."""

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.parameters()))

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}
        return arrays, {"n_parameters": self.n_parameters()}

    @classmethod
    def from_state(cls, input_shape: Shape, n_outputs: int, config: AdapterConfig,
                   arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Adapter:
        self = cls(input_shape, n_outputs, config)
        state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        self._complete(state)
        self.load_state_dict(state)
        self.eval()
        return self

    def _complete(self, state: dict[str, torch.Tensor]) -> None:
        """Fill in tensors that checkpoints of older versions lack."""


@adapters.register
class LinearAdapter(Adapter):
    name = "linear"

    def __init__(self, input_shape: int | Sequence[int], n_outputs: int,
                 config: AdapterConfig | None = None) -> None:
        super().__init__(input_shape, n_outputs, config)
        dim = self.dim
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def _adapt(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(x)
        return out if codes is None else out + self.condition[codes]


@adapters.register
class MLPAdapter(Adapter):
    name = "mlp"

    def __init__(self, input_shape: int | Sequence[int], n_outputs: int,
                 config: AdapterConfig | None = None) -> None:
        super().__init__(input_shape, n_outputs, config)
        dim, hidden = self.dim, self.config.hidden
        self.norm = nn.LayerNorm(dim)
        self.branch = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(),
                                    nn.Dropout(self.config.dropout), nn.Linear(hidden, dim))
        with torch.no_grad():
            self.branch[-1].weight.zero_()
            self.branch[-1].bias.zero_()
        self.condition_out = (nn.Parameter(torch.zeros(len(DOMAINS), dim))
                              if self.config.condition else None)

    def _adapt(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        if codes is None:
            return x + self.branch(self.norm(x))
        h = self.norm(x) + self.condition[codes]
        return x + self.branch(h) + self.condition_out[codes]

    def _complete(self, state: dict[str, torch.Tensor]) -> None:
        if self.condition_out is not None:
            # written before the output vectors existed: zero ones reproduce them
            state.setdefault("condition_out", torch.zeros_like(self.condition_out))


def build_adapter(name: str, dim: int, config: AdapterConfig | dict[str, Any] | None = None
                  ) -> Adapter:
    """A new adapter ``name`` on ``dim``-d embeddings (the identity until trained)."""
    options = config.resolved() if isinstance(config, AdapterConfig) else config
    return adapters.build(name, (dim,), dim, options)


def apply_adapter(adapter: Adapter, pred: np.ndarray, domain: str) -> np.ndarray:
    """The adapter on decoder outputs (n, dim) of one domain; float32 (n, dim)."""
    x = np.asarray(pred, dtype=np.float32)
    if adapter.condition is not None:
        x = pack(x, [domain] * len(x))
    adapter.eval()
    device = next(adapter.parameters()).device
    with torch.inference_mode():
        return adapter(torch.from_numpy(np.ascontiguousarray(x)).to(device)).cpu().numpy()


def save_adapter(path: str | Path, adapter: Adapter, meta: dict[str, Any]) -> Path:
    tensors, entries = model_entries(adapter)
    return save_checkpoint(path, tensors, {"kind": KIND, **entries, **meta})


def _current_layout(arrays: dict[str, np.ndarray], meta: dict[str, Any]
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Checkpoints of fmri2img 0.1 (``adapter_type``, ``adapter_config``, ``dim`` and
    unprefixed tensors) in the layout every model checkpoint has now."""
    if "model_type" in meta:
        return arrays, meta
    dim = int(meta["dim"])
    config = {k: v for k, v in meta["adapter_config"].items() if k != "type"}
    meta = {**meta, "model_type": meta["adapter_type"], "input_shape": [dim],
            "n_outputs": dim, "model_config": config,
            "model_meta": {"n_parameters": meta.get("n_parameters")}}
    return {f"{MODEL_PREFIX}{k}": v for k, v in arrays.items()}, meta


def save_adapter_folds(path: str | Path, folds: Sequence[tuple[Adapter, dict[str, Any]]],
                       meta: dict[str, Any]) -> Path:
    """One file holding an adapter per protocol fold (each with what it saw), as
    ``fold<k>/`` tensors and a ``folds`` list of metadata; :func:`load_adapters` reads it."""
    tensors: dict[str, Any] = {}
    entries = []
    for k, (adapter, fold_meta) in enumerate(folds):
        arrays, model = model_entries(adapter)
        tensors.update({f"fold{k}/{name}": v for name, v in arrays.items()})
        entries.append({**model, **fold_meta})
    return save_checkpoint(path, tensors, {"kind": KIND, **meta, "folds": entries})


def _built(arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path,
           dim: int | None, expected_type: str) -> tuple[Adapter, dict[str, Any]]:
    arrays, meta = _current_layout(arrays, meta)
    if expected_type != "auto" and meta["model_type"] != expected_type:
        raise DataError(f"--adapter-type {expected_type} given, but the checkpoint holds a "
                        f"{meta['model_type']} adapter", path)
    if dim is not None and int(meta["n_outputs"]) != int(dim):
        raise DataError(f"the adapter maps {meta['n_outputs']}-d embeddings but the decoder "
                        f"predicts {dim}-d ones; use an adapter trained on this decoder", path)
    try:
        adapter = adapters.from_entries(arrays, meta)
    except (KeyError, RuntimeError) as exc:
        raise DataError(f"adapter weights do not fit a {meta['model_type']} adapter: {exc}",
                        path) from exc
    return adapter, meta


def load_adapters(path: str | Path, dim: int | None = None,
                  expected_type: str = "auto") -> list[tuple[Adapter, dict[str, Any]]]:
    """Every adapter in a checkpoint: one, or one per fold (:func:`save_adapter_folds`),
    each checked against the decoder's output ``dim`` and the type the caller expects
    (``auto``: whatever the checkpoint holds)."""
    path = Path(path)
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != KIND:
        raise DataError(f"not an adapter checkpoint (kind {meta.get('kind')!r})", path)
    if "folds" not in meta:
        return [_built(arrays, meta, path, dim, expected_type)]
    shared = {k: v for k, v in meta.items() if k != "folds"}
    out = []
    for k, fold_meta in enumerate(meta["folds"]):
        prefix = f"fold{k}/"
        part = {n[len(prefix):]: v for n, v in arrays.items() if n.startswith(prefix)}
        out.append(_built(part, {**shared, **fold_meta}, path, dim, expected_type))
    return out


def load_adapter(path: str | Path, dim: int | None = None,
                 expected_type: str = "auto") -> tuple[Adapter, dict[str, Any]]:
    """The one adapter of a checkpoint (see :func:`load_adapters` for per-fold files)."""
    found = load_adapters(path, dim, expected_type)
    if len(found) != 1:
        raise DataError(f"the checkpoint holds {len(found)} adapters, one per fold; load "
                        "them with load_adapters (eval applies each to the targets its fold "
                        "did not see)", path)
    return found[0]
