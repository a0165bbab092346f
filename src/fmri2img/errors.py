"""Errors meant for people: each names the file and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad or missing input data. The CLI prints the message and exits non-zero."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)
