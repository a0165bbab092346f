"""``fmri2img align-train`` and ``fmri2img align-eval``: the EEG-fMRI alignment model.

``align-train`` builds :class:`~fmri2img.models.alignment.EEGfMRIAligner` (a CBraMod
backbone, pretrained from a local file when given, random otherwise; a pooling head giving
several EEG tokens; fMRI as the attention query over them) for the dataset's shapes and
trains it (:func:`fmri2img.training.align.train_alignment`: resumable, TensorBoard logs).
``align-eval`` scores the best checkpoint on one split, one item per pair (records of a
pair averaged): MSE and cosine of the paired outputs, and retrieval within the split both
ways from the all-pairs scores ``S[i, j] = cos(attend(EEG_i, fMRI_j), fMRI_j)`` (every
candidate is scored with itself as the query, so the query cannot give the answer away),
beside the EEG-only embedding's retrieval (the matched control: what the original's
single-key attention reduced to).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator

from fmri2img.config import StrictModel
from fmri2img.data.align_lmdb import AlignLMDB, iter_records
from fmri2img.devices import resolve_device
from fmri2img.errors import DataError
from fmri2img.eval.alignment import alignment_metrics
from fmri2img.io.atomic import write_json, write_text
from fmri2img.models.alignment import (
    AlignerConfig,
    EEGfMRIAligner,
    build_aligner,
    load_pretrained_backbone,
)
from fmri2img.training.align import AlignTrainConfig, load_weights, read_checkpoint
from fmri2img.training.align import train_alignment as fit_alignment

log = logging.getLogger(__name__)

BEST = "checkpoints/best.safetensors"
LAST = "checkpoints/last.safetensors"


class AlignRunConfig(StrictModel):
    """Options of ``fmri2img align-train``."""

    dataset: Path = Field(description="LMDB folder (build-align-dataset)")
    output_dir: Path
    model: dict[str, Any] = Field(default_factory=dict, description="the aligner's options "
                                  "(backbone: pretrained = a local file; head; attention)")
    train: dict[str, Any] = Field(default_factory=dict, description="training options")
    normalize_fmri: bool = Field(True, description="L2-normalise the fMRI features")

    @model_validator(mode="after")
    def _resolve(self) -> AlignRunConfig:
        # both checked in full before any work, and saved resolved
        try:
            model, train = AlignerConfig(**self.model), AlignTrainConfig(**self.train)
        except ValidationError as exc:
            raise ValueError(f"invalid aligner or training options: {exc}") from exc
        object.__setattr__(self, "model", model.resolved())
        object.__setattr__(self, "train", train.resolved())
        return self

    def aligner(self) -> AlignerConfig:
        return AlignerConfig(**self.model)

    def trainer(self) -> AlignTrainConfig:
        return AlignTrainConfig(**self.train)


def train_aligner(cfg: AlignRunConfig) -> dict[str, Any]:
    """Train (or resume); writes the checkpoints, history and a summary."""
    t0 = time.perf_counter()
    train = AlignLMDB(cfg.dataset, "train", normalize_fmri=cfg.normalize_fmri)
    try:
        val: AlignLMDB | None = AlignLMDB(cfg.dataset, "val", normalize_fmri=cfg.normalize_fmri)
    except DataError:
        val = None
        log.warning("%s has no val split: the best checkpoint follows the training loss",
                    cfg.dataset)
    info = train.meta_info
    n_chans, n_times = (int(s) for s in info["sample_shape"])
    dim = int(info["fmri_features"]["dim"])
    mcfg, tcfg = cfg.aligner(), cfg.trainer()
    torch.manual_seed(tcfg.seed)
    model = EEGfMRIAligner(n_chans, n_times, dim, mcfg)
    init = load_pretrained_backbone(model, mcfg)
    log.info("aligner: %d channels x %d samples -> %d-d, backbone %s, head %s (%d tokens), "
             "%d train / %d val records", n_chans, n_times, dim, init.get("init"),
             mcfg.head.kind, model.head.n_pooled, len(train), len(val or []))
    meta = {"spec": model.spec(), "backbone_init": init, "dataset": str(cfg.dataset.resolve()),
            "dataset_counts": info.get("counts"), "normalize_fmri": cfg.normalize_fmri}
    result = fit_alignment(model, train, val, tcfg, cfg.output_dir, meta=meta)
    cfg.save(cfg.output_dir / "config_resolved.yaml")
    summary = {k: result[k] for k in ("epochs_run", "best_epoch", "best_val_loss", "steps",
                                      "finished", "resumed_from")}
    summary.update(backbone_init=init, seconds=round(time.perf_counter() - t0, 1),
                   checkpoint=str(cfg.output_dir / BEST))
    write_json(cfg.output_dir / "train_summary.json", summary)
    write_json(cfg.output_dir / "history.json", result["history"])
    return summary


class AlignEvalConfig(StrictModel):
    """Options of ``fmri2img align-eval``."""

    run_dir: Path = Field(description="align-train output folder")
    dataset: Path | None = Field(None, description="LMDB folder (default: the one trained on)")
    split: Literal["train", "val", "test"] = "test"
    output_dir: Path | None = Field(None, description="default: RUN_DIR/eval_<split>")
    ks: list[int] = Field(default_factory=lambda: [1, 10])
    n_bootstrap: int = Field(2000, ge=1)
    n_permutations: int = Field(1000, ge=0, description="for the retrieval p-values "
                                "(partners shuffled); 0: none")
    seed: int = 0
    device: str = "cpu"


def _per_pair(ds: AlignLMDB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair ids, EEG means, fMRI means): one item per pair."""
    eeg: dict[int, list[np.ndarray]] = {}
    fmri: dict[int, list[np.ndarray]] = {}
    for arrays, meta in iter_records(ds):
        p = int(meta["pair"])
        eeg.setdefault(p, []).append(arrays["eeg"])
        fmri.setdefault(p, []).append(arrays["fmri"])
    pairs = np.array(sorted(eeg), dtype=np.int64)
    e = np.stack([np.mean(eeg[p], axis=0) for p in pairs]).astype(np.float32)
    f = np.stack([np.mean(fmri[p], axis=0) for p in pairs]).astype(np.float32)
    return pairs, e, f


