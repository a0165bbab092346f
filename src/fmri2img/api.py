"""The Python face of fmri2img, for notebooks: each main step as one function.

Every function takes the options of the command of the same name as keyword arguments
(validated by the same config model, so a wrong name or value fails before any work),
writes the same outputs, and returns what a notebook works with: trial indices and
tables as data frames, trained models and evaluations as result objects::

    import fmri2img as f2i
    trials = f2i.build_index("runs/miy/miy.parquet", mat="miyawaki.mat")
    targets = f2i.embed("runs/miy/miy.parquet", "runs/miy/effnet.parquet",
                        embedder="effnet-lite0")
    dec = f2i.train("runs/miy/miy.parquet", "runs/miy/cmlp", model_type="contrastive_mlp",
                    targets="runs/miy/effnet.parquet", epochs=100)
    ev = f2i.evaluate("runs/miy/miy.parquet", dec.checkpoint, "runs/miy/cmlp/eval")
    ev.table()                 # metric, value, 95% CI, chance, p
    ev.similarity()            # predictions x targets cosine matrix

The commands (``fmri2img ...``) and these functions share one implementation; see the
README's *Python API* section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri2img.data.imagery import ImageryIndexConfig
from fmri2img.data.imagery import build_imagery_index as _imagery_index
from fmri2img.data.index import read_index
from fmri2img.data.matfile import MatIndexConfig, build_mat_index
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
from fmri2img.data.simulate import SimulateOptions
from fmri2img.data.simulate import simulate as _simulate
from fmri2img.data.things_index import EEGIndexConfig
from fmri2img.data.things_index import build_eeg_index as _eeg_index
from fmri2img.data.trials import Targets
from fmri2img.errors import DataError
from fmri2img.eval.metrics import cosine_matrix
from fmri2img.experiments.ablation import AblationConfig, run_ablation
from fmri2img.experiments.adapter_train import AdapterTrainConfig
from fmri2img.experiments.adapter_train import train_adapter as _adapter
from fmri2img.experiments.align_data import PAIRS, AlignDataConfig, PairConfig
from fmri2img.experiments.align_data import build_align_dataset as _align_dataset
from fmri2img.experiments.align_data import pair_images as _pair_images
from fmri2img.experiments.align_run import (
    AlignEvalConfig,
    AlignRunConfig,
    evaluate_aligner,
    train_aligner,
)
from fmri2img.experiments.analyses.runner import AnalyzeConfig, run_analyze
from fmri2img.experiments.eval_outputs import PREDICTIONS
from fmri2img.experiments.evaluate import EvalConfig
from fmri2img.experiments.evaluate import evaluate as _evaluate
from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder
from fmri2img.experiments.reconstruct import METRICS, ReconstructConfig
from fmri2img.experiments.reconstruct import reconstruct as _reconstruct
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.models.pipeline import DecoderPipeline
from fmri2img.report.study_page import ReportConfig, run_report
from fmri2img.targets.embed import EmbedConfig, embed_captions, embed_index

__all__ = ["Ablation", "Decoder", "Evaluation", "ablate", "align_eval", "align_train",
           "analyze", "build_align_dataset", "build_eeg_index", "build_imagery_index",
           "build_index", "embed", "evaluate", "finetune", "load_targets", "pair_images",
           "simulate", "train", "train_adapter"]


# ----------------------------------------------------------------------------- results
@dataclass
class Decoder:
    """A trained decoder: its checkpoint, training summary and per-epoch history (empty
    for closed-form decoders)."""

    checkpoint: Path
    summary: dict[str, Any] = field(default_factory=dict)
    _pipeline: DecoderPipeline | None = field(default=None, repr=False)

    @classmethod
    def load(cls, checkpoint: str | Path) -> Decoder:
        return cls(Path(checkpoint))

    @property
    def folder(self) -> Path:
        return self.checkpoint.parents[1]

    @property
    def history(self) -> pd.DataFrame:
        path = self.folder / "logs" / "history.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    @property
    def meta(self) -> dict[str, Any]:
        """What the checkpoint records: model, data, targets, training."""
        return load_checkpoint(self.checkpoint)[1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Embeddings (n, dim) predicted from betas (n, voxels)."""
        if self._pipeline is None:
            self._pipeline = DecoderPipeline.load(self.checkpoint)[0]
        return self._pipeline.predict(X)


