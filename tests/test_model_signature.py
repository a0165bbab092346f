"""One model signature for every input shape: a decoder of (n, channels, times) inputs goes
through the same fit, checkpoint and prediction code as the fMRI decoders; decoders say
what their fit chose and hand over a trainable module through the base class; checkpoints
written by fmri2img 0.1 still load and predict as they did."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import nn

from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.models import registry
from fmri2img.models.adapters import apply_adapter, build_adapter, load_adapter, save_adapter
from fmri2img.models.base import Decoder, DecoderConfig
from fmri2img.models.pipeline import DecoderPipeline, fit_pipeline
from fmri2img.models.torch_decoder import TorchDecoder, TorchDecoderConfig

LEGACY = Path(__file__).parent / "fixtures" / "checkpoints_v0_1"
CHANNELS, TIMES, DIM = 5, 16, 6


class TinyEEGConfig(TorchDecoderConfig):
    filters: int = Field(4, ge=1)


class TinyEEGDecoder(TorchDecoder):
    """A temporal convolution over the channels, then a linear read-out: the shape of an
    EEG backbone (it sees (batch, channels, times), not flattened samples)."""

    name = "tiny_eeg"
    Config: ClassVar[type[DecoderConfig]] = TinyEEGConfig
    config: TinyEEGConfig
    flat_inputs = False

    def _build_body(self) -> nn.Module:
        channels, times = self.input_shape
        f = self.config.filters
        return nn.Sequential(nn.Conv1d(channels, f, kernel_size=3, padding=1), nn.GELU(),
                             nn.Flatten(), nn.Linear(f * times, self.n_outputs))


@pytest.fixture
def eeg_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.decoders._classes, TinyEEGDecoder.name, TinyEEGDecoder)


def _epochs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EEG-like epochs whose embedding is a linear read-out of a channel-time pattern."""
    W = np.random.default_rng(99).standard_normal((CHANNELS * TIMES, DIM))
    W /= np.sqrt(CHANNELS * TIMES)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, CHANNELS, TIMES)).astype(np.float32)
    Y = (X.reshape(n, -1) @ W + 0.05 * rng.standard_normal((n, DIM))).astype(np.float32)
    return X, Y, np.arange(n) // 2


def test_shaped_decoder_fits_saves_loads_and_predicts(eeg_registered: None,
                                                      tmp_path: Path) -> None:
    X, Y, groups = _epochs(300)
    X_test, Y_test, _ = _epochs(20, seed=1)
    assert "tiny_eeg" in registry.decoders.available()
    pipe = fit_pipeline("tiny_eeg", X, Y, groups=groups, zscore=True, seed=0,
                        options={"epochs": 40, "lr": 1e-2, "batch_size": 32, "loss": "mse"})
    assert pipe.input_shape == (CHANNELS, TIMES)
    assert pipe.decoder.input_shape == (CHANNELS, TIMES)  # no PCA: the shape passes through
    pred = pipe.predict(X_test)
    assert pred.shape == (20, DIM) and pred.dtype == np.float32
    corr = np.mean([np.corrcoef(pred[:, j], Y_test[:, j])[0, 1] for j in range(DIM)])
    assert corr > 0.5  # it learnt the read-out, not only the output scale
    report = pipe.decoder.fit_report()
    assert report.history and report.history[0]["epoch"] == 1
    pipe.save(tmp_path / "eeg.pt", {"note": "test"})
    loaded, meta = DecoderPipeline.load(tmp_path / "eeg.pt")
    assert meta["input_shape"] == [CHANNELS, TIMES] and meta["model_type"] == "tiny_eeg"
    np.testing.assert_array_equal(loaded.predict(X_test), pred)
    with pytest.raises(ValueError, match=r"\(n, 5, 16\)"):
        loaded.predict(X_test.reshape(20, -1))


def test_shaped_inputs_reach_flat_decoders_through_pca(tmp_path: Path) -> None:
    """PCA turns shaped samples into component scores; ridge and the MLPs read any shape
    as flat rows."""
    X, Y, groups = _epochs(80)
    for pca, model in ((8, "ridge"), (None, "ridge"), (None, "mlp")):
        opts = {"epochs": 2} if model == "mlp" else {"alphas": [1.0, 10.0], "n_folds": 3}
        pipe = fit_pipeline(model, X, Y, groups=groups, pca=pca, options=opts)
        assert pipe.decoder.input_shape == ((8,) if pca else (CHANNELS, TIMES))
        pipe.save(tmp_path / f"{model}{pca}.pt", {})
        loaded, _ = DecoderPipeline.load(tmp_path / f"{model}{pca}.pt")
        np.testing.assert_array_equal(loaded.predict(X[:7]), pipe.predict(X[:7]))


