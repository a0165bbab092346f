from __future__ import annotations

import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from nsd_fixture import N_SHARED, TinyNSD

from fmri2img.data.cache import BetaCache
from fmri2img.data.index import read_index, sidecar
from fmri2img.data.nsd import ExpDesign, NSDIndexConfig, build_nsd_index, trial_table
from fmri2img.data.nsd_layout import NSDPaths
from fmri2img.errors import DataError


def _cfg(tiny: TinyNSD, tmp_path: Path, **kw) -> NSDIndexConfig:
    return NSDIndexConfig(nsd_root=tiny.root, subject="subj01",
                          output=tmp_path / "out" / "subj01.parquet", **kw)


def test_id_conversions_hand_built() -> None:
    """1-based masterordering -> 1-based subjectim -> 0-based 73k id, by hand."""
    mo = np.tile(np.array([2, 1, 3]), 250)  # 750 trials
    subjectim = np.zeros((8, 3), dtype=np.int64)
    subjectim[0] = [11, 21, 31]  # subject 1's 10k list, 1-based 73k ids
    subjectim[1] = [11, 22, 32]
    design = ExpDesign(mo, subjectim, sharedix=np.array([11]))
    t1 = trial_table(design, 1)
    assert t1["stimulus_id"].tolist()[:3] == [20, 10, 30]
    assert t1["shared"].tolist()[:3] == [False, True, False]  # masterordering 1 <= n_shared 1
    t2 = trial_table(design, 2)
    assert t2["stimulus_id"].tolist()[:3] == [21, 10, 31]
    # runs: 63 trials in run 1, 62 in run 2; trial numbers are 1-based within a run
    assert (t1["run"].iloc[62], t1["trial"].iloc[62]) == (1, 63)
    assert (t1["run"].iloc[63], t1["trial"].iloc[63]) == (2, 1)
    assert t1["repetition"].tolist()[:6] == [0, 0, 0, 1, 1, 1]


