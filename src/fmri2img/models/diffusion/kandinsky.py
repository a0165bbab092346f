"""The Kandinsky 2.2 decoder (``KandinskyV22Pipeline``), without its prior: the unet is
conditioned on the image embedding alone (no text), through both an image projection
into context tokens and an addition to the time embedding.

What the pipeline (diffusers 0.42) does with the embeddings: ``negative_image_embeds`` is a
required argument; under classifier-free guidance (``guidance_scale > 1``) it is
concatenated as ``[negative, image]`` along the batch, so the negatives built from
``config.negative`` reach the unet unchanged (Kandinsky's prior would supply its own
"zero image" embedding here; without the prior, zeros or the mean stand in for it). Without
guidance the negatives are ignored. The latent grid is ``ceil(size / f**2) * f`` for a
movq scale factor ``f``, so only sizes that are multiples of ``f**2`` come out as asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fmri2img.models import registry
from fmri2img.models.diffusion.base import EmbeddingSpec, GeneratorConfig, ImageGenerator

if TYPE_CHECKING:
    import torch


@registry.generators.register
class KandinskyGenerator(ImageGenerator):
    name: ClassVar[str] = "kandinsky"
    pipeline_class: ClassVar[str] = "KandinskyV22Pipeline"

    def __init__(self, pipeline: Any, config: GeneratorConfig, source: str,
                 sidecar: dict[str, Any]) -> None:
        super().__init__(pipeline, config, source, sidecar)
        step = self.pipeline.movq_scale_factor ** 2
        self._check_size(step, f"this kandinsky pipeline's movq rounds sizes up to multiples "
                               f"of {step}")

    def expects(self) -> EmbeddingSpec:
        return self._spec(int(self.pipeline.unet.config.encoder_hid_dim), 1)

    def _size_kwargs(self) -> dict[str, int]:
        # the pipeline defaults to 512 whatever its unet was trained at; the unet's own
        # sample size (in latents) times the movq factor is the size it was built for
        default = int(self.pipeline.unet.config.sample_size) * self.pipeline.movq_scale_factor
        return {"height": self.config.height or default, "width": self.config.width or default}

    def _run_batch(self, embeds: torch.Tensor, negatives: torch.Tensor,
                   generators: list[Any]) -> np.ndarray:
        result = self.pipeline(
            image_embeds=embeds,
            negative_image_embeds=negatives,
            guidance_scale=self.config.guidance_scale,
            num_inference_steps=self.config.steps,
            generator=generators,
            output_type="np",
            **self._size_kwargs(),
        )
        return np.asarray(result.images)
