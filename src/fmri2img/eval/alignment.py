"""Metrics of an EEG-fMRI aligner (arrays in, numbers out; no models, no files).

Retrieval reads a score matrix ``S`` (EEG rows x fMRI columns, row i's true partner in
column i), e.g. :meth:`fmri2img.models.alignment.EEGfMRIAligner.pairwise_scores`, where
every candidate was scored with itself as the query. EEG -> fMRI ranks ``S[i, i]`` in
row i, fMRI -> EEG ranks ``S[j, j]`` in column j. Ties count by their expectation under
random tie-breaking (:func:`fmri2img.eval.similarity.expected_hit`), so a constant score
matrix scores exactly chance. When several records share a pair (``groups``: several EEG
and fMRI trials of one image pair), the other records of the pair are equally right
answers: they are left out of each other's candidates rather than counted as misses, and
the bootstrap resamples whole groups.

:func:`eeg_only_metrics` is the matched control: the same retrieval from the plain
cosine of the EEG-only embedding with the fMRI. What the attention adds is the
difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fmri2img.eval.similarity import (
    FloatArray,
    as_matrix,
    check_ks,
    check_paired,
    cosine_sims,
    counts_against,
    expected_hit,
    unit_rows,
)
from fmri2img.eval.stats import bootstrap_ci


def _groups(groups: ArrayLike | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must hold one label per row ({n}), got shape {g.shape}")
    return g


def retrieval_hits(S: ArrayLike, k: int, groups: ArrayLike | None = None
                   ) -> tuple[FloatArray, FloatArray]:
    """(per-row expected top-k hit, per-row chance) of ranking ``S[i, i]`` in row i.

    Columns of row i's own group other than i are not candidates (see the module doc).
    """
    s = as_matrix(S, "S")
    n = s.shape[0]
    if s.shape != (n, n):
        raise ValueError(f"S must be square (row i's partner in column i), got {s.shape}")
    g = _groups(groups, n)
    same = (g[:, None] == g[None, :]) & ~np.eye(n, dtype=bool)
    masked = np.where(same, -np.inf, s)
    ref = np.diag(s).copy()
    below, at_most = counts_against(masked, ref)
    greater = n - at_most
    ties = at_most - below - 1  # the true entry itself is not its own competitor
    candidates = n - same.sum(axis=1)
    return expected_hit(greater, ties, k), np.minimum(k, candidates) / candidates


def _ci(values: FloatArray, n_bootstrap: int, seed: int, groups: np.ndarray
        ) -> tuple[float, float]:
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    return bootstrap_ci(values, np.mean, n_resamples=n_bootstrap, seed=seed,
                        groups=None if np.unique(groups).size == values.size else groups)


def permutation_p(S: FloatArray, k: int, n_permutations: int, seed: int,
                  groups: np.ndarray) -> float | None:
    """One-sided p of the mean top-k hit against chance: the partners (columns) are
    shuffled, the scores kept. Only for one record per pair (None otherwise)."""
    if np.unique(groups).size != groups.size:
        return None
    observed = float(retrieval_hits(S, k)[0].mean())
    rng = np.random.default_rng(seed + 7919)
    exceed = sum(retrieval_hits(S[:, rng.permutation(S.shape[1])], k)[0].mean()
                 >= observed - 1e-12 for _ in range(n_permutations))
    return (1 + exceed) / (1 + n_permutations)


def _retrieval(S: FloatArray, ks: tuple[int, ...], n_bootstrap: int, seed: int,
               groups: np.ndarray, n_permutations: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for direction, mat in (("eeg_to_fmri", S), ("fmri_to_eeg", S.T)):
        block: dict[str, Any] = {}
        for k in ks:
            hits, chance = retrieval_hits(mat, k, groups)
            block[f"top{k}"] = float(hits.mean())
            block[f"top{k}_ci"] = _ci(hits, n_bootstrap, seed, groups)
            block[f"top{k}_chance"] = float(chance.mean())
            if n_permutations:
                block[f"top{k}_p"] = permutation_p(mat, k, n_permutations, seed, groups)
        out[direction] = block
    return out


def alignment_metrics(S: ArrayLike, aligned: ArrayLike, fmri: ArrayLike,
                      ks: Sequence[int] = (1, 10), n_bootstrap: int = 1000, seed: int = 0,
                      groups: ArrayLike | None = None,
                      eeg_emb: ArrayLike | None = None,
                      n_permutations: int = 0) -> dict[str, Any]:
    """MSE and cosine of the paired outputs, retrieval both ways from ``S``, with CIs.

    ``aligned[i]`` is the output for record i with its own fMRI as the query (what the
    losses trained), so MSE and cosine are the optimistic, paired numbers; retrieval from
    ``S`` is the fair one. ``eeg_emb`` adds the EEG-only control (:func:`eeg_only_metrics`)
    under ``"eeg_only"``.
    """
    s = as_matrix(S, "S")
    a = as_matrix(aligned, "aligned")
    f = as_matrix(fmri, "fmri")
    check_paired(a, f, ("aligned", "fmri"))
    n = a.shape[0]
    if s.shape != (n, n):
        raise ValueError(f"S must be ({n}, {n}) for {n} paired rows, got {s.shape}")
    ks_ = check_ks(ks)
    g = _groups(groups, n)
    cos = np.clip(np.sum(unit_rows(a) * unit_rows(f), axis=1), -1.0, 1.0)
    mse = 2.0 - 2.0 * cos
    out: dict[str, Any] = {
        "n": n,
        "n_groups": int(np.unique(g).size),
        "mse": float(mse.mean()),
        "mse_ci": _ci(mse, n_bootstrap, seed, g),
        "cosine": float(cos.mean()),
        "cosine_ci": _ci(cos, n_bootstrap, seed, g),
        **_retrieval(s, ks_, n_bootstrap, seed, g, n_permutations),
    }
    if eeg_emb is not None:
        out["eeg_only"] = eeg_only_metrics(eeg_emb, f, ks_, n_bootstrap, seed, groups,
                                           n_permutations)
    return out


def eeg_only_metrics(eeg_emb: ArrayLike, fmri: ArrayLike, ks: Sequence[int] = (1, 10),
                     n_bootstrap: int = 1000, seed: int = 0,
                     groups: ArrayLike | None = None,
                     n_permutations: int = 0) -> dict[str, Any]:
    """The control: cosine and retrieval of the EEG-only embedding against the fMRI."""
    e = as_matrix(eeg_emb, "eeg_emb")
    f = as_matrix(fmri, "fmri")
    check_paired(e, f, ("eeg_emb", "fmri"))
    g = _groups(groups, e.shape[0])
    sims = cosine_sims(e, f)
    cos = np.diag(sims).copy()
    return {"cosine": float(cos.mean()), "cosine_ci": _ci(cos, n_bootstrap, seed, g),
            **_retrieval(sims, check_ks(ks), n_bootstrap, seed, g, n_permutations)}
