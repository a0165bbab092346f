"""Transfer ratios: how much of a decoder's above-chance score survives from one condition
(vision) to another (imagery), per metric, with a paired bootstrap CI over targets.

``ratio = (imagery - chance) / (vision - chance)``: 1 means imagery is decoded as well as
vision, 0 means at chance. Arrays in, numbers out.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fmri2img.eval import stats as S


def _num(x: float) -> float | None:
    """JSON has no NaN: undefined values are written as null."""
    return None if not np.isfinite(x) else float(x)


def transfer_ratios(imagery: dict[str, np.ndarray], vision: dict[str, np.ndarray],
                    chance: dict[str, float | None], *, n_resamples: int, seed: int
                    ) -> dict[str, dict[str, Any]]:
    """Per metric of ``imagery`` (per-target scores, paired with ``vision``'s): the ratio
    of the chance-corrected means, its CI, both means and the chance level."""
    out = {}
    for k in imagery:
        c = chance.get(k) or 0.0
        img = imagery[k] - c
        vis = vision[k] - c
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                est, (lo, hi) = S.ratio_ci(img, vis, paired=True, n_resamples=n_resamples,
                                           seed=seed)
        except ValueError:  # vision at chance (e.g. top-k with k >= pool): undefined
            est, lo, hi = np.nan, np.nan, np.nan
        out[k] = {"ratio": _num(est), "ci": [_num(lo), _num(hi)],
                  "imagery": float(np.mean(imagery[k])), "vision": float(np.mean(vision[k])),
                  "chance": c or None}
    return out


def ratio_to_reference(overall: dict[str, float], reference_overall: dict[str, float],
                       reference_chance: dict[str, float | None],
                       metrics: tuple[str, ...]) -> dict[str, float | None]:
    """``(overall - chance) / (reference - chance)`` for each of ``metrics`` both hold
    (None where the reference sits at chance)."""
    out: dict[str, float | None] = {}
    for k in metrics:
        if k in overall and k in reference_overall:
            c = reference_chance.get(k) or 0.0
            denom = reference_overall[k] - c
            out[k] = float((overall[k] - c) / denom) if denom else None
    return out
