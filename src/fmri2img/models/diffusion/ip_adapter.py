"""Stable Diffusion with an IP-Adapter: image embeddings become extra context tokens that
a second, image-only branch of every cross-attention layer attends to, next to the (here
empty) text prompt.

The adapter lives in the pipeline folder as ``ip_adapter/<one weight file>``. What the
pipeline (``StableDiffusionPipeline``, diffusers 0.42) expects: ``ip_adapter_image_embeds``
is a list with one tensor per loaded adapter, ``(batch, images, dim)`` for a pooled
embedding (plain IP-Adapter) or ``(batch, images, tokens, dim)`` for hidden states
(IP-Adapter Plus / Full); under classifier-free guidance
``prepare_ip_adapter_image_embeds`` splits each tensor with ``chunk(2)`` along the batch,
the first half being the negative.

But that method then repeats the tensor ``batch_size * num_images_per_prompt`` times: the
pipeline treats the embedding as *one* reference for every prompt. Given ``b`` different
embeddings it hands the unet ``b * b`` of them, and the attention processor's
``view(batch, -1, ...)`` folds those into every item's context, so each image would attend
to every item's tokens (images then depend on their batch mates). This backend therefore
builds the exact per-item tensor the unet needs, ``[negatives, embeds]`` of shape
``(2b, 1, dim)`` under guidance (:func:`fmri2img.models.diffusion.base.with_negatives`),
and has ``prepare_ip_adapter_image_embeds`` return it unchanged for the duration of the
call. The negative built from ``config.negative`` is thus the unconditional image
embedding of each item (IP-Adapter trains with zeros).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fmri2img.errors import DataError
from fmri2img.models import registry
from fmri2img.models.diffusion.base import (
    EmbeddingSpec,
    GeneratorConfig,
    ImageGenerator,
    with_negatives,
)
from fmri2img.models.diffusion.loading import from_pretrained_kwargs, hub_id

if TYPE_CHECKING:
    import torch

SUBFOLDER = "ip_adapter"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HIDDEN_STATE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 256 patches and the class token


def weight_name(source: str | Path) -> str:
    """The single IP-Adapter weight file in the pipeline's ``ip_adapter`` folder (for a Hub
    source, listed on the Hub: only reached once ``--allow-hub`` let the pipeline load)."""
    repo = hub_id(source)
    if repo is None:
        folder = Path(source) / SUBFOLDER
        names = sorted(p.name for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES) \
            if folder.is_dir() else []
        where: Path | None = folder
    else:
        try:
            from huggingface_hub import list_repo_files

            files = list_repo_files(repo)
        except Exception as exc:  # offline or refused: same message as a failed load
            raise DataError(f"could not load {repo} from the Hugging Face Hub (offline?): "
                            f"{exc}") from exc
        names = sorted(f.split("/", 1)[1] for f in files if f.startswith(f"{SUBFOLDER}/")
                       and "/" not in f.split("/", 1)[1] and f.endswith(WEIGHT_SUFFIXES))
        where = None
    if len(names) != 1:
        found = f"found {', '.join(names)}" if names else "found none"
        raise DataError(f"expected exactly one IP-Adapter weight file (*.safetensors or "
                        f"*.bin) in {SUBFOLDER}/ of {repo or 'the pipeline folder'}; {found}",
                        where)
    return names[0]


@registry.generators.register
class IPAdapterGenerator(ImageGenerator):
    name: ClassVar[str] = "ip_adapter"
    pipeline_class: ClassVar[str] = "StableDiffusionPipeline"

    def __init__(self, pipeline: Any, config: GeneratorConfig, source: str,
                 sidecar: dict[str, Any]) -> None:
        super().__init__(pipeline, config, source, sidecar)
        if getattr(pipeline.unet, "encoder_hid_proj", None) is None:
            raise DataError("the pipeline has no IP-Adapter loaded (use IPAdapterGenerator.load)",
                            None if hub_id(source) else source)
        self._check_size(8, "the Stable Diffusion pipeline takes multiples of 8 only")
        pipeline.set_ip_adapter_scale(config.ip_adapter_scale)

    @classmethod
    def _prepare_pipeline(cls, pipe: Any, source: str | Path, config: GeneratorConfig, *,
                          device: str, allow_hub: bool) -> Any:
        name = weight_name(source)
        repo = hub_id(source)
        try:
            # no image encoder: embeddings are given, never computed from images
            pipe.load_ip_adapter(repo or str(source), subfolder=SUBFOLDER, weight_name=name,
                                 image_encoder_folder=None, local_files_only=repo is None,
                                 **from_pretrained_kwargs())
        except Exception as exc:  # a corrupt or mismatched adapter is bad data
            raise DataError(f"could not load the IP-Adapter {SUBFOLDER}/{name}: "
                            f"{type(exc).__name__}: {exc}",
                            None if repo else Path(source) / SUBFOLDER) from exc
        return pipe

    def _projection(self) -> Any:
        layers = self.pipeline.unet.encoder_hid_proj.image_projection_layers
        if len(layers) != 1:
            raise DataError(f"{len(layers)} IP-Adapters are loaded; this backend drives one")
        return layers[0]

    def expects(self) -> EmbeddingSpec:
        from diffusers.models.embeddings import (
            ImageProjection,
            IPAdapterFullImageProjection,
            IPAdapterPlusImageProjection,
        )

        layer = self._projection()
        if isinstance(layer, ImageProjection):
            return self._spec(layer.image_embeds.in_features, 1)
        # the token count of hidden-state adapters is the image encoder's, which the
        # adapter weights do not record: the sidecar may say, else ViT-H/14's
        tokens = int(self._sidecar_embedding().get("tokens", HIDDEN_STATE_TOKENS))
        if isinstance(layer, IPAdapterPlusImageProjection):
            return self._spec(layer.proj_in.in_features, tokens)
        if isinstance(layer, IPAdapterFullImageProjection):
            return self._spec(layer.ff.net[0].proj.in_features, tokens)
        raise DataError(f"unsupported IP-Adapter projection {type(layer).__name__}: this "
                        f"backend drives plain, Plus and Full IP-Adapters")

    def _run_batch(self, embeds: torch.Tensor, negatives: torch.Tensor,
                   generators: list[Any]) -> np.ndarray:
        # one image per item: (batch, 1, dim) or (batch, 1, tokens, dim)
        both = with_negatives(embeds.unsqueeze(1), negatives.unsqueeze(1),
                              self.config.guidance_scale)
        with per_item_image_embeds(self.pipeline):
            result = self.pipeline(
                prompt=[""] * embeds.shape[0],
                ip_adapter_image_embeds=[both],
                guidance_scale=self.config.guidance_scale,
                num_inference_steps=self.config.steps,
                generator=generators,
                output_type="np",
                **self._size_kwargs(),
            )
        return np.asarray(result.images)


@contextlib.contextmanager
def per_item_image_embeds(pipe: Any) -> Iterator[None]:
    """Within the block, ``pipe`` uses the ``ip_adapter_image_embeds`` it is given as they
    are (one row per latent, negatives first) instead of repeating them for every prompt
    (module docstring)."""

    def as_given(ip_adapter_image: Any, ip_adapter_image_embeds: list[Any] | None,
                 device: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if ip_adapter_image_embeds is None:
            raise DataError("the ip_adapter backend generates from embeddings, not images")
        return [t.to(device) for t in ip_adapter_image_embeds]

    # an instance attribute shadows the method for this pipeline object only
    pipe.prepare_ip_adapter_image_embeds = as_given
    try:
        yield
    finally:
        del pipe.prepare_ip_adapter_image_embeds
