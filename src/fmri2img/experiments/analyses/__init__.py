"""The perception-vs-imagery analyses (``fmri2img analyze``): one module per analysis,
each exposing ``ANALYSIS`` (:class:`~fmri2img.experiments.analyses.base.Analysis`), listed
here in the order they run and are reported."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmri2img.experiments.analyses.base import Analysis

NAMES: tuple[str, ...] = (
    "dimensionality",
    "uncertainty",
    "semantic_survival",
    "topology",
    "fingerprints",
    "dissociation",
    "roi_hierarchy",
)


def get(name: str) -> Analysis:
    if name not in NAMES:
        raise KeyError(f"unknown analysis {name!r}; available: {', '.join(NAMES)}")
    analysis = import_module(f"{__name__}.{name}").ANALYSIS
    assert analysis.name == name, (analysis.name, name)
    return analysis
