"""Uncertainty as vividness: MC-dropout predictive variance of a neural decoder, and how
it and the decoding accuracy of single imagery trials follow the vividness answers.

* :func:`mc_dropout` runs a torch module ``T`` times with its dropout layers active and
  everything else in eval mode (LayerNorm and BatchNorm keep their inference behaviour);
  the masks come from a seeded ``torch.Generator`` through forward hooks, so the result
  depends on the seed alone (not on the global torch RNG), and all passes of a block of
  rows run as one batch. The predictive variance of a trial is the mean over output
  dimensions of the across-pass variance (Gal & Ghahramani 2016).
* :func:`vividness_problem` says why vividness cannot be correlated with anything (too
  few answers, no variance: e.g. a subject who answered "vivid" on every trial).
* :func:`spearman_test`: Spearman's rho of a per-trial measure with vividness, a
  bootstrap CI (trials resampled within target) and a permutation p that shuffles the
  vividness answers among the trials of one target. Target difficulty is then the same
  under the null as in the data: a target that is both easy to decode and often imagined
  vividly cannot make a correlation by itself.
* :func:`pooled_test`: the subjects' rhos combined (mean), with the pooled permutation p
  (the sum of the subjects' statistics against sums of independent within-subject null
  draws) and a CI from the mean of the subjects' bootstrap draws.
* :func:`calibration`: accuracy by uncertainty quantile bin (the calibration plot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from fmri2img.analysis.dissociation import permutation_p

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_rates(module: nn.Module) -> list[float]:
    """The rate of each dropout layer of ``module`` (empty: no dropout layer)."""
    return [float(m.p) for m in module.modules() if isinstance(m, DROPOUT_TYPES)]


_BLOCK_TRIALS = 256  # trials per forward batch
_BLOCK_PASSES = 32  # passes per forward batch: at most 8192 rows at a time


def mc_dropout(module: nn.Module, x: np.ndarray, n_passes: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """``n_passes`` stochastic forward passes of ``module`` on ``x`` (n, ...).

    Returns the MC mean prediction (n, D) and the predictive variance (n,): the across-
    pass variance (ddof=1) averaged over output dimensions. Batches have a fixed layout
    (``_BLOCK_TRIALS`` trials x ``_BLOCK_PASSES`` passes), so the masks, hence the
    result, depend on ``seed`` alone."""
    if n_passes < 2:
        raise ValueError(f"n_passes must be >= 2, got {n_passes}")
    layers = [m for m in module.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if not layers:
        raise ValueError("the module has no active dropout layer (p > 0)")
    if any(isinstance(m, DROPOUT_TYPES) and not isinstance(m, nn.Dropout) and m.p > 0
           for m in module.modules()):
        raise ValueError("only element-wise nn.Dropout layers are supported")
    device = next(module.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))

    def hook(layer: nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        # the layer is in eval mode (identity): apply inverted dropout with our generator
        keep = 1.0 - layer.p
        mask = torch.empty_like(out).bernoulli_(keep, generator=gen)
        return out * mask / keep

    was_training = module.training
    module.eval()
    handles = [m.register_forward_hook(hook) for m in layers]
    x = np.ascontiguousarray(x, dtype=np.float32)
    means, variances = [], []
    try:
        with torch.inference_mode():
            for start in range(0, x.shape[0], _BLOCK_TRIALS):
                xb = torch.from_numpy(x[start:start + _BLOCK_TRIALS]).to(device)
                outs = []
                for done in range(0, n_passes, _BLOCK_PASSES):
                    t = min(_BLOCK_PASSES, n_passes - done)
                    rep = xb.repeat(t, *([1] * (xb.ndim - 1)))  # pass-major
                    outs.append(module(rep).double().reshape(t, xb.shape[0], -1))
                out = torch.cat(outs)
                means.append(out.mean(0).cpu().numpy())
                variances.append(out.var(0, unbiased=True).mean(-1).cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return np.concatenate(means), np.concatenate(variances)


def vividness_problem(vividness: np.ndarray, min_answers: int = 20,
                      min_each: int = 3) -> str | None:
    """Why vividness answers (NaN: no answer) cannot be correlated, or None."""
    v = np.asarray(vividness, dtype=np.float64)
    answered = v[np.isfinite(v)]
    missing = int(v.size - answered.size)
    tail = f" ({missing} without an answer)" if missing else ""
    if answered.size < min_answers:
        return (f"only {answered.size} of {v.size} imagery trials have a vividness "
                f"answer{tail}; at least {min_answers} are needed")
    values, counts = np.unique(answered, return_counts=True)
    if values.size == 1:
        return (f"vividness is {values[0]:g} on all {answered.size} imagery trials with "
                f"an answer{tail}: no variance to correlate with")
    minority = int(answered.size - counts.max())
    if minority < min_each:
        return (f"vividness is {values[np.argmax(counts)]:g} on {counts.max()} of "
                f"{answered.size} answered imagery trials (only {minority} otherwise, "
                f"fewer than {min_each}){tail}")
    return None


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, centred and scaled to unit norm (0 where
    constant): the dot product of two of them is Spearman's rho."""
    r = rankdata(x, axis=-1)
    r = r - r.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(r, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, r / norm, np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (NaN when either is constant)."""
    return float(np.sum(_centred_ranks(np.asarray(x, float)) *
                        _centred_ranks(np.asarray(y, float))))


@dataclass
class Correlation:
    rho: float
    ci: tuple[float, float]
    p: float
    n: int
    bootstrap: np.ndarray  # (B,) rho of trial resamples (NaN where a resample is constant)
    null: np.ndarray  # (P,) rho with vividness permuted within target


def _groups(target: np.ndarray) -> list[np.ndarray]:
    _, codes = np.unique(np.asarray(target), return_inverse=True)
    codes = codes.ravel()
    return [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]


def interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(d, [a, 1.0 - a])
    return float(lo), float(hi)


def spearman_test(measure: np.ndarray, vividness: np.ndarray, target: np.ndarray, *,
                  n_bootstrap: int = 1000, n_permutations: int = 1000, seed: int = 0,
                  confidence: float = 0.95) -> Correlation:
    """Spearman's rho of ``measure`` with ``vividness`` over trials with an answer,
    bootstrap CI (trials resampled within target) and two-sided permutation p (answers
    shuffled within target)."""
    m = np.asarray(measure, dtype=np.float64)
    v = np.asarray(vividness, dtype=np.float64)
    t = np.asarray(target)
    if not (m.shape == v.shape == t.shape) or m.ndim != 1:
        raise ValueError("measure, vividness and target must be 1-D of one length")
    keep = np.isfinite(v) & np.isfinite(m)
    m, v, t = m[keep], v[keep], t[keep]
    if m.size < 3:
        raise ValueError(f"need at least 3 trials with an answer, got {m.size}")
    rng = np.random.default_rng(seed)
    rm, rv = _centred_ranks(m), _centred_ranks(v)
    rho = float(np.sum(rm * rv))
    groups = _groups(t)
    # Permutation: the multiset of answers is unchanged, so their ranks are only
    # reordered and the null rho is a dot product with the fixed ranks of the measure.
    perm = np.tile(np.arange(m.size), (n_permutations, 1))
    for g in groups:
        perm[:, g] = g[rng.permuted(np.tile(np.arange(g.size), (n_permutations, 1)), axis=1)]
    null = rv[perm] @ rm
    boot_idx = np.empty((n_bootstrap, m.size), dtype=np.int64)
    for g in groups:
        boot_idx[:, g] = g[rng.integers(0, g.size, (n_bootstrap, g.size))]
    boot = np.sum(_centred_ranks(m[boot_idx]) * _centred_ranks(v[boot_idx]), axis=1)
    return Correlation(rho, interval(boot, confidence), permutation_p(rho, null), m.size,
                       boot, null)


def pooled_test(rhos: Sequence[float], bootstraps: Sequence[np.ndarray],
                nulls: Sequence[np.ndarray], confidence: float = 0.95
                ) -> tuple[float, tuple[float, float], float]:
    """Mean rho over subjects; CI from the mean of the subjects' bootstrap draws (trials
    resampled within subjects, subjects fixed); pooled two-sided permutation p: the sum
    of the rhos against the sums of the subjects' independent null draws."""
    if not rhos or not len(rhos) == len(bootstraps) == len(nulls):
        raise ValueError("need one rho, one bootstrap and one null per subject")
    n_b = min(len(b) for b in bootstraps)
    n_p = min(len(n) for n in nulls)
    boot = np.mean([np.asarray(b[:n_b], dtype=np.float64) for b in bootstraps], axis=0)
    null = np.sum([np.asarray(n[:n_p], dtype=np.float64) for n in nulls], axis=0)
    return (float(np.mean(rhos)), interval(boot, confidence),
            permutation_p(float(np.sum(rhos)), null))


