"""Stimulus keys: the one spelling shared by trial indexes, embedding tables and ground truth.

NSD images are keyed by their 0-based 73k id (``nsd:28751``); NSD-Imagery targets that are
not NSD images, and the conceptual targets (whose embedding is that of their word), are
keyed by their one-letter code (``nsdimagery:H``). Complex targets that are NSD images
(W K B C D) use their NSD key, so perception and imagery of the same picture share a row.
THINGS images (THINGS-EEG2) are keyed by their file name without extension
(``things:aardvark_01b``), unique over the image set.
"""

from __future__ import annotations

NSD_PREFIX = "nsd"
IMAGERY_PREFIX = "nsdimagery"
THINGS_PREFIX = "things"


def nsd_key(id0: int) -> str:
    """Key of an NSD image from its 0-based 73k id."""
    value = int(id0)
    if value < 0:
        raise ValueError(f"73k ids are 0-based and non-negative, got {id0}")
    return f"{NSD_PREFIX}:{value}"


def imagery_key(code: str) -> str:
    """Key of an NSD-Imagery target (or conceptual word) from its one-letter code."""
    if len(code) != 1 or not code.isalpha() or not code.isupper():
        raise ValueError(f"imagery target codes are single capital letters, got {code!r}")
    return f"{IMAGERY_PREFIX}:{code}"


def things_key(image_file: str) -> str:
    """Key of a THINGS image from its file name or relative path
    (``training_images/00001_aardvark/aardvark_01b.jpg`` -> ``things:aardvark_01b``)."""
    stem = str(image_file).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if not stem:
        raise ValueError(f"not a THINGS image file: {image_file!r}")
    return f"{THINGS_PREFIX}:{stem}"


def target_key(code: str, nsd_id: int | None) -> str:
    """Key of an imagery target: its NSD key where it is an NSD image, else its code key."""
    return nsd_key(nsd_id) if nsd_id is not None else imagery_key(code)


def parse_key(key: str) -> tuple[str, int | str]:
    """``'nsd:12'`` -> ``('nsd', 12)``; ``'nsdimagery:H'`` -> ``('nsdimagery', 'H')``."""
    prefix, sep, rest = key.partition(":")
    if not sep or not rest:
        raise ValueError(f"not a stimulus key: {key!r}")
    if prefix == NSD_PREFIX:
        if not rest.isdigit():
            raise ValueError(f"not an NSD key: {key!r}")
        return prefix, int(rest)
    if prefix in (IMAGERY_PREFIX, THINGS_PREFIX):
        return prefix, rest
    raise ValueError(f"unknown stimulus key prefix in {key!r}")
