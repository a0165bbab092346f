"""Options shared by the index builders (each builder's config extends these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import parse_subject


class CacheOptions(StrictModel):
    output: Path
    cache_dtype: Literal["float32", "float16"] = "float32"
    cache_dir: Path | None = None  # default: the output's folder / cache
    reuse_cache: bool = True
    rehash: bool = False  # re-hash sources even when size and mtime are unchanged


class NSDSourceOptions(CacheOptions):
    nsd_root: Path
    subject: int
    beta_format: Literal["auto", "hdf5", "nifti"] = "auto"
    roi: str = "nsdgeneral"

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> int:
        return parse_subject(v)
