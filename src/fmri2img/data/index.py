"""The trial index: one Parquet schema for every dataset.

One row per trial (or per stimulus averaged over its repetitions). The row's voxels are
row ``cache_row`` of the beta cache named in the file's metadata. Columns:

=============  ========  =====================================================================
column         type      meaning
=============  ========  =====================================================================
subject        str       ``subj01``...
dataset        str       ``nsd``, ``nsd-imagery``, or a ``.mat`` dataset's name
domain         str       ``perception``, ``imagery`` or ``attention``
session        int32     1-based session (NSD-Imagery: 1; ``.mat``: 1)
run            int32     1-based run within the session (NSD-Imagery: block order 1..12)
run_name       str       NSD-Imagery block (``visA``, ``imgB_2``...); NSD ``run01``...
trial          int32     1-based trial within the run
beta_index     int32     0-based volume in the source file (-1 for averaged rows)
global_trial   int64     0-based trial over the subject's whole design (-1 for averaged rows)
stimulus       str       stimulus key (``nsd:<73k id>``, ``nsdimagery:<code>``, ``<dataset>:<k>``)
stimulus_id    Int64     0-based 73k id (NSD) or stimulus number (``.mat``); null if none
target_code    str       NSD-Imagery target letter (the target shown / imagined), else null
stimulus_set   str       ``simple``, ``complex``, ``conceptual`` (NSD-Imagery), else null
cue            str       NSD-Imagery cue letter, else null
label          str       dataset label (``.mat`` condition), else null
repetition     int16     0-based presentation count of this stimulus/target (-1 averaged)
n_averaged     int16     trials averaged into this row (1 for single trials)
vividness      float32   1 vivid, 0 not vivid, NaN unknown
split          str       ``train``, ``val``, ``test`` or ``excluded``
cache_row      int64     row of the beta cache
=============  ========  =====================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path

SCHEMA_VERSION = 1
META_KEY = b"fmri2img.index"

SCHEMA = pa.schema(
    [
        ("subject", pa.string()),
        ("dataset", pa.string()),
        ("domain", pa.string()),
        ("session", pa.int32()),
        ("run", pa.int32()),
        ("run_name", pa.string()),
        ("trial", pa.int32()),
        ("beta_index", pa.int32()),
        ("global_trial", pa.int64()),
        ("stimulus", pa.string()),
        ("stimulus_id", pa.int64()),
        ("target_code", pa.string()),
        ("stimulus_set", pa.string()),
        ("cue", pa.string()),
        ("label", pa.string()),
        ("repetition", pa.int16()),
        ("n_averaged", pa.int16()),
        ("vividness", pa.float32()),
        ("split", pa.string()),
        ("cache_row", pa.int64()),
    ]
)
COLUMNS = SCHEMA.names
DOMAINS = ("perception", "imagery", "attention")
SPLITS = ("train", "val", "test", "excluded")


def validate(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"index lacks columns {missing}")
    bad_domain = set(df["domain"].unique()) - set(DOMAINS)
    if bad_domain:
        raise ValueError(f"unknown domains {sorted(bad_domain)}")
    bad_split = set(df["split"].unique()) - set(SPLITS)
    if bad_split:
        raise ValueError(f"unknown splits {sorted(bad_split)}")
    if df["cache_row"].duplicated().any():
        raise ValueError("two index rows point at the same cache row")


def to_table(df: pd.DataFrame, meta: dict[str, Any]) -> pa.Table:
    validate(df)
    table = pa.Table.from_pandas(df[COLUMNS], schema=SCHEMA, preserve_index=False)
    info = {"schema_version": SCHEMA_VERSION, **meta}
    return table.replace_schema_metadata({META_KEY: json.dumps(info, default=str).encode()})


def write_index(path: str | Path, df: pd.DataFrame, meta: dict[str, Any]) -> None:
    table = to_table(df, meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_index(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read an index and its metadata; the cache path in the metadata is made absolute."""
    path = Path(path)
    if not path.exists():
        raise DataError("index file not found", path)
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"not a readable Parquet index ({exc})", path) from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError("Parquet file has no fmri2img index metadata", path)
    meta = json.loads(raw)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"index schema version {meta.get('schema_version')}; expected {SCHEMA_VERSION}", path
        )
    if "cache" in meta:
        meta["cache"] = str((path.parent / meta["cache"]).resolve())
    df = table.to_pandas()
    df["stimulus_id"] = df["stimulus_id"].astype("Int64")
    return df, meta


def empty_frame(n: int) -> pd.DataFrame:
    """A frame of ``n`` rows with every column present and null/neutral values."""
    return pd.DataFrame(
        {
            "subject": pd.Series([None] * n, dtype=object),
            "dataset": pd.Series([None] * n, dtype=object),
            "domain": pd.Series([None] * n, dtype=object),
            "session": np.ones(n, dtype=np.int32),
            "run": np.ones(n, dtype=np.int32),
            "run_name": pd.Series([None] * n, dtype=object),
            "trial": np.ones(n, dtype=np.int32),
            "beta_index": np.full(n, -1, dtype=np.int32),
            "global_trial": np.full(n, -1, dtype=np.int64),
            "stimulus": pd.Series([None] * n, dtype=object),
            "stimulus_id": pd.array([pd.NA] * n, dtype="Int64"),
            "target_code": pd.Series([None] * n, dtype=object),
            "stimulus_set": pd.Series([None] * n, dtype=object),
            "cue": pd.Series([None] * n, dtype=object),
            "label": pd.Series([None] * n, dtype=object),
            "repetition": np.zeros(n, dtype=np.int16),
            "n_averaged": np.ones(n, dtype=np.int16),
            "vividness": np.full(n, np.nan, dtype=np.float32),
            "split": pd.Series(["excluded"] * n, dtype=object),
            "cache_row": np.arange(n, dtype=np.int64),
        }
    )


def sidecar(index_path: str | Path, suffix: str) -> Path:
    """Files written beside an index: ``x.parquet`` -> ``x.<suffix>``."""
    p = Path(index_path)
    stem = p.name[: -len(".parquet")] if p.name.endswith(".parquet") else p.name
    return p.with_name(f"{stem}.{suffix}")
