"""Losses between predicted and target embeddings, all ``(pred, target) -> scalar``.

Every loss averages over the batch so that its scale does not depend on the batch size
(learning rates then carry over between batch sizes).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements."""
    return F.mse_loss(pred, target)


def cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, target)`` averaged over rows: ignores scale, keeps direction."""
    return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()


def hybrid(pred: torch.Tensor, target: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """``weight * cosine + (1 - weight) * mse``.

    Cosine gets the direction right (what retrieval scores), MSE pins the scale (what a
    generator conditioned on the embedding needs).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"hybrid weight must lie in [0, 1], got {weight}")
    return weight * cosine(pred, target) + (1.0 - weight) * mse(pred, target)


def duplicate_labels(target: torch.Tensor) -> torch.Tensor:
    """One integer per row, equal for rows of ``target`` that are exactly equal.

    Several trials of one image share one target embedding; these labels find them
    without the caller having to pass stimulus ids.
    """
    _, inverse = torch.unique(target.detach(), dim=0, return_inverse=True)
    return inverse


def symmetric_infonce(
    pred: torch.Tensor,
    target: torch.Tensor,
    temperature: float | torch.Tensor = 0.07,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP-style contrastive loss: cross-entropy over the batch similarity matrix, both ways.

    Rows are L2-normalised, ``logits[i, j] = cos(pred_i, target_j) / temperature``; row i's
    positive is column i. Rows that share a label (by default: identical target rows, i.e.
    repetitions of one image) are *not* negatives of each other: their off-diagonal logits
    are masked out of both softmaxes. Otherwise the loss would push a trial away from the
    very embedding it should predict, and a batch of repeats would have no consistent
    optimum.
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must be equal (n, d) shapes, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    logits = p @ t.T / temperature
    if labels is None:
        labels = duplicate_labels(target)
    labels = labels.to(logits.device)
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    same = (labels[:, None] == labels[None, :]) & ~eye
    if same.any():
        # the diagonal always stays, so every row keeps a finite logit
        logits = logits.masked_fill(same, float("-inf"))
    idx = torch.arange(n, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, idx) + F.cross_entropy(logits.T, idx))


def infonce(pred: torch.Tensor, target: torch.Tensor,
            temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """:func:`symmetric_infonce` with duplicates found from the targets."""
    return symmetric_infonce(pred, target, temperature)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mse": mse,
    "cosine": cosine,
    "hybrid": hybrid,
    "infonce": infonce,
}


def get_loss(name: str, **kwargs: Any) -> LossFn:
    """The loss called ``name`` with its options bound, e.g. ``get_loss("hybrid", weight=.7)``.

    Options are checked here, not at the first batch, so a typo fails before training.
    """
    try:
        fn = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}") from None
    if not kwargs:
        return fn
    try:
        inspect.signature(fn).bind(None, None, **kwargs)
    except TypeError as exc:
        raise ValueError(f"invalid options for loss {name!r}: {exc}") from exc
    return functools.partial(fn, **kwargs)
