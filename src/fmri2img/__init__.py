"""fmri2img: decode brain activity into image and text embedding spaces.

The package's floors, each importing only those below it: ``io/`` (safe writes,
checksums, checkpoints, reuse keys), ``data/`` (readers, index, cache, splits, simulator),
``targets/`` (embeddings), ``training/`` (the torch loop), ``models/`` (decoders, adapters,
the pipeline), ``eval/`` (metrics and statistics), ``analysis/`` (verdicts), ``report/``
(what renders), ``experiments/`` (the commands' orchestration) and ``cli``.
"""

from fmri2img.errors import DataError

__all__ = ["DataError", "__version__"]
__version__ = "0.1.0"
