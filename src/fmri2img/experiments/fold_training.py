"""Options shared by everything trained by gradient on one imagery protocol fold (adapters,
fine-tuning), and the trainer settings and loss they imply."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fmri2img.config import StrictModel
from fmri2img.data.splits import Protocol
from fmri2img.devices import check_device_name
from fmri2img.training.losses import LossFn, get_loss
from fmri2img.training.trainer import TrainerConfig


class FoldTrainingOptions(StrictModel):
    """Options shared by everything trained by gradient on one protocol fold."""

    epochs: int = Field(100, ge=1, description="maximum epochs")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay (matrices only)")
    batch_size: int = Field(32, ge=1)
    loss: Literal["cosine", "mse", "hybrid", "infonce"] = Field(
        "cosine", description="infonce: symmetric contrastive loss over the batch, rows of "
                              "one target not each other's negatives (learns identification; "
                              "cosine rewards any pull toward the mean target)")
    temperature: float = Field(0.07, gt=0, description="infonce temperature")
    train_domain: Literal["imagery", "perception"] = Field(
        "imagery", description="perception: train on the session's vision trials of the "
                               "fold's targets instead (the method's control)")
    early_stop_patience: int | None = Field(
        10, ge=1, description="epochs without validation improvement before stopping")
    protocol: Protocol = Field("leave-targets-out", description="imagery protocol of the folds")
    n_folds: int = Field(6, ge=2, description="folds of the protocol")
    fold: int = Field(0, ge=0, description="the fold to train (0-based)")
    data_fraction: float = Field(1.0, gt=0, le=1,
                                 description="share of the fold's imagery training trials")
    n_averages: int = Field(32, ge=1, description="repetition averages per target")
    seed: int = 0
    device: str = Field("cpu", description="cpu, cuda, cuda:N or mps")
    figures: bool = Field(True, description="the loss-curve figure (PNG + PDF)")
    save_every: int = Field(10, ge=1, description="write the resume state every this many "
                                                  "epochs (a fold trains in seconds; a "
                                                  "state per epoch would double that)")

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))

    @model_validator(mode="after")
    def _fold_exists(self) -> FoldTrainingOptions:
        if self.fold is not None and self.fold >= self.n_folds:
            raise ValueError(f"--fold {self.fold} does not exist with --n-folds "
                             f"{self.n_folds} (folds are 0..{self.n_folds - 1})")
        return self

    def trainer_config(self, checkpoint_dir: Path, description: str) -> TrainerConfig:
        """The training loop's settings; its resume state lives in ``checkpoint_dir``."""
        return TrainerConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, save_every=self.save_every,
                             early_stop_patience=self.early_stop_patience, seed=self.seed,
                             device=self.device, checkpoint_dir=checkpoint_dir,
                             description=description)

    def loss_fn(self) -> LossFn:
        if self.loss == "infonce":
            return get_loss("infonce", temperature=self.temperature)
        return get_loss(self.loss)
