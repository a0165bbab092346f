"""Pooling heads: a backbone's channel tokens -> one embedding (Brain2Image's three heads).

Every head takes ``tokens`` of shape ``(B, n_in, d_in)``; for CBraMod ``n_in`` is the
number of channels and ``d_in = n_patches * 200`` (its ``(B, C, P, 200)`` output reshaped).
A head first pools the tokens into ``n_pooled`` vectors of ``d_pooled`` values
(:meth:`PoolingHead.pooled_tokens`) and then maps them, flattened, through an MLP to
``out_dim`` (:meth:`PoolingHead.forward`):

``flatten``
    no pooling: the MLP sees every channel token (``n_in * d_in`` inputs, most parameters).
``attention``
    ``n_queries`` learned queries each take a softmax-weighted mean of the channel tokens
    (score = query . token); the pooled size no longer grows with the channel count.
``multitoken_vit``
    ``n_tokens`` learned tokens are prepended to the channel tokens, a transformer encoder
    mixes them, and the learned tokens' outputs are the pooled vectors (a ViT's class
    token, several of them); the MLP starts with a LayerNorm.

The MLP is ``(mlp_layers - 1) x [Linear -> GELU -> Dropout]`` then ``Linear`` to
``out_dim``.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.models.registry import Registry

HeadKind = Literal["flatten", "attention", "multitoken_vit"]
_INIT_STD = 0.02  # learned queries, tokens and positions start small (ViT / Brain2Image)


class HeadConfig(StrictModel):
    """Which head and its sizes; fields of the other heads are ignored."""

    kind: HeadKind = "attention"
    mlp_layers: int = Field(2, ge=1, description="Linear layers of the MLP after pooling")
    hidden: int = Field(2048, ge=1, description="width of the MLP's hidden layers")
    n_queries: int = Field(16, ge=1, description="attention: learned queries")
    n_tokens: int = Field(4, ge=1, description="multitoken_vit: learned tokens prepended")
    vit_layers: int = Field(4, ge=1, description="multitoken_vit: transformer layers")
    vit_heads: int = Field(4, ge=1, description="multitoken_vit: heads; must divide d_in")
    vit_ff: int = Field(800, ge=1, description="multitoken_vit: feed-forward width")
    dropout: float = Field(0.1, ge=0, lt=1, description="MLP hidden layers and transformer")


class PoolingHead(nn.Module, abc.ABC):
    """Base of the heads: subclasses set ``name``, ``n_pooled``/``d_pooled`` and implement
    :meth:`pooled_tokens`."""

    name: ClassVar[str]
    n_pooled: int
    d_pooled: int

    def __init__(self, n_in: int, d_in: int, out_dim: int, cfg: HeadConfig):
        super().__init__()
        for label, value in (("n_in", n_in), ("d_in", d_in), ("out_dim", out_dim)):
            if int(value) < 1:
                raise ValueError(f"{type(self).__name__}: {label} must be >= 1, got {value}")
        self.n_in, self.d_in, self.out_dim = int(n_in), int(d_in), int(out_dim)
        self.cfg = cfg

    def _mlp(self, n_features: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(self.cfg.mlp_layers - 1):
            layers += [nn.Linear(width, self.cfg.hidden), nn.GELU(),
                       nn.Dropout(self.cfg.dropout)]
            width = self.cfg.hidden
        layers.append(nn.Linear(width, self.out_dim))
        return nn.Sequential(*layers)

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (self.n_in, self.d_in):
            raise ValueError(f"{type(self).__name__} expects tokens of shape (batch, "
                             f"{self.n_in}, {self.d_in}), got {tuple(tokens.shape)}")

    @abc.abstractmethod
    def pooled_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, n_pooled, d_pooled)``: what the MLP reads, before flattening (each head
        defines its own pooling)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, out_dim)``."""
        return self.mlp(self.pooled_tokens(tokens).flatten(1))


heads: Registry[PoolingHead] = Registry("eeg head", {})


@heads.register
class FlattenHead(PoolingHead):
    """Every channel token, concatenated: the MLP learns its own channel weighting."""

    name = "flatten"

    def __init__(self, n_in: int, d_in: int, out_dim: int, cfg: HeadConfig):
        super().__init__(n_in, d_in, out_dim, cfg)
        self.n_pooled, self.d_pooled = self.n_in, self.d_in
        self.mlp = self._mlp(self.n_pooled * self.d_pooled)

    def pooled_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check(tokens)
        return tokens


@heads.register
class AttentionHead(PoolingHead):
    """``n_queries`` softmax-weighted means over the channels, one per learned query."""

    name = "attention"

    def __init__(self, n_in: int, d_in: int, out_dim: int, cfg: HeadConfig):
        super().__init__(n_in, d_in, out_dim, cfg)
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, self.d_in) * _INIT_STD)
        self.n_pooled, self.d_pooled = cfg.n_queries, self.d_in
        self.mlp = self._mlp(self.n_pooled * self.d_pooled)

    def attention_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, n_queries, n_in)``: each query's weights over the channels (sum to 1)."""
        self._check(tokens)
        return torch.einsum("kd,bnd->bkn", self.queries, tokens).softmax(dim=-1)

    def pooled_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkn,bnd->bkd", self.attention_weights(tokens), tokens)


@heads.register
class MultiTokenViTHead(PoolingHead):
    """Learned tokens read the channel tokens through a transformer encoder."""

    name = "multitoken_vit"

    def __init__(self, n_in: int, d_in: int, out_dim: int, cfg: HeadConfig):
        super().__init__(n_in, d_in, out_dim, cfg)
        if self.d_in % cfg.vit_heads:
            raise ValueError(f"the multitoken_vit head's attention splits each {self.d_in}-d "
                             f"token over vit_heads={cfg.vit_heads} heads, so vit_heads must "
                             f"divide {self.d_in}")
        k = cfg.n_tokens
        self.tokens = nn.Parameter(torch.randn(1, k, self.d_in) * _INIT_STD)
        self.position = nn.Parameter(torch.randn(1, k + self.n_in, self.d_in) * _INIT_STD)
        layer = nn.TransformerEncoderLayer(self.d_in, cfg.vit_heads, cfg.vit_ff,
                                           dropout=cfg.dropout, batch_first=True)
        # nested tensors only speed up padded batches; ours are dense
        self.encoder = nn.TransformerEncoder(layer, cfg.vit_layers, enable_nested_tensor=False)
        self.n_pooled, self.d_pooled = k, self.d_in
        self.mlp = nn.Sequential(nn.LayerNorm(k * self.d_in), *self._mlp(k * self.d_in))

    def pooled_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check(tokens)
        x = torch.cat([self.tokens.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.encoder(x + self.position)[:, :self.n_pooled]


def build_head(n_in: int, d_in: int, out_dim: int, cfg: HeadConfig) -> PoolingHead:
    """The head ``cfg.kind`` for ``(B, n_in, d_in)`` tokens and ``out_dim`` outputs."""
    return heads.get(cfg.kind)(n_in, d_in, out_dim, cfg)  # type: ignore[call-arg]
