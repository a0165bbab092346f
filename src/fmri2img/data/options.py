"""Options shared by the index builders (each builder's config extends these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import parse_subject


class CacheOptions(StrictModel):
    output: Path = Field(description="the trial index to write (.parquet)")
    cache_dtype: Literal["float32", "float16"] = "float32"
    cache_dir: Path | None = Field(None, description="where beta caches live (default: "
                                                     "OUTPUT's folder/cache)")
    reuse_cache: bool = Field(True, description="reuse a beta cache built from the same "
                                                "sources with the same options")
    rehash: bool = Field(False, description="re-hash the sources instead of trusting size "
                                            "and mtime")


class NSDSourceOptions(CacheOptions):
    nsd_root: Path = Field(description="NSD root (the release's layout)")
    subject: int = Field(description="subject, e.g. subj01 or 1")
    beta_format: Literal["auto", "hdf5", "nifti"] = "auto"
    roi: str = Field("nsdgeneral", description="ATLAS or ATLAS:NAME,...")

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> int:
        return parse_subject(v)