def test_fit_reports_and_trainable_modules_come_from_the_base_class() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 9)).astype(np.float32)
    Y = rng.standard_normal((40, 3)).astype(np.float32)
    ridge = registry.decoders.build("ridge", 9, 3, {"alphas": [1.0, 100.0], "n_folds": 2})
    assert ridge.fit_report().chosen == {}  # nothing chosen before a fit
    ridge.fit(X, Y)
    chosen = ridge.fit_report().chosen
    assert chosen["alpha_min"] <= chosen["alpha_median"] <= chosen["alpha_max"]
    assert ridge.fit_report().history == []
    mlp = registry.decoders.build("mlp", 9, 3, {"epochs": 2, "hidden": [8]}).fit(X, Y)
    assert len(mlp.fit_report().history) == 2 and mlp.fit_report().chosen == {}
    for decoder in (ridge, mlp):
        module = decoder.trainable_module().eval()  # handed over in training mode
        with torch.no_grad():
            out = module(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(out, decoder.predict(X), rtol=1e-5, atol=1e-5)
        again = decoder.with_module(module)
        assert type(again) is type(decoder) and again is not decoder
        np.testing.assert_allclose(again.predict(X), decoder.predict(X), rtol=1e-5, atol=1e-6)

    class Frozen(Decoder):
        name = "frozen"

        def fit(self, X, Y, **kw):  # type: ignore[no-untyped-def]
            return self

        def predict(self, X):  # type: ignore[no-untyped-def]
            return np.zeros((len(X), self.n_outputs), np.float32)

        def state(self):  # type: ignore[no-untyped-def]
            return {}, {}

        @classmethod
        def from_state(cls, input_shape, n_outputs, config, arrays, meta):  # type: ignore[no-untyped-def]
            return cls(input_shape, n_outputs, config)

    with pytest.raises(TypeError, match="cannot be fine-tuned"):
        Frozen(4, 2).trainable_module()


def test_adapters_are_registered_models_in_the_decoder_checkpoint_layout(
        tmp_path: Path) -> None:
    assert registry.adapters.available() == ["linear", "mlp"]
    adapter = build_adapter("mlp", 6, {"hidden": 8, "condition": True})
    assert adapter.input_shape == (6,) and adapter.n_outputs == 6
    save_adapter(tmp_path / "a.pt", adapter, {"note": "test"})
    loaded, meta = load_adapter(tmp_path / "a.pt", dim=6)
    assert meta["model_type"] == "mlp" and meta["model_config"]["condition"] is True
    assert meta["model_meta"]["n_parameters"] == adapter.n_parameters()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(apply_adapter(loaded, x, "imagery"),
                                  apply_adapter(adapter, x, "imagery"))
    with pytest.raises(ValueError, match="dim-d embeddings"):
        registry.adapters.build("linear", (6,), 5)


@pytest.mark.parametrize("name", ["ridge", "mlp_pca"])
def test_decoder_checkpoints_of_version_0_1_still_load(name: str) -> None:
    expected = np.load(LEGACY / "expected.npz")
    _, raw = load_checkpoint(LEGACY / f"{name}.pt")
    assert "input_shape" not in raw and raw["note"] == "fmri2img 0.1"  # the old layout
    pipe, meta = DecoderPipeline.load(LEGACY / f"{name}.pt")
    assert meta["input_shape"] == [raw["n_features"]]
    # the same numbers to float32 rounding: kernels differ between CPUs (AVX2, AVX-512)
    np.testing.assert_allclose(pipe.predict(expected["X_test"]), expected[name], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name", ["adapter_linear", "adapter_mlp_cond"])
def test_adapter_checkpoints_of_version_0_1_still_load(name: str) -> None:
    expected = np.load(LEGACY / "expected.npz")
    adapter, meta = load_adapter(LEGACY / f"{name}.pt", dim=6)
    assert meta["model_type"] == meta["adapter_type"]  # the old keys, read into the new
    with torch.no_grad():
        out = adapter(torch.from_numpy(expected[f"{name}_input"])).numpy()
    np.testing.assert_allclose(out, expected[name], rtol=1e-5, atol=1e-6)
