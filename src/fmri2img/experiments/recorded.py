"""The embedding table a decoder was trained on, found from its checkpoint.

Every decoder checkpoint records the table it learned from (resolved path and content
checksum), so the commands that start from a trained decoder (``eval``, ``train-adapter``,
``finetune``, ``ablate``) need no ``--targets``: the recorded table is used after its
checksum is checked, and a table that moved or changed stops the command with a message
saying which and what to pass instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmri2img.data.trials import Targets
from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _record(checkpoint: Path) -> dict[str, Any]:
    _, meta = load_checkpoint(checkpoint)
    record = meta.get("targets") or {}
    if not record.get("path"):
        raise DataError("this checkpoint does not record the embedding table it was trained "
                        "on (written by an older fmri2img?); give --targets PATH", checkpoint)
    return record


def recorded_targets(checkpoints: Sequence[Path]) -> Path:
    """The table recorded in ``checkpoints`` (all must name the same one), checked against
    its recorded checksum."""
    records = [(Path(c), _record(Path(c))) for c in checkpoints]
    first, record = records[0]
    for other, rec in records[1:]:
        if rec.get("checksum") != record.get("checksum"):
            raise DataError(f"these decoders were trained on different embedding tables "
                            f"({record['path']} and {rec['path']}); give --targets PATH",
                            other)
    path = Path(record["path"])
    if not path.exists():
        raise DataError(f"the embedding table this decoder was trained on, {path}, is not "
                        "there any more (moved or deleted); give --targets PATH with that "
                        "table", first)
    want = record.get("checksum")
    if want:
        have = Targets.open(path).provenance()["checksum"]
        if have != want:
            raise DataError(f"the embedding table {path} changed since this decoder was "
                            f"trained on it (checksum {have[:12]}, recorded {want[:12]}); "
                            "give --targets PATH with the table it was trained on", first)
    log.info("targets: %s (recorded in %s)", path, first)
    return path


def targets_for(given: Path | None, checkpoints: Sequence[Path] | Path) -> Path:
    """``given``, or the table the decoder checkpoint(s) record."""
    if given is not None:
        return given
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [Path(checkpoints)]
    return recorded_targets(list(checkpoints))
