"""fmri2img: decode brain activity into image and text embedding spaces.

The package's floors, each importing only those below it: ``io/`` (safe writes,
checksums, checkpoints, reuse keys), ``data/`` (readers, index, cache, splits, simulator),
``targets/`` (embeddings), ``training/`` (the torch loop), ``models/`` (decoders, adapters,
the pipeline, diffusion backends), ``eval/`` (metrics and statistics), ``analysis/``
(verdicts), ``report/`` (what renders), ``experiments/`` (the commands' orchestration),
then ``cli`` and ``api``.

The top level is the Python API (:mod:`fmri2img.api`): one function per main step,
returning data frames and result objects, for notebooks.
"""

from fmri2img.api import (
    Ablation,
    Decoder,
    Evaluation,
    Reconstruction,
    ablate,
    align_eval,
    align_train,
    analyze,
    build_align_dataset,
    build_eeg_index,
    build_imagery_index,
    build_index,
    embed,
    evaluate,
    finetune,
    load_targets,
    pair_images,
    reconstruct,
    report,
    simulate,
    train,
    train_adapter,
)
from fmri2img.errors import DataError
from fmri2img.version import __version__

__all__ = ["Ablation", "DataError", "Decoder", "Evaluation", "Reconstruction", "__version__",
           "ablate", "align_eval", "align_train", "analyze", "build_align_dataset",
           "build_eeg_index", "build_imagery_index", "build_index", "embed", "evaluate",
           "finetune", "load_targets", "pair_images", "reconstruct", "report", "simulate",
           "train", "train_adapter"]
