"""Semantic-structural dissociation (analysis 6): does imagery keep what an image means
better than how it looks?

Per subject: a ``multi_target`` decoder (one trunk, one head per family) is trained on
the NSD perception index's train trials (its val trials stop it early) to predict, side
by side, the semantic targets (the embedding table) and structural families computed
from the stimulus images (:mod:`fmri2img.targets.structural`: downsampled pixels,
low-level features, and an ``AutoencoderKL``'s latents when ``image_autoencoder`` is
given), each family z-scored per dimension over the perception training stimuli. The
decoder then predicts the NSD-Imagery vision and imagery trials of sets A (simple) and
B (complex); each family is scored on single trials by 2-way identification against
that family's targets of the session's 12 image targets, and the numerics
(:mod:`fmri2img.analysis.dissociation`) give each family's preservation ratio and
imagery gap and the SSI (structural gap - semantic gap) with a bootstrap CI and a
domain-permutation p. Conceptual targets (set C) are words without an image, so they
have no structural targets and are left out.

The trained decoder and the families' targets are cached in the subject's work folder,
keyed by the index and table checksums and the options that shape them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xxhash
from pydantic import Field, model_validator

from fmri2img.analysis.dissociation import dissociation_test, group_ssi
from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.eval.metrics import two_way_per_item
from fmri2img.experiments.analyses.base import (
    IMAGERY,
    VISION,
    Analysis,
    Common,
    SubjectInputs,
    draws,
    effect,
    not_testable,
    num,
)
from fmri2img.io.atomic import atomic_path
from fmri2img.io.checksum import file_checksum
from fmri2img.models.pipeline import DecoderPipeline, fit_pipeline
from fmri2img.report.analyses.dissociation import draw
from fmri2img.targets.images import index_stimuli
from fmri2img.targets.structural import (
    AUTOENCODER,
    LOWLEVEL,
    PIXELS,
    Standardizer,
    load_autoencoder,
    structural_family,
)

log = logging.getLogger(__name__)

SEMANTIC = "semantic"
FamilyName = Literal["semantic", "pixels", "lowlevel", "autoencoder"]
IMAGE_SETS = ("simple", "complex")  # set C (conceptual) has no target image
EXCLUDED = ("conceptual targets (set C) are words without an image, so they have no "
            "structural targets: sets A and B only")


class Options(StrictModel):
    """Options of the dissociation analysis."""

    families: list[FamilyName] | None = Field(
        None, description="target families; default: semantic, pixels, lowlevel, and "
                          "autoencoder when image_autoencoder is given")
    weights: dict[str, float] = Field(
        default_factory=dict, description="loss weight per family (default 1)")
    epochs: int = Field(30, ge=1, le=1000, description="training epochs (early stopping "
                                                       "on the perception val split)")
    hidden: int = Field(512, ge=8, le=16384, description="trunk width (one hidden layer)")
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0, le=1)
    loss: Literal["mse", "cosine", "hybrid"] = Field(
        "mse", description="each family's loss (on its z-scored targets)")
    pca: int | None = Field(None, ge=2, description="PCA components of the voxels before "
                                                    "the trunk (None: z-scored voxels)")
    pixel_size: int = Field(8, ge=2, le=64, description="side of the downsampled pixels")
    lowlevel_size: int = Field(64, ge=8, le=512, description="image side for low-level "
                                                             "features")
    grid: int = Field(4, ge=1, le=16, description="cells per side of the orientation grid")
    n_orientations: int = Field(4, ge=2, le=16)
    autoencoder_size: int = Field(64, ge=8, le=1024, description="image side fed to the "
                                                                 "autoencoder")
    min_vision: float = Field(0.55, gt=0.5, lt=1, description="families whose vision "
                              "identification is below this are left out of the SSI "
                              "(their ratio would divide by noise)")

    @model_validator(mode="after")
    def _check(self) -> Options:
        if self.families is not None:
            if len(set(self.families)) != len(self.families):
                raise ValueError(f"families must be distinct, got {self.families}")
            if SEMANTIC not in self.families or len(self.families) < 2:
                raise ValueError("families need semantic and at least one structural family")
        unknown = set(self.weights) - {"semantic", PIXELS, LOWLEVEL, AUTOENCODER}
        if unknown or any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be >= 0 for known families, got {self.weights}")
        if self.lowlevel_size % self.grid:
            raise ValueError("lowlevel_size must be divisible by grid")
        return self


def needs(options: Options) -> list[str]:
    return ["perception_index"]


def _families(inputs: SubjectInputs, options: Options) -> list[str]:
    if options.families is not None:
        if AUTOENCODER in options.families and inputs.image_autoencoder is None:
            raise DataError("the autoencoder family needs image_autoencoder (a folder of "
                            "a diffusers AutoencoderKL)")
        return list(options.families)
    fams = [SEMANTIC, PIXELS, LOWLEVEL]
    return [*fams, AUTOENCODER] if inputs.image_autoencoder is not None else fams


def _cache_key(inputs: SubjectInputs, options: Options, families: list[str],
               seed: int) -> str:
    ae = inputs.image_autoencoder
    parts = {
        "perception": inputs.perception.index_checksum,
        "imagery": inputs.imagery.index_checksum,
        "targets": file_checksum(inputs.targets_path),
        "autoencoder": None if ae is None or AUTOENCODER not in families else
        [file_checksum(p) for p in sorted(Path(ae).iterdir()) if p.is_file()],
        "options": options.resolved() | {"families": families, "min_vision": None},
        "seed": seed,
    }
    return xxhash.xxh3_64_hexdigest(json.dumps(parts, sort_keys=True, default=str).encode())


def _images(index: Path, keys: list[str]) -> list[np.ndarray]:
    found = index_stimuli(index)
    by_key = {s.key: s for s in found.stimuli}
    missing = [k for k in keys if k not in by_key or not by_key[k].has_image]
    if missing:
        raise DataError(f"{len(missing)} stimuli have no image (first: "
                        f"{', '.join(missing[:5])})", index)
    return found.load_images([by_key[k] for k in keys])


def _family_targets(inputs: SubjectInputs, options: Options, families: list[str],
                    train_keys: list[str], keys: list[str], gallery_keys: list[str],
                    cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per family: (targets of ``keys`` (perception stimuli), of ``gallery_keys``), both
    z-scored with the statistics of ``train_keys``; cached in ``cache`` (.npz)."""
    if cache.exists():
        with np.load(cache) as z:
            return {f: (z[f"{f}/perception"], z[f"{f}/gallery"]) for f in families}
    pos = {k: i for i, k in enumerate(keys)}
    train_pos = [pos[k] for k in train_keys]
    p_images = _images(inputs.perception_index, keys)  # type: ignore[arg-type]
    g_images = _images(inputs.imagery_index, gallery_keys)
    ae = load_autoencoder(inputs.image_autoencoder) if AUTOENCODER in families else None
    out = {}
    for fam in families:
        if fam == SEMANTIC:
            a, b = inputs.targets.rows(keys), inputs.targets.rows(gallery_keys)
        else:
            kw = dict(pixel_size=options.pixel_size, lowlevel_size=options.lowlevel_size,
                      grid=options.grid, n_orientations=options.n_orientations,
                      autoencoder=ae, autoencoder_size=options.autoencoder_size)
            a = structural_family(fam, p_images, **kw)
            b = structural_family(fam, g_images, **kw)
        z = Standardizer.fit(a[train_pos])
        out[fam] = (z.transform(a), z.transform(b))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{f"{f}/{k}": v for f, (p, g) in out.items()
                        for k, v in (("perception", p), ("gallery", g))})
    return out


