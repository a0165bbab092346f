"""EEG-fMRI alignment model: CBraMod tokens, pooled by a head, read by the fMRI through
attention (Brain2Image's aligner with its flaws removed).

Brain2Image let the fMRI vector attend to a *single* key, the pooled EEG embedding. With
one key the softmax weight is 1 whatever the query is, so the output never depended on
the fMRI at all. Here the head's pooled tokens (K >= 2: the attention head's queries, the
ViT head's learned tokens, or the channels of the flatten head) are the keys and values,
so the fMRI query really chooses among EEG features; a head giving fewer than two tokens
is refused.

The output is built from EEG values only: there is no residual from the query, so the
fMRI cannot copy itself into the output. The remaining leak, that a paired output was
computed with its own fMRI as the query, is closed in retrieval by
:meth:`EEGfMRIAligner.pairwise_scores`: every candidate fMRI is scored with itself as the
query, so the right answer gets no head start over the wrong ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.io.checksum import file_checksum
from fmri2img.models.eeg.backbone import (
    PATCH,
    BackboneConfig,
    build_cbramod,
    init_record,
    load_backbone_weights,
)
from fmri2img.models.eeg.conv import ConvBackbone, ConvBackboneConfig
from fmri2img.models.eeg.heads import HeadConfig, build_head
from fmri2img.models.registry import Registry

_SCORE_BLOCK = 64  # (EEG x fMRI) block of pairwise scores: 64 x 64 x D floats at a time


class AlignerConfig(StrictModel):
    """Backbone, head and the fMRI-query attention of :class:`EEGfMRIAligner`."""

    encoder: Literal["cbramod", "conv"] = Field(
        "cbramod", description="EEG backbone: braindecode's CBraMod (pretrained from a local "
                               "file, or random), or the small convolutional encoder, which "
                               "trains from scratch on a CPU")
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    conv: ConvBackboneConfig = Field(default_factory=ConvBackboneConfig)
    conv_pretrained: str | None = Field(
        None, description="encoder conv: an eeg_conv decoder checkpoint (fmri2img train) "
                          "whose convolution and input z-scoring start the encoder")
    head: HeadConfig = Field(default_factory=HeadConfig)
    n_heads: int = Field(4, ge=1, description="attention heads; must divide the fMRI dim")
    attn_dropout: float = Field(0.1, ge=0, lt=1)
    token_dim: int | None = Field(None, ge=1, description="width of the EEG tokens (keys "
                                                          "and values); None: the fMRI dim")


aligners: Registry[Any] = Registry("alignment model", {})


@aligners.register
class EEGfMRIAligner(nn.Module):
    """``(eeg (B, C, T), fmri (B, D)) -> aligned (B, D)``, L2-normalised.

    ``eeg_embedding`` is the EEG-only path (backbone -> head -> D), the matched control
    that shows what the attention adds.
    """

    name: ClassVar[str] = "cbramod_attention"

    def __init__(self, n_chans: int, n_times: int, fmri_dim: int, cfg: AlignerConfig) -> None:
        super().__init__()
        self.n_chans, self.n_times, self.fmri_dim = int(n_chans), int(n_times), int(fmri_dim)
        self.cfg = cfg
        if self.fmri_dim % cfg.n_heads:
            raise ValueError(f"n_heads={cfg.n_heads} must divide the fMRI dim {self.fmri_dim}")
        if cfg.encoder == "conv":
            self.backbone: nn.Module = ConvBackbone(self.n_chans, self.n_times, cfg.conv)
            n_in, d_in = self.backbone.n_tokens, self.backbone.d_token
        else:
            self.backbone = build_cbramod(self.n_chans, self.n_times, cfg.backbone)
            n_in, d_in = self.n_chans, (self.n_times // PATCH) * PATCH
        self.head = build_head(n_in, d_in, self.fmri_dim, cfg.head)
        # input standardisation per (channel, time): identity unless an EEG encoder trained
        # on standardised epochs is loaded (load_pretrained_backbone)
        self.register_buffer("input_mean", torch.zeros(self.n_chans, self.n_times))
        self.register_buffer("input_scale", torch.ones(self.n_chans, self.n_times))
        if self.head.n_pooled < 2:
            raise ValueError(
                f"the {cfg.head.kind} head pools to {self.head.n_pooled} token(s); the "
                "attention needs at least 2: with a single key the softmax weight is always "
                "1, so the output would ignore the fMRI query (Brain2Image's flaw). Use "
                "n_queries / n_tokens >= 2")
        self.token_dim = cfg.token_dim or self.fmri_dim
        self.token_proj = nn.Linear(self.head.d_pooled, self.token_dim)
        self.attn = nn.MultiheadAttention(self.fmri_dim, cfg.n_heads, dropout=cfg.attn_dropout,
                                          batch_first=True, kdim=self.token_dim,
                                          vdim=self.token_dim)

    def spec(self) -> dict[str, Any]:
        """JSON-able description that :func:`build_aligner` rebuilds the model from."""
        return {"model": self.name, "n_chans": self.n_chans, "n_times": self.n_times,
                "fmri_dim": self.fmri_dim, "config": self.cfg.resolved()}

    # -- paths --------------------------------------------------------------------------

    def _pooled(self, eeg: torch.Tensor) -> torch.Tensor:
        if eeg.ndim != 3 or tuple(eeg.shape[1:]) != (self.n_chans, self.n_times):
            raise ValueError(f"eeg must be (batch, {self.n_chans}, {self.n_times}), "
                             f"got {tuple(eeg.shape)}")
        # CBraMod (B, C, P, 200): a token per channel; conv (B, filters, pooled)
        feats = self.backbone((eeg - self.input_mean) / self.input_scale)
        return self.head.pooled_tokens(feats.reshape(feats.shape[0], feats.shape[1], -1))

    def eeg_tokens(self, eeg: torch.Tensor) -> torch.Tensor:
        """``(B, K, token_dim)``: the keys and values the fMRI attends over."""
        return self.token_proj(self._pooled(eeg))

    def eeg_embedding(self, eeg: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` unit vectors from the EEG alone (the head's MLP)."""
        return F.normalize(self.head.mlp(self._pooled(eeg).flatten(1)), dim=-1)

    def attend(self, tokens: torch.Tensor, fmri: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` unit vectors: attention with the fMRI as the query over ``tokens``.

        No residual: the output is a mix of EEG values, the query only sets the weights.
        """
        if fmri.ndim != 2 or fmri.shape[1] != self.fmri_dim:
            raise ValueError(f"fmri must be (batch, {self.fmri_dim}), got {tuple(fmri.shape)}")
        out, _ = self.attn(fmri.unsqueeze(1), tokens, tokens, need_weights=False)
        return F.normalize(out.squeeze(1), dim=-1)

    def forward(self, eeg: torch.Tensor, fmri: torch.Tensor) -> torch.Tensor:
        return self.attend(self.eeg_tokens(eeg), fmri)

    def aligned_and_embedding(self, eeg: torch.Tensor, fmri: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, eeg_embedding) from one backbone pass (the training loop's step)."""
        pooled = self._pooled(eeg)
        emb = F.normalize(self.head.mlp(pooled.flatten(1)), dim=-1)
        return self.attend(self.token_proj(pooled), fmri), emb

    # -- retrieval ----------------------------------------------------------------------

    def _projections(self) -> tuple[torch.Tensor, ...]:
        """(Wq, bq, Wk, bk, Wv, bv) of the attention's input projections."""
        a, d = self.attn, self.fmri_dim
        bias = a.in_proj_bias if a.in_proj_bias is not None else torch.zeros(
            3 * d, device=a.out_proj.weight.device, dtype=a.out_proj.weight.dtype)
        if a.in_proj_weight is not None:
            wq, wk, wv = a.in_proj_weight.split(d)
        else:
            wq, wk, wv = a.q_proj_weight, a.k_proj_weight, a.v_proj_weight
        bq, bk, bv = bias.split(d)
        return wq, bq, wk, bk, wv, bv

    @torch.inference_mode()
    def pairwise_scores(self, eeg: torch.Tensor, fmri: torch.Tensor,
                        batch: int = 256) -> torch.Tensor:
        """``S[i, j] = cos(attend(tokens_i, fmri_j), fmri_j)`` for all EEG i, fMRI j: (n, m).

        Every candidate is scored with itself as the query, the true one as any other.
        Computed in eval mode without materialising n x m attention calls: the value
        path is linear, so each EEG token's value is passed through the output
        projection once and the n x m outputs are weighted sums of those.
        """
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            tokens = torch.cat([self.eeg_tokens(eeg[s:s + batch].to(device))
                                for s in range(0, eeg.shape[0], batch)])
            f = fmri.to(device, tokens.dtype)
            return self._scores(tokens, f).cpu()
        finally:
            self.train(was_training)

    def _scores(self, tokens: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        h = self.cfg.n_heads
        d = self.fmri_dim
        dh = d // h
        n, k = tokens.shape[:2]
        wq, bq, wk, bk, wv, bv = self._projections()
        q = (f @ wq.T + bq).reshape(-1, h, dh) / dh ** 0.5  # (m, H, dh)
        keys = (tokens @ wk.T + bk).reshape(n, k, h, dh)  # (n, K, H, dh)
        values = (tokens @ wv.T + bv).reshape(n, k, h, dh)
        wo, bo = self.attn.out_proj.weight, self.attn.out_proj.bias
        # u[i, h, k] = head h's block of the output projection applied to value (i, k)
        u = torch.einsum("nkhe,dhe->nhkd", values, wo.reshape(d, h, dh))
        fu = F.normalize(f, dim=-1)
        out = torch.empty(n, f.shape[0], dtype=tokens.dtype, device=tokens.device)
        for i0 in range(0, n, _SCORE_BLOCK):
            ki, ui = keys[i0:i0 + _SCORE_BLOCK], u[i0:i0 + _SCORE_BLOCK]
            for j0 in range(0, f.shape[0], _SCORE_BLOCK):
                qj = q[j0:j0 + _SCORE_BLOCK]
                w = torch.einsum("jhe,ikhe->ijhk", qj, ki).softmax(dim=-1)
                aligned = torch.einsum("ijhk,ihkd->ijd", w, ui)
                if bo is not None:
                    aligned = aligned + bo
                out[i0:i0 + _SCORE_BLOCK, j0:j0 + _SCORE_BLOCK] = torch.einsum(
                    "ijd,jd->ij", F.normalize(aligned, dim=-1), fu[j0:j0 + _SCORE_BLOCK])
        return out


def build_aligner(spec: dict[str, Any]) -> EEGfMRIAligner:
    """The (untrained) model :meth:`EEGfMRIAligner.spec` describes; load weights after."""
    cls = aligners.get(spec["model"])
    return cls(spec["n_chans"], spec["n_times"], spec["fmri_dim"],
               AlignerConfig(**spec["config"]))


def load_pretrained_backbone(model: EEGfMRIAligner, cfg: AlignerConfig) -> dict[str, Any]:
    """Load ``cfg.backbone.pretrained`` into ``model.backbone`` (strictly) and return the
    record of where the weights came from, for the run's metadata."""
    if cfg.encoder == "conv":
        if cfg.conv_pretrained is None:
            return {"init": "random", "encoder": "conv"}
        return load_conv_decoder(model, Path(cfg.conv_pretrained))
    if cfg.backbone.pretrained is None:
        return init_record(cfg.backbone)
    return load_backbone_weights(model.backbone, cfg.backbone.pretrained,
                                 allow_hub=cfg.backbone.allow_hub)


def load_conv_decoder(model: EEGfMRIAligner, path: Path) -> dict[str, Any]:
    """Start the conv encoder from a trained ``eeg_conv`` decoder: its convolution (strict
    keys) and its input z-scoring. Pretraining the EEG encoder on EEG -> image over every
    training image, then aligning on the few paired ones, is what a pretrained CBraMod
    does for Brain2Image."""
    arrays, meta = load_checkpoint(path)
    if meta.get("model_type") != "eeg_conv":
        raise DataError(f"not an eeg_conv decoder checkpoint (model {meta.get('model_type')!r})",
                        path)
    shape = tuple(int(v) for v in meta.get("input_shape", []))
    if shape != (model.n_chans, model.n_times):
        raise DataError(f"the decoder reads epochs of shape {shape}; the alignment data are "
                        f"({model.n_chans}, {model.n_times})", path)
    if (meta.get("preprocess") or {}).get("pca_components"):
        raise DataError("the decoder reads PCA components, not epochs", path)
    prefix = "model/body.0."
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
             if k.startswith(prefix)}
    want = set(model.backbone.state_dict())
    if set(state) != want:
        raise DataError(f"the decoder's convolution does not fit the encoder: missing "
                        f"{sorted(want - set(state))[:10]}, unexpected "
                        f"{sorted(set(state) - want)[:10]} (same conv options needed)", path)
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"the decoder's convolution does not fit the encoder: {exc}",
                        path) from exc
    shape2 = (model.n_chans, model.n_times)
    model.input_mean.copy_(torch.from_numpy(np.asarray(arrays["pre/mean"], np.float32)
                                            .reshape(shape2)))
    model.input_scale.copy_(torch.from_numpy(np.asarray(arrays["pre/scale"], np.float32)
                                             .reshape(shape2)))
    return {"init": "pretrained", "encoder": "conv", "source": str(path.resolve()),
            "checksum": file_checksum(path), "from": "eeg_conv decoder",
            "trained_on": (meta.get("data") or {}).get("index")}
