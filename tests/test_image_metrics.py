"""Image metrics of reconstructions: known answers, skimage's SSIM, MindEye2's 2-way
formula transcribed literally, scipy's correlation distance, and the scored summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fmri2img.eval import image_metrics as M
from fmri2img.eval.image_scores import score_images
from fmri2img.eval.stats import bootstrap_ci

torch.set_num_threads(1)


def mindeye2_two_way(real: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
    """MindEye2's two_way_identification, as published (score and per-column counts)."""
    n = len(real)
    r = np.corrcoef(real, pred)
    r = r[:n, n:]
    congruent = np.diag(r)
    success = r < congruent
    success_cnt = np.sum(success, 0)
    return np.mean(success_cnt) / (n - 1), success_cnt


def skimage_ssim(real: np.ndarray, recon: np.ndarray, size: int) -> np.ndarray:
    a = M.resize_images(real, size).astype(np.float64)
    b = M.resize_images(recon, size).astype(np.float64)
    return np.array([structural_similarity(rgb2gray(x), rgb2gray(y), gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False,
                                           data_range=1.0) for x, y in zip(a, b, strict=True)])


def smooth_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 3))
    freq = rng.uniform(1, 4, size=(n, 1, 1, 3))
    img = 0.5 + 0.5 * np.sin(freq * 2 * np.pi * (xx + yy)[None, ..., None] + phase)
    return img.astype(np.float32)


