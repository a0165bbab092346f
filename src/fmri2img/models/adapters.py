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
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.models.checkpoint import load_checkpoint, save_checkpoint

KIND = "adapter"
DOMAINS: tuple[str, ...] = ("perception", "imagery")


class AdapterConfig(StrictModel):
    type: Literal["linear", "mlp"] = "mlp"
    hidden: int = Field(256, ge=1, description="mlp: width of the hidden layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="mlp: dropout after the activation")
    condition: bool = False  # learned per-domain vectors


def pack(x: np.ndarray, domains: np.ndarray | list[str]) -> np.ndarray:
    """Embeddings plus a last column with each row's domain code (conditioned adapters)."""
    codes = np.array([DOMAINS.index(str(d)) for d in domains], dtype=np.float32)
    return np.concatenate([np.asarray(x, dtype=np.float32), codes[:, None]], axis=1)


class Adapter(nn.Module, abc.ABC):
    """Base: ``forward`` splits packed inputs and calls ``_adapt(x, domain_codes)``."""

    type: ClassVar[str]

    def __init__(self, dim: int, config: AdapterConfig) -> None:
        super().__init__()
        self.dim = int(dim)
        self.config = config
        self.condition = (nn.Parameter(torch.zeros(len(DOMAINS), dim))
                          if config.condition else None)

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


class LinearAdapter(Adapter):
    type = "linear"

    def __init__(self, dim: int, config: AdapterConfig) -> None:
        super().__init__(dim, config)
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def _adapt(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(x)
        return out if codes is None else out + self.condition[codes]


class MLPAdapter(Adapter):
    type = "mlp"

    def __init__(self, dim: int, config: AdapterConfig) -> None:
        super().__init__(dim, config)
        self.norm = nn.LayerNorm(dim)
        self.branch = nn.Sequential(nn.Linear(dim, config.hidden), nn.GELU(),
                                    nn.Dropout(config.dropout), nn.Linear(config.hidden, dim))
        with torch.no_grad():
            self.branch[-1].weight.zero_()
            self.branch[-1].bias.zero_()
        self.condition_out = (nn.Parameter(torch.zeros(len(DOMAINS), dim))
                              if config.condition else None)

    def _adapt(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        if codes is None:
            return x + self.branch(self.norm(x))
        h = self.norm(x) + self.condition[codes]
        return x + self.branch(h) + self.condition_out[codes]


ADAPTERS: dict[str, type[Adapter]] = {"linear": LinearAdapter, "mlp": MLPAdapter}


def build_adapter(dim: int, config: AdapterConfig | dict[str, Any] | None = None) -> Adapter:
    cfg = config if isinstance(config, AdapterConfig) else AdapterConfig(**(config or {}))
    return ADAPTERS[cfg.type](dim, cfg)


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
    tensors = {k: v for k, v in adapter.state_dict().items()}
    full = {"kind": KIND, "adapter_type": adapter.type, "dim": adapter.dim,
            "adapter_config": adapter.config.resolved(),
            "n_parameters": adapter.n_parameters(), **meta}
    return save_checkpoint(path, tensors, full)


def load_adapter(path: str | Path, dim: int | None = None,
                 expected_type: str = "auto") -> tuple[Adapter, dict[str, Any]]:
    """An adapter checkpoint, checked against the decoder's output ``dim`` and the type the
    caller expects (``auto``: whatever the checkpoint holds)."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != KIND:
        raise DataError(f"not an adapter checkpoint (kind {meta.get('kind')!r})", path)
    if expected_type != "auto" and meta["adapter_type"] != expected_type:
        raise DataError(f"--adapter-type {expected_type} given, but the checkpoint holds a "
                        f"{meta['adapter_type']} adapter", path)
    if dim is not None and int(meta["dim"]) != int(dim):
        raise DataError(f"the adapter maps {meta['dim']}-d embeddings but the decoder "
                        f"predicts {dim}-d ones; use an adapter trained on this decoder", path)
    adapter = build_adapter(int(meta["dim"]), AdapterConfig(**meta["adapter_config"]))
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    if isinstance(adapter, MLPAdapter) and adapter.condition_out is not None:
        # Checkpoints written before the output vectors existed: zero ones reproduce them.
        state.setdefault("condition_out", torch.zeros_like(adapter.condition_out))
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"adapter weights do not fit a {meta['adapter_type']} adapter: {exc}",
                        path) from exc
    adapter.eval()
    return adapter, meta
