"""Number formatting shared by the report tables: values with CIs, p-values, and the
escapes of Markdown and LaTeX cells."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DASH = "–"
TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def num(x: Any) -> float:
    """Any value as a float, NaN when missing or not a number (so means can skip it)."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def value_ci(entry: Any) -> tuple[float, float, float]:
    """(value, lo, hi) of a ``{"value", "ci"}`` metric entry; a bare number has no CI."""
    if entry is None:
        return math.nan, math.nan, math.nan
    if not isinstance(entry, Mapping):
        return num(entry), math.nan, math.nan
    ci = entry.get("ci")
    lo = hi = math.nan
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        lo, hi = num(ci[0]), num(ci[1])
    return num(entry.get("value")), lo, hi


def finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if finite(v) else DASH


def fmt_ci(v: float, lo: float, hi: float) -> str:
    """``0.712 [0.650, 0.770]``; the bracket is left out when the CI is unknown."""
    if not finite(v):
        return DASH
    if finite(lo) and finite(hi):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{v:.3f}"


def fmt_p(p: float) -> str:
    if not finite(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def tex_escape(text: str) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in text)
