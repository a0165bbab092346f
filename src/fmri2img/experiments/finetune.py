"""Full fine-tuning of a perception decoder on imagery trials (the adapter's rival in H3);
with ``train_domain: perception``, on the session's vision trials of the same targets (its
control).

Every weight of the decoder is trained (its preprocessing is kept as fitted on perception),
starting from the perception solution, on the same examples an adapter gets: repetition
averages of the fold's training targets (:func:`fmri2img.data.splits.make_fold`), with early
stopping on held-out targets. The decoder hands over its trainable module and takes the
tuned weights back through :class:`fmri2img.models.base.Decoder`. The result is a decoder
checkpoint that records what it saw, so evaluation scores each target only with a model
that never trained on it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from fmri2img.data.splits import make_fold
from fmri2img.data.trials import IndexData, Targets, subset_averages
from fmri2img.errors import DataError
from fmri2img.experiments.fold_training import FoldTrainingOptions
from fmri2img.experiments.recorded import targets_for
from fmri2img.io.atomic import write_json, write_text
from fmri2img.models.pipeline import DecoderPipeline
from fmri2img.report.figures import loss_curve
from fmri2img.training.seeding import seed_everything
from fmri2img.training.trainer import train_from_start

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/decoder.pt"


class FinetuneConfig(FoldTrainingOptions):
    index: Path = Field(description="NSD-Imagery index")
    checkpoint: Path = Field(description="the perception decoder to start from")
    targets: Path | None = Field(None, description="embedding table (default: the one "
                                 "recorded in the decoder checkpoint)")
    output_dir: Path
    # small steps: ridge coefficients are ~1e-3, and Adam moves each weight by ~lr
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")


def finetune_decoder(cfg: FinetuneConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = cfg.model_copy(update={"targets": targets_for(cfg.targets, cfg.checkpoint)})
    assert cfg.targets is not None
    out = Path(cfg.output_dir)
    pipeline, meta = DecoderPipeline.load(cfg.checkpoint)
    data = IndexData.open(cfg.index)
    targets = Targets.open(cfg.targets)
    if pipeline.n_inputs != data.n_voxels:
        raise DataError(f"the decoder takes {pipeline.n_inputs} voxels, this index has "
                        f"{data.n_voxels} ({data.subject})", cfg.index)
    fold = make_fold(data.frame, protocol=cfg.protocol, fold=cfg.fold, n_folds=cfg.n_folds,
                     seed=cfg.seed, data_fraction=cfg.data_fraction,
                     domains=(cfg.train_domain,), source=cfg.index)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.fold, 0xF17E]))

    def examples(rows: pd.DataFrame, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        avg, keys = subset_averages(rows["stimulus"].to_numpy(), data.betas(rows), n, rng)
        x = pipeline.preprocessor.transform(avg).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(targets.rows(list(keys)))

    train_data = examples(fold.train, cfg.n_averages)
    val_data = examples(fold.val, max(1, cfg.n_averages // 2)) if len(fold.val) else None
    seed_everything(cfg.seed)
    module = pipeline.decoder.trainable_module()
    n_params = int(sum(p.numel() for p in module.parameters()))
    tcfg = cfg.trainer_config(out / "checkpoints" / "trainer",
                              f"fine-tune {meta['model_type']} fold {fold.fold}")
    result, start, keep_start = train_from_start(module, cfg.loss_fn(), train_data, val_data,
                                                 tcfg, extra_meta={"finetune": meta["model_type"]})
    module.cpu().eval()
    tuned = DecoderPipeline(pipeline.preprocessor, pipeline.decoder.with_module(module))
    # the model entries are the tuned decoder's; what it was trained on is kept
    tuned_meta = {k: v for k, v in meta.items() if k not in (
        "kind", "model_type", "input_shape", "n_inputs", "n_features", "n_outputs",
        "model_config", "model_meta", "preprocess")}
    tuned_meta.update({
        "imagery_training": {**fold.describe(data.index_checksum),
                             "domains": [cfg.train_domain], "strategy": "finetune",
                             "target_mean": targets.mean(fold.train["stimulus"].tolist())},
        "finetune": {"from": str(cfg.checkpoint), "train": result.to_meta(),
                     "start_val_loss": start, "kept_start": bool(keep_start),
                     "n_parameters": n_params, "config": cfg.resolved()},
    })
    tuned.save(out / CHECKPOINT, tuned_meta)
    write_text(out / "logs" / "history.csv", pd.DataFrame(result.history).to_csv(index=False))
    if cfg.figures:
        loss_curve(result.history, out / "figures" / "loss_curve",
                   title=f"fine-tuned {meta['model_type']}, {data.subject}, fold {fold.fold}")
    cfg.save(out / "config_resolved.yaml")
    summary = {"checkpoint": str(out / CHECKPOINT), "subject": data.subject,
               "model_type": meta["model_type"], "n_parameters": n_params,
               "protocol": fold.protocol, "fold": fold.fold,
               "train_seconds": round(result.seconds, 3), "epochs_run": result.epochs_run,
               "best_epoch": result.best_epoch,
               "total_seconds": round(time.perf_counter() - t0, 3)}
    write_json(out / "train_summary.json", summary)
    log.info("fine-tuned %s fold %d: %d epochs (best %s) in %.1f s", meta["model_type"],
             fold.fold, result.epochs_run, result.best_epoch, result.seconds)
    return summary
