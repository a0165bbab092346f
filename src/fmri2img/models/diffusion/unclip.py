"""Stable unCLIP: a Stable Diffusion unet conditioned (as a class label) on a CLIP image
embedding, here given directly instead of an image.

How the pipeline (``StableUnCLIPImg2ImgPipeline``, diffusers 0.42) uses the embedding:
``_encode_image`` noise-augments it at ``noise_level`` (drawing the noise from the
per-item generators, also at level 0), appends a sinusoidal embedding of the noise level of
the same width (hence the unet's ``projection_class_embeddings_input_dim == 2 * dim``) and,
under classifier-free guidance, prepends ``torch.zeros_like`` of that whole vector as the
unconditional half. That zero negative is built inside the pipeline and cannot be replaced,
so this backend passes no negatives: ``negative="zeros"`` matches what the pipeline does,
and ``negative="mean"`` with guidance is refused rather than silently ignored. The text
prompt is the empty string, one per item, whose own negative is also the empty prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fmri2img.errors import DataError
from fmri2img.models import registry
from fmri2img.models.diffusion.base import EmbeddingSpec, GeneratorConfig, ImageGenerator

if TYPE_CHECKING:
    import torch


@registry.generators.register
class UnCLIPGenerator(ImageGenerator):
    name: ClassVar[str] = "unclip"
    pipeline_class: ClassVar[str] = "StableUnCLIPImg2ImgPipeline"

    def __init__(self, pipeline: Any, config: GeneratorConfig, source: str,
                 sidecar: dict[str, Any]) -> None:
        super().__init__(pipeline, config, source, sidecar)
        if config.negative != "zeros" and config.guidance_scale > 1:
            raise DataError(f"the unclip pipeline always guides against an all-zero image "
                            f"embedding; negative={config.negative!r} cannot be honoured "
                            f"(use negative='zeros' or guidance_scale <= 1)")
        self._check_size(8, "the unclip pipeline takes multiples of 8 only")
        limit = pipeline.image_noising_scheduler.config.num_train_timesteps
        if config.noise_level >= limit:
            raise DataError(f"noise_level {config.noise_level} is out of range: this unclip "
                            f"pipeline's noising schedule has {limit} levels (0 to {limit - 1})")

    def expects(self) -> EmbeddingSpec:
        dim = int(self.pipeline.image_normalizer.mean.shape[-1])
        class_dim = self.pipeline.unet.config.projection_class_embeddings_input_dim
        if class_dim is not None and int(class_dim) != 2 * dim:
            raise DataError(f"inconsistent unclip pipeline: its image normalizer is {dim} "
                            f"wide but its unet takes {class_dim}-wide class labels "
                            f"(expected {2 * dim}: the embedding plus its noise level)",
                            None if self.source.startswith("hub:") else self.source)
        return self._spec(dim, 1, getattr(self.pipeline, "image_encoder", None))

    def _run_batch(self, embeds: torch.Tensor, negatives: torch.Tensor,
                   generators: list[Any]) -> np.ndarray:
        del negatives  # the pipeline builds its own zero negative (module docstring)
        result = self.pipeline(
            image_embeds=embeds,
            prompt=[""] * embeds.shape[0],
            noise_level=self.config.noise_level,
            guidance_scale=self.config.guidance_scale,
            num_inference_steps=self.config.steps,
            generator=generators,
            output_type="np",
            **self._size_kwargs(),
        )
        return np.asarray(result.images)