def test_index_follows_design_and_split_rule(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    df, _meta = build_nsd_index(_cfg(tiny_nsd, tmp_path))
    assert len(df) == 1500
    g = df["global_trial"].to_numpy()
    ten_k = tiny_nsd.masterordering[g]
    expected = tiny_nsd.subjectim[0, ten_k - 1] - 1
    np.testing.assert_array_equal(df["stimulus_id"].to_numpy(dtype=np.int64), expected)
    assert (df["stimulus"] == [f"nsd:{i}" for i in expected]).all()
    # test = shared (masterordering <= n_shared); train and val = the rest, disjoint images
    np.testing.assert_array_equal(df["split"] == "test", ten_k <= N_SHARED)
    train = set(df.loc[df.split == "train", "stimulus_id"])
    val = set(df.loc[df.split == "val", "stimulus_id"])
    test = set(df.loc[df.split == "test", "stimulus_id"])
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(test) == N_SHARED
    n_non_shared = len(train) + len(val)
    assert len(val) == round(0.1 * n_non_shared)
    splits = __import__("json").loads(sidecar(tmp_path / "out/subj01.parquet", "splits.json")
                                      .read_text())
    assert splits["seed"] == 0 and splits["counts"]["test"]["stimuli"] == N_SHARED
    assert sidecar(tmp_path / "out/subj01.parquet", "config.yaml").exists()
    # every image has repetitions 0, 1, 2
    assert sorted(df.groupby("stimulus_id")["repetition"].apply(tuple).map(sorted)
                  .map(tuple).unique()) == [(0, 1, 2)]


def test_zscore_uses_training_trials_of_each_session_only(tiny_nsd: TinyNSD,
                                                          tmp_path: Path) -> None:
    df, meta = build_nsd_index(_cfg(tiny_nsd, tmp_path))
    cache = BetaCache(meta["cache"])
    vox = cache.voxels()[["x", "y", "z"]].to_numpy()
    for session in (1, 2):
        raw = tiny_nsd.betas[session][vox[:, 0], vox[:, 1], vox[:, 2], :].T / 300.0
        rows = df[df.session == session].sort_values("beta_index")
        fit = raw[rows.loc[rows.split == "train", "beta_index"].to_numpy()]
        expected = (raw - fit.mean(0)) / fit.std(0)
        got = cache.rows(rows["cache_row"])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        # the statistics are not those of all trials (test/val would leak otherwise)
        assert not np.allclose(got, (raw - raw.mean(0)) / raw.std(0), atol=1e-4)


def test_test_images_averaged_over_repetitions(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    single, m1 = build_nsd_index(_cfg(tiny_nsd, tmp_path / "a"))
    avg, m2 = build_nsd_index(_cfg(tiny_nsd, tmp_path / "b", average="test"))
    assert (avg.split == "test").sum() == N_SHARED
    assert (avg.loc[avg.split == "test", "n_averaged"] == 3).all()
    assert (avg.loc[avg.split == "test", "repetition"] == -1).all()
    c1, c2 = BetaCache(m1["cache"]), BetaCache(m2["cache"])
    sid = avg.loc[avg.split == "test", "stimulus_id"].iloc[0]
    mean_single = c1.rows(single.loc[single.stimulus_id == sid, "cache_row"]).mean(0)
    np.testing.assert_allclose(c2.rows([avg.loc[avg.stimulus_id == sid, "cache_row"].iloc[0]])[0],
                               mean_single, rtol=1e-5, atol=1e-5)
    assert len(avg[avg.split != "test"]) == len(single[single.split != "test"])


def test_hdf5_and_nifti_sessions_build_identical_caches(tiny_nsd: TinyNSD,
                                                        tmp_path: Path) -> None:
    _, m1 = build_nsd_index(_cfg(tiny_nsd, tmp_path / "h", beta_format="hdf5"))
    _, m2 = build_nsd_index(_cfg(tiny_nsd, tmp_path / "n", beta_format="nifti"))
    np.testing.assert_array_equal(BetaCache(m1["cache"]).betas, BetaCache(m2["cache"]).betas)


def test_roi_selection_by_name(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    _, meta = build_nsd_index(_cfg(tiny_nsd, tmp_path, roi="streams:ventral,lateral"))
    vox = BetaCache(meta["cache"]).voxels()
    assert set(vox["streams"]) == {5, 6}
    assert len(vox) == int(np.isin(tiny_nsd.streams, [5, 6]).sum())
    with pytest.raises(DataError, match="not in atlas 'streams'.*early"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path, roi="streams:nowhere"))


def test_cache_reused_then_rebuilt_when_source_or_option_changes(tiny_nsd: TinyNSD,
                                                                  tmp_path: Path) -> None:
    cfg = _cfg(tiny_nsd, tmp_path)
    _, m1 = build_nsd_index(cfg)
    assert not m1["reused"]
    _, m2 = build_nsd_index(cfg)
    assert m2["reused"] and m2["cache"] == m1["cache"]
    session1 = NSDPaths(tiny_nsd.root).betas_session(1, 1, "hdf5")
    os.utime(session1, ns=(1, 1))  # touched, same content: still reused (re-hashed)
    _, m3 = build_nsd_index(cfg)
    assert m3["reused"]
    with h5py.File(session1, "r+") as f:
        f["betas"][0, 0, 0, 0] = 123  # changed content
    _, m4 = build_nsd_index(cfg)
    assert not m4["reused"]
    _, m5 = build_nsd_index(_cfg(tiny_nsd, tmp_path, cache_dtype="float16"))
    assert not m5["reused"] and m5["cache"] != m1["cache"]
    assert BetaCache(m5["cache"]).betas.dtype == np.float16


def _assert_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not (out / "subj01.parquet").exists()
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == [], leftovers


def test_unknown_subject(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown subject 'subj09'"):
        NSDIndexConfig(nsd_root=tiny_nsd.root, subject="subj09", output=tmp_path / "x.parquet")


def test_missing_expdesign(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    NSDPaths(tiny_nsd.root).expdesign.unlink()
    with pytest.raises(DataError, match="nsd_expdesign.mat.*not found"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path))
    _assert_nothing_written(tmp_path)


def test_mask_and_volume_shapes_differ(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    p = NSDPaths(tiny_nsd.root).roi(1, "nsdgeneral")
    NSDPaths(tiny_nsd.root).roi(1, "streams").unlink()
    nib.save(nib.Nifti1Image(np.ones((6, 7, 6), np.int16), np.eye(4)), p)
    with pytest.raises(DataError, match=r"betas_session01.*grid.*mask is \(6, 7, 6\)"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path))
    _assert_nothing_written(tmp_path)


def test_corrupt_session_leaves_no_partial_output(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    p = NSDPaths(tiny_nsd.root).betas_session(1, 2, "hdf5")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="betas_session02.hdf5"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path, beta_format="hdf5"))
    _assert_nothing_written(tmp_path)


def test_nan_betas(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    p = NSDPaths(tiny_nsd.root).betas_session(1, 1, "hdf5")
    with h5py.File(p, "r") as f:
        data = f["betas"][()].astype(np.float32)
    x, y, z = np.argwhere(tiny_nsd.nsdgeneral == 1)[0]
    data[7, z, y, x] = np.inf
    with h5py.File(p, "w") as f:
        f.create_dataset("betas", data=data)
    with pytest.raises(DataError, match="NaN or infinite"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path, beta_format="hdf5"))
    _assert_nothing_written(tmp_path)


def test_missing_session_file(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="session 3 not found|outside the design"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path, sessions=[1, 3]))


def test_index_round_trip_keeps_schema(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    cfg = _cfg(tiny_nsd, tmp_path)
    build_nsd_index(cfg)
    df, meta = read_index(cfg.output)
    assert str(df["stimulus_id"].dtype) == "Int64"
    assert meta["dataset"] == "nsd" and Path(meta["cache"]).is_dir()
    assert df["cache_row"].is_unique


def test_stim_info_checked_on_sessions_read_only(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    """A partial download records unread sessions' presentations as 0: not an error."""
    import pandas as pd

    paths = NSDPaths(tiny_nsd.root)
    info = pd.read_csv(paths.stim_info, index_col=0)
    for r in range(3):
        col = info[f"subject1_rep{r}"]
        info.loc[col > 750, f"subject1_rep{r}"] = 0  # session 2 not recorded
    info.to_csv(paths.stim_info)
    df, _ = build_nsd_index(_cfg(tiny_nsd, tmp_path, sessions=[1]))
    assert set(df["session"]) == {1}
    with pytest.raises(DataError, match="subject1_rep.*disagrees"):
        build_nsd_index(_cfg(tiny_nsd, tmp_path / "b", sessions=[1, 2]))


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("order", ["identity", "permuted"])
def test_session_block_matches_two_pass_zscore(dtype, order):
    from fmri2img.data.nsd import session_block, zscore_params

    rng = np.random.default_rng(3)
    raw = rng.integers(-32000, 32000, size=(50, 7)).astype(dtype)
    raw[:, 2] = 123  # a constant voxel: centred, left at SD 1
    beta_idx = np.arange(50) if order == "identity" else rng.permutation(50)
    fit = np.sort(rng.choice(50, 30, replace=False))
    got = session_block(raw, beta_idx, fit, 300.0)
    scaled = raw[beta_idx].astype(np.float64) / 300.0
    mean, sd = zscore_params(scaled, fit)
    np.testing.assert_allclose(got, (scaled - mean) / sd, atol=2e-5)
    assert np.all(got[:, 2] == 0)
    np.testing.assert_allclose(session_block(raw, beta_idx, None, 300.0), scaled, rtol=1e-6)