def _train(inputs: SubjectInputs, options: Options, families: list[str],
           targets: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str],
           train: pd.DataFrame, val: pd.DataFrame, seed: int, path: Path
           ) -> tuple[DecoderPipeline, dict[str, Any]]:
    if path.exists():
        pipe, meta = DecoderPipeline.load(path)
        return pipe, meta.get("fit", {})
    pos = {k: i for i, k in enumerate(keys)}
    Y = np.concatenate([targets[f][0] for f in families], axis=1)
    spec = [{"name": f, "dim": int(targets[f][0].shape[1]),
             "weight": float(options.weights.get(f, 1.0))} for f in families]
    model = {"families": spec, "hidden": [options.hidden], "epochs": options.epochs,
             "dropout": options.dropout, "lr": options.lr, "loss": options.loss,
             "seed": seed}
    t0 = time.perf_counter()
    val_kw: dict[str, Any] = {}
    if len(val):
        val_kw = {"X_val": inputs.betas(val, data=inputs.perception),
                  "Y_val": Y[[pos[k] for k in val["stimulus"]]]}
    pipe = fit_pipeline("multi_target", inputs.betas(train, data=inputs.perception),
                        Y[[pos[k] for k in train["stimulus"]]],
                        groups=train["stimulus"].to_numpy(), pca=options.pca, seed=seed,
                        options=model, **val_kw)
    fit = {**pipe.decoder.training_, "seconds_total": round(time.perf_counter() - t0, 2)}
    pipe.save(path, {"fit": fit, "perception_index": str(inputs.perception_index)})
    return pipe, fit


