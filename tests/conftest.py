from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from nsd_fixture import TinyNSD, write_tiny_nsd

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture
def tiny_nsd(tmp_path: Path) -> TinyNSD:
    return write_tiny_nsd(tmp_path / "nsd", formats=("hdf5", "nifti"))


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")
