"""A fixed random "CLIP-like" embedding of the stimulus latents.

    e = normalise( S z + w_nl * N(z, l) + w_low * L l )

``z`` is the semantic latent plus the stimulus's private part (what the embedding model
sees of a stimulus and the brain does not; ``embed_private_sd``), ``S z`` a linear map of
it, centred, ``N`` a one-hidden-layer tanh map of both latents, ``L l`` a linear map of
the low-level latent; each term is scaled to unit RMS norm over the universe, so ``w_nl``
and ``w_low`` are their weights relative to the semantic term. Words embed through the
same map, with their semantic latent (and private part) and the mean low-level latent of
their exemplars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.seeding import stream
from fmri2img.data.simulate.stimuli import LOW_FEATURES, StimulusBank

_ROWS_PER_BLOCK = 4096  # bounds the float64 work arrays


@dataclass
class EmbeddingModel:
    sem_centre: np.ndarray  # (d_sem,)
    sem_scale: float
    linear: np.ndarray  # (D, d_sem)
    low: np.ndarray  # (D, d_low)
    hidden_in: np.ndarray  # (H, d_sem + d_low)
    hidden_bias: np.ndarray  # (H,)
    hidden_out: np.ndarray  # (D, H)
    norms: np.ndarray  # (3,) RMS norms of the three terms over the universe
    nonlinear_weight: float
    low_weight: float

    def _terms(self, z_sem: np.ndarray, z_low: np.ndarray) -> tuple[np.ndarray, ...]:
        zs = (np.asarray(z_sem, np.float64) - self.sem_centre) / self.sem_scale
        zl = np.asarray(z_low, np.float64)
        lin = zs @ self.linear.T
        hid = np.tanh(np.concatenate([zs, zl], axis=1) @ self.hidden_in.T + self.hidden_bias)
        return lin, hid @ self.hidden_out.T, zl @ self.low.T

    def embed(self, z_sem: np.ndarray, z_low: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings (n, D) float32 of the given latents."""
        out = np.empty((z_sem.shape[0], self.linear.shape[0]), dtype=np.float32)
        for a in range(0, z_sem.shape[0], _ROWS_PER_BLOCK):
            lin, nl, lo = self._terms(z_sem[a : a + _ROWS_PER_BLOCK],
                                      z_low[a : a + _ROWS_PER_BLOCK])
            e = (lin / self.norms[0] + self.nonlinear_weight * nl / self.norms[1]
                 + self.low_weight * lo / self.norms[2])
            out[a : a + _ROWS_PER_BLOCK] = e / np.linalg.norm(e, axis=1, keepdims=True)
        return out

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in asdict(self).items()})


def make_embedding_model(cfg: SimulationConfig, bank: StimulusBank) -> EmbeddingModel:
    rng = stream(cfg.seed, "embedding")
    d_sem, d_low = cfg.sem_dim, len(LOW_FEATURES)
    dim, hidden = cfg.embed_dim, cfg.embed_hidden
    universe = bank.z_embedding(slice(0, bank.n_universe)).astype(np.float64)
    centre = universe.mean(axis=0)
    scale = float(universe.std())
    model = EmbeddingModel(
        sem_centre=centre,
        sem_scale=scale,
        linear=rng.normal(size=(dim, d_sem)) / np.sqrt(d_sem),
        low=rng.normal(size=(dim, d_low)) / np.sqrt(d_low),
        hidden_in=rng.normal(size=(hidden, d_sem + d_low)) / np.sqrt(d_sem + d_low),
        hidden_bias=rng.normal(0, 0.5, hidden),
        hidden_out=rng.normal(size=(dim, hidden)) / np.sqrt(hidden),
        norms=np.ones(3),
        nonlinear_weight=cfg.embed_nonlinear_weight,
        low_weight=cfg.embed_low_weight,
    )
    sums = np.zeros(3)
    for a in range(0, bank.n_universe, _ROWS_PER_BLOCK):
        b = min(bank.n_universe, a + _ROWS_PER_BLOCK)
        terms = model._terms(universe[a:b], bank.z_low[a:b])
        sums += [(t**2).sum() for t in terms]
    model.norms = np.sqrt(sums / bank.n_universe)
    return model