@dataclass
class Evaluation:
    """One ``eval``: ``metrics`` (metrics.json), one row per trial, and the folder."""

    output_dir: Path
    metrics: dict[str, Any]
    per_trial: pd.DataFrame

    @classmethod
    def load(cls, output_dir: str | Path) -> Evaluation:
        out = Path(output_dir)
        return cls(out, json.loads((out / "metrics.json").read_text()),
                   pd.read_csv(out / "per_trial.csv"))

    @property
    def warning(self) -> str | None:
        """Set when too few items or too small a pool make the figures unreadable."""
        return self.metrics.get("warning")

    def table(self) -> pd.DataFrame:
        """One row per metric: value, 95% CI, chance level and p against chance."""
        m = self.metrics
        rows = [{"metric": k, "value": v, "ci_low": m["ci"][k][0], "ci_high": m["ci"][k][1],
                 "chance": m.get("chance", {}).get(k), "p": m.get("p_vs_chance", {}).get(k)}
                for k, v in m["overall"].items()]
        return pd.DataFrame(rows).set_index("metric")

    def retrieval(self, ks: tuple[int, ...] = (1, 5, 10)) -> pd.DataFrame:
        """Top-k retrieval (image from brain) with CIs, for the ``ks`` that were scored."""
        table = self.table()
        wanted = [f"retrieval_top{k}" for k in ks if f"retrieval_top{k}" in table.index]
        return table.loc[wanted]

    def predictions(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(item keys, predicted embeddings, target embeddings) of the scored items."""
        with np.load(self.output_dir / PREDICTIONS) as z:
            return [str(k) for k in z["keys"]], z["predictions"], z["targets"]

    def similarity(self) -> pd.DataFrame:
        """Cosine of every item's prediction (rows) with every item's target (columns)."""
        keys, pred, targets = self.predictions()
        return pd.DataFrame(cosine_matrix(pred, targets), index=keys, columns=keys)


@dataclass
class Ablation:
    """One ``ablate``: a row per (subject, method, fraction) and the H1-H3 verdicts."""

    output_dir: Path
    rows: list[dict[str, Any]]
    hypotheses: dict[str, Any]

    def table(self, metric: str = "two_way") -> pd.DataFrame:
        """Per row: subject, method, fraction, imagery ``metric`` with its CI, perception."""
        out = []
        for r in self.rows:
            img = (r.get("imagery") or {}).get(metric) or {}
            perc = (r.get("perception") or {}).get(metric) or {}
            out.append({"subject": r["subject"], "method": r["method"],
                        "strategy": r["strategy"], "fraction": r["fraction"],
                        f"imagery_{metric}": img.get("value"),
                        "ci_low": (img.get("ci") or [None, None])[0],
                        "ci_high": (img.get("ci") or [None, None])[1],
                        f"perception_{metric}": perc.get("value")})
        return pd.DataFrame(out)


# ----------------------------------------------------------------------------- steps
@dataclass
class Reconstruction:
    """One ``reconstruct``: images per domain, their metrics, what made them."""

    output_dir: Path
    result: dict[str, Any]

    @property
    def untrained_test_pipeline(self) -> bool:
        return bool(self.result.get("untrained_test_pipeline"))

    def images(self, domain: str = "imagery") -> tuple[list[str], np.ndarray]:
        """(item keys, uint8 images (n, H, W, 3)) of one domain."""
        with np.load(self.output_dir / "reconstructions.npz") as z:
            if f"{domain}_keys" not in z.files:
                raise KeyError(f"no {domain} reconstructions; have "
                               f"{sorted(k[:-5] for k in z.files if k.endswith('_keys'))}")
            return [str(k) for k in z[f"{domain}_keys"]], z[f"{domain}_images"]

    def table(self) -> pd.DataFrame:
        """One row per (domain, metric): mean, 95% CI (empty when not scored)."""
        path = self.output_dir / METRICS
        if not path.exists():
            return pd.DataFrame(columns=["domain", "metric", "mean", "ci_low", "ci_high"])
        rows = []
        for domain, scores in json.loads(path.read_text())["domains"].items():
            for metric, entry in scores.items():
                if isinstance(entry, dict) and "mean" in entry:
                    ci = entry.get("ci") or [None, None]
                    rows.append({"domain": domain, "metric": metric, "mean": entry["mean"],
                                 "ci_low": ci[0], "ci_high": ci[1]})
        return pd.DataFrame(rows)


def simulate(out: str | Path, **options: Any) -> Path:
    """A simulated NSD + NSD-Imagery root (``fmri2img simulate``); returns the root."""
    opts = SimulateOptions(out=Path(out), **options)
    return _simulate(opts.out, opts.simulation())


def build_index(output: str | Path, *, nsd_root: str | Path | None = None,
                mat: str | Path | None = None, **options: Any) -> pd.DataFrame:
    """The trial index of NSD perception (``nsd_root`` + ``subject``) or of a ``.mat``
    dataset (``fmri2img build-index``), as a data frame (one row per trial)."""
    if (nsd_root is None) == (mat is None):
        raise DataError("give exactly one of nsd_root (with subject) or mat")
    if mat is not None:
        build_mat_index(MatIndexConfig(mat=Path(mat), output=Path(output), **options))
    else:
        build_nsd_index(NSDIndexConfig(nsd_root=Path(nsd_root or ""), output=Path(output),
                                       **options))
    return read_index(output)[0]


def build_imagery_index(output: str | Path, *, nsd_root: str | Path, subject: str,
                        **options: Any) -> pd.DataFrame:
    """The NSD-Imagery trial index (``fmri2img build-imagery-index``) as a data frame."""
    _imagery_index(ImageryIndexConfig(nsd_root=Path(nsd_root), subject=subject,
                                      output=Path(output), **options))
    return read_index(output)[0]


def embed(index: str | Path, output: str | Path, *, embedder: str, captions: bool = False,
          **options: Any) -> Targets:
    """Embed the index's stimulus images (or, ``captions=True``, their captions) into an
    embedding table (``fmri2img embed-images`` / ``embed-captions``)."""
    cfg = EmbedConfig(index=Path(index), output=Path(output), embedder=embedder,
                      kind="text" if captions else "image", **options)
    return Targets.open(embed_captions(cfg) if captions else embed_index(cfg))


def load_targets(path: str | Path) -> Targets:
    """An embedding table: ``keys``, ``embeddings`` (n, dim) and its metadata."""
    return Targets.open(path)


def train(index: str | Path, output_dir: str | Path, *, model_type: str,
          targets: str | Path, **options: Any) -> Decoder:
    """Fit a decoder (``fmri2img train``); decoder options go in ``model={...}``."""
    cfg = TrainConfig(index=Path(index), output_dir=Path(output_dir), model_type=model_type,
                      targets=Path(targets), **options)
    summary = train_decoder(cfg)
    return Decoder(checkpoint_path(cfg.output_dir), summary)


def evaluate(index: str | Path, checkpoint: str | Path | list[str | Path],
             output_dir: str | Path, **options: Any) -> Evaluation:
    """Score a decoder (``fmri2img eval``); ``targets`` defaults to the table recorded in
    the checkpoint, ``mode`` to perception."""
    cfg = EvalConfig(index=Path(index), checkpoint=checkpoint, output_dir=Path(output_dir),
                     **options)
    _evaluate(cfg)
    return Evaluation.load(cfg.output_dir)


def train_adapter(index: str | Path, checkpoint: str | Path, output_dir: str | Path,
                  **options: Any) -> dict[str, Any]:
    """An adapter on a frozen decoder (``fmri2img train-adapter``; every fold unless
    ``fold`` is given); returns the training summary."""
    return _adapter(AdapterTrainConfig(index=Path(index), checkpoint=Path(checkpoint),
                                       output_dir=Path(output_dir), **options))


def finetune(index: str | Path, checkpoint: str | Path, output_dir: str | Path,
             **options: Any) -> Decoder:
    """Tune every weight of a torch decoder on one imagery fold (``fmri2img finetune``)."""
    summary = finetune_decoder(FinetuneConfig(index=Path(index), checkpoint=Path(checkpoint),
                                              output_dir=Path(output_dir), **options))
    return Decoder(Path(summary["checkpoint"]), summary)


def ablate(index: str, checkpoint: str, output_dir: str | Path, **options: Any) -> Ablation:
    """Every transfer method x subject (``fmri2img ablate``); paths may hold
    ``{subject}`` (then give ``subjects``)."""
    cfg = AblationConfig(index=str(index), checkpoint=str(checkpoint),
                         output_dir=Path(output_dir), **options)
    out = run_ablation(cfg)
    return Ablation(cfg.output_dir, out["rows"], out["hypotheses"])


def analyze(config: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """The perception-vs-imagery analyses (``fmri2img analyze``), from a YAML config
    and/or options; returns ``{analysis: group result}``."""
    cfg = (AnalyzeConfig.from_yaml(config, **options) if config is not None
           else AnalyzeConfig(**options))
    return run_analyze(cfg)


# ----------------------------------------------------------------------------- EEG
def build_eeg_index(output: str | Path, *, eeg_root: str | Path, subject: str | int,
                    **options: Any) -> pd.DataFrame:
    """THINGS-EEG2 -> trial index + cache (``fmri2img build-eeg-index``); returns the
    index (samples are channels x times, resampled to ``sfreq``, default 200 Hz)."""
    df, _ = _eeg_index(EEGIndexConfig(output=Path(output), eeg_root=Path(eeg_root),
                                      subject=str(subject), **options))
    return df


def pair_images(eeg_index: str | Path, fmri_index: str | Path, targets: str | Path,
                output_dir: str | Path, **options: Any) -> pd.DataFrame:
    """THINGS-NSD image pairs by embedding cosine, with cluster labels
    (``fmri2img pair-images``); returns the pairs table."""
    cfg = PairConfig(eeg_index=Path(eeg_index), fmri_index=Path(fmri_index),
                     targets=Path(targets), output_dir=Path(output_dir), **options)
    _pair_images(cfg)
    return pd.read_parquet(cfg.output_dir / PAIRS)


def build_align_dataset(pairs: str | Path, eeg_index: str | Path, fmri_index: str | Path,
                        output: str | Path, **options: Any) -> dict[str, Any]:
    """The alignment LMDB (``fmri2img build-align-dataset``); give ``fmri_checkpoint`` or
    ``fmri_projection``. Returns its ``meta_info``."""
    return _align_dataset(AlignDataConfig(pairs=Path(pairs), eeg_index=Path(eeg_index),
                                          fmri_index=Path(fmri_index), output=Path(output),
                                          **options))


def align_train(dataset: str | Path, output_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train the EEG-fMRI aligner (``fmri2img align-train``; ``model={...}``,
    ``train={...}``); returns the training summary."""
    return train_aligner(AlignRunConfig(dataset=Path(dataset), output_dir=Path(output_dir),
                                        **options))


def align_eval(run_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Score an aligner (``fmri2img align-eval``); returns metrics.json's contents."""
    return evaluate_aligner(AlignEvalConfig(run_dir=Path(run_dir), **options))


def reconstruct(predictions: str | Path, pipeline: str | Path, output_dir: str | Path,
                **options: Any) -> Reconstruction:
    """Images from an eval's predictions through a diffusion pipeline (``fmri2img
    reconstruct``), scored against the stimuli."""
    cfg = ReconstructConfig(predictions=Path(predictions), pipeline=str(pipeline),
                            output_dir=Path(output_dir), **options)
    return Reconstruction(cfg.output_dir, _reconstruct(cfg))


def report(study_dir: str | Path, output: str | Path | None = None) -> Path:
    """The study's self-contained HTML page (``fmri2img report``); returns its path."""
    return run_report(ReportConfig(study_dir=Path(study_dir),
                                   output=None if output is None else Path(output)))
