"""Tiny, untrained diffusers pipelines for tests and demos without downloads.

Every component is built from a small config with seeded random weights (a few channels,
two blocks, a 2-layer text encoder, a tokenizer over a hand-written vocabulary), saved with
``save_pretrained`` like a real pipeline, and marked in its sidecar as an untrained test
pipeline: its images show that the plumbing works, never a reconstruction.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

from fmri2img.errors import DataError
from fmri2img.io.atomic import atomic_dir
from fmri2img.models.diffusion.loading import SIDECAR, quiet_loading, read_sidecar

log = logging.getLogger(__name__)

Kind = Literal["unclip", "ip_adapter", "kandinsky"]
KINDS = ("unclip", "ip_adapter", "kandinsky")
NOTE = "random weights built from a config: images show the plumbing, not a reconstruction"

CROSS_DIM = 32  # text / image tokens the unet attends to
UNET_CHANNELS = (16, 32)
GROUPS = 8  # group-norm groups: must divide every channel count above
IP_TOKENS = 4  # diffusers' plain IP-Adapter projection always makes 4 context tokens


def _tokenizer(max_length: int) -> Any:
    """A CLIP tokenizer over single letters plus the two special tokens: enough for the
    empty prompt (and short lowercase ones) to tokenise without the Hub."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[f"{c}</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)


def _text_encoder(vocab_size: int, max_length: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=CROSS_DIM, intermediate_size=37,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=max_length,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=CROSS_DIM))


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=GROUPS)


def _sd_unet(sample_size: int, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=UNET_CHANNELS, norm_num_groups=GROUPS,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=4, **extra)


def _ddim(**extra: Any) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, **extra)


def _unclip(embed_dim: int, image_size: int) -> Any:
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    tokenizer = _tokenizer(16)
    # the pipeline reads the image encoder's dtype even when given image_embeds, so it
    # cannot be None; a tiny one whose projection has the embedding's width keeps the
    # pipeline usable with images too
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=CROSS_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, image_size=image_size, patch_size=8,
        projection_dim=embed_dim))
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size=image_size, crop_size=image_size),
        image_encoder=encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer), 16),
        # the class label is the noised embedding followed by its noise-level
        # embedding of the same width, hence twice the embedding dimension
        unet=_sd_unet(image_size // 2, class_embed_type="projection",
                      projection_class_embeddings_input_dim=2 * embed_dim),
        scheduler=_ddim(prediction_type="v_prediction"),
        vae=_vae(),
    )


def _stable_diffusion(image_size: int) -> Any:
    from diffusers import StableDiffusionPipeline

    tokenizer = _tokenizer(16)
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(len(tokenizer), 16), tokenizer=tokenizer,
        unet=_sd_unet(image_size // 2), scheduler=_ddim(), safety_checker=None,
        feature_extractor=None, image_encoder=None, requires_safety_checker=False)


def ip_adapter_state_dict(unet: Any, embed_dim: int) -> dict[str, Any]:
    """A random IP-Adapter for ``unet`` in the original (non-diffusers) layout that
    ``load_ip_adapter`` converts: the image projection's ``proj``/``norm`` and, for the
    k-th cross-attention processor in ``unet.attn_processors`` order, key ``2k+1``."""
    import torch

    cross = unet.config.cross_attention_dim
    channels = list(unet.config.block_out_channels)
    state: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(IP_TOKENS * cross, embed_dim) / embed_dim ** 0.5,
        "image_proj.proj.bias": torch.zeros(IP_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention gets no image branch
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name.split(".")[1])]
        else:
            hidden = channels[int(name.split(".")[1])]
        for part in ("to_k_ip", "to_v_ip"):
            weight = torch.randn(hidden, cross) / cross ** 0.5
            state[f"ip_adapter.{key}.{part}.weight"] = weight
        key += 2
    return state


def _kandinsky(embed_dim: int, image_size: int) -> Any:
    from diffusers import KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4,
        out_channels=8,  # noise and learned variance, as the real decoder predicts
        layers_per_block=1, block_out_channels=UNET_CHANNELS, norm_num_groups=GROUPS,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=CROSS_DIM,
        attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type=None,
        encoder_hid_dim=embed_dim, encoder_hid_dim_type="image_proj",
        addition_embed_type="image")
    movq = VQModel(
        in_channels=3, out_channels=3, latent_channels=4, vq_embed_dim=4, num_vq_embeddings=12,
        # the spatial norm of the movq decoder has 32 groups built in
        block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=GROUPS,
        norm_type="spatial",
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"))
    return KandinskyV22Pipeline(unet=unet, scheduler=_ddim(), movq=movq)


def _matches(sidecar: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(sidecar.get(k) == v for k, v in wanted.items())


def build_tiny_pipeline(kind: Kind, output: Path, *, embed_dim: int, seed: int = 0,
                        image_size: int = 32, embedding_model: str | None = None,
                        normalization: str = "none") -> Path:
    """A tiny random ``kind`` pipeline taking ``embed_dim``-wide embeddings and making
    ``image_size`` square images, saved at ``output``. Random weights prefer no embedding:
    ``embedding_model`` and ``normalization`` are what its sidecar declares, so that it
    stands in for a real pipeline of the decoder's embedding. An existing tiny pipeline built
    with the same arguments is returned unchanged; any other folder there is refused."""
    if kind not in KINDS:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {KINDS}")
    if embed_dim < 1:
        raise ValueError(f"embed_dim must be positive, got {embed_dim}")
    # VAE / movq halve once and the unet once more
    if image_size < 8 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 and at least 8, got {image_size}")
    output = Path(output)
    wanted = {"kind": kind, "embed_dim": embed_dim, "seed": seed, "image_size": image_size,
              "embedding": {"model": embedding_model, "normalization": normalization}}
    if output.exists():
        sidecar = read_sidecar(output) if output.is_dir() else {}
        if not sidecar.get("untrained_test_pipeline"):
            raise DataError("exists and is not a tiny test pipeline; refusing to replace it",
                            output)
        if _matches(sidecar, wanted):
            log.info("reusing tiny %s pipeline at %s", kind, output)
            return output

    import torch

    # own RNG stream: building a test pipeline must not move the caller's global seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "unclip":
            pipe = _unclip(embed_dim, image_size)
        elif kind == "kandinsky":
            pipe = _kandinsky(embed_dim, image_size)
        else:
            pipe = _stable_diffusion(image_size)
            adapter = ip_adapter_state_dict(pipe.unet, embed_dim)
    with atomic_dir(output) as tmp:
        with quiet_loading():
            pipe.save_pretrained(tmp, safe_serialization=True)
        if kind == "ip_adapter":
            from safetensors.torch import save_file

            (tmp / "ip_adapter").mkdir()
            save_file(adapter, str(tmp / "ip_adapter" / "ip-adapter.safetensors"))
        sidecar = {**wanted, "untrained_test_pipeline": True, "note": NOTE}
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info("built tiny %s pipeline at %s (embed_dim %d, %d px)", kind, output, embed_dim,
             image_size)
    return output
