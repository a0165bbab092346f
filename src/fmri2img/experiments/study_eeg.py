"""The main job's EEG part: THINGS-EEG2 index, EEG-to-image decoders scored with the
zero-shot protocol (test repetitions averaged, every test image a candidate), image
pairing with NSD, the alignment dataset, the aligner and its evaluation."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from rich.console import Console

from fmri2img.config import StrictModel
from fmri2img.data.things_index import EEGIndexConfig, build_eeg_index
from fmri2img.errors import DataError
from fmri2img.experiments.align_data import (
    AlignDataConfig,
    PairConfig,
    build_align_dataset,
    pair_images,
)
from fmri2img.experiments.align_run import (
    AlignEvalConfig,
    AlignRunConfig,
    evaluate_aligner,
    train_aligner,
)
from fmri2img.experiments.align_run import render as render_alignment
from fmri2img.experiments.evaluate import EvalConfig, evaluate
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder
from fmri2img.io.reuse import run_once
from fmri2img.models import registry

log = logging.getLogger(__name__)

EEG_ROOT = "things-eeg2/Preprocessed_data_250Hz"  # where the simulator writes it


class EEGStudyOptions(StrictModel):
    """What the main job runs of the EEG part (``study --eeg-options KEY=VALUE``)."""

    eeg_root: Path | None = Field(None, description="THINGS-EEG2 folder (default: the "
                                  "simulated root's things-eeg2/Preprocessed_data_250Hz)")
    subject: str = "sub-01"
    models: list[str] = Field(default_factory=lambda: ["eeg_conv"])
    model_options: dict[str, dict[str, Any]] = Field(default_factory=lambda: {
        "eeg_conv": {"epochs": 20},
        "cbramod": {"epochs": 5, "backbone": {"n_layer": 2}}})
    n_pairs: int | None = Field(None, ge=1, description="image pairs (default: by scale)")
    fmri_subject: int = 1
    fmri_decoder: str = Field("ridge", description="H1 decoder giving the fMRI features")
    # the convolutional encoder, started from the study's eeg_conv decoder (EEG -> image on
    # every training image): a randomly initialised CBraMod stays at chance in a CPU
    # budget (README); with CBraMod weights, aligner={"encoder": "cbramod", "backbone":
    # {"pretrained": FILE}}
    aligner: dict[str, Any] = Field(default_factory=lambda: {
        "encoder": "conv", "head": {"kind": "attention", "n_queries": 16, "hidden": 1024}})
    align_train: dict[str, Any] = Field(default_factory=lambda: {"epochs": 20,
                                                                 "batch_size": 64})
    align_ratios: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="train/val/test shares of the pairs (Brain2Image: "
                                       "0.8/0.1/0.1; more test pairs narrow the CIs)")

    _models = field_validator("models")(
        classmethod(lambda cls, v: [registry.decoders.check_name(m) for m in v]))
    _model_options = field_validator("model_options")(
        classmethod(lambda cls, v: registry.decoders.check_options(v)))


# a little over the simulator's true pairs (30, 200): the rest are near neighbours, as in
# Brain2Image's 1000 pairs of real data (whose near neighbours dilute the test)
PAIRS_BY_SCALE = {"small": 40, "default": 300, "nsd": 1000}


def run_study_eeg(opts: EEGStudyOptions, *, root: Path, out: Path, targets: Path,
                  fmri_index: Path, fmri_checkpoint: Path | None, scale: str, seed: int,
                  n_permutations: int, n_bootstrap: int, console: Console) -> dict[str, Any]:
    t0 = time.perf_counter()
    eeg_root = opts.eeg_root or root / EEG_ROOT
    if not eeg_root.is_dir():
        log.warning("EEG part skipped: no THINGS-EEG2 data at %s", eeg_root)
        return {"skipped": f"no THINGS-EEG2 data at {eeg_root}"}
    index = out / "indices" / f"{opts.subject}_things.parquet"
    df, _ = build_eeg_index(EEGIndexConfig(eeg_root=eeg_root, subject=opts.subject,
                                           output=index, cache_dir=out / "cache", seed=seed))
    n_test = int(df.loc[df["split"] == "test", "stimulus"].nunique())
    result: dict[str, Any] = {"index": str(index), "n_test_images": n_test, "decoders": {}}
    rows = []
    for model in opts.models:
        run = out / "eeg" / "decoders" / opts.subject / model
        # finished trainings and evaluations with unchanged options and inputs are reused
        run_once(TrainConfig(index=index, targets=targets, model_type=model, output_dir=run,
                             model=opts.model_options.get(model, {}), seed=seed),
                 "train_summary.json", train_decoder)
        ev = run_once(EvalConfig(index=index, checkpoint=[checkpoint_path(run)],
                                 targets=targets, output_dir=run / "eval", pool_size=n_test,
                                 n_pools=1, ks=[1, 5], n_permutations=n_permutations,
                                 n_bootstrap=n_bootstrap, seed=seed), "metrics.json", evaluate)
        m = ev
        result["decoders"][model] = {k: {"value": m["overall"][k], "ci": m["ci"][k],
                                         "chance": m["chance"][k]}
                                     for k in ("retrieval_top1", "retrieval_top5", "two_way")}
        rows.append((model, m))
    console.print(f"[bold]EEG -> image, zero-shot {n_test}-way ({opts.subject}, test "
                  "repetitions averaged)[/bold]")
    for model, m in rows:
        o, c = m["overall"], m["ci"]
        console.print(f"  {model}: top-1 {o['retrieval_top1']:.3f} "
                      f"[{c['retrieval_top1'][0]:.3f}, {c['retrieval_top1'][1]:.3f}] "
                      f"(chance {m['chance']['retrieval_top1']:.3f}), top-5 "
                      f"{o['retrieval_top5']:.3f} [{c['retrieval_top5'][0]:.3f}, "
                      f"{c['retrieval_top5'][1]:.3f}], 2-way {o['two_way']:.3f}",
                      markup=False)

    n_pairs = opts.n_pairs or PAIRS_BY_SCALE.get(scale, 1000)
    pairs = run_once(PairConfig(eeg_index=index, fmri_index=fmri_index, targets=targets,
                                output_dir=out / "eeg" / "pairs", n_pairs=n_pairs),
                     "pairs_summary.json", pair_images)
    result["pairing"] = pairs
    if "truth" in pairs:
        t = pairs["truth"]
        console.print(f"  image pairing: {t['recovered']} of {t['n_true']} true pairs "
                      f"recovered among {pairs['n_pairs']} pairs", markup=False)
    if fmri_checkpoint is None or not Path(fmri_checkpoint).exists():
        log.info("alignment skipped: no %s decoder for the fMRI features", opts.fmri_decoder)
        result["alignment"] = {"skipped": "no fMRI decoder"}
        return result
    lmdb = out / "eeg" / "align.lmdb"
    build_align_dataset(AlignDataConfig(pairs=out / "eeg" / "pairs", eeg_index=index,
                                        fmri_index=fmri_index, fmri_checkpoint=fmri_checkpoint,
                                        output=lmdb, seed=seed, ratios=opts.align_ratios))
    run = out / "eeg" / "aligner"
    aligner = dict(opts.aligner)
    conv_run = out / "eeg" / "decoders" / opts.subject / "eeg_conv"
    if aligner.get("encoder") == "conv" and "conv_pretrained" not in aligner \
            and "eeg_conv" in opts.models:
        aligner["conv_pretrained"] = str(checkpoint_path(conv_run))
    acfg = AlignRunConfig(dataset=lmdb, output_dir=run, model=aligner, train=opts.align_train)
    try:
        train_aligner(acfg)
    except DataError as exc:
        # an earlier study's aligner from other data or options: the study starts it over
        # (align-train itself refuses, naming what differs)
        if "written by another run" not in str(exc):
            raise
        log.info("aligner of an earlier run with other inputs (%s): training it anew", exc)
        shutil.rmtree(run / "checkpoints")
        train_aligner(acfg)
    try:
        ev = evaluate_aligner(AlignEvalConfig(run_dir=run, n_bootstrap=n_bootstrap,
                                              n_permutations=n_permutations, seed=seed))
    except DataError as exc:  # too few test pairs at a tiny scale
        log.warning("alignment evaluation skipped: %s", exc)
        result["alignment"] = {"skipped": str(exc)}
        return result
    ks = [k for k in (1, 10) if f"top{k}" in ev["eeg_to_fmri"]]
    console.print(render_alignment(ev, ks), markup=False)
    result["alignment"] = {"n_test_pairs": ev["n_pairs"], "eeg_to_fmri": ev["eeg_to_fmri"],
                           "fmri_to_eeg": ev["fmri_to_eeg"], "eeg_only": ev["eeg_only"],
                           "cosine": ev["cosine"]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