def run(inputs: SubjectInputs, options: Options, common: Common) -> dict[str, Any]:
    families = _families(inputs, options)
    subject_no = int("".join(c for c in inputs.subject if c.isdigit()) or 0)
    seed = common.seed
    perception = inputs.perception.frame
    known = set(inputs.targets.keys)
    usable = perception["stimulus"].notna() & perception["stimulus"].isin(known)
    train = perception[usable & (perception["split"] == "train")]
    val = perception[usable & (perception["split"] == "val")]
    if train["stimulus"].nunique() < 10:
        return not_testable(f"only {train['stimulus'].nunique()} perception training "
                            "stimuli with targets")
    # the sets filtered here, not through trials(sets=...): that path writes into a
    # read-only mask under pandas copy-on-write
    vis, img = (d[d["stimulus_set"].isin(IMAGE_SETS)]
                for d in (inputs.trials(VISION), inputs.trials(IMAGERY)))
    rows = pd.concat([vis, img])
    gallery_keys = sorted(set(vis["stimulus"]) & set(img["stimulus"]))
    if len(gallery_keys) < 2:
        return not_testable(f"{len(gallery_keys)} image targets of sets A and B have both "
                            "vision and imagery trials")
    rows = rows[rows["stimulus"].isin(gallery_keys)]
    train_keys = sorted(set(train["stimulus"]))
    keys = sorted(set(train_keys) | set(val["stimulus"]))
    key = _cache_key(inputs, options, families, seed)
    folder = inputs.work_dir / "dissociation"
    t0 = time.perf_counter()
    targets = _family_targets(inputs, options, families, train_keys, keys, gallery_keys,
                              folder / f"targets-{key}.npz")
    t_targets = time.perf_counter() - t0
    pipe, fit = _train(inputs, options, families, targets, keys, train, val, seed,
                       folder / f"multi_target-{key}.pt")
    pred = pipe.predict(inputs.betas(rows))
    slices = pipe.decoder.slices()
    true = rows["stimulus"].map({k: i for i, k in enumerate(gallery_keys)}).to_numpy()
    scores = np.stack([two_way_per_item(pred[:, slices[f]], targets[f][1], true)
                       for f in families])
    imagery = (rows["domain"] == IMAGERY).to_numpy()
    target = rows["stimulus"].to_numpy()
    structural = np.array([f != SEMANTIC for f in families])

    def test(mask: np.ndarray, fams: np.ndarray, offset: int) -> Any:
        return dissociation_test(scores[fams][:, mask], target[mask], imagery[mask],
                                 [f for f, k in zip(families, fams, strict=True) if k],
                                 structural[fams], n_bootstrap=common.n_bootstrap,
                                 n_permutations=common.n_permutations,
                                 seed=seed + 1000 * subject_no + offset,
                                 confidence=1 - common.alpha)

    everything = np.ones(len(rows), dtype=bool)
    first = test(everything, np.ones(len(families), dtype=bool), 0)
    per_family = {f: {"structural": bool(s), "vision": float(v), "imagery": float(i),
                      "ratio": num(r), "gap": num(g), "gap_ci": [num(c) for c in ci]}
                  for f, s, v, i, r, g, ci in zip(
                      families, structural, first.vision, first.imagery, first.ratio,
                      first.gap, first.gap_ci, strict=True)}
    use = first.vision >= options.min_vision
    dropped = [f for f, u in zip(families, use, strict=True) if not u]
    base = {"families": per_family, "excluded": EXCLUDED, "n_targets": first.n_targets,
            "n_trials": {"vision": first.n_vision, "imagery": first.n_imagery},
            "fit": fit, "seconds_targets": round(t_targets, 2)}
    if not use[~structural].any() or not use[structural].any():
        return not_testable(
            f"vision identification below min_vision={options.min_vision} for "
            f"{', '.join(dropped)}: no semantic-structural contrast to measure", **base)
    result = first if use.all() else test(everything, use, 1)
    log.info("dissociation %s: SSI %+.3f [%+.3f, %+.3f], p %.3g (decoder fit %s s)",
             inputs.subject, result.ssi, *result.ci, result.p, fit.get("seconds_total"))
    by_set = {}
    for k, name in enumerate(IMAGE_SETS):
        mask = (rows["stimulus_set"] == name).to_numpy()
        if len(set(target[mask])) < 2:
            continue
        part = test(mask, use, 2 + k)
        by_set[name] = {"ssi": num(part.ssi), "ci": [num(c) for c in part.ci],
                        "p": part.p, "p_ssi": part.p_ssi,
                        "gap": {f: num(g) for f, g in zip(part.families, part.gap,
                                                            strict=True)}}
    return {"testable": True, **base, "ssi": result.ssi,
            "ssi_ci": [num(c) for c in result.ci], "p": result.p, "t": result.t,
            "p_ssi": result.p_ssi,
            "used_families": result.families, "dropped_families": dropped,
            "gap_structural": num(float(np.mean(result.gap[result.structural]))),
            "gap_semantic": num(float(np.mean(result.gap[~result.structural]))),
            "by_set": by_set, "bootstrap_ssi": draws(result.bootstrap),
            "null_t": draws(result.null)}


