"""Semantic-structural dissociation (analysis 6): the structural targets against numpy,
scipy and diffusers references, the SSI's numerics (cell means, resampling, the
permutation test's validity and power), and the analysis on simulated studies: the
planted sign, nothing under --null, and the sign following the planted gains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis.dissociation import (
    Cells,
    contrast_statistic,
    dissociation_test,
    group_ssi,
    preservation_ratio,
    ssi_of,
)
from fmri2img.experiments.analyses.runner import run_analyze
from fmri2img.targets.structural import (
    Standardizer,
    autoencoder_latents,
    downsampled_pixels,
    load_autoencoder,
    lowlevel_features,
    lowlevel_names,
    orientation_energy,
)

N_RESAMPLES = 300


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 4, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# ------------------------------------------------------------------ structural targets
def test_pixels_are_block_means() -> None:
    ims = _images(3, 32)
    ref = np.stack([im.astype(np.float64).reshape(8, 4, 8, 4, 3).mean(axis=(1, 3)) / 255
                    for im in ims]).reshape(3, -1)
    np.testing.assert_allclose(downsampled_pixels(ims, 8), ref, atol=1e-6)
    # a non-integer factor goes through PIL's box filter: a constant image stays constant
    flat = [np.full((30, 30, 3), 77, np.uint8)]
    np.testing.assert_allclose(downsampled_pixels(flat, 8), 77 / 255, atol=1e-5)


def test_lowlevel_moments_match_numpy_and_scipy() -> None:
    ims = _images(3, 64)
    feats = lowlevel_features(ims, size=64, grid=4, n_orientations=4)
    names = lowlevel_names(4, 4)
    assert feats.shape == (3, len(names)) == (3, 75)
    for i, im in enumerate(ims):
        x = im.astype(np.float64) / 255
        for c, ch in enumerate("rgb"):
            v = x[:, :, c].ravel()
            got = dict(zip(names, feats[i], strict=True))
            assert got[f"{ch}_mean"] == pytest.approx(v.mean(), abs=1e-6)
            assert got[f"{ch}_sd"] == pytest.approx(v.std(), abs=1e-6)
            assert got[f"{ch}_skew"] == pytest.approx(scipy.stats.skew(v), abs=1e-5)
        lum = x @ np.array([0.299, 0.587, 0.114])
        assert feats[i, 9] == pytest.approx(lum.mean(), abs=1e-6)
        assert feats[i, 10] == pytest.approx(lum.std(), abs=1e-6)


def test_orientation_energy_finds_the_gradient_direction() -> None:
    """Intensity varying along x (vertical stripes) -> bin 0; along y -> bin 90 deg; along
    the diagonal -> bin 45 deg; energy equals the root mean squared gradient."""
    s = 32
    xx, yy = np.meshgrid(np.arange(s), np.arange(s))
    ramps = np.stack([0.01 * xx, 0.01 * yy, 0.01 * (xx + yy)]).astype(np.float64)
    e = orientation_energy(ramps, grid=2, n_orientations=4)
    assert e.shape == (3, 2, 2, 4)
    for k, expected_bin, magnitude in ((0, 0, 0.01), (1, 2, 0.01), (2, 1, 0.01 * np.sqrt(2))):
        np.testing.assert_allclose(e[k, :, :, expected_bin], magnitude, rtol=1e-9)
        others = np.delete(e[k], expected_bin, axis=-1)
        np.testing.assert_allclose(others, 0.0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(colour=st.tuples(*[st.integers(0, 255)] * 3), size=st.sampled_from([16, 33, 64]))
def test_a_constant_image_has_no_contrast(colour: tuple[int, int, int], size: int) -> None:
    im = np.empty((size, size, 3), np.uint8)
    im[:] = colour
    f = lowlevel_features([im], size=16, grid=4, n_orientations=4)[0]
    names = lowlevel_names(4, 4)
    for c, ch in enumerate("rgb"):
        assert f[names.index(f"{ch}_mean")] == pytest.approx(colour[c] / 255, abs=1e-4)
        assert f[names.index(f"{ch}_sd")] == pytest.approx(0, abs=1e-4)
        assert f[names.index(f"{ch}_skew")] == 0
    np.testing.assert_allclose(f[11:], 0.0, atol=1e-4)


def test_standardizer_uses_the_reference_rows() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 4)) * [1, 2, 3, 0] + [0, 1, 2, 5]
    z = Standardizer.fit(ref)
    out = z.transform(ref)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(out[:, 3], 0)  # a constant dimension is centred only


def test_autoencoder_latents_are_the_posterior_mean(tmp_path: Path) -> None:
    """A tiny AutoencoderKL built from a config, saved and loaded from a folder."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32)
    model.save_pretrained(tmp_path / "vae")
    loaded = load_autoencoder(tmp_path / "vae")
    ims = _images(3, 48)
    lat = autoencoder_latents(ims, loaded, size=32, batch_size=2)
    assert lat.shape == (3, 4 * 16 * 16) and lat.dtype == np.float32
    x = torch.from_numpy(np.stack([np.asarray(downsampled_pixels([im], 32)).reshape(32, 32, 3)
                                   for im in ims]).transpose(0, 3, 1, 2) * 2 - 1)
    with torch.no_grad():
        ref = model.eval().encode(x.float()).latent_dist.mean.numpy().reshape(3, -1)
    np.testing.assert_allclose(lat, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ numerics
def _design(n_targets: int = 12, n_vis: int = 8, n_img: int = 16
            ) -> tuple[np.ndarray, np.ndarray]:
    target = np.repeat(np.arange(n_targets), n_vis + n_img)
    imagery = np.tile(np.r_[np.zeros(n_vis, bool), np.ones(n_img, bool)], n_targets)
    return target, imagery


def _scores(means_vis: list[float], means_img: list[float], seed: int = 0,
            sd: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-trial 2-way scores in [0, 1] with the given family means per domain."""
    target, imagery = _design()
    rng = np.random.default_rng(seed)
    mu = np.where(imagery[None, :], np.array(means_img)[:, None],
                  np.array(means_vis)[:, None])
    return np.clip(mu + sd * rng.standard_normal(mu.shape), 0, 1), target, imagery


def test_cell_means_match_pandas() -> None:
    scores, target, imagery = _scores([0.9, 0.7], [0.8, 0.55], sd=0.2)
    keep = np.random.default_rng(1).random(target.size) > 0.3  # unequal cells
    s, t, m = scores[:, keep], target[keep], imagery[keep]
    vis, img = Cells.of(t, m).domain_means(s)
    for f in range(2):
        df = pd.DataFrame({"s": s[f], "t": t, "img": m})
        cell = df.groupby(["img", "t"])["s"].mean()
        assert vis[f] == pytest.approx(cell.loc[False].mean())
        assert img[f] == pytest.approx(cell.loc[True].mean())
    pooled = Cells.of(t, m).pooled_means(s)
    ref = [pd.DataFrame({"s": s[f], "t": t}).groupby("t")["s"].mean().mean()
           for f in range(2)]
    np.testing.assert_allclose(pooled, ref)


def test_draws_resample_within_cells_and_permute_within_targets() -> None:
    target, imagery = _design(4, 3, 5)
    cells = Cells.of(target, imagery)
    rng = np.random.default_rng(0)
    boot, perm = cells.bootstrap_draws(50, rng), cells.permutation_draws(50, rng)
    cell_of = np.empty(target.size, int)
    for c, (a, n) in enumerate(zip(cells.starts, cells.sizes, strict=True)):
        cell_of[cells.order[a:a + n]] = c
    layout = np.repeat(np.arange(len(cells.sizes)), cells.sizes)
    assert (cell_of[boot] == layout).all()  # every draw stays in its own cell
    for row in perm:  # a permutation of the trials, each target's trials kept together
        assert sorted(row) == sorted(cells.order)
        assert (target[row] == target[cells.order]).all()
    # the vectorised means of the draws equal a loop over them
    scores = np.random.default_rng(2).random((2, target.size))
    vis, img = cells.domain_means(scores, perm)
    for d in (0, 17):
        s = scores[:, perm[d]]
        v = np.mean([s[:, a:a + n].mean(axis=1) for a, n, k in
                     zip(cells.starts, cells.sizes, cells.is_imagery, strict=True) if not k],
                    axis=0)
        np.testing.assert_allclose(vis[:, d], v)
        assert img.shape == (2, 50)


def test_ratio_and_ssi_by_hand() -> None:
    vis, img = np.array([0.9, 0.8, 0.7]), np.array([0.8, 0.6, 0.5])
    ratio = preservation_ratio(vis, img)
    np.testing.assert_allclose(ratio, [0.75, 1 / 3, 0.0])
    ssi = ssi_of(vis, img, [False, True, True])
    assert ssi == pytest.approx((2 / 3 + 1.0) / 2 - 0.25)
    assert np.isnan(preservation_ratio(np.array([0.5]), np.array([0.6]))[0])


@settings(max_examples=60, deadline=None)
@given(vis=st.tuples(st.floats(0.55, 1.0), st.floats(0.55, 1.0)),
       r=st.tuples(st.floats(-0.3, 1.3), st.floats(-0.3, 1.3)),
       w=st.floats(0.1, 0.9))
def test_the_test_statistic_has_the_sign_of_the_ssi(vis: tuple[float, float],
                                                    r: tuple[float, float], w: float) -> None:
    """With one family each side and a target-level pooled mean w * vision + (1 - w) *
    imagery, T and the SSI agree in sign (T's terms decrease with each ratio)."""
    v = np.array(vis)
    i = 0.5 + np.array(r) * (v - 0.5)
    pooled = w * v + (1 - w) * i
    if (pooled <= 0.5 + 1e-6).any() or abs(r[0] - r[1]) < 1e-6:
        return
    t = contrast_statistic(v, i, pooled, [False, True])
    assert np.sign(t) == np.sign(ssi_of(v, i, [False, True]))


def test_permutation_p_is_uniform_under_exchangeable_domains() -> None:
    """Null: every family's imagery trials are drawn like its vision trials."""
    ps = []
    for seed in range(120):
        scores, target, imagery = _scores([0.95, 0.75, 0.8], [0.95, 0.75, 0.8], seed=seed)
        res = dissociation_test(scores, target, imagery, ["semantic", "pixels", "lowlevel"],
                                [False, True, True], n_bootstrap=100, n_permutations=200,
                                seed=seed)
        ps.append(res.p)
    ps = np.array(ps)
    assert 0.0 <= (ps < 0.05).mean() <= 0.1  # 6 expected of 120
    assert 0.35 < np.median(ps) < 0.65


def test_a_planted_dissociation_is_found_with_its_sign() -> None:
    """Semantic keeps 80% of its vision score above chance, structure 20%: SSI = 0.6."""
    vis = [0.95, 0.8, 0.85]
    img = [0.5 + 0.8 * 0.45, 0.5 + 0.2 * 0.3, 0.5 + 0.2 * 0.35]
    scores, target, imagery = _scores(vis, img, seed=3)
    res = dissociation_test(scores, target, imagery, ["semantic", "pixels", "lowlevel"],
                            [False, True, True], n_bootstrap=N_RESAMPLES,
                            n_permutations=N_RESAMPLES, seed=0)
    assert res.ci[0] < 0.6 < res.ci[1] and res.ssi > 0
    assert res.p < 0.01 and res.t > 0
    # with one family a side, swapping the roles negates the SSI and its statistic
    kw = {"n_bootstrap": 100, "n_permutations": 100}
    one = dissociation_test(scores[:2], target, imagery, ["a", "b"], [False, True], **kw)
    swapped = dissociation_test(scores[:2], target, imagery, ["a", "b"], [True, False], **kw)
    assert swapped.ssi == pytest.approx(-one.ssi) and swapped.t == pytest.approx(-one.t)
    mean, ci, p = group_ssi([res.ssi, res.ssi], [res.bootstrap, res.bootstrap],
                            [res.t, res.t], [res.null, res.null[::-1]])
    assert mean == pytest.approx(res.ssi) and ci[0] < mean < ci[1] and p < 0.01


# ------------------------------------------------------------------ on simulated studies
def _run(study, out: Path, subjects: list[int] | None = None, **kwargs):
    cfg = study.analyze_config(out, ["dissociation"], n_bootstrap=N_RESAMPLES,
                               n_permutations=N_RESAMPLES, **kwargs)
    if subjects is not None:
        cfg = cfg.model_copy(update={"subjects": subjects})
    return run_analyze(cfg)["dissociation"]


def _expected_sign(config: dict) -> float:
    """The planted contrast: imagery's semantic gain against its mean structural gain
    (fine low-level, coarse structure of natural images, structure of simple shapes)."""
    structure = np.mean([config["imagery_low_gain"], config["imagery_coarse_gain"],
                         config["imagery_simple_gain"]])
    return float(np.sign(config["imagery_sem_gain"] - structure))


def test_planted_dissociation_has_the_planted_sign(planted_study, tmp_path: Path) -> None:
    """Reads imagery_sem_gain (0.6) against imagery_low_gain, imagery_coarse_gain (0.15)
    and imagery_simple_gain (0.6): imagery keeps semantics better than structure, SSI >
    0; the structural gap is larger for set B (coarse gain 0.15) than set A (0.6)."""
    config = planted_study.truth.info["config"]
    res = _run(planted_study, tmp_path / "out")
    group = res["group"]
    assert _expected_sign(config) == 1.0
    assert np.sign(group["effect"]["value"]) == _expected_sign(config)
    assert group["significant"] and group["effect"]["ci"][0] > 0
    for subject in res["subjects"].values():
        assert subject["testable"] and subject["ssi"] > 0
        assert subject["families"]["semantic"]["vision"] > 0.9
        assert "conceptual" in subject["excluded"]
    assert (tmp_path / "out" / "figures" / "dissociation.png").exists()


def test_null_study_reports_no_dissociation(null_study, tmp_path: Path) -> None:
    """--null: imagery identical to perception (all imagery gains 1)."""
    assert null_study.truth.info["config"]["null"]
    group = _run(null_study, tmp_path / "out")["group"]
    assert group["significant"] is False
    assert abs(group["effect"]["value"]) < 0.2


def test_the_sign_follows_the_planted_gains(tmp_path: Path) -> None:
    """imagery_sem_gain=1 with imagery_low/coarse/simple_gain=0 (structure lost) against
    the reverse (semantics lost): the SSI flips from positive to negative."""
    from analysis_fixture import build_study

    values = {}
    for name, sem, structure in (("semantic_kept", 1.0, 0.0), ("structure_kept", 0.0, 1.0)):
        study = build_study(tmp_path / name, subjects=(1, 2), models=(),
                            imagery_sem_gain=sem, imagery_low_gain=structure,
                            imagery_coarse_gain=structure, imagery_simple_gain=structure)
        config = study.truth.info["config"]
        group = _run(study, tmp_path / name / "out", figures=False)["group"]
        assert np.sign(group["effect"]["value"]) == _expected_sign(config), name
        assert group["significant"], name
        values[name] = group["effect"]["value"]
    assert values["semantic_kept"] > 0 > values["structure_kept"]


def test_autoencoder_family_and_cached_decoder(planted_study, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With image_autoencoder the latents are a fourth family; a second run reads the
    cached decoder instead of training again."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=2, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(4, 4, 4), layers_per_block=1, sample_size=32,
    ).save_pretrained(tmp_path / "vae")
    first = _run(planted_study, tmp_path / "a", subjects=[1], figures=False,
                 image_autoencoder=tmp_path / "vae",
                 options={"dissociation": {"autoencoder_size": 32}})
    subject = first["subjects"]["subj01"]
    assert list(subject["families"]) == ["semantic", "pixels", "lowlevel", "autoencoder"]
    assert list((tmp_path / "a" / "work" / "subj01" / "dissociation").glob("*.pt"))

    import fmri2img.experiments.analyses.dissociation as module

    def no_training(*args, **kwargs):
        raise AssertionError("the cached decoder should have been used")

    monkeypatch.setattr(module, "fit_pipeline", no_training)
    # fewer resamples: a new cell (its config changed), the same decoder cache key
    cfg = planted_study.analyze_config(tmp_path / "a", ["dissociation"], n_bootstrap=200,
                                       n_permutations=200, figures=False,
                                       image_autoencoder=tmp_path / "vae",
                                       options={"dissociation": {"autoencoder_size": 32}})
    cfg = cfg.model_copy(update={"subjects": [1]})
    again = run_analyze(cfg)["dissociation"]["subjects"]["subj01"]
    assert again["fit"] == subject["fit"]  # the training record stored with the decoder
    assert again["families"] == subject["families"] or all(
        again["families"][f]["vision"] == subject["families"][f]["vision"]
        for f in subject["families"])  # same predictions; only the resampling changed
