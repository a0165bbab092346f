"""Figures written as PNG and PDF (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from fmri2img.io.atomic import atomic_path


def pyplot():  # the matplotlib.pyplot module
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed); the
    backend must be chosen before pyplot is first imported, hence the late import."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.<fmt>`` for each format atomically and close the figure."""
    plt = pyplot()
    stem = Path(stem)
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def loss_curve(history: Sequence[dict], stem: str | Path, title: str = "") -> list[Path]:
    """Training and validation loss per epoch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else v for v in values], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(frameon=False)
    return save_figure(fig, stem)


def similarity_distributions(matched: np.ndarray, unmatched: np.ndarray, stem: str | Path,
                             title: str = "", xlabel: str = "cosine similarity") -> list[Path]:
    """Histograms of prediction-target similarity for true pairs vs all other pairs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(min(matched.min(), unmatched.min()), max(matched.max(), unmatched.max()),
                       40)
    ax.hist(unmatched, bins=bins, density=True, alpha=0.6, label="other targets")
    ax.hist(matched, bins=bins, density=True, alpha=0.6, label="own target")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False)
    return save_figure(fig, stem)


def retrieval_examples(stimuli: np.ndarray, similarity: np.ndarray, stem: str | Path,
                       n_rows: int = 6, top_k: int = 5, title: str = "") -> list[Path]:
    """Each row: a test stimulus, then the ``top_k`` gallery stimuli its brain prediction
    is most similar to (its own one framed green when retrieved, others red).

    ``stimuli`` is (n, H, W[, 3]) images of the gallery, ``similarity`` (n, n) prediction x
    gallery with row i's true stimulus at column i.
    """
    plt = pyplot()
    n = min(n_rows, len(stimuli))
    fig, axes = plt.subplots(n, top_k + 1, figsize=(1.3 * (top_k + 1), 1.3 * n), squeeze=False)
    cmap = "gray" if stimuli.ndim == 3 else None
    for i in range(n):
        order = np.argsort(-similarity[i])[:top_k]
        panels = [(i, "stimulus", None), *[(j, f"#{r + 1}", j == i) for r, j in enumerate(order)]]
        for c, (j, label, hit) in enumerate(panels):
            ax = axes[i, c]
            ax.imshow(stimuli[j], cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
            if hit is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor("green" if hit else "red")
                    spine.set_linewidth(2)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, stem)
