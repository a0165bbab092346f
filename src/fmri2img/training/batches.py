"""Batches for the training loop: ``(inputs, targets)`` tensors shuffled per epoch, or any
DataLoader yielding such pairs. Inputs may have any shape after the batch axis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

Batches = tuple[torch.Tensor, torch.Tensor] | DataLoader


def as_tensor(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) spans; a last span of one row is merged into the one before.

    A single-row batch breaks BatchNorm in training mode and makes a contrastive loss
    trivially zero.
    """
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans


def iter_batches(data: Batches, batch_size: int, device: torch.device,
                  generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, DataLoader):
        for xb, yb in data:
            yield (xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
        return
    X, Y = data
    n = X.shape[0]
    order = (torch.randperm(n, generator=generator) if generator is not None
             else torch.arange(n)).to(X.device)
    for start, stop in chunks(n, batch_size):
        idx = order[start:stop]
        yield X[idx], Y[idx]


def n_batches(data: Batches, batch_size: int) -> int | None:
    if isinstance(data, DataLoader):
        try:
            return len(data)
        except TypeError:  # iterable-style dataset of unknown length
            return None
    return len(chunks(data[0].shape[0], batch_size))


def prepare(data: Batches | None, device: torch.device, name: str) -> Batches | None:
    if data is None or isinstance(data, DataLoader):
        return data
    if len(data) != 2:
        raise ValueError(f"{name} data must be (inputs, targets) or a DataLoader")
    X, Y = (as_tensor(a).to(device) for a in data)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{name} inputs and targets differ in rows: {X.shape[0]} vs "
                         f"{Y.shape[0]}")
    if X.shape[0] == 0:
        if name == "validation":
            return None
        raise ValueError("training data has no rows")
    return X, Y
