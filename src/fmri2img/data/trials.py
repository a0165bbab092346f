"""Trials of an index joined to their betas and target embeddings.

Rows are selected by split and domain, their betas come from the index's cache, and their
targets from an embedding table keyed by the index's ``stimulus`` column. Averaging over
repetitions happens here (on betas, the field's protocol), so decoders and metrics only
ever see arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index
from fmri2img.errors import DataError
from fmri2img.io.checksum import file_checksum
from fmri2img.io.embedding_table import embedding_checksum, read_embedding_table


@dataclass
class IndexData:
    """An index, its cache, and (lazily) its betas."""

    path: Path
    frame: pd.DataFrame
    meta: dict[str, Any]
    cache: BetaCache

    @classmethod
    def open(cls, path: str | Path) -> IndexData:
        path = Path(path)
        df, meta = read_index(path)
        if "cache" not in meta:
            raise DataError("index has no beta cache recorded in its metadata", path)
        return cls(path, df, meta, BetaCache(meta["cache"]))

    @property
    def subject(self) -> str:
        return str(self.meta.get("subject") or self.frame["subject"].iloc[0])

    @property
    def n_voxels(self) -> int:
        return self.cache.n_voxels

    @property
    def index_checksum(self) -> str:
        """Checksum of the index file: cache rows are only comparable within one index."""
        if "_checksum" not in self.__dict__:
            self.__dict__["_checksum"] = file_checksum(self.path)
        return self.__dict__["_checksum"]

    def select(self, splits: Sequence[str] | None = None,
               domains: Sequence[str] | None = None,
               stimulus_sets: Sequence[str] | None = None) -> pd.DataFrame:
        df = self.frame
        keep = np.ones(len(df), dtype=bool)
        if splits is not None:
            keep &= df["split"].isin(list(splits)).to_numpy()
        if domains is not None:
            keep &= df["domain"].isin(list(domains)).to_numpy()
        if stimulus_sets is not None:
            keep &= df["stimulus_set"].isin(list(stimulus_sets)).to_numpy()
        return df[keep]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.cache.sample_shape

    def betas(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, *sample_shape) float32: voxels, or channels x times for EEG."""
        X = self.cache.rows(rows["cache_row"].to_numpy())
        shape = self.sample_shape
        return X if len(shape) == 1 else X.reshape(len(X), *shape)

    def provenance(self) -> dict[str, Any]:
        """What a checkpoint or a result must remember about the data it came from."""
        splits = self.path.with_name(self.path.name.replace(".parquet", ".splits.json"))
        manifest = self.cache.manifest
        return {
            "index": str(self.path.resolve()),
            "index_checksum": self.index_checksum,
            "splits_checksum": file_checksum(splits) if splits.exists() else None,
            "subject": self.subject,
            "dataset": str(self.frame["dataset"].iloc[0]) if len(self.frame) else None,
            "n_voxels": self.n_voxels,
            "cache": str(self.cache.dir),
            "roi": (manifest.get("spec") or {}).get("roi"),
        }


@dataclass
class Targets:
    """An embedding table as a key -> row lookup."""

    path: Path
    keys: list[str]
    embeddings: np.ndarray
    meta: dict[str, Any]
    captions: list[Any] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path) -> Targets:
        path = Path(path)
        keys, emb, meta, captions = read_embedding_table(path)
        return cls(path, keys, emb, meta, captions)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        lookup = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in dict.fromkeys(keys) if k not in lookup]
        if missing:
            raise DataError(
                f"{len(missing)} stimuli of the index have no embedding in this table "
                f"(first: {', '.join(missing[:5])}); embed the index's stimuli with "
                "`fmri2img embed-images --index ...` or pass the table made for this dataset",
                self.path,
            )
        return self.embeddings[[lookup[k] for k in keys]]

    def mean(self, keys: Sequence[str]) -> list[float]:
        """The mean embedding of the distinct ``keys`` (the mean-target control's
        prediction; kept in checkpoints as a JSON list)."""
        return [float(x) for x in self.rows(sorted(set(keys))).astype(np.float64).mean(axis=0)]

    def provenance(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "dim": self.dim,
                # tables written elsewhere may carry no checksum: the contents' own, then
                "checksum": self.meta.get("checksum")
                or embedding_checksum(self.keys, self.embeddings),
                "model": self.meta.get("model_id") or self.meta.get("model")
                or self.meta.get("source"),
                # what an image generator fed with predictions must expect (reconstruct
                # checks it): flat tables hold one token; a token table says how many
                "tokens": int(self.meta.get("tokens", 1)),
                "normalization": self.normalization()}

    def normalization(self) -> str:
        """``l2`` when the table says so or every row has unit norm, ``none`` when the
        table says it is not normalised, ``unknown`` otherwise."""
        if self.meta.get("normalize") is True:
            return "l2"
        norms = np.linalg.norm(self.embeddings.astype(np.float64), axis=1)
        if len(norms) and np.allclose(norms, 1.0, atol=1e-3):
            return "l2"
        return "none" if self.meta.get("normalize") is False else "unknown"


def average_by_stimulus(rows: pd.DataFrame, X: np.ndarray,
                        max_repetitions: int | None = None,
                        rng: np.random.Generator | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One averaged pattern per stimulus (sorted by key).

    With ``max_repetitions`` each stimulus is averaged over a random subset of at most that
    many of its trials (drawn with ``rng``), so that two conditions with different numbers
    of repetitions can be compared at equal noise.
    """
    keys = rows["stimulus"].to_numpy()
    order = np.argsort(keys, kind="stable")
    uniq, start = np.unique(keys[order], return_index=True)
    bounds = [*start.tolist(), len(order)]
    out = np.empty((len(uniq), *X.shape[1:]), dtype=np.float32)
    counts = np.empty(len(uniq), dtype=np.int64)
    for i in range(len(uniq)):
        members = order[bounds[i]: bounds[i + 1]]
        if max_repetitions is not None and len(members) > max_repetitions:
            if rng is None:
                raise ValueError("max_repetitions needs an rng")
            members = rng.choice(members, size=max_repetitions, replace=False)
        out[i] = X[members].mean(axis=0)
        counts[i] = len(members)
    first = rows.iloc[order[start]]
    info = pd.DataFrame({
        "stimulus": uniq,
        "stimulus_set": first["stimulus_set"].to_numpy(),
        "target_code": first["target_code"].to_numpy(),
        "stimulus_id": first["stimulus_id"].to_numpy(),
        "n_trials": counts,
    })
    return info, out


def subset_averages(keys: np.ndarray, X: np.ndarray, n_per_key: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_key`` averages per key, each over a random subset of that key's rows whose
    size is drawn uniformly from 1 to all of them.

    Models trained on single trials and scored on averaged ones see noise levels at test
    they never met in training; these averages cover the whole range in between (training
    data for adapters and fine-tuning on a few hundred imagery trials). Returns
    (averages (n, V) float32, their keys).
    """
    keys = np.asarray(keys)
    uniq = np.unique(keys)
    out = np.empty((len(uniq) * n_per_key, *X.shape[1:]), dtype=np.float32)
    out_keys = np.repeat(uniq, n_per_key)
    i = 0
    for key in uniq:
        members = np.flatnonzero(keys == key)
        for _ in range(n_per_key):
            size = int(rng.integers(1, len(members) + 1))
            out[i] = X[rng.choice(members, size=size, replace=False)].mean(axis=0)
            i += 1
    return out, out_keys
