"""Feature networks: found only where weights are on this machine, refused when a file
does not fit, and read at the layer MindEye2 reads (AlexNet from a file the test writes;
the offline EfficientNet-Lite0 as installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from fmri2img.errors import DataError
from fmri2img.eval.image_metrics import two_way
from fmri2img.targets import feature_nets as F

torch.set_num_threads(1)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point torch hub and ~/.cache at empty folders; return an empty weights_dir."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    weights = tmp_path / "weights"
    weights.mkdir()
    return weights


def textures(n: int, size: int, seed: int) -> np.ndarray:
    """Coloured gratings of random orientation, frequency and phase, uint8.

    Structured rather than white-noise textures: an ImageNet network sees every noise
    texture as much the same thing, so pixel noise would swamp their differences.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 10), rng.uniform(0, 6)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy)
                               + phase)
        c1, c2 = rng.random(3), rng.random(3)
        out.append(s[..., None] * c1 + (1 - s[..., None]) * c2)
    return (np.stack(out) * 255).round().astype(np.uint8)


def noisy(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = images.astype(np.float64) + sigma * rng.standard_normal(images.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def test_file_names_are_torchvision_own() -> None:
    m = torchvision.models
    expect = {"alexnet2": [m.AlexNet_Weights.IMAGENET1K_V1],
              "alexnet5": [m.AlexNet_Weights.IMAGENET1K_V1],
              "inception": [m.Inception_V3_Weights.IMAGENET1K_V1],
              "effnet_b1": [m.EfficientNet_B1_Weights.IMAGENET1K_V2,
                            m.EfficientNet_B1_Weights.IMAGENET1K_V1]}
    for name, weights in expect.items():
        assert F.SPECS[name].weights_files == tuple(Path(w.url).name for w in weights)
    assert set(F.available_feature_nets()) == set(F.DEFAULT_FEATURE_NETS) == set(F.SPECS)
    with pytest.raises(ValueError, match="unknown feature network"):
        F.load_feature_net("vgg16")


def test_missing_weights_are_unavailable_never_random(empty_caches: Path) -> None:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assert str(hub).startswith(str(empty_caches.parent))
    assert F.installed_feature_nets(empty_caches) == ["effnet_lite0"]
    for name in F.DEFAULT_FEATURE_NETS:
        if name == "effnet_lite0":  # ships with its package
            continue
        net = F.load_feature_net(name, weights_dir=empty_caches)
        assert isinstance(net, F.Unavailable), name
        assert net.label == F.SPECS[name].label and not net.available
        for file in F.SPECS[name].weights_files:
            assert file in net.reason
        assert str(empty_caches) in net.reason and str(hub) in net.reason
        assert net.describe()["available"] is False


@pytest.fixture(scope="module")
def lite0() -> F.FeatureNet:
    net = F.load_feature_net("effnet_lite0")
    assert isinstance(net, F.FeatureNet)
    return net


def test_effnet_lite0_loads_offline_and_identifies_noisy_copies(lite0: F.FeatureNet) -> None:
    clean = textures(8, 64, seed=0)
    f_clean = lite0.features(clean, batch_size=3)
    f_noisy = lite0.features(noisy(clean, 6.0, seed=1))
    assert f_clean.shape == (8, 1280) and f_clean.dtype == np.float32
    assert np.all(np.isfinite(f_clean))
    identified = two_way(f_clean, f_noisy).mean()
    assert identified >= 0.9
    assert two_way(f_clean, f_noisy[np.roll(np.arange(8), 1)]).mean() < identified - 0.2
    # batches and float input change nothing
    np.testing.assert_allclose(lite0.features(clean.astype(np.float32) / 255, batch_size=8),
                               f_clean, rtol=1e-4, atol=1e-5)
    info = lite0.describe()
    assert info["comparable"] is False and "not comparable" in info["label"]
    assert info["metric"] == "two_way"
    assert info["weights"]["matches_published_hash"] is True
    assert len(info["weights"]["sha256"]) == 64
    with pytest.raises(ValueError, match="shape"):
        lite0.features(np.zeros((2, 8, 8, 4), dtype=np.uint8))


def test_alexnet_reads_features_4_and_11_from_a_local_file(empty_caches: Path) -> None:
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None).eval()
    torch.save(ref.state_dict(), empty_caches / ALEXNET_FILE)
    images = textures(3, 40, seed=2)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear",
                                        align_corners=False, antialias=True)
    x = (x - torch.tensor(F.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        F.IMAGENET_STD).view(1, 3, 1, 1)
    for name, upto in (("alexnet2", 4), ("alexnet5", 11)):
        net = F.load_feature_net(name, weights_dir=empty_caches)
        assert isinstance(net, F.FeatureNet), net
        with torch.no_grad():
            expected = ref.features[:upto + 1](x).flatten(1).numpy()
        feats = net.features(images, batch_size=2)
        assert feats.shape == expected.shape  # 192*31*31 and 256*15*15 at 256 px
        np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)
    # random weights under the published name: the hash in the name says so
    assert net.describe()["weights"]["matches_published_hash"] is False


def test_a_file_that_does_not_fit_is_refused_naming_it(empty_caches: Path) -> None:
    state = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items()
             if k.startswith("features.")}
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, empty_caches / ALEXNET_FILE)
    with pytest.raises(DataError, match=ALEXNET_FILE) as err:
        F.load_feature_net("alexnet2", weights_dir=empty_caches)
    assert "classifier.1.weight" in str(err.value) and "extra.weight" in str(err.value)
    (empty_caches / ALEXNET_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read weights"):
        F.load_feature_net("alexnet5", weights_dir=empty_caches)