@dataclass
class Calibration:
    edges: np.ndarray  # (bins + 1,) uncertainty quantiles
    uncertainty: np.ndarray  # (bins,) mean uncertainty per bin
    accuracy: np.ndarray  # (bins,) mean accuracy per bin
    count: np.ndarray  # (bins,)


def quantile_bins(uncertainty: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each value (0..n_bins-1) by its quantile, and the bin edges; equal values
    share a bin (ranks with ties averaged), so bins may hold unequal counts."""
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.size == 0 or n_bins < 1:
        raise ValueError("need values and at least one bin")
    ranks = rankdata(u)  # 1..n
    b = np.minimum(((ranks - 0.5) / u.size * n_bins).astype(np.int64), n_bins - 1)
    return b, np.quantile(u, np.linspace(0, 1, n_bins + 1))


def calibration(uncertainty: np.ndarray, accuracy: np.ndarray, n_bins: int = 5,
                bins: np.ndarray | None = None) -> Calibration:
    """Mean accuracy per uncertainty quantile bin (``bins``: precomputed bin labels, e.g.
    within-subject quantiles when trials of several subjects are pooled)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    if u.shape != a.shape:
        raise ValueError("uncertainty and accuracy must have one length")
    if bins is None:
        bins, edges = quantile_bins(u, n_bins)
    else:
        edges = np.full(n_bins + 1, np.nan)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.bincount(bins, weights=u, minlength=n_bins) / count
        acc = np.bincount(bins, weights=a, minlength=n_bins) / count
    return Calibration(edges, mu, acc, count.astype(np.int64))
