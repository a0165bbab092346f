"""Tests of the NSD / NSD-Imagery simulator: file layout and the generative model's facts."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml
from pydantic import ValidationError

from fmri2img.data.keys import imagery_key, nsd_key, parse_key, target_key
from fmri2img.data.nsd_layout import (
    IMAGERY_BLOCKS,
    IMAGERY_TARGETS,
    ROI_LABELS,
    SUBJECTS,
    NSDPaths,
    run_lengths,
)
from fmri2img.data.simulate import SimulationConfig, load_ground_truth, simulate
from fmri2img.data.simulate.anatomy import make_anatomy
from fmri2img.data.simulate.config import PRESETS
from fmri2img.data.simulate.design import RESPONSE_COLUMNS
from fmri2img.data.simulate.imagery_design import (
    BEHAVIOUR_COLUMNS,
    STIMINFO_COLUMNS,
    TSV_COLUMNS,
)
from fmri2img.errors import DataError
from fmri2img.io.embedding_table import read_embedding_table

SUBJ = (1, 2)
STREAMS = {name: k for k, name in ROI_LABELS["streams"].items()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationConfig]:
    cfg = SimulationConfig.from_scale("small", seed=3, subjects=SUBJ, formats=("hdf5", "nifti"))
    root = simulate(tmp_path_factory.mktemp("small") / "nsd", cfg)
    return root, cfg


@pytest.fixture(scope="module")
def null_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationConfig]:
    cfg = SimulationConfig.from_scale("small", seed=3, null=True, subjects=SUBJ,
                                      write_images=False)
    return simulate(tmp_path_factory.mktemp("null") / "nsd", cfg), cfg


def _mat(root: Path) -> dict:
    return scipy.io.loadmat(NSDPaths(root).expdesign)


def _masked(path: Path, mask: np.ndarray) -> np.ndarray:
    """Betas of nsdgeneral voxels, (T, V) in PSC, read from the HDF5 file (T,Z,Y,X)."""
    with h5py.File(path) as f:
        data = f["betas"][:]
    return data.transpose(3, 2, 1, 0)[mask].T / 300.0


def _mask(root: Path, subject: int) -> np.ndarray:
    return np.asarray(nib.load(NSDPaths(root).roi(subject, "nsdgeneral")).dataobj) == 1


# ---------------------------------------------------------------------- config and keys
def test_presets_and_validation() -> None:
    small = SimulationConfig.from_scale("small")
    default = SimulationConfig.from_scale("default")
    nsd = SimulationConfig.from_scale("nsd")
    assert small.n_images_per_subject == 500 and default.n_images_per_subject == 1000
    assert nsd.n_images_per_subject == 10000 and nsd.n_shared == 1000
    assert nsd.universe_size == 73000 and nsd.image_size == 425
    assert nsd.volume_shape_for(1) == SUBJECTS[1].shape_1pt8mm
    assert nsd.nsdgeneral_voxels_for(7) == SUBJECTS[7].nsdgeneral_voxels
    assert nsd.sessions_for(3) == 32 and nsd.sessions_for(1) == 40
    assert SimulationConfig.from_scale("nsd", n_sessions=1).sessions_for(3) == 1
    grown = SimulationConfig.from_scale("small", n_sessions=5)
    assert grown.n_design_sessions == 5 and grown.sessions_for(1) == 5
    assert small.volume_shape_for(7) != small.volume_shape_for(1)
    with pytest.raises(ValidationError):
        SimulationConfig.from_scale("small", not_a_field=1)
    with pytest.raises(ValidationError):
        SimulationConfig.from_scale("small", subjects=(9,))
    with pytest.raises(ValidationError):
        SimulationConfig.from_scale("small", formats=("tiff",))
    with pytest.raises(ValueError):
        SimulationConfig.from_scale("huge")  # type: ignore[arg-type]
    # The null model changes what is used, not what is configured.
    null = SimulationConfig.from_scale("small", null=True)
    assert null.imagery_low_gain == small.imagery_low_gain
    assert null.imagery_params().low_gain == 1.0 and null.imagery_params().sem_rank is None


def test_keys() -> None:
    assert nsd_key(28751) == "nsd:28751" and imagery_key("T") == "nsdimagery:T"
    assert target_key("W", 5) == "nsd:5" and target_key("H", None) == "nsdimagery:H"
    assert parse_key("nsd:12") == ("nsd", 12) and parse_key("nsdimagery:Z") == ("nsdimagery", "Z")
    with pytest.raises(ValueError):
        nsd_key(-1)
    with pytest.raises(ValueError):
        imagery_key("zebra")


def test_refuses_foreign_nonempty_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DataError):
        simulate(tmp_path, SimulationConfig.from_scale("small", subjects=(1,)))
    assert (tmp_path / "precious.txt").exists()


# ---------------------------------------------------------------------- NSD design
def test_expdesign(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    mat = _mat(root)
    order, subjectim, sharedix = mat["masterordering"], mat["subjectim"], mat["sharedix"]
    n_img, n_sh = cfg.n_images_per_subject, cfg.n_shared
    assert order.shape == (1, cfg.n_design_trials)
    assert subjectim.shape == (8, n_img) and sharedix.shape == (1, n_sh)
    assert mat["basiccnt"].shape == (3, cfg.n_design_sessions)
    assert mat["stimpattern"].shape == (cfg.n_design_sessions, 12, 75)
    assert (mat["stimpattern"].sum(axis=2) == np.array(run_lengths())).all()
    assert (mat["basiccnt"].sum(axis=0) == 750).all()
    order = order[0].astype(int)
    assert order.min() == 1 and order.max() == n_img
    assert (np.bincount(order, minlength=n_img + 1)[1:] == 3).all()  # each image 3 times
    # Shared columns identical in all rows; the other columns distinct valid ids.
    assert (subjectim[:, :n_sh] == sharedix).all()
    rest = subjectim[:, n_sh:].ravel()
    assert np.unique(rest).size == rest.size
    assert not np.isin(rest, sharedix).any()
    assert subjectim.min() >= 1 and subjectim.max() <= cfg.universe_size
    for s in range(cfg.n_design_sessions):
        session = order[s * 750 : (s + 1) * 750]
        assert (session <= n_sh).any() and (session > n_sh).any()


def test_stim_info(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    info = pd.read_csv(NSDPaths(root).stim_info, index_col=0)
    expected = ["cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000",
                "shared1000", *[f"subject{k}" for k in range(1, 9)],
                *[f"subject{k}_rep{r}" for k in range(1, 9) for r in range(3)]]
    assert list(info.columns) == expected
    assert len(info) == cfg.universe_size and (info.nsdId == info.index).all()
    mat = _mat(root)
    assert set(np.flatnonzero(info.shared1000)) == set(mat["sharedix"][0] - 1)
    order = mat["masterordering"][0].astype(int) - 1
    for s in SUBJ:
        ids = mat["subjectim"][s - 1, order].astype(int) - 1  # 0-based id per design trial
        reps = info[[f"subject{s}_rep{r}" for r in range(3)]].to_numpy()
        seen = np.unique(ids)
        assert (info[f"subject{s}"].to_numpy()[seen] == 1).all()
        assert info[f"subject{s}"].sum() == seen.size
        # 1-based trial numbers, ascending, and the trials do show that image.
        r = reps[seen]
        assert (np.diff(r, axis=1) > 0).all()
        assert (ids[r - 1] == seen[:, None]).all()
    assert (info["subject3"] == 0).all() and (info["subject3_rep0"] == 0).all()


def test_responses(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    mat = _mat(root)
    for s in SUBJ:
        resp = pd.read_csv(NSDPaths(root).responses_tsv(s), sep="\t")
        assert list(resp.columns) == list(RESPONSE_COLUMNS)
        n = cfg.sessions_for(s) * 750
        assert len(resp) == n and (resp.SUBJECT == s).all()
        assert (resp.groupby("SESSION").size() == 750).all()
        per_run = resp[resp.SESSION == 1].groupby("RUN").TRIAL.max().to_numpy()
        assert (per_run == np.array(run_lengths())).all()
        order = mat["masterordering"][0, :n].astype(int)
        assert (resp["10KID"].to_numpy() == order).all()
        assert (resp["73KID"].to_numpy() == mat["subjectim"][s - 1, order - 1]).all()
        assert (np.diff(resp.TIME.to_numpy()) > 0).all()
        assert resp.ISOLD.iloc[0] == 0 and resp.ISOLD.mean() > 0.5


def test_partial_sessions(tmp_path: Path) -> None:
    cfg = SimulationConfig.from_scale("small", subjects=(1,), n_sessions=1, write_images=False)
    root = simulate(tmp_path / "nsd", cfg)
    paths = NSDPaths(root)
    assert paths.betas_session(1, 1, "hdf5").exists()
    assert not paths.betas_session(1, 2, "hdf5").exists()
    assert len(pd.read_csv(paths.responses_tsv(1), sep="\t")) == 750
    assert _mat(root)["masterordering"].shape == (1, 1500)  # the design stays complete
    info = pd.read_csv(paths.stim_info, index_col=0)
    assert info[["subject1_rep0", "subject1_rep1", "subject1_rep2"]].to_numpy().max() <= 750
    assert not paths.stimuli_hdf5.exists()


# ---------------------------------------------------------------------- volumes
def test_betas_layout_and_scaling(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    paths = NSDPaths(root)
    gt = load_ground_truth(root)
    for s in SUBJ:
        shape = cfg.volume_shape_for(s)
        mask = _mask(root, s)
        assert mask.sum() == cfg.nsdgeneral_voxels_for(s)
        brain = np.asarray(nib.load(paths.brainmask(s)).dataobj) == 1
        for session in range(1, cfg.sessions_for(s) + 1):
            with h5py.File(paths.betas_session(s, session, "hdf5")) as f:
                dset = f["betas"]
                assert dset.shape == (750, shape[2], shape[1], shape[0])
                assert dset.dtype == np.int16 and dset.chunks == (750, 1, 1, 1)
                h5 = dset[:]
            img = nib.load(paths.betas_session(s, session, "nifti"))
            assert img.shape == (*shape, 750) and img.get_data_dtype() == np.int16
            assert np.isnan(img.header["scl_slope"]) or img.header["scl_slope"] in (0, 1)
            nii = np.asarray(img.dataobj)
            assert np.array_equal(nii, h5.transpose(3, 2, 1, 0))  # (T,Z,Y,X) vs (X,Y,Z,T)
            assert (nii[~brain] == 0).all() and (nii[brain] != 0).mean() > 0.95
            assert np.allclose(img.affine[:3, :3], np.diag([1.8] * 3))
        # Stored = PSC x 300: visual cortex responds ~evoked_mean PSC on average.
        psc = _masked(paths.betas_session(s, 1, "hdf5"), mask)
        assert abs(psc.mean() - cfg.evoked_mean) < 0.5
        # Total PSC spread = the model's independent variance terms added (voxel spreads
        # of signal and noise SDs push it up a little); scaling errors (x300, /300) do not.
        expected_sd = np.sqrt(cfg.signal_sd**2 + cfg.noise_sd**2 + cfg.evoked_sd**2
                              + cfg.global_noise_sd**2 + cfg.session_offset_sd**2)
        assert abs(psc.std() / expected_sd - 1) < 0.2
        # Betas follow the ground-truth noise-free signal of the trials' images.
        model = gt.voxel_model(s)
        ids = pd.read_csv(paths.responses_tsv(s), sep="\t")["73KID"].to_numpy()[:750] - 1
        clean = model.perception_signal(*gt.latents([nsd_key(i) for i in ids]))
        r = [np.corrcoef(psc[:, v], clean[:, v])[0, 1] for v in range(mask.sum())]
        assert np.mean(r) > 0.2
        # The voxel order of the ground truth is the readers' order, vol[mask].
        assert np.array_equal(model.xyz, np.argwhere(mask))
    with h5py.File(paths.imagery_betas(1, "hdf5")) as f:
        assert f["betas"].shape[0] == 720 and f["betas"].dtype == np.int16
        h5 = f["betas"][:]
    nii = np.asarray(nib.load(paths.imagery_betas(1, "nifti")).dataobj)
    assert nii.shape[3] == 720 and np.array_equal(nii, h5.transpose(3, 2, 1, 0))


def test_rois(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    paths = NSDPaths(root)
    for s in SUBJ:
        vols = {a: np.asarray(nib.load(paths.roi(s, a)).dataobj)
                for a in ("nsdgeneral", "prf-visualrois", "streams")}
        general, prf, streams = vols["nsdgeneral"], vols["prf-visualrois"], vols["streams"]
        brain = np.asarray(nib.load(paths.brainmask(s)).dataobj) == 1
        assert set(np.unique(general)) == {-1, 0, 1}
        assert set(np.unique(streams)) == set(range(-1, 8))
        assert set(np.unique(prf)) == set(range(-1, 8))
        for vol in vols.values():
            assert ((vol >= 0) == brain).all()
        assert ((streams > 0) == (general == 1)).all()  # streams cover nsdgeneral
        assert ((prf >= 1) & (prf <= 6) <= (streams == STREAMS["early"])).all()
        assert ((prf == 7) <= (streams == STREAMS["midventral"])).all()
        xyz = {k: np.argwhere(streams == k).mean(axis=0) for k in range(1, 8)}
        assert xyz[STREAMS["early"]][1] < xyz[STREAMS["ventral"]][1]  # early is posterior
        assert xyz[STREAMS["ventral"]][2] < xyz[STREAMS["parietal"]][2]  # ventral inferior
        v1 = np.argwhere((prf == 1) | (prf == 2))[:, 1].mean()
        v3 = np.argwhere((prf == 5) | (prf == 6))[:, 1].mean()
        assert v1 < v3
        for atlas in ROI_LABELS:
            lines = paths.roi_ctab(s, atlas).read_text().splitlines()
            table = {int(f[0]): f[1] for f in (line.split() for line in lines)}
            assert all(len(line.split()) == 6 for line in lines)
            assert {k: v for k, v in table.items() if k > 0} == ROI_LABELS[atlas]


def test_nsd_scale_anatomy() -> None:
    cfg = SimulationConfig.from_scale("nsd")
    for s in (1, 5):
        anat = make_anatomy(cfg, s)
        assert anat.shape == SUBJECTS[s].shape_1pt8mm
        assert int(anat.visual.sum()) == SUBJECTS[s].nsdgeneral_voxels
        counts = anat.roi_counts()["streams"]
        assert min(counts.values()) > 300


# ---------------------------------------------------------------------- stimuli, targets
def test_stimulus_images(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    info = pd.read_csv(NSDPaths(root).stim_info, index_col=0)
    seen = np.flatnonzero(info[[f"subject{s}" for s in SUBJ]].to_numpy().any(axis=1))
    unseen = np.setdiff1d(np.arange(cfg.universe_size), seen)
    with h5py.File(NSDPaths(root).stimuli_hdf5) as f:
        brick = f["imgBrick"]
        size = cfg.image_size
        assert brick.shape == (cfg.universe_size, size, size, 3) and brick.dtype == np.uint8
        assert brick.chunks == (1, size, size, 3) and brick.compression == "gzip"
        shown = brick[seen[:20].tolist()]
        assert (shown.reshape(20, -1).std(axis=1) > 5).all()
        assert not np.array_equal(shown[0], shown[1])
        assert (brick[int(unseen[0])] == 0).all()


def test_embedding_table(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    keys, emb, meta, captions = read_embedding_table(root / "targets/clip_like.parquet")
    gt = load_ground_truth(root)
    assert emb.shape == (len(keys), 512) and meta["dim"] == 512
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    index = {k: i for i, k in enumerate(keys)}
    for s in SUBJ:
        ids = pd.read_csv(NSDPaths(root).responses_tsv(s), sep="\t")["73KID"].unique() - 1
        assert all(nsd_key(i) in index for i in ids)
    for t in gt.info["imagery_targets"]:
        assert t["key"] in index
        if t["set"] == "B" and t["code"] != "T":
            assert t["key"] == nsd_key(t["nsd_id"])
        else:
            assert t["key"] == imagery_key(t["code"])
    assert all(isinstance(c, str) and c for c in captions)
    # Words embed in the images' space: each concept is nearest its own exemplars.
    pools = gt.info["concept_exemplars"]
    for word, own, other in (("Z", "Z", "N"), ("N", "N", "Z"), ("Y", "Y", "S"),
                             ("S", "S", "Y")):
        w = emb[index[imagery_key(word)]]
        near = np.mean([emb[index[nsd_key(i)]] @ w for i in pools[own]])
        far = np.mean([emb[index[nsd_key(i)]] @ w for i in pools[other]])
        assert near > far


# ---------------------------------------------------------------------- NSD-Imagery files
def test_imagery_tables(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    paths = NSDPaths(root)
    info = pd.read_csv(paths.imagery_stiminfo)
    assert list(info.columns) == list(STIMINFO_COLUMNS) and len(info) == 720
    assert (info.betas == np.arange(720)).all()
    assert info.TaskType.value_counts().to_dict() == {1.0: 288, 0.0: 144, 2.0: 144, 3.0: 144}
    assert (info.StimType.value_counts() == 240).all()
    cond = info["StimCond(0/1)"]
    assert (cond == 1).sum() == 216 and (cond == 0).sum() == 216
    assert cond[info.TaskType >= 2].isna().all()
    att = info[info.TaskType == 1]
    assert (att.iloc[0::2].drop(columns="betas").to_numpy()
            == att.iloc[1::2].drop(columns="betas").to_numpy()).all()
    assert all(len(ast.literal_eval(x)) == 24 for x in att["Image(s) seen/imagined"])
    imag_c = info[(info.TaskType >= 2) & (info.StimType == 2)]
    words = {t.code: t.name for t in IMAGERY_TARGETS if t.stim_set == "C"}
    assert all(ast.literal_eval(x) == [words[c]]
               for x, c in zip(imag_c["Image(s) seen/imagined"], imag_c.Cue, strict=True))

    for s in SUBJ:
        behaviour = pd.read_csv(paths.imagery_behaviour_csv(s))
        assert list(behaviour.columns) == list(BEHAVIOUR_COLUMNS) and len(behaviour) == 720
        assert behaviour.TargetTime[info.TaskType != 1].isna().all()
        tables = []
        for block in IMAGERY_BLOCKS:
            tsv = pd.read_csv(paths.imagery_run_tsv(s, block.name), sep="\t")
            assert list(tsv.columns) == list(TSV_COLUMNS) and len(tsv) == 48
            assert (tsv.TRIAL == np.arange(1, 49)).all()
            rows = block.start + (tsv.TRIAL.to_numpy() - 1) * block.betas_per_trial
            assert (info.Cue.to_numpy()[rows] == tsv.CUE.to_numpy()).all()
            assert np.allclose(behaviour.stimStart.to_numpy()[rows], tsv.TRIALONSET)
            value = behaviour.Value.to_numpy()[rows]
            expect = np.where(tsv.BUTTON == 1, 1.0, np.where(tsv.BUTTON == 2, 0.0, np.nan))
            assert np.array_equal(value, expect, equal_nan=True)
            tables.append(tsv.assign(task=block.task))
        allt = pd.concat(tables)
        vis, img = allt[allt.task == "vision"], allt[allt.task == "imagery"]
        assert (vis.CONDITION != vis.CUE).sum() == 72
        assert (vis.GROUNDTRUTH == (vis.CONDITION == vis.CUE)).all()
        assert (img.CONDITION == img.CUE).all()
        assert (img.CONDITION.value_counts() == 16).all() and len(img) == 288
        assert (vis.CONDITION.value_counts() == 8).all()
        assert set(img.BUTTON.dropna()) <= {1.0, 2.0}


def test_frames_and_canonical_rule(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    paths = NSDPaths(root)
    frames = sorted(os.listdir(paths.imagery_frames_dir))
    info = pd.read_csv(paths.imagery_stiminfo)
    gt = load_ground_truth(root)
    # Canonical frame index per target, learned from the imagery rows of sets A and B.
    canon: dict[int, str] = {}
    imag = info[(info.TaskType >= 2) & (info.StimType < 2)]
    for cue, images in zip(imag.Cue, imag["Image(s) seen/imagined"], strict=True):
        canon[ast.literal_eval(images)[0]] = cue
    assert len(canon) == 12 and len(set(canon.values())) == 12
    for t in gt.info["imagery_targets"]:
        if t["canonical_frame"]:
            index = next(k for k, c in canon.items() if c == t["code"])
            assert frames[index] == t["canonical_frame"]
    starts = sorted(canon)
    for block in IMAGERY_BLOCKS:
        if block.task != "vision":
            continue
        tsv = pd.read_csv(paths.imagery_run_tsv(1, block.name), sep="\t")
        idx = [ast.literal_eval(x)[0] for x in info["Image(s) seen/imagined"][
            block.start : block.stop]]
        assert [frames[i] for i in idx] == tsv.FRAMEFILE.tolist()
        if block.stim_set == "C":
            assert tsv.FRAMEFILE.str.match(r"shared\d{4}_nsd\d{5}_cue[A-Z]\.png").all()
            continue
        shown = [canon[min(k for k in starts if k >= i)] for i in idx]
        assert shown == tsv.CONDITION.tolist()
    for t in IMAGERY_TARGETS:
        if t.stim_set == "A":
            assert (paths.imagery_experiments_dir / f"rawtargetimages/setA/{t.name}").exists()
    set_b = sorted(p.name for p in (paths.imagery_experiments_dir / "rawtargetimages/setB")
                   .iterdir())
    assert "shared0000_nsd00000.png" in set_b and len(set_b) == 6
    pairs = scipy.io.loadmat(paths.imagery_experiments_dir / "C_pair_list.mat")["pair_list"]
    assert pairs.shape == (6, 3)


# ---------------------------------------------------------------------- generative model
def _r2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    x1 = np.c_[x, np.ones(len(x))]
    beta, *_ = np.linalg.lstsq(x1, y, rcond=None)
    return 1 - (y - x1 @ beta).var(axis=0) / y.var(axis=0)


def test_tuning_low_level_early_semantic_ventral(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    gt = load_ground_truth(root)
    rows = np.random.default_rng(0).choice(gt.n_universe, 1500, replace=False)
    z_low, z_sem = gt.stimuli["z_low"][rows], gt.stimuli["z_sem"][rows]
    layout = gt.stimuli["layout"][rows]
    # Low-level content: the global features and the contrast map's leading components.
    centred = layout - layout.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    low = np.c_[z_low, centred @ vt[:20].T]
    for s in SUBJ:
        m = gt.voxel_model(s)
        clean = m.perception_signal(z_low, z_sem, layout)
        r_low, r_sem = _r2(clean, low), _r2(clean, z_sem)
        early, ventral = m.stream == STREAMS["early"], m.stream == STREAMS["ventral"]
        assert r_low[early].mean() > r_sem[early].mean() + 0.3
        assert r_sem[ventral].mean() > r_low[ventral].mean() + 0.3


def _snr_ratio(gt, s: int, sets: str = "AB") -> dict[str, float]:
    """Imagery / perception SNR of the scored targets of ``sets``, noise-free signal, per
    stream."""
    keys = [t["key"] for t in gt.info["imagery_targets"] if t["set"] in sets]
    latents = gt.latents(keys)
    m = gt.voxel_model(s)
    perc = m.perception_signal(*latents).var(axis=0) / m.noise_sd**2
    imag = m.imagery_signal(*latents, gt.simple(keys)).var(axis=0) / (
        m.noise_sd * m.imagery_noise_factor) ** 2
    return {n: imag[m.stream == k].mean() / perc[m.stream == k].mean()
            for n, k in STREAMS.items()}


def test_imagery_keeps_structure_of_simple_shapes_only(small: tuple[Path, SimulationConfig]
                                                      ) -> None:
    """Reads imagery_simple_gain > imagery_coarse_gain: imagined bars and crosses keep their
    low-level structure in early cortex; imagined natural images keep semantics best."""
    root, cfg = small
    assert cfg.imagery_simple_gain > cfg.imagery_coarse_gain
    gt = load_ground_truth(root)
    assert gt.info["null"] is False
    for s in SUBJ:
        ratio = _snr_ratio(gt, s)
        assert all(r < 0.5 for r in ratio.values())
        natural, simple = _snr_ratio(gt, s, "B"), _snr_ratio(gt, s, "A")
        assert natural["early"] < natural["ventral"] and natural["early"] < natural["lateral"]
        assert simple["early"] > natural["early"]
    gains = [gt.info["subjects"][f"subj{s:02d}"]["imagery_gains"]["sem"] for s in SUBJ]
    assert gains[0] != gains[1]  # a per-subject fingerprint


def test_null_imagery_equals_perception(null_small: tuple[Path, SimulationConfig]) -> None:
    root, _ = null_small
    gt = load_ground_truth(root)
    assert gt.info["null"] is True
    assert gt.info["derived"]["imagery_effective"]["low_gain"] == 1.0
    keys = [t["key"] for t in gt.info["imagery_targets"]]
    latents = gt.latents(keys)
    for s in SUBJ:
        m = gt.voxel_model(s)
        assert np.allclose(m.imagery_signal(*latents, gt.simple(keys)),
                           m.perception_signal(*latents))
        assert all(abs(r - 1.0) < 1e-9 for r in _snr_ratio(gt, s).values())
        assert np.allclose(gt.imagery_trials(s)["vividness_gain"], 1.0)


def _target_variance(root: Path, task: str, sets: str = "AB") -> dict[str, float]:
    """Between-target signal variance of the scored targets of ``sets``, from the betas
    (noise variance of the means removed), averaged over voxels of each stream and
    subject."""
    gt = load_ground_truth(root)
    d = gt.imagery_design()
    codes = [t["code"] for t in gt.info["imagery_targets"] if t["set"] in sets]
    sel = ((d.task == task) & d.stim_set.isin(list(sets))).to_numpy()
    out: dict[str, list[float]] = {"early": [], "high": [], "all": []}
    for s in SUBJ:
        mask = _mask(root, s)
        x = _masked(NSDPaths(root).imagery_betas(s, "hdf5"), mask)[sel]
        labels = d.condition.to_numpy()[sel]
        means = np.array([x[labels == c].mean(axis=0) for c in codes])
        within = np.mean([x[labels == c].var(axis=0, ddof=1) for c in codes], axis=0)
        var = means.var(axis=0, ddof=1) - within / (labels == codes[0]).sum()
        stream = np.asarray(nib.load(NSDPaths(root).roi(s, "streams")).dataobj)[mask]
        out["early"] += var[stream == STREAMS["early"]].tolist()
        out["high"] += var[np.isin(stream, [STREAMS["ventral"], STREAMS["lateral"]])].tolist()
        out["all"] += var.tolist()
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_imagery_weaker_in_data(small: tuple[Path, SimulationConfig],
                                null_small: tuple[Path, SimulationConfig]) -> None:
    vision, imagery = _target_variance(small[0], "vision"), _target_variance(small[0], "imagery")
    assert imagery["all"] < 0.5 * vision["all"]
    # Natural images lose most in early cortex (simple shapes keep their structure there).
    vision, imagery = (_target_variance(small[0], "vision", "B"),
                       _target_variance(small[0], "imagery", "B"))
    assert imagery["early"] / vision["early"] < imagery["high"] / vision["high"]
    vision, imagery = (_target_variance(null_small[0], "vision"),
                       _target_variance(null_small[0], "imagery"))
    assert 0.6 < imagery["all"] / vision["all"] < 1.6


def test_vividness_reports_track_latent_vividness(small: tuple[Path, SimulationConfig]) -> None:
    root, _ = small
    gt = load_ground_truth(root)
    trials = gt.imagery_trials(1)
    behaviour = pd.read_csv(NSDPaths(root).imagery_behaviour_csv(1))
    imag = np.isfinite(trials["vividness"]) & behaviour.Value.notna().to_numpy()
    r = np.corrcoef(trials["vividness"][imag], behaviour.Value.to_numpy()[imag])[0, 1]
    assert r > 0.4
    assert np.corrcoef(trials["vividness"][imag], trials["vividness_gain"][imag])[0, 1] > 0.99


def test_ground_truth_files(small: tuple[Path, SimulationConfig]) -> None:
    root, cfg = small
    info = json.loads((root / "ground_truth.json").read_text())
    assert info["config"]["seed"] == cfg.seed and info["derived"]["n_shared"] == cfg.n_shared
    assert {c["name"] for c in info["derived"]["categories"]} >= {"zebra", "banana"}
    assert len(info["imagery_targets"]) == 18
    for name in ("imagery_simple_gain", "imagery_coarse_gain", "imagery_layout_blur",
                 "layout_share", "prf_size_factor", "embed_private_sd"):
        assert name in info["config"]
    effective = info["derived"]["imagery_effective"]
    assert effective["simple_gain"] == cfg.imagery_simple_gain
    with np.load(root / info["arrays"]["stimuli"]) as stimuli:
        grid = cfg.layout_grid
        assert stimuli["layout"].shape == (stimuli["z_sem"].shape[0], grid * grid)
        assert stimuli["simple"].sum() >= 6  # the six set-A targets at least
    for s in SUBJ:
        sub = info["subjects"][f"subj{s:02d}"]
        assert sub["nsdgeneral_voxels"] == cfg.nsdgeneral_voxels_for(s)
        assert sum(sub["roi_counts"]["streams"].values()) == sub["nsdgeneral_voxels"]
        assert (root / sub["files"]["voxels"]).exists()
    saved = yaml.safe_load((root / "simulation_config.yaml").read_text())
    assert SimulationConfig.model_validate(saved) == cfg


# ---------------------------------------------------------------------- determinism
def test_deterministic(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> Path:
        cfg = SimulationConfig.from_scale("small", seed=seed, subjects=(2,), write_images=False)
        return simulate(tmp_path / name, cfg)

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    pa, pb, pc = NSDPaths(a), NSDPaths(b), NSDPaths(c)
    for getter in (lambda p: p.betas_session(2, 2, "hdf5"), lambda p: p.imagery_betas(2, "hdf5")):
        with h5py.File(getter(pa)) as fa, h5py.File(getter(pb)) as fb, h5py.File(getter(pc)) as fc:
            assert np.array_equal(fa["betas"][:], fb["betas"][:])
            assert not np.array_equal(fa["betas"][:], fc["betas"][:])
    for getter in (lambda p: p.stim_info, lambda p: p.responses_tsv(2),
                   lambda p: p.imagery_stiminfo, lambda p: p.imagery_run_tsv(2, "visC")):
        assert getter(pa).read_bytes() == getter(pb).read_bytes()
    ka, ea, _, _ = read_embedding_table(a / "targets/clip_like.parquet")
    kb, eb, _, _ = read_embedding_table(b / "targets/clip_like.parquet")
    assert ka == kb and np.array_equal(ea, eb)
    # A subject's data do not depend on which other subjects are simulated.
    both = simulate(tmp_path / "both", SimulationConfig.from_scale(
        "small", seed=0, subjects=(1, 2), write_images=False))
    with h5py.File(pa.betas_session(2, 1, "hdf5")) as fa, \
            h5py.File(NSDPaths(both).betas_session(2, 1, "hdf5")) as fb:
        assert np.array_equal(fa["betas"][:], fb["betas"][:])


def test_simulate_options_take_every_generative_parameter(tmp_path: Path) -> None:
    """``simulate --config FILE.yaml`` plants effects of the user's choosing: any field of
    the simulator's config, at the top level (a simulation_config.yaml) or under
    ``parameters``; unknown keys and bad values stop before any work."""
    from fmri2img.cli import main
    from fmri2img.data.simulate import SimulateOptions

    saved = SimulationConfig.from_scale("small", subjects=(1,)).model_dump(mode="json")
    saved.update(noise_sd=7.5, imagery_sem_gain=0.2, imagery_participation={
        **saved["imagery_participation"], "early": 0.9})
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({**saved, "out": str(tmp_path / "x")}))
    opts = SimulateOptions.from_yaml(path)
    cfg = opts.simulation()
    assert cfg.noise_sd == 7.5 and cfg.imagery_sem_gain == 0.2
    assert cfg.imagery_participation["early"] == 0.9 and cfg.subjects == (1,)
    assert cfg.scale == "small" and cfg.n_design_sessions == 2
    # flags given on the command line win over the file
    assert SimulateOptions.from_yaml(path, seed=3).simulation().seed == 3
    # the default preset is where the discriminating calibration lives
    default = SimulateOptions(out=tmp_path / "y").simulation()
    assert default.n_shared == 300 and default.noise_sd == PRESETS["default"]["noise_sd"]
    over = SimulateOptions(out=tmp_path / "y", parameters={"noise_sd": 20}).simulation()
    assert over.noise_sd == 20 and over.n_shared == 300
    # the imagery-realism parameters (issue 17) are options like every other
    real = SimulateOptions(out=tmp_path / "y", parameters={
        "imagery_simple_gain": 0.3, "layout_grid": 8, "embed_private_sd": 0.0}).simulation()
    assert (real.imagery_simple_gain, real.layout_grid, real.embed_private_sd) == (0.3, 8, 0.0)
    for bad in ({"bogus": 1}, {"noise_sd": "loud"}, {"n_shared": 10_000},
                {"layout_share": {**saved["layout_share"], "early": 1.5}},
                {"imagery_simple_gain": -1}):
        path.write_text(yaml.safe_dump({"out": str(tmp_path / "z"), "scale": "small", **bad}))
        assert main(["simulate", "--config", str(path)]) == 2
        assert not (tmp_path / "z").exists()
    assert main(["simulate", "--out", str(tmp_path / "z"), "--scale", "small",
                 "--parameters", "bogus=1"]) == 2


def test_contrast_maps_and_prfs(small: tuple[Path, SimulationConfig]) -> None:
    """The layout channel sees where a bar is: a horizontal bar's contrast lies along the
    middle row, a vertical one's along the middle column; pRFs sit in the contralateral
    hemifield; blurring keeps a map's mass and lowers its peak."""
    from fmri2img.data.simulate.layout import blur, prf_weights

    root, cfg = small
    gt = load_ground_truth(root)
    g = cfg.layout_grid
    h, v = (gt.stimuli["layout"][gt.row(f"nsdimagery:{c}")].reshape(g, g) for c in "HV")
    # Both share the background (its luminance gradient included); the bars differ.
    d = h - v
    mid = slice(g // 2 - 1, g // 2 + 1)
    off = np.r_[0:g // 2 - 3, g // 2 + 3:g]
    assert d[mid, off].mean() > 0.1 and d[off][:, mid].mean() < -0.1
    assert abs(d[np.ix_(off, off)]).max() < 0.02  # away from both bars: the same
    m = gt.voxel_model(1)
    early = m.stream == STREAMS["early"]
    w = m.receptive_fields
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    left_hemi = m.xyz[:, 0] < (gt.info["subjects"]["subj01"]["volume_shape"][0] - 1) / 2
    assert (m.prf_centre[early & left_hemi, 0] > 0).all()
    assert (m.prf_centre[early & ~left_hemi, 0] < 0).all()
    soft = blur(h.ravel()[None], 1.5)
    assert soft.max() < h.max() and abs(soft.sum() - h.sum()) < 0.1 * h.sum()
    one = prf_weights(np.zeros((1, 2)), np.array([0.05]), g)
    assert one.argmax() in {(g // 2 - 1) * g + g // 2 - 1, (g // 2) * g + g // 2,
                            (g // 2 - 1) * g + g // 2, (g // 2) * g + g // 2 - 1}
