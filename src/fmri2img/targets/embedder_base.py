"""The base of every embedding backend (:class:`Embedder`: batching, device placement,
normalisation, a description that names the model exactly) and the image helpers they
share. The backends and the spec strings that select them are in :mod:`.embedders`.

Images go in as PIL images or uint8 arrays, (H, W) grayscale, (H, W, 3) RGB or (H, W, 4)
RGBA; alpha is composited onto mid-gray, the background of the NSD displays.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from fmri2img.devices import resolve_device
from fmri2img.errors import DataError
from fmri2img.targets.images import rgb_array

log = logging.getLogger(__name__)

ImageInput = Image.Image | np.ndarray
RANDOM_INIT_SEED = 0
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".json", ".txt", ".model")


# ----------------------------------------------------------------------------- helpers


def to_rgb(image: ImageInput) -> Image.Image:
    """Any accepted image -> an RGB PIL image (grayscale replicated, alpha over mid-gray)."""
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return Image.fromarray(rgb_array(image))


def resize_center_crop(img: Image.Image, size: int, resample: int) -> Image.Image:
    """Shorter side to ``size``, then the central ``size`` square (the whole of a square image)."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


@contextlib.contextmanager
def seeded(seed: int = RANDOM_INIT_SEED) -> Iterator[None]:
    """Run model construction under a fixed seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def json_safe(value: Any) -> Any:
    """Tuples -> lists etc., so a description compares equal after a JSON round trip."""
    return json.loads(json.dumps(value, default=str))


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES)


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ----------------------------------------------------------------------------- base
class Embedder:
    """One model. Subclasses set the attributes below and implement the towers they have.

    ``model_files`` are the local files that define the model (weights, configs): a cache
    records their fingerprints so that replacing a checkpoint in place invalidates tables.
    """

    backend: ClassVar[str] = ""
    has_image: bool = False  # per instance where a tower may be missing (hf-clip)
    has_text: bool = False
    # image and text vectors live in one space (CLIP), so a word can stand in for a picture
    joint_space: bool = False

    def __init__(self, spec: str, *, device: str = "cpu", batch_size: int = 32,
                 normalize: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.model_id = ""
        self.dim = 0
        self.preprocessing: dict[str, Any] = {}
        self.model_files: list[Path] = []

    # subclasses: one forward pass over a batch that fits in memory
    def _image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        raise DataError(f"embedder {self.spec!r} has no image tower")

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        raise DataError(f"embedder {self.spec!r} has no text tower")

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """(n, dim) float32, in input order, ``batch_size`` images per forward pass."""
        if not self.has_image:
            raise DataError(f"embedder {self.spec!r} has no image tower")
        out = [self._run(self._image_batch, [to_rgb(im) for im in images[s]])
               for s in _chunks(len(images), self.batch_size)]
        return self._stack(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, in input order."""
        if not self.has_text:
            raise DataError(f"embedder {self.spec!r} has no text tower")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings, got {bad[:3]}")
        out = [self._run(self._text_batch, list(texts[s]))
               for s in _chunks(len(texts), self.batch_size)]
        return self._stack(out)

    def _run(self, fn: Any, batch: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            feats = fn(batch).float()
            if self.normalize:
                feats = _l2(feats)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def _stack(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """What determines the vectors (not the device or batch size): a table's identity."""
        towers = [t for t, ok in (("image", self.has_image), ("text", self.has_text)) if ok]
        return json_safe({
            "spec": self.spec,
            "backend": self.backend,
            "model_id": self.model_id,
            "dim": self.dim,
            "preprocessing": self.preprocessing,
            "normalize": self.normalize,
            "towers": towers,
            "joint_space": self.joint_space,
        })


