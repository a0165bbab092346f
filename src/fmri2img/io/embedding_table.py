"""The embedding-table format: one row per stimulus, keyed by the index's ``stimulus`` column.

Parquet with columns ``stimulus`` (str key, as in the trial index), ``stimulus_id``
(Int64, dataset image id or null), ``caption`` (str or null) and ``embedding``
(fixed-size list of float32). Provenance (model id, preprocessing, dimension,
checksum) goes into the file's key-value metadata under ``fmri2img.embedding``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_path

META_KEY = b"fmri2img.embedding"


def embedding_checksum(keys: Sequence[str], embeddings: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\n".join(keys).encode())
    h.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    return h.hexdigest()


def write_embedding_table(
    path: str | Path,
    keys: Sequence[str],
    embeddings: np.ndarray,
    *,
    stimulus_ids: Sequence[int | None] | None = None,
    captions: Sequence[str | None] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the table atomically; returns the provenance metadata that was stored."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(keys):
        raise ValueError(f"embeddings must be (n_keys={len(keys)}, dim), got {emb.shape}")
    if len(set(keys)) != len(keys):
        raise ValueError("stimulus keys must be unique")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or infinite values")
    n, dim = emb.shape
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    columns = {
        "stimulus": pa.array(list(keys), type=pa.string()),
        "stimulus_id": pa.array(
            list(stimulus_ids) if stimulus_ids is not None else [None] * n, type=pa.int64()
        ),
        "caption": pa.array(list(captions) if captions is not None else [None] * n, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    }
    info = dict(meta or {})
    info.update({"dim": dim, "n": n, "checksum": embedding_checksum(keys, emb)})
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(info).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return info


def read_embedding_table(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any], list]:
    """Return (keys, embeddings float32 (n, dim), metadata, captions)."""
    path = Path(path)
    if not path.exists():
        raise DataError("embedding table not found", path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"not a readable Parquet embedding table ({exc})", path) from exc
    missing = {"stimulus", "embedding"} - set(table.column_names)
    if missing:
        raise DataError(f"embedding table lacks columns {sorted(missing)}", path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    keys = table.column("stimulus").to_pylist()
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    emb = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    if meta.get("checksum") and meta["checksum"] != embedding_checksum(keys, emb):
        raise DataError("embedding table checksum does not match its contents", path)
    captions = table.column("caption").to_pylist() if "caption" in table.column_names else []
    return keys, emb, meta, captions
