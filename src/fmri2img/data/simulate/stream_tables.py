"""Per-stream defaults of the voxel model: the seven NSD ``streams`` labels, in order."""

from __future__ import annotations

STREAM_NAMES = (
    "early",
    "midventral",
    "midlateral",
    "midparietal",
    "ventral",
    "lateral",
    "parietal",
)


def default_low_weight() -> dict[str, float]:
    # Share of a voxel's stimulus-driven variance that comes from the low-level latent.
    return {
        "early": 0.85,
        "midventral": 0.55,
        "midlateral": 0.55,
        "midparietal": 0.6,
        "ventral": 0.15,
        "lateral": 0.2,
        "parietal": 0.45,
    }


def default_layout_share() -> dict[str, float]:
    # Share of a voxel's low-level variance that comes from its pRF's view of the image's
    # contrast layout (the rest: the global low-level features); retinotopic cortex only.
    return {
        "early": 0.6,
        "midventral": 0.35,
        "midlateral": 0.35,
        "midparietal": 0.35,
        "ventral": 0.0,
        "lateral": 0.0,
        "parietal": 0.0,
    }


def default_prf_size_factor() -> dict[str, float]:
    # pRFs grow up the hierarchy.
    return {
        "early": 1.0,
        "midventral": 2.0,
        "midlateral": 2.0,
        "midparietal": 2.0,
        "ventral": 3.0,
        "lateral": 3.0,
        "parietal": 3.0,
    }


def default_imagery_participation() -> dict[str, float]:
    # Probability that a voxel carries imagery signal at all: imagery is confined to fewer
    # voxels, and fewest in retinotopic cortex.
    return {
        "early": 0.35,
        "midventral": 0.55,
        "midlateral": 0.5,
        "midparietal": 0.5,
        "ventral": 0.85,
        "lateral": 0.75,
        "parietal": 0.6,
    }
