"""Decoders compared with each other on the same perception test images.

Marginal CIs of two decoders overlap long before their difference is uncertain, because
both are scored on the same images; the paired difference over images is the test.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from fmri2img.eval.stats import paired_difference_test


def compare_decoders(per_item: dict[str, dict[str, dict[str, float]]], n_resamples: int,
                     seed: int) -> list[dict[str, Any]]:
    """Every pair of decoders (``{model: {metric: {item: value}}}``), each metric they
    share: mean paired difference (a - b) over the shared items, bootstrap CI and
    sign-flip p."""
    out = []
    for a, b in combinations(per_item, 2):
        metrics = {}
        for m in per_item[a]:
            if m not in per_item[b]:
                continue
            keys = sorted(set(per_item[a][m]) & set(per_item[b][m]))
            if len(keys) < 2:
                continue
            r = paired_difference_test([per_item[a][m][k] for k in keys],
                                       [per_item[b][m][k] for k in keys],
                                       n_resamples=n_resamples, seed=seed)
            metrics[m] = {"mean_difference": r.mean_difference, "ci": list(r.ci),
                          "p_value": r.p_value, "n": r.n}
        out.append({"a": a, "b": b, "metrics": metrics})
    return out
