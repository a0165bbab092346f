"""The torch decoders: they learn, are deterministic, persist, and validate their options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.models.base import Decoder, DecoderConfig
from fmri2img.models.registry import decoders

NAMES = ("mlp", "two_stage", "contrastive_mlp")

# tiny networks, few epochs: each fit takes well under a second
TINY: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [64], "epochs": 25, "batch_size": 32, "lr": 3e-3, "dropout": 0.0},
    "two_stage": {"width": 64, "n_blocks": 1, "epochs": 25, "batch_size": 32, "lr": 3e-3,
                  "dropout": 0.0},
    "contrastive_mlp": {"hidden": [64, 64], "epochs": 25, "batch_size": 32, "lr": 3e-3,
                        "dropout": 0.1},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Synthetic:
    """fMRI-like data: each stimulus has an embedding; its trials are a noisy linear image
    of it in voxel space (three repetitions per stimulus), held-out stimuli for testing."""

    def __init__(self, n_stim: int = 120, reps: int = 3, n_test: int = 40, p: int = 32,
                 d: int = 8, noise: float = 0.3, seed: int = 0):
        rng = np.random.default_rng(seed)
        emb = rng.standard_normal((n_stim + n_test, d))
        mix = rng.standard_normal((d, p)) / np.sqrt(d)
        stim = np.repeat(np.arange(n_stim), reps)
        self.groups = stim
        self.X = (emb[stim] @ mix + noise * rng.standard_normal((stim.size, p))).astype(
            np.float32)
        self.Y = emb[stim].astype(np.float32)
        test = np.arange(n_stim, n_stim + n_test)
        self.X_test = (emb[test] @ mix + noise * rng.standard_normal((n_test, p))).astype(
            np.float32)
        self.Y_test = emb[test].astype(np.float32)
        self.p, self.d = p, d


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return Synthetic()


def _cosines(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return np.sum(P * Y, 1) / (np.linalg.norm(P, axis=1) * np.linalg.norm(Y, axis=1))


def _top1(P: np.ndarray, Y: np.ndarray) -> float:
    """Share of predictions whose most similar candidate (cosine) is their own target."""
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    return float(np.mean((Pn @ Yn.T).argmax(1) == np.arange(len(Y))))


def _fit(name: str, data: Synthetic, **overrides: Any) -> Decoder:
    return decoders.build(name, data.p, data.d, {**TINY[name], **overrides}).fit(
        data.X, data.Y, groups=data.groups)


@pytest.mark.parametrize("name", NAMES)
def test_decoder_learns_held_out_stimuli(name: str, data: Synthetic) -> None:
    model = _fit(name, data)
    pred = model.predict(data.X_test)
    assert pred.dtype == np.float32 and pred.shape == data.Y_test.shape
    # untrained or broken training sits near cosine 0 and top-1 1/40
    assert _cosines(pred, data.Y_test).mean() > 0.85
    assert _top1(pred, data.Y_test) > 0.8
    hist = model.history_
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert model.training_["val_rows"] > 0  # a validation set was carved out
    assert model.training_["val_rows"] % 3 == 0  # ... of whole stimuli


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_predictions(name: str, data: Synthetic) -> None:
    cfg = {**TINY[name], "epochs": 3, "dropout": 0.2}
    a = decoders.build(name, data.p, data.d, cfg).fit(data.X, data.Y).predict(data.X_test)
    b = decoders.build(name, data.p, data.d, cfg).fit(data.X, data.Y).predict(data.X_test)
    c = decoders.build(name, data.p, data.d, {**cfg, "seed": 1}).fit(data.X, data.Y).predict(
        data.X_test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_through_checkpoint(name: str, data: Synthetic, tmp_path: Path) -> None:
    model = _fit(name, data, epochs=3)
    arrays, meta = model.state()
    save_checkpoint(tmp_path / f"{name}.pt", arrays, meta)
    arrays2, meta2 = load_checkpoint(tmp_path / f"{name}.pt")
    cls = decoders.get(name)
    back = cls.from_state(data.p, data.d, cls.Config(**meta2["config"]), arrays2, meta2)
    np.testing.assert_array_equal(back.predict(data.X_test), model.predict(data.X_test))
    assert back.history_ == model.history_
    assert back.training_ == model.training_
    # wrong shapes are refused, not silently broadcast
    with pytest.raises(ValueError, match="do not fit"):
        cls.from_state(data.p + 1, data.d, cls.Config(**meta2["config"]), arrays2, meta2)


def test_registry_builds_all_and_rejects_unknown_options() -> None:
    for name in NAMES:
        model = decoders.build(name, 10, 4, {"epochs": 2})
        assert model.name == name and isinstance(model.config, DecoderConfig)
        assert model.config.epochs == 2 and model.config.device == "cpu"
        with pytest.raises(ValueError, match="invalid options"):
            decoders.build(name, 10, 4, {"epochs": 2, "no_such_option": 1})
        with pytest.raises(ValueError, match="invalid options"):
            decoders.build(name, 10, 4, {"device": "gpu0"})
        with pytest.raises(ValueError, match="invalid options"):
            decoders.build(name, 10, 4, {"loss": "hinge"})
    assert decoders.build("mlp", 10, 4, {"device": "cuda:1"}).config.device == "cuda:1"
    with pytest.raises(ValueError, match="invalid options"):
        decoders.build("mlp", 10, 4, {"hidden": [8, 0]})
    assert decoders.get("contrastive_mlp").Config().loss == "infonce"
    assert decoders.get("contrastive_mlp").Config().hidden == [2048, 1024]


def test_architectures_follow_config() -> None:
    mlp = decoders.build("mlp", 10, 4, {"hidden": [16, 8]})._build_network()
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 16), (16, 8), (8, 4)]
    assert any(isinstance(m, torch.nn.LayerNorm) for m in mlp.modules())

    two = decoders.build("two_stage", 10, 4, {"width": 16, "n_blocks": 3, "head_hidden": 6})
    net = two._build_network()
    assert len(net.body.blocks) == 3
    x = torch.randn(5, 16)
    block = net.body.blocks[0].eval()
    # a residual block adds to its input: with the linear's weights zeroed it is the identity
    with torch.no_grad():
        block.linear.weight.zero_()
        block.linear.bias.zero_()
    torch.testing.assert_close(block(x), x)
    assert net(torch.randn(5, 10)).shape == (5, 4)

    con = decoders.build("contrastive_mlp", 10, 4, {"hidden": [16, 8]})._build_network()
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in con.modules()) == 2
    out = con.eval()(torch.randn(7, 10))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


def test_contrastive_temperature_learnt_or_fixed(data: Synthetic) -> None:
    learnt = _fit("contrastive_mlp", data, epochs=5)
    assert learnt.training_["temperature"] != pytest.approx(0.07, abs=1e-6)
    fixed = _fit("contrastive_mlp", data, epochs=5, learn_temperature=False, temperature=0.1)
    assert fixed.training_["temperature"] == pytest.approx(0.1)
    pred = fixed.predict(data.X_test)
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "cosine", "hybrid", "infonce"])
def test_every_loss_trains_the_mlp(loss: str, data: Synthetic) -> None:
    model = _fit("mlp", data, loss=loss, epochs=15)
    assert _top1(model.predict(data.X_test), data.Y_test) > 0.7


def test_explicit_validation_set_is_used(data: Synthetic) -> None:
    n = 60
    model = decoders.build("mlp", data.p, data.d, {**TINY["mlp"], "epochs": 2}).fit(
        data.X[n:], data.Y[n:], X_val=data.X[:n], Y_val=data.Y[:n])
    assert model.training_["val_rows"] == n
    assert model.training_["train_rows"] == len(data.X) - n
    no_val = decoders.build("mlp", data.p, data.d, {**TINY["mlp"], "epochs": 2, "val_fraction": 0})
    no_val.fit(data.X, data.Y)
    assert no_val.training_["val_rows"] == 0
    assert all(h["val_loss"] is None for h in no_val.history_)


def test_fit_holds_out_whole_stimuli(data: Synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmri2img.models.torch_decoder as td

    seen: dict[str, Any] = {}
    real = td.train

    def spy(model: Any, loss: Any, train_data: Any, val_data: Any, *a: Any, **kw: Any) -> Any:
        seen["train"], seen["val"] = train_data, val_data
        return real(model, loss, train_data, val_data, *a, **kw)

    monkeypatch.setattr(td, "train", spy)
    _fit("mlp", data, epochs=1, val_fraction=0.2)
    Y_tr, Y_va = seen["train"][1].numpy(), seen["val"][1].numpy()
    assert len(Y_va) == 0.2 * len(data.Y)
    # a stimulus's target (shared by its repetitions) is on one side only
    tr_rows = {row.tobytes() for row in Y_tr}
    assert not any(row.tobytes() in tr_rows for row in Y_va)


def test_bad_calls_fail_clearly(data: Synthetic) -> None:
    model = decoders.build("mlp", data.p, data.d, TINY["mlp"])
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(data.X_test)
    with pytest.raises(ValueError, match="expects inputs"):
        model.fit(data.X[:, :5], data.Y)
    bad = data.X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, data.Y)
    with pytest.raises(ValueError, match="both X_val and Y_val"):
        model.fit(data.X, data.Y, X_val=data.X)
    with pytest.raises(DataError, match="CUDA"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        decoders.build("mlp", data.p, data.d, {**TINY["mlp"], "device": "cuda"}).fit(data.X, data.Y)
