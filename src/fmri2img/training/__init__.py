"""Model-agnostic torch training: losses, the training loop, seeding."""

from fmri2img.training.losses import get_loss, symmetric_infonce
from fmri2img.training.trainer import TrainerConfig, TrainResult, evaluate, grouped_holdout, train

__all__ = [
    "TrainResult",
    "TrainerConfig",
    "evaluate",
    "get_loss",
    "grouped_holdout",
    "symmetric_infonce",
    "train",
]
