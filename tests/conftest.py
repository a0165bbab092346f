from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from nsd_fixture import TinyNSD, write_tiny_nsd

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture
def tiny_nsd(tmp_path: Path) -> TinyNSD:
    return write_tiny_nsd(tmp_path / "nsd", formats=("hdf5", "nifti"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: its matrices are small, and on a shared 2-core box
    extra threads only add contention (5-20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


@pytest.fixture(scope="session")
def planted_study(tmp_path_factory: pytest.TempPathFactory):
    """The ``small`` simulation with its planted imagery effects, four subjects indexed,
    ridge and mlp perception decoders (analysis_fixture.Study)."""
    from analysis_fixture import build_study
    return build_study(tmp_path_factory.mktemp("planted"), models=("ridge", "mlp"))


@pytest.fixture(scope="session")
def null_study(tmp_path_factory: pytest.TempPathFactory):
    """The same under ``--null``: imagery statistically identical to perception."""
    from analysis_fixture import build_study
    return build_study(tmp_path_factory.mktemp("null"), null=True, models=("ridge", "mlp"))
