"""The transfer methods of ``fmri2img ablate``: the table :data:`METHODS` says, for each,
which strategy learns (nothing, an adapter, fine-tuning, retraining the decoder), from
which trials, with which loss, and which method is its matched control.

A strategy knows the config of the command that trains one protocol fold, that command's
runner and CLI name, and what its summary hands to evaluation (:class:`Learned`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.experiments.adapter_train import AdapterTrainConfig, train_adapter
from fmri2img.experiments.finetune import FinetuneConfig, finetune_decoder
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder
from fmri2img.io.checkpoint import load_checkpoint


class CellOptions(Protocol):
    """What a fold's training reads from the ablation's config."""

    output_dir: Path
    targets: Path
    model_type: str | None
    epochs: int
    protocol: str
    seed: int
    eval_figures: bool


@dataclass(frozen=True)
class FoldPlan:
    """Where one fold of one cell reads and writes."""

    cfg: CellOptions
    subject: str
    name: str  # the cell's name (method, fraction)
    index: Path  # NSD-Imagery index
    checkpoint: Path  # the perception decoder
    perception_index: Path | None
    fold: int
    n_folds: int
    fraction: float

    def folder(self, kind: str) -> Path:
        return self.cfg.output_dir / kind / self.name / self.subject / f"fold{self.fold}"


@dataclass(frozen=True)
class Learned:
    """What one fold's training hands to evaluation."""

    decoder: Path | None = None  # replaces the perception decoder for this fold
    adapter: Path | None = None  # applied on top of it
    seconds: float = 0.0
    n_params: int | None = None


@dataclass(frozen=True)
class Strategy:
    """How one kind of method learns from a fold: the config of the command that trains
    it, that command's runner and CLI name, and what its summary hands to evaluation."""

    name: str
    command: str | None = None  # None: nothing is trained (the decoder is used as it is)
    config: Callable[[FoldPlan, dict[str, Any]], StrictModel] | None = None
    run: Callable[[Any], dict[str, Any]] | None = None
    learned: Callable[[Any, dict[str, Any]], Learned] | None = None


def _adapter_config(f: FoldPlan, options: dict[str, Any]) -> AdapterTrainConfig:
    return AdapterTrainConfig(
        index=f.index, checkpoint=f.checkpoint, targets=f.cfg.targets,
        output_dir=f.folder("adapters"), model_type=f.cfg.model_type, epochs=f.cfg.epochs,
        protocol=f.cfg.protocol, n_folds=f.n_folds, fold=f.fold, data_fraction=f.fraction,
        seed=f.cfg.seed, figures=f.cfg.eval_figures, **options)


def _finetune_config(f: FoldPlan, options: dict[str, Any]) -> FinetuneConfig:
    return FinetuneConfig(
        index=f.index, checkpoint=f.checkpoint, targets=f.cfg.targets,
        output_dir=f.folder("finetuned"), epochs=f.cfg.epochs, protocol=f.cfg.protocol,
        n_folds=f.n_folds, fold=f.fold, data_fraction=f.fraction, seed=f.cfg.seed,
        figures=f.cfg.eval_figures, **options)


def _retrain_config(f: FoldPlan, options: dict[str, Any]) -> TrainConfig:
    """The perception decoder's own training, on perception and/or imagery trials."""
    if f.perception_index is None:
        raise DataError(f"{f.name} needs the perception index (--perception-index)", f.index)
    _, base = load_checkpoint(f.checkpoint)
    trained = base.get("config", {})
    return TrainConfig(
        index=f.perception_index, targets=f.cfg.targets, model_type=base["model_type"],
        output_dir=f.folder("decoders"), model=trained.get("model", {}),
        zscore=trained.get("zscore", True), pca=trained.get("pca"), seed=f.cfg.seed,
        imagery_index=f.index, protocol=f.cfg.protocol, n_folds=f.n_folds, fold=f.fold,
        data_fraction=f.fraction, **options)


DIRECT = Strategy("direct")
ADAPTER = Strategy(
    "adapter", "fmri2img train-adapter", _adapter_config, train_adapter,
    lambda c, s: Learned(adapter=Path(s["adapter_best"]), seconds=s["train_seconds"],
                         n_params=s["n_parameters"]))
