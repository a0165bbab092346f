"""``fmri2img reconstruct``: images from decoded embeddings.

Takes what ``eval`` wrote (``predictions.npz`` + ``predictions.json``: every scored item's
predicted embedding, and what embedding the decoder was trained on), checks that the
diffusion pipeline expects that embedding (model, dimension, token count, normalisation:
the checks diffusers does not make), generates one image per item, scores the images
against the stimuli (:mod:`fmri2img.experiments.image_scoring`) and draws the grid
stimulus | perception reconstruction | imagery reconstruction.

Each image is written as soon as its batch is done and generated from its own seed
(``seed + position``), so a killed run started again with the same options keeps the
images it has and makes only the missing ones, with the same result as one run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from PIL import Image
from pydantic import Field, field_validator, model_validator

from fmri2img.config import StrictModel
from fmri2img.devices import check_device_name
from fmri2img.errors import DataError
from fmri2img.experiments.eval_outputs import PREDICTIONS, PREDICTIONS_META
from fmri2img.experiments.image_scoring import load_nets, score_made, stimulus_images
from fmri2img.io.atomic import atomic_path, write_json, write_text
from fmri2img.models import registry
from fmri2img.models.diffusion.base import (
    UNTRAINED_LABEL,
    EmbeddingSpec,
    GeneratorConfig,
    ImageGenerator,
)
from fmri2img.report.reconstruction_figures import metrics_markdown, reconstruction_grid
from fmri2img.targets.feature_nets import DEFAULT_FEATURE_NETS, available_feature_nets

log = logging.getLogger(__name__)

RESULT = "reconstruct.json"
METRICS = "image_metrics.json"
# column titles of the grid, per domain of predictions.json
COLUMN = {"perception": "perception reconstruction", "vision": "perception reconstruction",
          "imagery": "imagery reconstruction"}
UNTRAINED = UNTRAINED_LABEL


class ReconstructConfig(StrictModel):
    predictions: Path = Field(description="an eval output folder, or its predictions.npz")
    pipeline: str = Field(description="a local diffusers pipeline folder, or hub:<repo id> "
                                      "with --allow-hub")
    backend: str = Field("unclip", description="how embeddings drive the pipeline")
    output_dir: Path
    device: str | None = Field(None, description="cpu, cuda, cuda:N, mps (default: cpu)")
    allow_hub: bool = Field(False, description="allow downloading a hub:<id> pipeline")
    generator: dict[str, Any] = Field(
        default_factory=dict, description="generation options, e.g. --generator steps=50 "
        "--generator guidance_scale=4 (steps, guidance_scale, height, width, batch_size, "
        "seed, noise_level, negative zeros|mean, ip_adapter_scale)")
    domains: list[Literal["perception", "vision", "imagery"]] = Field(
        default_factory=list, description="which predictions (default: all in the file)")
    limit: int | None = Field(None, ge=1, description="at most this many items per domain "
                                                      "(the first by key)")
    allow_mismatch: list[Literal["model", "normalization"]] = Field(
        default_factory=list, description="embedding differences to accept (dimension and "
                                          "token count never are)")
    metrics: bool = Field(True, description="score the images against the stimuli")
    feature_nets: list[str] = Field(default_factory=lambda: list(DEFAULT_FEATURE_NETS),
                                    description="feature networks of the 2-way metrics")
    weights_dir: Path | None = Field(None, description="folder of feature-network weights "
                                     "(also looked for in torch hub's cache)")
    two_way: Literal["mindeye2", "mirage"] = Field(
        "mindeye2", description="2-way convention: MindEye2's, or MIRAGE's (1/(N-1) lower)")
    pixel_size: int = Field(512, ge=8, description="PixCorr and SSIM resolution")
    n_bootstrap: int = Field(2000, ge=1)
    grid_items: int = Field(12, ge=1, description="rows of the reconstruction grid")

    _device = field_validator("device")(
        classmethod(lambda cls, v: None if v is None else check_device_name(v)))
    _backend = field_validator("backend")(
        classmethod(lambda cls, v: registry.generators.check_name(v)))

    @field_validator("generator")
    @classmethod
    def _generator(cls, v: dict[str, Any]) -> dict[str, Any]:
        return GeneratorConfig(**v).resolved()

    @field_validator("feature_nets")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if n not in available_feature_nets()]
        if bad:
            raise ValueError(f"unknown feature networks {bad}; available: "
                             f"{available_feature_nets()}")
        return v

    @model_validator(mode="after")
    def _paths(self) -> ReconstructConfig:
        source = self.source_dir().resolve()
        out = self.output_dir.resolve()
        if out == source or out in source.parents:
            raise ValueError(f"--output-dir {self.output_dir} is or holds the predictions' "
                             "folder; write reconstructions elsewhere")
        return self

    def source_dir(self) -> Path:
        return self.predictions.parent if self.predictions.suffix == ".npz" \
            else self.predictions


# ----------------------------------------------------------------------------- inputs
def read_predictions(path: Path) -> tuple[dict[str, Any], dict[str, tuple[list[str],
                                                                          np.ndarray]]]:
    """(predictions.json, {domain: (keys, predictions)}) of an eval output."""
    folder = path.parent if path.suffix == ".npz" else path
    npz, meta_path = folder / PREDICTIONS, folder / PREDICTIONS_META
    for f in (npz, meta_path):
        if not f.exists():
            raise DataError(f"no {f.name} here: give an eval output folder (eval writes "
                            f"{PREDICTIONS} and {PREDICTIONS_META}; rerun eval if it is "
                            "from an older fmri2img)", f)
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(npz) as z:
            domains = {name: ([str(k) for k in z[f"{info['prefix']}keys"]],
                              np.asarray(z[f"{info['prefix']}predictions"], np.float32))
                       for name, info in meta["domains"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not readable eval predictions ({exc})", npz) from exc
    for name, (keys, pred) in domains.items():
        if pred.ndim < 2 or len(keys) != len(pred) or not np.isfinite(pred).all():
            raise DataError(f"{name} predictions of shape {pred.shape} for {len(keys)} keys "
                            "(expected one finite row per key)", npz)
    return meta, domains


def trained_spec(meta: dict[str, Any], where: Path) -> EmbeddingSpec:
    emb = meta.get("embedding") or {}
    if not emb.get("dim"):
        raise DataError("these predictions do not say which embedding the decoder was "
                        "trained on (no embedding.dim in predictions.json)", where)
    tokens = int(emb.get("tokens", 1))
    return EmbeddingSpec(model=emb.get("model"), dim=int(emb["dim"]) // tokens,
                         tokens=tokens, normalization=emb.get("normalization", "unknown"))


# ----------------------------------------------------------------------------- generation
def _file_name(position: int, key: str) -> str:
    return f"{position:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}.png"


def _read_png(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None  # half-written by a killed run: made again


def generate_domain(gen: ImageGenerator, keys: list[str], pred: np.ndarray, folder: Path,
                    seed: int, label: str) -> np.ndarray:
    """One image per item, written to ``folder`` batch by batch; images already there
    (a killed run's) are kept: each image depends only on its embedding and seed."""
    images: list[np.ndarray | None] = [_read_png(folder / _file_name(i, k))
                                       if (folder / _file_name(i, k)).exists() else None
                                       for i, k in enumerate(keys)]
    todo = [i for i, im in enumerate(images) if im is None]
    if len(todo) < len(keys):
        log.info("%s: %d of %d images already made (resumed)", label,
                 len(keys) - len(todo), len(keys))
    if todo:
        made = gen.iter_generate(pred[todo], seed=seed, positions=todo, negatives_from=pred)
        for positions, batch in made:
            for i, im in zip(positions, batch, strict=True):
                with atomic_path(folder / _file_name(i, keys[i])) as tmp:
                    Image.fromarray(im).save(tmp, format="PNG")
                images[i] = im
    return np.stack([im for im in images if im is not None])


# ----------------------------------------------------------------------------- command
def reconstruct(cfg: ReconstructConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    meta, domains = read_predictions(cfg.predictions)
    source = cfg.source_dir()
    wanted = cfg.domains or list(domains)
    missing = [d for d in wanted if d not in domains]
    if missing:
        raise DataError(f"no {', '.join(missing)} predictions here (it holds "
                        f"{', '.join(domains)})", source / PREDICTIONS)
    trained = trained_spec(meta, source / PREDICTIONS_META)
    gcfg = GeneratorConfig(**cfg.generator)
    gen = registry.generators.get(cfg.backend).load(cfg.pipeline, gcfg,
                                                    device=cfg.device or "cpu",
                                                    allow_hub=cfg.allow_hub)
    expected = gen.expects()
    gen.check_decoder(trained, allow=cfg.allow_mismatch,
                      where=None if cfg.pipeline.startswith("hub:") else Path(cfg.pipeline))
    out = cfg.output_dir
    saved = out / "config_resolved.yaml"
    if saved.exists() and saved.read_text() != _yaml(cfg):
        # images made with other options must not be mixed with these
        for d in wanted:
            for f in (out / "images" / d).glob("*.png"):
                f.unlink()
    cfg.save(saved)
    made: dict[str, tuple[list[str], np.ndarray]] = {}
    for d in wanted:
        keys, pred = domains[d]
        order = sorted(range(len(keys)), key=lambda i: keys[i])[: cfg.limit]
        keys, pred = [keys[i] for i in order], pred[order]
        made[d] = (keys, generate_domain(gen, keys, pred, out / "images" / d, gcfg.seed,
                                         f"{meta.get('subject')} {d}"))
    with atomic_path(out / "reconstructions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{f"{d}_keys": np.array(k) for d, (k, _) in made.items()},
                 **{f"{d}_images": ims for d, (_, ims) in made.items()})
    real = _stimuli(meta, [k for keys, _ in made.values() for k in keys])
    metrics = _score(cfg, made, real) if cfg.metrics and real else None
    untrained = gen.untrained_test_pipeline
    result = {
        "subject": meta.get("subject"), "model_type": meta.get("model_type"),
        "mode": meta.get("mode"), "predictions": str(source.resolve()),
        "backend": cfg.backend, "pipeline": gen.describe(),
        "untrained_test_pipeline": untrained, "label": UNTRAINED if untrained else None,
        "trained_on": trained.as_dict(), "pipeline_expects": expected.as_dict(),
        "domains": {d: {"n_images": len(k), "folder": f"images/{d}"}
                    for d, (k, _) in made.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if metrics is not None:
        write_json(out / METRICS, metrics)
        write_text(out / "image_metrics.md", metrics_markdown(metrics, untrained))
    _grid(cfg, made, real, meta, untrained)
    write_json(out / RESULT, result)
    log.info("%d images in %s (%.1f s)%s", sum(len(k) for k, _ in made.values()), out,
             result["seconds"], f"; {UNTRAINED}" if untrained else "")
    return result


def _yaml(cfg: ReconstructConfig) -> str:
    # the same dump StrictModel.save writes
    return yaml.safe_dump(cfg.resolved(), sort_keys=False)


def _stimuli(meta: dict[str, Any], keys: list[str]) -> dict[str, np.ndarray]:
    index = Path(meta.get("index", ""))
    if not index.exists():
        log.info("image metrics and grid without stimuli: the index %s is not there", index)
        return {}
    try:
        return stimulus_images(index, keys)
    except (DataError, OSError, KeyError, ValueError) as exc:
        log.info("image metrics and grid without stimuli: %s", exc)
        return {}


def _score(cfg: ReconstructConfig, made: dict[str, tuple[list[str], np.ndarray]],
           real: dict[str, np.ndarray]) -> dict[str, Any]:
    nets = load_nets(cfg.feature_nets, weights_dir=cfg.weights_dir, device=cfg.device or "cpu")
    return score_made(made, real, nets, pixel_size=cfg.pixel_size, convention=cfg.two_way,
                      n_bootstrap=cfg.n_bootstrap, seed=0)


def _grid(cfg: ReconstructConfig, made: dict[str, tuple[list[str], np.ndarray]],
          real: dict[str, np.ndarray], meta: dict[str, Any], untrained: bool) -> None:
    keys = sorted(set().union(*(set(k) for k, _ in made.values())))[: cfg.grid_items]
    columns: dict[str, list[np.ndarray | None]] = {}
    # stimulus | perception | imagery, as the field shows them
    for d, (dkeys, images) in sorted(made.items(), key=lambda kv: kv[0] == "imagery"):
        at = {k: i for i, k in enumerate(dkeys)}
        columns[COLUMN[d]] = [images[at[k]] if k in at else None for k in keys]
    title = (f"{meta.get('subject')}, {meta.get('model_type')} -> {cfg.backend} "
             f"({meta.get('mode')} predictions)")
    reconstruction_grid([real.get(k) for k in keys], columns, keys, cfg.output_dir / "grid",
                        title=title, banner=UNTRAINED if untrained else None)
