"""Reconstructions scored against the stimuli they stand for: PixCorr, SSIM and PSNR
always, and identification (2-way) or correlation distance on the features of every
feature network whose weights are on this machine. A network without weights is reported
``unavailable`` with the reason, never scored with random weights; the offline
EfficientNet-Lite0 is labelled as not comparable with published figures."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from fmri2img.errors import DataError
from fmri2img.eval.image_scores import score_images
from fmri2img.targets.feature_nets import SPECS, FeatureNet, Unavailable, load_feature_net
from fmri2img.targets.images import index_stimuli

log = logging.getLogger(__name__)


def load_nets(names: Sequence[str], *, weights_dir: Path | None = None,
              device: str = "cpu") -> dict[str, FeatureNet | Unavailable]:
    nets = {name: load_feature_net(name, weights_dir=weights_dir, device=device)
            for name in names}
    missing = [n for n, net in nets.items() if isinstance(net, Unavailable)]
    if missing:
        log.info("image metrics without %s: no weights on this machine (see "
                 "image_metrics.json for where they were looked for)", ", ".join(missing))
    return nets


def stimulus_images(index: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The images of those ``keys`` that have one (conceptual targets have only a word)."""
    found = index_stimuli(index)
    by_key = {st.key: st for st in found.stimuli}
    wanted = [by_key[k] for k in dict.fromkeys(keys) if k in by_key and by_key[k].has_image]
    return {st.key: np.asarray(im) for st, im in zip(wanted, found.load_images(wanted),
                                                      strict=True)}


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8:
        scale = 255.0 if image.max(initial=0) <= 1.0 else 1.0
        image = np.clip(np.round(image * scale), 0, 255).astype(np.uint8)
    return image


def common_size(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stimuli of one index may differ in size; feature networks resize anyway, so bring
    them to the first one's size (nearest for binary stimuli would alias; bilinear)."""
    first = _rgb(images[0])
    h, w = first.shape[:2]
    out = []
    for im in images:
        im = _rgb(im)
        if im.shape[:2] != (h, w):
            im = np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
        out.append(im)
    return np.stack(out)


def score_domain(real: np.ndarray, recon: np.ndarray,
                 nets: Mapping[str, FeatureNet | Unavailable], *, pixel_size: int,
                 convention: str, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Every metric of ``recon`` (n, H, W, 3) against ``real`` (n, h, w, 3)."""
    features = {}
    for name, net in nets.items():
        if isinstance(net, Unavailable):
            continue
        features[name] = (net.features(real), net.features(recon), net.spec.metric)
    scores = score_images(real, recon, features, pixel_size=pixel_size,
                          two_way_convention=convention, n_bootstrap=n_bootstrap, seed=seed)
    for name, net in nets.items():
        if isinstance(net, Unavailable):
            scores[name] = {"unavailable": net.reason, "label": net.label,
                            "metric": SPECS[name].metric if name in SPECS else None}
        else:
            scores[name].update(label=net.spec.label, comparable=net.spec.comparable,
                                weights=net.describe().get("weights"))
    return scores


def score_reconstruction_folder(folder: Path, index: Path, domains: Sequence[str], *,
                                n_bootstrap: int, seed: int) -> dict[str, Any]:
    """A ``reconstruct`` output's images scored against ``index``'s stimuli, with the
    feature networks and conventions that reconstruct was run with (eval's
    ``--reconstructions``)."""
    images_file, config_file = folder / "reconstructions.npz", folder / "config_resolved.yaml"
    for f in (images_file, config_file):
        if not f.exists():
            raise DataError("not a reconstruct output folder (expected reconstructions.npz "
                            "and config_resolved.yaml)", f)
    rcfg = yaml.safe_load(config_file.read_text()) or {}
    source = Path(str(rcfg.get("predictions", "")))
    meta_file = (source.parent if source.suffix == ".npz" else source) / "predictions.json"
    if meta_file.exists():
        made_from = Path(json.loads(meta_file.read_text()).get("index", ""))
        if made_from.resolve() != Path(index).resolve():
            raise DataError(f"these reconstructions were made from predictions on "
                            f"{made_from}, not on {index}", folder)
    with np.load(images_file) as z:
        made = {d: ([str(k) for k in z[f"{d}_keys"]], z[f"{d}_images"])
                for d in domains if f"{d}_keys" in z.files}
    if not made:
        raise DataError(f"no {' or '.join(domains)} reconstructions here", images_file)
    real = stimulus_images(index, [k for keys, _ in made.values() for k in keys])
    nets = load_nets(rcfg.get("feature_nets", ["effnet_lite0"]),
                     weights_dir=Path(rcfg["weights_dir"]) if rcfg.get("weights_dir") else None,
                     device=rcfg.get("device") or "cpu")
    return score_made(made, real, nets, pixel_size=int(rcfg.get("pixel_size", 512)),
                      convention=str(rcfg.get("two_way", "mindeye2")),
                      n_bootstrap=n_bootstrap, seed=seed)


def score_made(made: Mapping[str, tuple[list[str], np.ndarray]],
               real: Mapping[str, np.ndarray], nets: Mapping[str, FeatureNet | Unavailable],
               *, pixel_size: int, convention: str, n_bootstrap: int,
               seed: int) -> dict[str, Any]:
    """Per domain: its images (in key order) scored against the stimuli that have an
    image; conceptual targets (a word, no image) are counted, not scored."""
    out: dict[str, Any] = {"two_way_convention": convention, "pixel_size": pixel_size,
                           "domains": {}}
    for d, (keys, images) in made.items():
        have = [i for i, k in enumerate(keys) if k in real]
        if len(have) < 2:
            out["domains"][d] = {"unavailable": f"{len(have)} items with a stimulus image"}
            continue
        stim = common_size([real[keys[i]] for i in have])
        out["domains"][d] = {
            "n_without_image": len(keys) - len(have),
            **score_domain(stim, images[have], nets, pixel_size=pixel_size,
                           convention=convention, n_bootstrap=n_bootstrap, seed=seed)}
    return out
