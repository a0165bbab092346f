from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import SHARED_DATA, needs_shared

from fmri2img.data.cache import BetaCache
from fmri2img.data.matfile import MatIndexConfig, build_mat_index
from fmri2img.errors import DataError

MIYAWAKI = SHARED_DATA / "miyawaki2008"


def _write(path: Path, **over) -> dict:
    rng = np.random.default_rng(0)
    glyph = np.zeros((4, 4))
    glyph[0, :] = 1  # top bar
    glyph[:, 0] = 1  # left stem: an upright, asymmetric 'Γ'
    imgs = [glyph, np.eye(4), glyph[::-1]]
    trn_idx, tst_idx = [0, 1, 2, 0, 1, 2], [0, 2]
    flat = lambda idx: np.stack([imgs[i].reshape(-1, order="F") for i in idx])  # noqa: E731
    d = {"fmriTrn": rng.normal(size=(6, 9)), "fmriTest": rng.normal(size=(2, 9)),
         "stimTrn": flat(trn_idx), "stimTest": flat(tst_idx),
         "labelTrn": np.array([[2], [2], [3], [2], [2], [3]]), "labelTest": np.array([[2], [3]])}
    d.update(over)
    d = {k: v for k, v in d.items() if v is not None}
    scipy.io.savemat(path, d)
    return {"imgs": imgs, "d": d}


def test_synthetic_mat_round_trip(tmp_path: Path) -> None:
    info = _write(tmp_path / "x.mat")
    df, meta = build_mat_index(MatIndexConfig(mat=tmp_path / "x.mat",
                                              output=tmp_path / "o/x.parquet"))
    assert len(df) == 8 and (df.split == "test").sum() == 2
    assert df["stimulus"].nunique() == 3 and df["stimulus"].iloc[0] == "x:" + str(
        df["stimulus_id"].iloc[0])
    stimuli = np.load(Path(meta["cache"]) / "stimuli.npy")
    first = stimuli[int(df["stimulus_id"].iloc[0])]
    np.testing.assert_array_equal(first, info["imgs"][0] * 255)  # upright, not transposed
    cache = BetaCache(meta["cache"])
    np.testing.assert_allclose(cache.rows(range(6)), info["d"]["fmriTrn"], rtol=1e-6)
    assert df["label"].tolist()[:3] == ["2", "2", "3"]


def test_values_0_255_and_train_zscore(tmp_path: Path) -> None:
    info = _write(tmp_path / "x.mat")
    _write(tmp_path / "y.mat", stimTrn=info["d"]["stimTrn"] * 255,
           stimTest=info["d"]["stimTest"] * 255)
    _, mx = build_mat_index(MatIndexConfig(mat=tmp_path / "x.mat", output=tmp_path / "a.parquet"))
    _, my = build_mat_index(MatIndexConfig(mat=tmp_path / "y.mat", output=tmp_path / "b.parquet",
                                           zscore="train"))
    np.testing.assert_array_equal(np.load(Path(mx["cache"]) / "stimuli.npy"),
                                  np.load(Path(my["cache"]) / "stimuli.npy"))
    z = BetaCache(my["cache"]).rows(range(6))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)


@pytest.mark.parametrize("over,match", [
    ({"fmriTest": None}, r"missing variables \['fmriTest'\]"),
    ({"fmriTest": np.zeros((2, 8))}, "fmriTrn has 9 voxels but fmriTest 8"),
    ({"stimTest": np.zeros((2, 15))}, "square image"),
    ({"fmriTrn": np.full((6, 9), np.nan)}, "NaN"),
    ({"labelTest": np.array([[1]])}, "labelTest has 1 entries; expected 2"),
])
def test_bad_mat_files(tmp_path: Path, over: dict, match: str) -> None:
    _write(tmp_path / "bad.mat", **over)
    with pytest.raises(DataError, match=match):
        build_mat_index(MatIndexConfig(mat=tmp_path / "bad.mat", output=tmp_path / "o.parquet"))
    assert not (tmp_path / "o.parquet").exists()


@needs_shared(MIYAWAKI)
def test_real_miyawaki_letters_upright(tmp_path: Path) -> None:
    df, meta = build_mat_index(MatIndexConfig(
        mat=MIYAWAKI / "miyawaki_conditions_2to5_combined_sharp.mat",
        output=tmp_path / "m.parquet", dataset="miyawaki2008"))
    assert len(df) == 119 and (df.split == "test").sum() == 12
    assert BetaCache(meta["cache"]).n_voxels == 967
    stimuli = np.load(Path(meta["cache"]) / "stimuli.npy")
    assert stimuli.shape == (20, 28, 28)
    letters = df[df.label.isin(["3", "4", "5"])]["stimulus_id"].unique()

    def profile(img: np.ndarray) -> tuple[bool, bool]:
        ys, xs = np.nonzero(img)
        box = img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] > 0
        return box[0].all(), box[-1].all()

    shapes = {profile(stimuli[i]) for i in letters}
    # upright 'n' has a full top row and open bottom, upright 'u' the reverse; transposed
    # letters (MATLAB row-major misread) have neither.
    assert (True, False) in shapes and (False, True) in shapes
    # test stimuli repeat training stimuli in this release
    assert set(df[df.split == "test"].stimulus) <= set(df[df.split == "train"].stimulus)
