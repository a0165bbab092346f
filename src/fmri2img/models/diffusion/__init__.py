"""Image generation from embeddings on diffusers pipelines.

Backends (found through :data:`fmri2img.models.registry.generators`): ``unclip``
(Stable unCLIP), ``ip_adapter`` (Stable Diffusion with an IP-Adapter) and ``kandinsky``
(the Kandinsky 2.2 decoder). Each takes image embeddings, checks them against what its
pipeline's weights expect and returns uint8 images. diffusers is an optional extra
(``fmri2img[embed]``), imported only when a pipeline is loaded or built.
"""

from fmri2img.models.diffusion.base import (
    EmbeddingSpec,
    GeneratorConfig,
    ImageGenerator,
    check_compatible,
    with_negatives,
)

__all__ = ["EmbeddingSpec", "GeneratorConfig", "ImageGenerator", "check_compatible",
           "with_negatives"]
