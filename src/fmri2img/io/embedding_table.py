"""The embedding-table format: one row per stimulus, keyed by the index's ``stimulus`` column.

Parquet with columns ``stimulus`` (str key, as in the trial index), ``stimulus_id``
(Int64, dataset image id or null), ``caption`` (str or null) and ``embedding``
(fixed-size list of float32; tables written elsewhere may hold variable-length lists,
read when every row has the same length). Provenance (model id, preprocessing, dimension,
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
import pyarrow.compute as pc
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
    """Return (keys, embeddings float32 (n, dim), metadata, captions).

    Checked on read, whoever wrote the file: unique, non-null string keys; an embedding
    column of numeric lists of one length (fixed-size or variable-length lists), no null
    rows or values, all finite; and whatever provenance the file carries (``dim``, ``n``,
    ``tokens``, ``checksum``) agreeing with the contents.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("embedding table not found", path)
    try:
        table = pq.read_table(path)
        table.validate(full=True)  # offsets and UTF-8 of every string: corrupt pages
        names = table.column_names
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"not a readable Parquet embedding table ({exc})", path) from exc
    missing = {"stimulus", "embedding"} - set(names)
    if missing:
        raise DataError(f"embedding table lacks columns {sorted(missing)}; expected "
                        "stimulus (string keys) and embedding (lists of floats)", path)
    meta = _metadata(table, path)
    try:
        keys = _keys(table.column("stimulus"), path)
        emb = _embeddings(table.column("embedding"), keys, path)
        captions = table.column("caption").to_pylist() if "caption" in names else []
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt embedding table ({exc})", path) from exc
    _check_metadata(meta, keys, emb, path)
    return keys, emb, meta, captions


def _metadata(table: pa.Table, path: Path) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"the table's {META_KEY.decode()} metadata is not JSON ({exc})",
                        path) from exc
    if not isinstance(meta, dict):
        raise DataError(f"the table's {META_KEY.decode()} metadata is a "
                        f"{type(meta).__name__}; expected a JSON object", path)
    return meta


def _keys(column: pa.ChunkedArray, path: Path) -> list[str]:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"the stimulus column holds {column.type}; expected string keys "
                        "such as 'nsd:12345'", path)
    keys = column.to_pylist()
    if column.null_count:
        row = next(i for i, k in enumerate(keys) if k is None)
        raise DataError(f"{column.null_count} rows have no stimulus key (first: row {row}); "
                        "expected one key per row", path)
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dups = list(dict.fromkeys(k for k in keys if k in seen or seen.add(k)))
        raise DataError(f"{len(dups)} stimulus keys occur more than once (first: "
                        f"{', '.join(map(repr, dups[:5]))}); expected one row per stimulus",
                        path)
    return keys


def _embeddings(column: pa.ChunkedArray, keys: list[str], path: Path) -> np.ndarray:
    col = column.combine_chunks()
    t = col.type
    if not (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)
            or pa.types.is_large_list(t)):
        raise DataError(f"the embedding column holds {t}; expected a list of floats per row",
                        path)
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise DataError(f"the embedding column holds lists of {t.value_type}; expected "
                        "numbers", path)
    if col.null_count:
        row = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        raise DataError(f"{col.null_count} rows have no embedding (first: {keys[row]!r}, row "
                        f"{row}); expected one vector per stimulus", path)
    if pa.types.is_fixed_size_list(t):
        dim = t.list_size
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if len(lengths) else 0
        if (lengths != dim).any():
            row = int(np.flatnonzero(lengths != dim)[0])
            raise DataError(f"embeddings of different lengths: {keys[row]!r} (row {row}) has "
                            f"{lengths[row]} values but {keys[0]!r} (row 0) has {dim}; expected "
                            "one fixed dimension", path)
    values = col.flatten()
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]) // dim
        raise DataError(f"the embedding of {keys[row]!r} (row {row}) holds null values; "
                        "expected numbers", path)
    if dim < 1 and len(keys):
        raise DataError("the embeddings hold no values; expected vectors of dimension >= 1",
                        path)
    emb = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(keys), dim)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{bad.size} embeddings hold NaN or infinite values (first: "
                        f"{keys[bad[0]]!r}, row {bad[0]}); expected finite vectors", path)
    return emb


def _check_metadata(meta: dict[str, Any], keys: list[str], emb: np.ndarray,
                    path: Path) -> None:
    n, dim = emb.shape
    for field, actual in (("dim", dim), ("n", n)):
        if field in meta and meta[field] != actual:
            raise DataError(f"the table's metadata says {field}={meta[field]!r} but it holds "
                            f"{actual}", path)
    if "tokens" in meta:
        tokens = meta["tokens"]
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1 \
                or dim % tokens:
            raise DataError(f"the table's metadata says tokens={tokens!r}; expected a "
                            f"positive whole number that divides the dimension {dim}", path)
    checksum = meta.get("checksum")
    if checksum and checksum != embedding_checksum(keys, emb):
        raise DataError("embedding table checksum does not match its contents", path)
