from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, needs_shared
from nsd_fixture import TinyNSD, write_tiny_imagery_betas

from fmri2img.data.cache import BetaCache
from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.nsd_layout import IMAGERY_BLOCKS
from fmri2img.errors import DataError

META = SHARED_DATA / "nsd_imagery_meta"
EVENTS = META / "derived_event_tables" / "subj01_event_table.csv"
pytestmark = needs_shared(META)


def _build(tiny: TinyNSD, tmp_path: Path, **kw):
    write_tiny_imagery_betas(tiny)
    cfg = ImageryIndexConfig(nsd_root=tiny.root, subject="subj01", meta_dir=META,
                             output=tmp_path / "out" / "subj01_imagery.parquet", **kw)
    return build_imagery_index(cfg)


def test_real_metadata_counts_and_vision_targets(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    df, _meta = _build(tiny_nsd, tmp_path, events=EVENTS)
    counts = df["domain"].value_counts().to_dict()
    assert counts == {"perception": 144, "imagery": 288, "attention": 288}
    assert (df.loc[df.domain == "attention", "split"] == "excluded").all()
    assert (df.loc[df.domain != "attention", "split"] == "test").all()
    ev = pd.read_csv(EVENTS)
    vis = df[df.domain == "perception"].merge(ev[["beta_index", "CONDITION", "CUE"]],
                                             on="beta_index")
    assert len(vis) == 144
    assert (vis["target_code"] == vis["CONDITION"]).all()
    assert (vis["CONDITION"] != vis["CUE"]).sum() == 72  # labelling by cue would be wrong
    img = df[df.domain == "imagery"]
    assert img.groupby("target_code").size().eq(16).all() and img.target_code.nunique() == 18
    assert vis.groupby("target_code").size().eq(8).all()
    assert img.groupby("stimulus_set").size().to_dict() == {
        "simple": 96, "complex": 96, "conceptual": 96}
    # complex targets that are NSD images share the NSD key; the artwork T does not
    w = df[(df.target_code == "W")]["stimulus"].unique().tolist()
    assert w == ["nsd:28751"]
    assert df.loc[df.target_code == "T", "stimulus"].unique().tolist() == ["nsdimagery:T"]
    # vividness: BUTTON 1 -> 1.0, 2 -> 0.0, equal to the behaviour CSV's Value
    value = pd.read_csv(META / "subj01_Imagery_Behavioralresponse.csv")["Value"]
    np.testing.assert_array_equal(img["vividness"].to_numpy(),
                                  value.to_numpy()[img["beta_index"]].astype(np.float32))
    assert img.repetition.max() == 15 and vis.repetition.max() == 7


def test_frame_rule_without_official_files(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    df, meta = _build(tiny_nsd, tmp_path)
    ev = pd.read_csv(EVENTS).set_index("beta_index")
    vis = df[df.domain == "perception"].set_index("beta_index")
    resolved = vis[vis.target_code.notna()]
    # every resolved target is right, independently of CONDITION
    assert (resolved["target_code"] == ev.loc[resolved.index, "CONDITION"]).all()
    ab = vis[vis.stimulus_set != "conceptual"]
    assert ab.target_code.notna().all() and len(ab) == 96
    unresolved = vis[vis.target_code.isna()]
    assert len(unresolved) == 24 and (unresolved.split == "excluded").all()
    assert meta["unresolved_vision_trials"] == 24


def test_session_zscore_is_the_default(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    _df, meta = _build(tiny_nsd, tmp_path)
    betas = np.asarray(BetaCache(meta["cache"]).betas)
    np.testing.assert_allclose(betas.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(betas.std(0), 1, atol=1e-3)
    # the runs keep their own means (per-run z-scoring would remove them)
    run_means = np.stack([betas[b.start:b.stop].mean(0) for b in IMAGERY_BLOCKS])
    assert np.abs(run_means).max() > 0.05


def test_per_run_zscore(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    _df, meta = _build(tiny_nsd, tmp_path, zscore="run")
    betas = np.asarray(BetaCache(meta["cache"]).betas)
    for block in IMAGERY_BLOCKS:
        seg = betas[block.start:block.stop]
        np.testing.assert_allclose(seg.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(seg.std(0), 1, atol=1e-3)


def test_misaligned_event_table_is_refused(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    ev = pd.read_csv(EVENTS)
    ev["beta_index"] = ev["beta_index"].where(ev["beta_index"] >= 200, ev["beta_index"] + 1)
    ev = ev.drop_duplicates("beta_index")
    bad = tmp_path / "shifted_events.csv"
    ev.to_csv(bad, index=False)
    with pytest.raises(DataError, match="not aligned|frame rule"):
        _build(tiny_nsd, tmp_path, events=bad)
    assert not (tmp_path / "out" / "subj01_imagery.parquet").exists()


def test_missing_betas_file(tiny_nsd: TinyNSD, tmp_path: Path) -> None:
    cfg = ImageryIndexConfig(nsd_root=tiny_nsd.root, subject=1, meta_dir=META,
                             output=tmp_path / "o.parquet")
    with pytest.raises(DataError, match="betas_nsdimagery"):
        build_imagery_index(cfg)
