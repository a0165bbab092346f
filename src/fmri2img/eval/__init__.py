"""Evaluation: per-item metrics (:mod:`.metrics`) and resampling statistics (:mod:`.stats`).

Pure numerics: arrays in, arrays out, no file I/O.
"""

from fmri2img.eval.metrics import (
    DEFAULT_KS,
    DEFAULT_N_POOLS,
    DEFAULT_POOL_SIZE,
    TIE_TOLERANCE,
    PairwiseMetric,
    brain_retrieval_hits,
    chance_levels,
    cosine_matrix,
    cosine_metric,
    cosine_per_item,
    pearson_matrix,
    retrieval_hits,
    score_all,
    top_k_metric,
    two_way_metric,
    two_way_per_item,
)
from fmri2img.eval.stats import (
    PairDecomposable,
    PairedDifference,
    PermutationResult,
    RatioCI,
    bootstrap_ci,
    paired_difference_test,
    permutation_test_vs_chance,
    ratio_ci,
)

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_N_POOLS",
    "DEFAULT_POOL_SIZE",
    "TIE_TOLERANCE",
    "PairDecomposable",
    "PairedDifference",
    "PairwiseMetric",
    "PermutationResult",
    "RatioCI",
    "bootstrap_ci",
    "brain_retrieval_hits",
    "chance_levels",
    "cosine_matrix",
    "cosine_metric",
    "cosine_per_item",
    "paired_difference_test",
    "pearson_matrix",
    "permutation_test_vs_chance",
    "ratio_ci",
    "retrieval_hits",
    "score_all",
    "top_k_metric",
    "two_way_metric",
    "two_way_per_item",
]
