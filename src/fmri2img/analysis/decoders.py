"""Decoders compared with each other on the same perception test images.

Marginal CIs of two decoders overlap long before their difference is uncertain, because
both are scored on the same images; the paired difference over images is the test.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from fmri2img.analysis.hypotheses import paired


def compare_decoders(per_item: dict[str, dict[str, dict[str, float]]], n_resamples: int,
                     seed: int) -> list[dict[str, Any]]:
    """Every pair of decoders (``{model: {metric: {item: value}}}``), each metric they
    share: mean paired difference (a - b) over the shared items, bootstrap CI, sign-flip
    p and Cohen's d_z."""
    out = []
    for a, b in combinations(per_item, 2):
        metrics = {m: paired(per_item[a][m], per_item[b].get(m), n_resamples, seed)
                   for m in per_item[a]}
        out.append({"a": a, "b": b, "metrics": {m: v for m, v in metrics.items() if v}})
    return out
