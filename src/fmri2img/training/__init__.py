"""Model-agnostic torch training: the loop (:mod:`.trainer`), its settings (:mod:`.config`),
batches (:mod:`.batches`), resume state (:mod:`.resume`), losses and seeding. Imports no
``models/``: the loop takes any ``nn.Module`` and a loss."""

from fmri2img.training.config import TrainerConfig, TrainResult
from fmri2img.training.losses import get_loss, symmetric_infonce
from fmri2img.training.trainer import evaluate, train, train_from_start

__all__ = [
    "TrainResult",
    "TrainerConfig",
    "evaluate",
    "get_loss",
    "symmetric_infonce",
    "train",
    "train_from_start",
]