def combine(per_subject: dict[str, dict[str, Any]], options: Options,
            common: Common) -> dict[str, Any]:
    ok = {s: r for s, r in per_subject.items() if r.get("testable")}
    if not ok:
        why = "; ".join(f"{s}: {r.get('why')}" for s, r in per_subject.items())
        return {"finding": f"not testable in any subject ({why})",
                "effect": None, "significant": None}

    def arr(x: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in x], dtype=np.float64)

    mean, ci, p = group_ssi([r["ssi"] for r in ok.values()],
                            [arr(r["bootstrap_ssi"]) for r in ok.values()],
                            [r["t"] for r in ok.values()],
                            [arr(r["null_t"]) for r in ok.values()],
                            confidence=1 - common.alpha)
    positive = sum(r["ssi"] > 0 for r in ok.values())
    gaps = {f: float(np.nanmean(arr([r["families"][f]["gap"] for r in ok.values()
                                     if f in r["families"]])))
            for f in next(iter(ok.values()))["families"]}
    significant = bool(p < common.alpha)
    kind = ("imagery loses more structure than meaning" if mean > 0
            else "imagery keeps structure better than meaning")
    gap_text = ", ".join(f"{f} {g:.2f}" for f, g in gaps.items())
    finding = (f"SSI (structural - semantic imagery gap) {mean:+.3f} "
               f"[{ci[0]:+.3f}, {ci[1]:+.3f}], pooled permutation p = {p:.3g}, "
               f"{len(ok)} subjects ({positive} positive): "
               + (kind if significant else "no significant dissociation")
               + f"; mean gaps {gap_text}; sets A and B (set C has no image)")
    return {"finding": finding,
            "effect": effect("semantic-structural index", mean, ci, p),
            "significant": significant, "n_subjects": len(ok), "n_positive": positive,
            "mean_gap": gaps, "excluded": EXCLUDED,
            "not_testable": {s: r.get("why") for s, r in per_subject.items()
                             if not r.get("testable")}}


ANALYSIS = Analysis(
    name="dissociation",
    title="Semantic-structural dissociation",
    Options=Options,
    run=run,
    combine=combine,
    draw=draw,
    needs=needs,
)
