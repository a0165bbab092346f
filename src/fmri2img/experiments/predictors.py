"""What evaluation predicts with: one decoder, or cross-validated decoders and adapters.

A *member* is a decoder checkpoint, optionally followed by an adapter, together with what
it saw in training beyond perception data (imagery targets and index rows, recorded in its
checkpoint by the protocol that trained it). An item is predicted only by members that did
not see it; when several qualify, their predictions are averaged (members that would give
the same prediction, e.g. one shared decoder with its adapter switched off, count once).
One member that saw nothing is exactly the plain decoder.

Adapters apply to imagery trials only: perception and vision trials are scored with the
adapter switched off, so the perception side of every adapter method is the base decoder's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fmri2img.data.trials import average_by_stimulus
from fmri2img.errors import DataError
from fmri2img.io.checksum import file_checksum
from fmri2img.models.adapters import Adapter, apply_adapter, load_adapters
from fmri2img.models.pipeline import DecoderPipeline

ADAPTED_DOMAIN = "imagery"


@dataclass
class Member:
    pipeline: DecoderPipeline
    meta: dict[str, Any]
    adapter: Adapter | None = None
    adapter_meta: dict[str, Any] | None = None
    pipeline_id: int = 0
    adapter_id: int | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)  # fold descriptions

    def key(self, domain: str) -> tuple[int, int | None]:
        adapted = self.adapter is not None and domain == ADAPTED_DOMAIN
        return self.pipeline_id, self.adapter_id if adapted else None

    def predict(self, X: np.ndarray, domain: str) -> np.ndarray:
        return self.finish(self.pipeline.predict(X), domain)

    def finish(self, decoded: np.ndarray, domain: str) -> np.ndarray:
        """The member's prediction from its decoder's output: the adapter, where it
        applies."""
        if self.adapter is not None and domain == ADAPTED_DOMAIN:
            return apply_adapter(self.adapter, decoded, domain)
        return decoded

    def mean_target(self, kind: str) -> np.ndarray | None:
        """The mean of the targets this member trained on: ``"decoder"``, the decoder's
        (perception) training targets; ``"fold"``, the imagery targets of its protocol
        fold (adapter or decoder), None when it trained on no imagery fold. None too for
        checkpoints written before the mean was recorded."""
        if kind == "decoder":
            value = self.meta.get("target_mean")
        else:
            value = next((s.get("target_mean") for s in reversed(self.seen)
                          if s.get("target_mean") is not None), None)
        return None if value is None else np.asarray(value, dtype=np.float64)

    def eligible(self, rows: pd.DataFrame, index_checksum: str | None) -> np.ndarray:
        ok = np.ones(len(rows), dtype=bool)
        for s in self.seen:
            if s.get("seen_targets"):
                ok &= ~rows["stimulus"].isin(s["seen_targets"]).to_numpy()
            if s.get("seen_rows") and s.get("index_checksum") == index_checksum:
                ok &= ~rows["cache_row"].isin(s["seen_rows"]).to_numpy()
        return ok


@dataclass
class Predictor:
    members: list[Member]

    @classmethod
    def load(cls, checkpoints: Sequence[Path], adapters: Sequence[Path] = (),
             adapter_type: str = "auto", device: str | None = None) -> Predictor:
        """One member per decoder checkpoint, or per adapter when one decoder carries
        several (one per fold, in separate files or in one file of folds); with as many
        decoders as adapters they pair up."""
        checkpoints = list(checkpoints)
        if not checkpoints:
            raise ValueError("no decoder checkpoint given")
        loaded = [DecoderPipeline.load(p, device) for p in checkpoints]
        sums = [file_checksum(p) for p in checkpoints]
        found = [(Path(p), a, m) for p in adapters
                 for a, m in load_adapters(p, loaded[0][0].n_outputs, adapter_type)]
        if found and len(checkpoints) not in (1, len(found)):
            raise DataError(f"{len(checkpoints)} decoder checkpoints and {len(found)} "
                            "adapters: give one decoder, or one per adapter", checkpoints[0])
        members = []
        for i in range(max(len(checkpoints), len(found))):
            j = i if len(loaded) > 1 else 0
            pipeline, meta = loaded[j]
            seen = [meta["imagery_training"]] if meta.get("imagery_training") else []
            member = Member(pipeline, meta, pipeline_id=j, seen=seen)
            if found:
                path, adapter, ameta = found[i]
                base = ameta.get("base_checkpoint", {}).get("checksum")
                if base and base != sums[j]:
                    raise DataError(f"adapter {path} was trained on another decoder than "
                                    f"{checkpoints[j]}", path)
                member.adapter, member.adapter_meta, member.adapter_id = adapter, ameta, i
                member.seen = seen + ([ameta["imagery_training"]]
                                      if ameta.get("imagery_training") else [])
            members.append(member)
        return cls(members)

    # -- properties -----------------------------------------------------------------------
    @property
    def first(self) -> Member:
        return self.members[0]

    @property
    def has_adapter(self) -> bool:
        return any(m.adapter is not None for m in self.members)

    def protocol(self) -> str | None:
        names = {s["protocol"] for m in self.members for s in m.seen}
        return ", ".join(sorted(names)) if names else None

    # -- prediction -----------------------------------------------------------------------
    def _eligibility(self, rows: pd.DataFrame, index_checksum: str | None) -> np.ndarray:
        return np.stack([m.eligible(rows, index_checksum) for m in self.members], axis=1)

    def keep(self, rows: pd.DataFrame, index_checksum: str | None) -> np.ndarray:
        """Rows that at least one member did not see."""
        return self._eligibility(rows, index_checksum).any(axis=1)

    def _combine(self, X: np.ndarray, who: np.ndarray, domain: str) -> np.ndarray:
        """Average over the distinct predictions of the members flagged in ``who``
        (n, n_members), row by row.

        Each distinct model predicts all rows at once, so that one decoder gives
        bit-identical results whatever the other members saw (BLAS may round a gathered
        subset differently).
        """
        out = np.zeros((len(X), self.first.pipeline.n_outputs), dtype=np.float32)
        patterns, inverse = np.unique(who, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        cache: dict[tuple[int, int | None], np.ndarray] = {}
        decoded: dict[int, np.ndarray] = {}  # one decoder pass serves all its adapters
        # Small products alternate with torch calls here; OpenBLAS threads left spinning
        # after each one starve torch's on few cores (evaluation 3x slower on 2 cores).
        with threadpool_limits(limits=1, user_api="blas"):
            for p, pattern in enumerate(patterns):
                sel = np.flatnonzero(inverse == p)
                keys: dict[tuple[int, int | None], Member] = {}
                for i in np.flatnonzero(pattern):
                    keys.setdefault(self.members[i].key(domain), self.members[i])
                if not keys:
                    raise ValueError("an item that every model saw cannot be scored")
                for key, member in keys.items():
                    if key not in cache:
                        if member.pipeline_id not in decoded:
                            decoded[member.pipeline_id] = member.pipeline.predict(X)
                        cache[key] = member.finish(decoded[member.pipeline_id], domain)
                preds = [cache[key][sel] for key in keys]
                out[sel] = preds[0] if len(preds) == 1 else np.mean(preds, axis=0)
        return out

    def predict_trials(self, rows: pd.DataFrame, X: np.ndarray, domain: str,
                       index_checksum: str | None) -> np.ndarray:
        """Single-trial predictions (rows must be ones :meth:`keep` accepts)."""
        return self._combine(X, self._eligibility(rows, index_checksum), domain)

    def predict_items(self, rows: pd.DataFrame, X: np.ndarray, domain: str,
                      index_checksum: str | None, max_repetitions: int | None = None,
                      rng: np.random.Generator | None = None
                      ) -> tuple[pd.DataFrame, np.ndarray]:
        """Betas averaged per stimulus, then predicted by the members that saw none of the
        stimulus's trials (rows must be ones :meth:`keep` accepts)."""
        info, Xa = average_by_stimulus(rows, X, max_repetitions, rng)
        return info, self._combine(Xa, self._item_members(rows, info, index_checksum), domain)

    def _item_members(self, rows: pd.DataFrame, info: pd.DataFrame,
                      index_checksum: str | None) -> np.ndarray:
        """(n_items, n_members): which members saw none of each item's trials."""
        elig = self._eligibility(rows, index_checksum)
        stimuli, inverse = np.unique(rows["stimulus"].to_numpy(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(len(stimuli)))
        per_stimulus = np.logical_and.reduceat(elig[order], starts, axis=0)
        at = {k: i for i, k in enumerate(stimuli)}
        return per_stimulus[[at[k] for k in info["stimulus"]]]

    def item_mean_targets(self, rows: pd.DataFrame, info: pd.DataFrame,
                          index_checksum: str | None, kind: str) -> np.ndarray | None:
        """Per item (rows of ``info``), the mean training target (:meth:`Member.mean_target`)
        of the members that score it, averaged like their predictions; None when one of
        them has none recorded."""
        who = self._item_members(rows, info, index_checksum)
        means = [m.mean_target(kind) for m in self.members]
        # a decoder shared by several members counts once, as in prediction (so one
        # decoder's centre is bit for bit the same whatever adapters ride on it)
        sources = [m.pipeline_id if kind == "decoder" else (m.pipeline_id, m.adapter_id)
                   for m in self.members]
        out = np.zeros((len(info), self.first.pipeline.n_outputs))
        patterns, inverse = np.unique(who, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            chosen = {sources[j]: means[j] for j in np.flatnonzero(pattern)}
            if not chosen or any(c is None for c in chosen.values()):
                return None
            vectors = list(chosen.values())
            out[np.asarray(inverse).reshape(-1) == p] = (
                vectors[0] if len(vectors) == 1 else np.mean(vectors, axis=0))
        return out
