"""What every image-generation backend shares: the embedding it expects, its options, and
the generation loop (shape checks, batching, per-item seeds, uint8 output).

A backend only says which diffusers pipeline it wraps, reads what the loaded pipeline
expects from its own weights (:meth:`ImageGenerator.expects`) and runs one batch
(:meth:`ImageGenerator._run_batch`). Everything a person can get wrong (a decoder trained
on another embedding, an array of the wrong width, guidance without a negative) is caught
here and reported as :class:`fmri2img.errors.DataError`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.models.diffusion.loading import load_pipeline, read_sidecar
from fmri2img.progress import progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "l2", "unknown")
ALLOWABLE = ("model", "normalization")  # dim and tokens can never be waived


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
    """The embedding a pipeline expects, or the one a decoder was trained to predict.

    ``dim`` is the width of one token; ``tokens`` is 1 for a pooled (flat) embedding.
    ``normalization`` is ``"none"`` for raw embeddings (what CLIP's image tower emits),
    ``"l2"`` for unit-norm ones, ``"unknown"`` when nobody recorded it."""

    model: str | None
    dim: int
    tokens: int
    normalization: str

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; "
                             f"expected one of {', '.join(NORMALIZATIONS)}")
        if self.dim < 1 or self.tokens < 1:
            raise ValueError(f"dim and tokens must be positive, got {self.dim} and {self.tokens}")

    @property
    def width(self) -> int:
        """Length of one embedding once flattened."""
        return self.tokens * self.dim

    def describe(self) -> str:
        return (f"{self.model or 'unknown model'}, {self.tokens} x {self.dim}, "
                f"normalization {self.normalization}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_compatible(trained: EmbeddingSpec, expected: EmbeddingSpec, *,
                     allow: Collection[str] = (), where: Path | None = None,
                     expected_by: str = "the image generator") -> None:
    """Refuse to feed embeddings predicted for ``trained`` to a pipeline expecting
    ``expected``. Shape differences are never allowed; a different model or normalization
    only when named in ``allow`` (an unknown model or an ``"unknown"`` normalization on
    either side cannot be compared and passes)."""
    unknown = sorted(set(allow) - set(ALLOWABLE))
    if unknown:
        raise ValueError(f"cannot allow {', '.join(map(repr, unknown))}; "
                         f"only {', '.join(ALLOWABLE)} may differ")
    reasons = []
    if trained.dim != expected.dim:
        reasons.append("dimension differs")
    if trained.tokens != expected.tokens:
        reasons.append("token count differs")
    if (trained.model is not None and expected.model is not None
            and trained.model != expected.model and "model" not in allow):
        reasons.append("embedding model differs (allow it with 'model' if the spaces match)")
    if ("unknown" not in (trained.normalization, expected.normalization)
            and trained.normalization != expected.normalization
            and "normalization" not in allow):
        reasons.append("normalization differs")
    if reasons:
        def side(spec: EmbeddingSpec) -> str:
            return (f"{spec.model or 'an unknown model'}, {spec.tokens} x {spec.dim} "
                    f"(normalization {spec.normalization})")
        raise DataError(f"the decoder was trained on {side(trained)}; {expected_by} expects "
                        f"{side(expected)}: {'; '.join(reasons)}", where)


# how every output of a tiny random-weights pipeline is labelled (grid, tables, report)
UNTRAINED_LABEL = ("produced by an untrained test pipeline (random weights): it shows the "
                   "plumbing, not a reconstruction")

class GeneratorConfig(StrictModel):
    """Options shared by every backend."""

    steps: int = Field(25, ge=1)
    guidance_scale: float = Field(7.5, ge=0)
    height: int | None = Field(None, ge=8)
    width: int | None = Field(None, ge=8)
    batch_size: int = Field(4, ge=1)
    seed: int = 0
    noise_level: int = Field(0, ge=0)  # unCLIP's noise augmentation of the image embedding
    # the unconditional image embedding for classifier-free guidance, where a backend
    # takes one: all zeros (what IP-Adapter trains with) or the mean of the embeddings
    # being generated (a "typical image" direction to steer away from)
    negative: Literal["zeros", "mean"] = "zeros"
    ip_adapter_scale: float = Field(1.0, ge=0)


def with_negatives(embeds: torch.Tensor, negatives: torch.Tensor | None,
                   guidance_scale: float) -> torch.Tensor:
    """``embeds`` as a pipeline doing classifier-free guidance wants them:
    ``[negatives, embeds]`` along the batch when ``guidance_scale > 1`` (diffusers'
    convention: the unconditional half first), ``embeds`` unchanged otherwise."""
    import torch

    if guidance_scale <= 1:
        return embeds
    if negatives is None:
        raise DataError(f"classifier-free guidance (guidance_scale {guidance_scale:g}) needs "
                        f"a negative image embedding for every item; got none")
    if tuple(negatives.shape) != tuple(embeds.shape):
        raise DataError(f"classifier-free guidance (guidance_scale {guidance_scale:g}) needs "
                        f"a negative image embedding for every item: negatives of shape "
                        f"{tuple(negatives.shape)} do not match embeddings of shape "
                        f"{tuple(embeds.shape)}")
    return torch.cat([negatives.to(embeds), embeds], dim=0)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' float images in [0, 1] as uint8, rounded rather than truncated."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


class ImageGenerator(abc.ABC):
    """A diffusers pipeline that turns image embeddings into images."""

    name: ClassVar[str]
    pipeline_class: ClassVar[str]  # the diffusers class the pipeline folder must hold

    def __init__(self, pipeline: Any, config: GeneratorConfig, source: str,
                 sidecar: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.config = config
        self.source = str(source)
        self.sidecar = dict(sidecar)

    @classmethod
    def load(cls, source: str | Path, config: GeneratorConfig | None = None, *,
             device: str = "cpu", allow_hub: bool = False) -> ImageGenerator:
        """The backend on the pipeline at ``source``: a local diffusers folder, or
        ``hub:<repo id>`` with ``allow_hub``."""
        config = config if config is not None else GeneratorConfig()
        pipe = load_pipeline(cls.pipeline_class, source, device=device, allow_hub=allow_hub)
        pipe = cls._prepare_pipeline(pipe, source, config, device=device, allow_hub=allow_hub)
        generator = cls(pipe, config, str(source), read_sidecar(source))
        log.info("loaded %s pipeline from %s (%s)", cls.name, source,
                 generator.expects().describe())
        return generator

    @classmethod
    def _prepare_pipeline(cls, pipe: Any, source: str | Path, config: GeneratorConfig, *,
                          device: str, allow_hub: bool) -> Any:
        """Hook for backends that add weights to the loaded pipeline (IP-Adapter)."""
        return pipe

    @abc.abstractmethod
    def expects(self) -> EmbeddingSpec:
        """The embedding this pipeline takes, read from its own weights."""

    @abc.abstractmethod
    def _run_batch(self, embeds: torch.Tensor, negatives: torch.Tensor,
                   generators: list[Any]) -> np.ndarray:
        """Float images in [0, 1], ``(batch, H, W, 3)``, for one batch; ``embeds`` and
        ``negatives`` are ``(batch, dim)`` or ``(batch, tokens, dim)``."""

    @property
    def untrained_test_pipeline(self) -> bool:
        return bool(self.sidecar.get("untrained_test_pipeline", False))

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def _sidecar_embedding(self) -> dict[str, Any]:
        embedding = self.sidecar.get("embedding")
        return embedding if isinstance(embedding, dict) else {}

    def _spec(self, dim: int, tokens: int, image_encoder: Any = None) -> EmbeddingSpec:
        """``dim`` and ``tokens`` from the weights; model and normalization from the
        sidecar, else the image encoder's name, else unknown."""
        embedding = self._sidecar_embedding()
        if "model" in embedding:
            model = embedding["model"]
        else:
            model = encoder_name(image_encoder)
        normalization = str(embedding.get("normalization", "none"))
        return EmbeddingSpec(model=model, dim=int(dim), tokens=int(tokens),
                             normalization=normalization)

    def check_decoder(self, trained: EmbeddingSpec, *, allow: Collection[str] = (),
                      where: Path | None = None) -> None:
        """:func:`check_compatible` against this pipeline."""
        check_compatible(trained, self.expects(), allow=allow, where=where,
                         expected_by=f"this {self.name} pipeline")

    def _as_items(self, embeddings: np.ndarray) -> np.ndarray:
        """``embeddings`` checked against :meth:`expects`, as ``(n, dim)`` for pooled
        embeddings or ``(n, tokens, dim)``."""
        spec = self.expects()
        arr = np.asarray(embeddings)
        wanted = f"(n, {spec.width}) or (n, {spec.tokens}, {spec.dim})"
        ok = ((arr.ndim == 2 and arr.shape[1] == spec.width)
              or (arr.ndim == 3 and arr.shape[1:] == (spec.tokens, spec.dim)))
        if not ok:
            raise DataError(f"embeddings of shape {arr.shape} do not fit this {self.name} "
                            f"pipeline: it expects {wanted} ({spec.describe()})")
        if arr.shape[0] == 0:
            raise DataError(f"no embeddings to generate from (shape {arr.shape})")
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise DataError(f"embeddings of shape {arr.shape} hold non-finite or "
                            f"non-numeric values")
        arr = arr.astype(np.float32, copy=False)
        n = arr.shape[0]
        return arr.reshape(n, spec.dim) if spec.tokens == 1 else arr.reshape(n, spec.tokens,
                                                                              spec.dim)

    def _negatives(self, items: np.ndarray) -> np.ndarray:
        # built over all n items, so "mean" does not depend on how they are batched
        if self.config.negative == "mean":
            return np.broadcast_to(items.mean(axis=0, keepdims=True), items.shape).copy()
        return np.zeros_like(items)

    def generate(self, embeddings: np.ndarray, *, seed: int | None = None) -> np.ndarray:
        """uint8 images ``(n, H, W, 3)`` for ``(n, tokens*dim)`` or ``(n, tokens, dim)``
        embeddings. Item ``i`` draws all its noise from its own generator seeded with
        ``seed + i``, so an image depends neither on the batch size nor on the others."""
        return np.concatenate([images for _, images in self.iter_generate(embeddings,
                                                                          seed=seed)])

    def iter_generate(self, embeddings: np.ndarray, *, seed: int | None = None,
                      positions: Sequence[int] | None = None,
                      negatives_from: np.ndarray | None = None,
                      ) -> Iterator[tuple[list[int], np.ndarray]]:
        """(positions, uint8 images) batch by batch, so a caller can keep each batch as it
        comes. ``positions`` (default ``0..n-1``) give each item's seed offset and
        ``negatives_from`` the items a "mean" negative is taken over (default: these),
        so that a resumed run that makes only some items gets the same images."""
        import torch

        items = self._as_items(embeddings)
        pool = items if negatives_from is None else self._as_items(negatives_from)
        negative = self._negatives(pool)[:1]
        negatives = np.broadcast_to(negative, items.shape).copy()
        seed = self.config.seed if seed is None else int(seed)
        where = list(range(len(items))) if positions is None else [int(i) for i in positions]
        if len(where) != len(items):
            raise ValueError(f"{len(where)} positions for {len(items)} embeddings")
        n, size = items.shape[0], self.config.batch_size
        starts = range(0, n, size)
        dtype = self.pipeline.unet.dtype
        for start in progress(starts, f"generating images ({self.name})", total=len(starts)):
            stop = min(start + size, n)
            generators = [torch.Generator(self.device).manual_seed(seed + where[i])
                          for i in range(start, stop)]
            embeds = torch.from_numpy(items[start:stop]).to(self.device, dtype)
            negs = torch.from_numpy(negatives[start:stop]).to(self.device, dtype)
            with torch.no_grad():
                images = self._run_batch(embeds, negs, generators)
            yield where[start:stop], to_uint8(images)

    def _check_size(self, step: int, why: str) -> None:
        """Refuse a configured height or width the pipeline would reject or change."""
        for side, value in (("height", self.config.height), ("width", self.config.width)):
            if value is not None and value % step:
                raise DataError(f"{side} {value} is not a multiple of {step}: {why}")

    def _size_kwargs(self) -> dict[str, int]:
        sizes = {"height": self.config.height, "width": self.config.width}
        return {k: v for k, v in sizes.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "source": self.source,
            "pipeline_class": self.pipeline_class,
            "expects": self.expects().as_dict(),
            "config": self.config.resolved(),
            "untrained_test_pipeline": self.untrained_test_pipeline,
        }


def encoder_name(image_encoder: Any) -> str | None:
    """The image encoder's model id, when its config records one. A local path (what
    ``from_pretrained`` records for a folder or a Hub cache snapshot) names no model."""
    config = getattr(image_encoder, "config", None)
    name = getattr(config, "_name_or_path", None) if config is not None else None
    if not name or Path(name).is_absolute() or Path(name).exists():
        return None
    return str(name)
