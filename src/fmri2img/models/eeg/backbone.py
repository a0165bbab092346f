"""The CBraMod EEG backbone (braindecode's implementation) and its pretrained weights.

:func:`build_cbramod` returns the encoder alone: ``(B, n_chans, n_times)`` in, one 200-d
token per channel and one-second patch out, ``(B, n_chans, n_times // 200, 200)``. The
pooling heads of :mod:`.heads` turn those tokens into an embedding.

CBraMod's pretraining ends in ``proj_out``, a linear map from each token back to the 200
samples of its patch (masked-patch reconstruction). Brain2Image replaces it with the identity
and so do we: the encoder's tokens are the features, and the reconstruction layer is not
part of the backbone. :func:`load_backbone_weights` therefore drops ``proj_out.*`` from a
weight file (and braindecode's classification ``final_layer.*``, which an encoder-output
model does not have) and loads everything else strictly: a file that does not describe
this backbone fails loudly instead of leaving layers at random, as braindecode's own
``from_pretrained`` (``strict=False``) would.

braindecode is optional (``pip install fmri2img[eeg]``) and slow to import (it brings in
MNE and skorch), so it is imported when a backbone is first built, not with this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import nn

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.io.checksum import file_checksum

PATCH = 200  # CBraMod's patch: n_times must be a multiple of it (1 s at 200 Hz)
D_MODEL = 200  # width of CBraMod's tokens with braindecode's default patch embedding
HUB_PREFIX = "hub:"
# weight files looked for in a directory or a Hub repository, in this order
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# containers a training script may have wrapped a state dict in
_NESTED = ("state_dict", "model_state_dict", "model")
# prefixes DataParallel ("module.") or a wrapping model ("backbone.") put on every key
_PREFIXES = ("module.", "backbone.")
_DROPPED = {
    "proj_out.": "proj_out.* dropped: CBraMod's patch-reconstruction layer; the encoder "
                 "output replaces it",
    "final_layer.": "final_layer.* dropped: braindecode's classification layer; an "
                    "encoder-output backbone has none",
}
_SHOWN = 10  # keys named in an error, per kind


class BackboneConfig(StrictModel):
    """CBraMod's size and where its weights come from.

    The defaults are the published model (12 layers of criss-cross attention, 8 heads,
    feed-forward 800); smaller values make fast tests and small-data runs, but pretrained
    weights only fit the published sizes.
    """

    n_layer: int = Field(12, ge=1)
    nhead: int = Field(8, ge=1, description="even; half the heads attend across channels, "
                                            "half across patches")
    dim_feedforward: int = Field(800, ge=1)
    drop_prob: float = Field(0.1, ge=0, lt=1)
    pretrained: str | None = Field(
        None, description="weights: a .pth/.pt/.bin/.safetensors file, a directory holding "
                          "model.safetensors or pytorch_model.bin, or 'hub:<repo id>'")
    allow_hub: bool = Field(False, description="let a 'hub:' source download from the "
                                               "Hugging Face Hub")

    @field_validator("nhead")
    @classmethod
    def _heads_split_the_tokens(cls, v: int) -> int:
        # each of the two attentions gets nhead // 2 heads over half of the 200-d token
        if v % 2 or (D_MODEL // 2) % (v // 2):
            raise ValueError(f"nhead must be even with nhead / 2 dividing {D_MODEL // 2} "
                             f"(2, 4, 8, 10, 20, ...), got {v}")
        return v

    @field_validator("pretrained")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("pretrained must name a file, a directory or 'hub:<repo id>'")
        return v


def _cbramod_class() -> type[nn.Module]:
    """braindecode's CBraMod, imported on first use (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            # braindecode's other models and dependencies (MNE, wfdb) warn of their own
            # deprecations at import; nothing the user can act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            from braindecode.models import CBraMod
    except ImportError as exc:
        raise ImportError("the CBraMod backbone needs braindecode: "
                          "pip install fmri2img[eeg]") from exc
    return CBraMod


def build_cbramod(n_chans: int, n_times: int, cfg: BackboneConfig) -> nn.Module:
    """A randomly initialised CBraMod encoder for ``(B, n_chans, n_times)`` epochs; its
    output is ``(B, n_chans, n_times // 200, 200)``. Weights: :func:`load_backbone_weights`.
    """
    n_chans, n_times = int(n_chans), int(n_times)
    if n_chans < 1:
        raise ValueError(f"CBraMod needs at least one channel, got n_chans={n_chans}")
    if n_times < PATCH or n_times % PATCH:
        raise ValueError(
            f"CBraMod cuts epochs into {PATCH}-sample patches (1 s at 200 Hz), so n_times "
            f"must be a positive multiple of {PATCH}; got n_times={n_times}. Resample the "
            f"EEG to 200 Hz (build-eeg-index --sfreq 200)")
    cls = _cbramod_class()
    model = cls(n_outputs=1, n_chans=n_chans, n_times=n_times, n_layer=cfg.n_layer,
                nhead=cfg.nhead, dim_feedforward=cfg.dim_feedforward,
                drop_prob=cfg.drop_prob, return_encoder_output=True)
    model.proj_out = nn.Identity()  # the tokens are the features (module docstring)
    return model


