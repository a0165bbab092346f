"""Settings and result of the training loop (:func:`fmri2img.training.trainer.train`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fmri2img.config import StrictModel
from fmri2img.devices import check_device_name


class TrainerConfig(StrictModel):
    """Options of :func:`train`."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1, description="rows per step when given tensors")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0, description="AdamW decay, matrices only")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor, as a share of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; None: off")
    early_stop_patience: int | None = Field(
        10, ge=1, description="epochs without val improvement before stopping; None: off")
    min_delta: float = Field(0.0, ge=0, description="val loss drop that counts as improvement")
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = True
    checkpoint_dir: Path | None = None
    save_every: int = Field(1, ge=1, description="write `last` every this many epochs")
    resume: bool = Field(True, description="continue from checkpoint_dir/last.pt if present")
    description: str = "training"

    _device = field_validator("device")(classmethod(lambda cls, v: check_device_name(v)))


@dataclass
class TrainResult:
    """What :func:`train` returns. Epoch numbers are 1-based, as in the history."""

    history: list[dict[str, Any]]
    best_epoch: int | None  # epoch whose weights the model holds now
    best_val_loss: float | None  # None without validation data
    stopped_early: bool
    resumed_from: int  # epochs finished before this call (0: fresh run)
    seconds: float  # training time over all calls, resumed parts included
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def to_meta(self) -> dict[str, Any]:
        """JSON-able summary for checkpoints and reports."""
        out = asdict(self)
        out["epochs_run"] = self.epochs_run
        return out