FINETUNE = Strategy(
    "finetune", "fmri2img finetune", _finetune_config, finetune_decoder,
    lambda c, s: Learned(decoder=Path(s["checkpoint"]), seconds=s["train_seconds"],
                         n_params=s["n_parameters"]))
RETRAIN = Strategy(
    "retrain", "fmri2img train", _retrain_config, train_decoder,
    lambda c, s: Learned(decoder=checkpoint_path(c.output_dir), seconds=s["fit_seconds"]))


@dataclass(frozen=True)
class Method:
    strategy: Strategy
    options: dict[str, Any] = field(default_factory=dict)  # fields of the strategy's config
    label: str | None = None  # the strategy column of the tables (default: the strategy's)
    # the same training without what could make a gain imagery-specific: vision trials of
    # the same targets instead of imagery ones (or, for the conditioned adapter, the same
    # examples with the domain labels permuted); run with the method by default
    control: str | None = None

    @property
    def kind(self) -> str:
        return self.label or self.strategy.name

    @property
    def loss(self) -> str:
        return str(self.options.get("loss", "cosine" if self.strategy in (ADAPTER, FINETUNE)
                                    else "the decoder's"))


_VISION = {"train_domain": "perception"}
_INFONCE = {"loss": "infonce"}
METHODS: dict[str, Method] = {
    "direct": Method(DIRECT),
    "adapter_linear": Method(ADAPTER, {"adapter": "linear"}, control="adapter_mlp_vision"),
    "adapter_mlp": Method(ADAPTER, {"adapter": "mlp"}, control="adapter_mlp_vision"),
    "adapter_mlp_vision": Method(ADAPTER, {"adapter": "mlp", **_VISION}),
    "adapter_mlp_cond": Method(ADAPTER, {"adapter": "mlp", "condition_token": True},
                               control="adapter_mlp_cond_shuffled"),
    "adapter_mlp_cond_shuffled": Method(ADAPTER, {"adapter": "mlp", "condition_token": True,
                                                  "shuffle_domains": True}),
    "adapter_linear_infonce": Method(ADAPTER, {"adapter": "linear", **_INFONCE},
                                     control="adapter_mlp_vision_infonce"),
    "adapter_mlp_infonce": Method(ADAPTER, {"adapter": "mlp", **_INFONCE},
                                  control="adapter_mlp_vision_infonce"),
    "adapter_mlp_vision_infonce": Method(ADAPTER, {"adapter": "mlp", **_VISION, **_INFONCE}),
    "mixed": Method(RETRAIN, {"perception": True}, label="mixed", control="mixed_vision"),
    "mixed_vision": Method(RETRAIN, {"perception": True, "imagery_domain": "perception"},
                           label="mixed"),
    # a contrastive loss needs a gradient-trained decoder (not ridge)
    "mixed_infonce": Method(RETRAIN, {"perception": True, **_INFONCE}, label="mixed",
                            control="mixed_vision_infonce"),
    "mixed_vision_infonce": Method(RETRAIN, {"perception": True, "imagery_domain": "perception",
                                             **_INFONCE}, label="mixed"),
    "finetune": Method(FINETUNE, control="finetune_vision"),
    "finetune_vision": Method(FINETUNE, dict(_VISION)),
    "finetune_infonce": Method(FINETUNE, dict(_INFONCE), control="finetune_vision_infonce"),
    "finetune_vision_infonce": Method(FINETUNE, {**_VISION, **_INFONCE}),
    "imagery_only": Method(RETRAIN, {"perception": False}, label="imagery_only",
                           control="imagery_only_vision"),
    "imagery_only_vision": Method(RETRAIN, {"perception": False,
                                            "imagery_domain": "perception"},
                                  label="imagery_only"),
}
CONTROL_OF = {m.control: name for name, m in METHODS.items() if m.control}


def needs_gradient_decoder(method: str) -> bool:
    """The method retrains the decoder with a loss of its own (ridge has none)."""
    m = METHODS[method]
    return m.strategy is RETRAIN and "loss" in m.options


def needs_perception_index(method: str) -> bool:
    """The method retrains the decoder, which needs the perception trials."""
    return METHODS[method].strategy is RETRAIN


def check_methods(names: list[str]) -> list[str]:
    """``names`` if every one is in :data:`METHODS`; a ValueError naming the others."""
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; available: {list(METHODS)}")
    return names
