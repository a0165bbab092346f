"""Seeds and determinism switches for torch training.

Training draws randomness from three places: weight initialisation and dropout (torch's
global generator), batch order (a dedicated generator keyed by seed and epoch, see the
trainer) and anything a caller does with ``random`` / ``numpy``. All of them are fixed
here so that one seed gives one result.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's legacy global generator and torch (CPU and CUDA)."""
    seed = int(seed)
    random.seed(seed)
    # numpy's legacy global state only takes 32-bit seeds
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may still draw from it
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch's shuffle.

    Keyed by (seed, epoch) rather than drawn from a running stream so that a run resumed at
    epoch k sees exactly the batch order an uninterrupted run would have seen.
    """
    gen = torch.Generator(device="cpu")
    ss = np.random.SeedSequence([int(seed), int(epoch), 0x5EED])
    gen.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))
    return gen


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Prefer deterministic kernels inside the block and restore the caller's settings after.

    On CPU the decoders' ops are deterministic already; this matters on CUDA (cuDNN autotune
    and atomics-based reductions). ``warn_only`` keeps an op without a deterministic kernel
    usable instead of raising, since bitwise-reproducible GPU runs are a nicety, not a
    correctness requirement. Settings are global in torch, hence the restore.
    """
    if not enabled:
        yield
        return
    # cuBLAS needs a fixed workspace for deterministic matmuls; it reads this variable when
    # its handle is created, so set it (if the user has not) before the first CUDA matmul.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev_alg = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_det = torch.backends.cudnn.deterministic
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_det