def evaluate_aligner(cfg: AlignEvalConfig) -> dict[str, Any]:
    best = cfg.run_dir / BEST
    if not best.exists():
        raise DataError("no best checkpoint: run align-train first", best)
    _, info = read_checkpoint(best)
    meta = info.get("meta") or {}
    spec = meta.get("spec")
    if spec is None:
        raise DataError("checkpoint holds no model spec", best)
    dataset = cfg.dataset or Path(meta["dataset"])
    normalize = bool(meta.get("normalize_fmri", True))
    ds = AlignLMDB(dataset, cfg.split, normalize_fmri=normalize)
    model = build_aligner(spec)
    load_weights(model, best)
    model.to(resolve_device(cfg.device)).eval()
    pairs, eeg, fmri = _per_pair(ds)
    if len(pairs) < 2:
        raise DataError(f"{len(pairs)} pairs in split {cfg.split}: retrieval needs 2",
                        dataset)
    if normalize:
        fmri /= np.linalg.norm(fmri, axis=1, keepdims=True) + 1e-12
    device = next(model.parameters()).device
    e_t, f_t = torch.from_numpy(eeg), torch.from_numpy(fmri)
    with torch.inference_mode():
        S = model.pairwise_scores(e_t, f_t).numpy()
        aligned = torch.cat([model(e_t[s:s + 256].to(device), f_t[s:s + 256].to(device)).cpu()
                             for s in range(0, len(e_t), 256)]).numpy()
        emb = torch.cat([model.eeg_embedding(e_t[s:s + 256].to(device)).cpu()
                         for s in range(0, len(e_t), 256)]).numpy()
    ks = [k for k in cfg.ks if k <= len(pairs)] or [1]
    metrics = alignment_metrics(S, aligned, fmri, ks=ks, n_bootstrap=cfg.n_bootstrap,
                                seed=cfg.seed, eeg_emb=emb,
                                n_permutations=cfg.n_permutations)
    out = cfg.output_dir or cfg.run_dir / f"eval_{cfg.split}"
    result = {"split": cfg.split, "n_pairs": len(pairs), "dataset": str(dataset),
              "checkpoint": str(best), "epoch": info.get("epoch"),
              "protocol": "one item per pair (its records averaged); retrieval among the "
                          "split's pairs from S[i, j] = cos(attend(EEG_i, fMRI_j), fMRI_j); "
                          "eeg_only: the EEG-only embedding (control)", **metrics}
    write_json(out / "metrics.json", result)
    write_text(out / "README.md", render(result, ks))
    log.info("alignment %s: %d pairs; EEG->fMRI top-1 %.3f (chance %.3f), fMRI->EEG top-1 "
             "%.3f; EEG-only control top-1 %.3f", cfg.split, len(pairs),
             metrics["eeg_to_fmri"]["top1"], metrics["eeg_to_fmri"]["top1_chance"],
             metrics["fmri_to_eeg"]["top1"], metrics["eeg_only"]["eeg_to_fmri"]["top1"]
             if "eeg_to_fmri" in metrics["eeg_only"] else float("nan"))
    return result


def _fmt(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _p(block: dict[str, Any], k: int) -> str:
    p = block.get(f"top{k}_p")
    return "" if p is None else f"{p:.3g}"


def render(result: dict[str, Any], ks: list[int]) -> str:
    lines = [f"# EEG-fMRI alignment, {result['split']} split ({result['n_pairs']} pairs)", "",
             result["protocol"], "",
             "| measure | aligned | p | EEG-only control | p | chance |",
             "|---|---|---|---|---|---|"]
    lines.append(f"| cosine | {_fmt(result['cosine'], result['cosine_ci'])} | "
                 f"| {_fmt(result['eeg_only']['cosine'], result['eeg_only']['cosine_ci'])} "
                 "| | |")
    lines.append(f"| MSE (2 - 2 cos) | {_fmt(result['mse'], result['mse_ci'])} | | | | |")
    for direction in ("eeg_to_fmri", "fmri_to_eeg"):
        for k in ks:
            a = result[direction]
            c = result["eeg_only"].get(direction, {})
            ctrl = _fmt(c[f"top{k}"], c.get(f"top{k}_ci")) if f"top{k}" in c else ""
            lines.append(f"| {direction.replace('_', ' ')} top-{k} | "
                         f"{_fmt(a[f'top{k}'], a.get(f'top{k}_ci'))} | {_p(a, k)} | {ctrl} | "
                         f"{_p(c, k)} | {a[f'top{k}_chance']:.3f} |")
    return "\n".join(lines) + "\n"