# ----------------------------------------------------------------------------- images
def test_images_are_converted_and_checked() -> None:
    u8 = np.full((2, 5, 6, 3), 255, dtype=np.uint8)
    assert M.as_float_images(u8).dtype == np.float32
    assert np.all(M.as_float_images(u8) == 1.0)
    gray = M.as_float_images(np.zeros((2, 5, 6), dtype=np.float64))
    assert gray.shape == (2, 5, 6, 3)
    with pytest.raises(ValueError, match=r"\(2, 5, 6, 4\)"):
        M.as_float_images(np.zeros((2, 5, 6, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        M.as_float_images(np.zeros((5, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.as_float_images(np.full((1, 4, 4, 3), 2.0))
    out = M.resize_images(np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3),
                                                             dtype=np.uint8), 16)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_identical_images_score_perfectly() -> None:
    rng = np.random.default_rng(1)
    for imgs in (rng.integers(0, 256, (3, 24, 30, 3), dtype=np.uint8),
                 rng.random((3, 24, 24)).astype(np.float32)):
        np.testing.assert_allclose(M.pixcorr(imgs, imgs, size=32), 1.0, atol=1e-12)
        np.testing.assert_allclose(M.ssim(imgs, imgs, size=32), 1.0, atol=1e-12)
        assert np.all(np.isinf(M.psnr(imgs, imgs)))
        assert np.all(np.isinf(M.psnr(imgs, imgs, size=32)))


def test_pixcorr_is_pearson_of_resized_pixels() -> None:
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    recon = rng.random((4, 30, 25, 3)).astype(np.float32)
    a = M.resize_images(real, 16).reshape(4, -1).astype(np.float64)
    b = M.resize_images(recon, 16).reshape(4, -1).astype(np.float64)
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(M.pixcorr(real, recon, size=16), expected, atol=1e-12)
    flat = np.full((1, 16, 16, 3), 0.5, dtype=np.float32)
    assert np.isnan(M.pixcorr(flat, recon[:1], size=16)[0])


def test_psnr_matches_skimage() -> None:
    rng = np.random.default_rng(3)
    real = rng.random((3, 16, 16, 3))
    recon = np.clip(real + 0.05 * rng.standard_normal(real.shape), 0, 1)
    expected = [peak_signal_noise_ratio(x.astype(np.float32).astype(np.float64),
                                        y.astype(np.float32).astype(np.float64),
                                        data_range=1.0) for x, y in zip(real, recon,
                                                                       strict=True)]
    np.testing.assert_allclose(M.psnr(real, recon), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="differ in size"):
        M.psnr(real, recon[:, :8])


@settings(max_examples=25, deadline=None)
@given(h1=st.integers(11, 40), w1=st.integers(11, 40), h2=st.integers(11, 40),
       w2=st.integers(11, 40), size=st.integers(11, 48), seed=st.integers(0, 2**16),
       smooth=st.booleans())
def test_ssim_equals_skimage(h1: int, w1: int, h2: int, w2: int, size: int, seed: int,
                             smooth: bool) -> None:
    rng = np.random.default_rng(seed)
    if smooth:
        real, recon = smooth_images(rng, 2, h1, w1), smooth_images(rng, 2, h2, w2)
    else:
        real = rng.integers(0, 256, (2, h1, w1, 3), dtype=np.uint8)
        recon = rng.integers(0, 256, (2, h2, w2, 3), dtype=np.uint8)
    np.testing.assert_allclose(M.ssim(real, recon, size=size),
                               skimage_ssim(real, recon, size), atol=1e-6)


def test_ssim_refuses_images_smaller_than_the_window() -> None:
    img = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="window"):
        M.ssim(img, img, size=8)


# ----------------------------------------------------------------------------- features
def test_two_way_is_perfect_for_noisy_copies_and_chance_for_shuffles() -> None:
    rng = np.random.default_rng(4)
    clean = rng.standard_normal((200, 64))
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    scores = M.two_way(clean, noisy)
    assert scores.shape == (200,) and scores.dtype == np.float64
    assert np.all(scores == 1.0)
    shuffled = M.two_way(clean, noisy[rng.permutation(200)])
    assert abs(shuffled.mean() - 0.5) < 0.1


@pytest.mark.parametrize("n", [2, 3, 17, 60])
def test_two_way_equals_mindeye2_literally(n: int) -> None:
    rng = np.random.default_rng(n)
    real = rng.standard_normal((n, 40)).astype(np.float32)
    pred = real + rng.standard_normal((n, 40)).astype(np.float32) * 2.0
    expected, counts = mindeye2_two_way(real, pred)
    ours = M.two_way(real, pred)
    np.testing.assert_array_equal(np.rint(ours * (n - 1)).astype(int), counts)
    assert ours.mean() == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(M.cross_correlations(real, pred),
                               np.corrcoef(real, pred)[:n, n:], atol=1e-10)


@pytest.mark.parametrize("n", [5, 20, 50])
def test_two_way_breaks_ties_as_mindeye2(n: int) -> None:
    """Integer features take few values, so many correlations tie exactly; duplicated
    items tie on the diagonal too. 16 features keep every mean and product exact."""
    rng = np.random.default_rng(100 + n)
    real = rng.integers(0, 3, (n, 16)).astype(np.float64)
    pred = rng.integers(0, 3, (n, 16)).astype(np.float64)
    real[1] = real[0]
    pred[2] = real[2]
    pred[3] = pred[4] if n > 4 else pred[3]
    real[:, 0] += real[:, 1] == real[:, 2]  # no constant rows (corrcoef's NaN)
    expected, counts = mindeye2_two_way(real, pred)
    ours = M.two_way(real, pred)
    np.testing.assert_array_equal(np.rint(ours * (n - 1)).astype(int), counts)
    assert ours.mean() == pytest.approx(expected, abs=1e-12)


def test_two_way_blocks_and_mirage_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    real = rng.standard_normal((30, 3, 7, 5)).astype(np.float32)  # flattened per item
    pred = real + rng.standard_normal(real.shape).astype(np.float32)
    whole = M.two_way(real, pred)
    monkeypatch.setattr(M, "_CHUNK_FEATURES", 16)  # 105 features in 7 column blocks
    np.testing.assert_allclose(M.cross_correlations(real, pred),
                               np.corrcoef(real.reshape(30, -1), pred.reshape(30, -1))[:30, 30:],
                               atol=1e-10)
    np.testing.assert_array_equal(M.two_way(real, pred), whole)
    mirage = M.two_way(real, pred, convention="mirage")
    np.testing.assert_array_equal(mirage, whole - 1.0 / 29)
    assert mirage.mean() == pytest.approx(whole.mean() - 1.0 / 29, abs=1e-15)
    with pytest.raises(ValueError, match="at least 2 items"):
        M.two_way(real[:1], pred[:1])
    with pytest.raises(ValueError, match="convention"):
        M.two_way(real, pred, convention="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pair up"):
        M.two_way(real, pred[:10])


def test_correlation_distance_equals_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    real = rng.standard_normal((12, 50)).astype(np.float32)
    pred = rng.standard_normal((12, 50)).astype(np.float32) + real
    expected = [scipy.spatial.distance.correlation(x.astype(np.float64), y.astype(np.float64))
                for x, y in zip(real, pred, strict=True)]
    np.testing.assert_allclose(M.correlation_distance(real, pred), expected, atol=1e-12)
    monkeypatch.setattr(M, "_CHUNK_FEATURES", 7)
    np.testing.assert_allclose(M.correlation_distance(real, pred), expected, atol=1e-12)
    assert np.all(np.abs(M.correlation_distance(real, real)) < 1e-12)


# ----------------------------------------------------------------------------- summary
def test_score_images_summarises_every_metric() -> None:
    rng = np.random.default_rng(7)
    real = rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8)
    recon = np.clip(real.astype(np.float32) / 255 + 0.1 * rng.standard_normal(real.shape),
                    0, 1).astype(np.float32)[:, :16, :16]  # another size
    recon[0] = M.resize_images(real[:1], 16)[0]  # an exact copy: PSNR inf at 16 px
    feats = rng.standard_normal((12, 30))
    features = {"net_a": (feats, feats + 0.1 * rng.standard_normal(feats.shape), "two_way"),
                "net_d": (feats, feats + rng.standard_normal(feats.shape), "distance")}
    out = score_images(real, recon, features, pixel_size=16, n_bootstrap=200, seed=3)
    json.dumps(out, allow_nan=False)
    assert out["n_items"] == 12
    psnr = out["psnr"]
    assert psnr["per_item"][0] is None and psnr["n_infinite"] == 1
    finite = np.array(psnr["per_item"][1:], dtype=float)
    assert psnr["mean"] == pytest.approx(finite.mean())
    assert psnr["ci"] == list(bootstrap_ci(finite, n_resamples=200, seed=3))
    for key in ("pixcorr", "ssim"):
        assert len(out[key]["per_item"]) == 12
        lo, hi = out[key]["ci"]
        assert lo <= out[key]["mean"] <= hi
    assert out["net_a"]["mean"] == 1.0 and out["net_a"]["chance"] == 0.5
    assert out["net_a"]["convention"] == "mindeye2"
    assert out["net_d"]["chance"] is None and out["net_d"]["higher_is_better"] is False
    assert out["net_d"]["mean"] == pytest.approx(
        M.correlation_distance(*features["net_d"][:2]).mean())
    mirage = score_images(real, recon, {"net_a": features["net_a"]}, pixel_size=16,
                          two_way_convention="mirage", n_bootstrap=0)
    assert mirage["net_a"]["mean"] == pytest.approx(1.0 - 1.0 / 11)
    assert mirage["net_a"]["chance"] == pytest.approx(0.5 - 1.0 / 11)
    assert mirage["net_a"]["ci"] is None
    with pytest.raises(ValueError, match="metric"):
        score_images(real, recon, {"x": (feats, feats, "cosine")}, pixel_size=16)
    with pytest.raises(ValueError, match="items"):
        score_images(real, recon, {"x": (feats[:5], feats[:5], "two_way")}, pixel_size=16)
