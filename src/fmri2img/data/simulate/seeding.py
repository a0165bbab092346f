"""Named, independent random streams derived from one seed.

Each part of the model draws from its own stream, keyed by names and numbers, so that
adding a subject or writing fewer sessions never changes what another part draws
(session 1 of subject 1 is the same whether 1 or 40 sessions are written).
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, *tags: str | int) -> np.random.Generator:
    """Generator for ``(seed, *tags)``; strings are hashed with CRC32 (stable across runs)."""
    words = [int(seed)]
    for tag in tags:
        words.append(zlib.crc32(tag.encode()) if isinstance(tag, str) else int(tag))
    return np.random.default_rng(np.random.SeedSequence(words))
