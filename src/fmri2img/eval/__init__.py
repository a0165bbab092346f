"""Evaluation numerics: arrays in, arrays out, no files and no configs.

* :mod:`.similarity`: cosine / Pearson similarity matrices and tie-aware rank counts;
* :mod:`.metrics`: per-item metrics (cosine, retrieval in pools, 2-way), chance levels;
* :mod:`.pairwise`: pair-decomposable forms of the metrics, for fast permutation tests;
* :mod:`.stats`: bootstrap CIs, ratio CIs, paired differences;
* :mod:`.permutation`: the permutation test against chance;
* :mod:`.scoring`: one scoring protocol (:class:`~.scoring.Scoring`) over all of these;
* :mod:`.transfer`: transfer ratios (imagery over vision, chance corrected).
"""

from fmri2img.eval.metrics import (
    DEFAULT_KS,
    DEFAULT_N_POOLS,
    DEFAULT_POOL_SIZE,
    TIE_TOLERANCE,
    brain_retrieval_hits,
    chance_levels,
    cosine_matrix,
    cosine_per_item,
    pearson_matrix,
    retrieval_hits,
    score_all,
    two_way_per_item,
)
from fmri2img.eval.pairwise import PairwiseMetric, cosine_metric, top_k_metric, two_way_metric
from fmri2img.eval.permutation import (
    PairDecomposable,
    PermutationResult,
    permutation_test_vs_chance,
)
from fmri2img.eval.scoring import Scoring
from fmri2img.eval.stats import (
    PairedDifference,
    RatioCI,
    bootstrap_ci,
    paired_difference_test,
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
    "Scoring",
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