def init_record(cfg: BackboneConfig) -> dict[str, Any]:
    """The record of a backbone left at random (``cfg.pretrained`` unset); a pretrained
    backbone's record is what :func:`load_backbone_weights` returns."""
    if cfg.pretrained is not None:
        raise ValueError("a pretrained backbone's record comes from load_backbone_weights")
    return {"init": "random"}


# -- weights ------------------------------------------------------------------------------
def load_backbone_weights(model: nn.Module, source: str | Path, *,
                          allow_hub: bool = False) -> dict[str, Any]:
    """Load CBraMod weights into ``model`` (from :func:`build_cbramod`), strictly.

    ``source``: a weight file, a directory with ``model.safetensors`` or
    ``pytorch_model.bin``, or ``"hub:<repo id>"`` (downloaded only with ``allow_hub``).
    Returns ``{"init": "pretrained", "source", "checksum", "dropped_keys", "notes"}`` for
    the run's metadata (``"file"`` too for a Hub download: the cached copy read).
    """
    text = str(source)
    if text.startswith(HUB_PREFIX):
        path = _hub_file(text[len(HUB_PREFIX):].strip(), allow_hub)
        label = text
    else:
        path = _local_file(Path(source).expanduser())
        label = str(path)
    state, dropped, notes = adapt_state_dict(read_state_dict(path))
    _load_strict(model, state, path)
    record: dict[str, Any] = {"init": "pretrained", "source": label,
                              "checksum": file_checksum(path), "dropped_keys": dropped,
                              "notes": notes}
    if label != str(path):
        record["file"] = str(path)
    return record


def _local_file(path: Path) -> Path:
    """The weight file ``path`` names: itself, or the first of :data:`WEIGHT_FILES` in a
    directory."""
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return (path / name).resolve()
        present = sorted(p.name for p in path.iterdir())
        raise DataError(f"no CBraMod weights in this directory: expected one of "
                        f"{', '.join(WEIGHT_FILES)}; it holds {present[:20] or 'nothing'}"
                        f"{' ...' if len(present) > 20 else ''}", path)
    if not path.is_file():
        raise DataError("CBraMod weight file not found", path)
    return path.resolve()


def _hub_file(repo_id: str, allow_hub: bool) -> Path:
    """The cached copy of a Hub repository's weight file, downloaded if need be."""
    if not repo_id:
        raise DataError(f"{HUB_PREFIX!r} needs a repository id, e.g. "
                        f"'{HUB_PREFIX}braindecode/cbramod-pretrained'")
    if not allow_hub:
        raise DataError(
            f"{HUB_PREFIX}{repo_id} is a Hugging Face Hub source and downloads are off: set "
            f"the option allow_hub (backbone.allow_hub: true; allow_hub=True in Python) to "
            f"fetch it, or give a local file or directory")
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as exc:
        raise ImportError("Hub weights need huggingface_hub: pip install fmri2img[eeg]"
                          ) from exc
    failures = []
    for name in WEIGHT_FILES:
        try:
            return Path(huggingface_hub.hf_hub_download(repo_id, name))
        except EntryNotFoundError as exc:  # not in the repository (or not cached offline)
            failures.append(f"{name}: {exc}")
        except Exception as exc:  # network, authentication, unknown repository
            raise DataError(f"could not download {name} from the Hugging Face Hub "
                            f"repository {repo_id!r}: {exc}") from exc
    raise DataError(f"the Hugging Face Hub repository {repo_id!r} has none of "
                    f"{', '.join(WEIGHT_FILES)}: {'; '.join(failures)}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file: a raw state dict or one nested under
    ``state_dict``/``model_state_dict``/``model``. Never unpickles arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"not readable as a weight file ({type(exc).__name__}: {exc})",
                        path) from exc
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        obj = next((obj[k] for k in _NESTED if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(obj, Mapping) or not obj or not _is_state_dict(obj):
        keys = list(obj)[:_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
        raise DataError(f"no state dict of tensors found (looked at the top level and under "
                        f"{', '.join(_NESTED)}); found {keys}", path)
    return dict(obj)


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                             for k, v in obj.items())


def adapt_state_dict(state: Mapping[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(state dict in the backbone's key names, dropped keys, notes on what was done).

    A ``module.`` or ``backbone.`` prefix is stripped when every key carries it; the layers
    that are not part of the encoder (``proj_out.*``, ``final_layer.*``) are dropped.
    """
    out = dict(state)
    notes: list[str] = []
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if out and all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                notes.append(f"prefix {prefix!r} stripped from every key")
                stripped = True
    dropped: list[str] = []
    for prefix, note in _DROPPED.items():
        gone = sorted(k for k in out if k.startswith(prefix))
        if gone:
            dropped += gone
            notes.append(note)
            for k in gone:
                del out[k]
        elif prefix == "final_layer.":
            notes.append("no final_layer.* in the file: none needed")
    return out, dropped, notes


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error naming what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise DataError(
            f"the weights do not match this CBraMod backbone: {len(missing)} missing "
            f"key(s) {missing[:_SHOWN]}, {len(unexpected)} unexpected key(s) "
            f"{unexpected[:_SHOWN]} (are n_layer and the file's model the same?)", path)
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise DataError(
                f"weight {key!r} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(value.shape)} in the backbone (check nhead and dim_feedforward)",
                path)
    model.load_state_dict(state, strict=True)
