"""The generic trainer (schedule, clipping, early stopping, checkpoints, resume) and the
losses."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.training import losses
from fmri2img.training.config import TrainerConfig
from fmri2img.training.losses import get_loss, symmetric_infonce
from fmri2img.training.resume import LAST
from fmri2img.training.trainer import lr_factor, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _regression(n: int = 96, p: int = 12, d: int = 4, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one fixed linear map; ``seed`` draws other rows of the same map."""
    W = torch.randn(p, d, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g)
    return X, X @ W + 0.05 * torch.randn(n, d, generator=g)


def _net(p: int = 12, d: int = 4, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(p, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, d))


def _cfg(**kw: Any) -> TrainerConfig:
    base: dict[str, Any] = {"epochs": 6, "batch_size": 16, "lr": 1e-2, "seed": 0}
    return TrainerConfig(**{**base, **kw})


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# -- the loop -----------------------------------------------------------------------------

def test_training_reduces_loss_and_records_history() -> None:
    X, Y = _regression()
    Xv, Yv = _regression(seed=1)
    model = _net(dropout=0.0)
    res = train(model, losses.mse, (X, Y), (Xv, Yv), _cfg(epochs=20))
    hist = res.history
    assert [h["epoch"] for h in hist] == list(range(1, 21))
    assert set(hist[0]) >= {"train_loss", "val_loss", "lr", "seconds", "grad_norm"}
    assert hist[-1]["train_loss"] < 0.2 * hist[0]["train_loss"]
    assert hist[-1]["val_loss"] < 0.2 * hist[0]["val_loss"]
    assert res.best_epoch == int(np.argmin([h["val_loss"] for h in hist])) + 1
    assert res.best_val_loss == min(h["val_loss"] for h in hist)
    assert res.steps == 20 * 6 and res.resumed_from == 0 and res.epochs_run == 20
    assert res.to_meta()["epochs_run"] == 20


def test_same_seed_same_run() -> None:
    X, Y = _regression()
    a, b = _net(), _net()
    ha = train(a, losses.mse, (X, Y), config=_cfg()).history
    hb = train(b, losses.mse, (X, Y), config=_cfg()).history
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    _assert_same_weights(_weights(a), _weights(b))
    c = _net()
    train(c, losses.mse, (X, Y), config=_cfg(seed=1))
    assert not torch.equal(c[0].weight, a[0].weight)


def test_lr_schedule_warms_up_then_decays() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # half way through the cosine
    assert lr_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 100, 0) == pytest.approx(1.0)
    X, Y = _regression()
    res = train(_net(), losses.mse, (X, Y), config=_cfg(epochs=10, warmup_fraction=0.2))
    lrs = [h["lr"] for h in res.history]
    assert lrs[0] == pytest.approx(1e-2 * 6 / 12)  # last step of epoch 1, warmup of 12 steps
    assert all(a > b for a, b in itertools.pairwise(lrs[1:]))  # then decreasing


def test_early_stopping_stops_and_restores_best_epoch() -> None:
    X, Y = _regression()
    # validation targets at half the scale: predictions grow from ~0 toward the training
    # targets, so the validation loss falls, bottoms out half way and rises again
    Xv, Yv = _regression(seed=1)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def keep(record: dict[str, Any], model: nn.Module) -> None:
        seen[record["epoch"]] = _weights(model)

    model = _net(dropout=0.0)
    res = train(model, losses.mse, (X, Y), (Xv, 0.5 * Yv),
                _cfg(epochs=50, early_stop_patience=3), callback=keep)
    vals = [h["val_loss"] for h in res.history]
    assert res.stopped_early and 1 < res.best_epoch
    assert len(res.history) == res.best_epoch + 3 < 50
    assert res.best_epoch == int(np.argmin(vals)) + 1
    _assert_same_weights(_weights(model), seen[res.best_epoch])
    assert not torch.equal(seen[len(vals)]["0.weight"], seen[res.best_epoch]["0.weight"])


def test_min_delta_and_no_validation() -> None:
    X, Y = _regression()
    model = _net()
    res = train(model, losses.mse, (X, Y), None, _cfg(epochs=4, early_stop_patience=1))
    assert not res.stopped_early and res.best_epoch == 4 and res.best_val_loss is None
    # an improvement smaller than min_delta does not count
    res = train(_net(), losses.mse, (X, Y), (X, Y),
                _cfg(epochs=10, early_stop_patience=2, min_delta=1e9))
    assert res.best_epoch == 1 and len(res.history) == 3


def test_gradient_clipping_bounds_the_update_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = _regression()
    Y = Y * 1e3  # huge errors -> gradient norms far above the clip
    calls: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params: Any, max_norm: float, *a: Any, **kw: Any) -> torch.Tensor:
        calls.append(max_norm)
        return real(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    res = train(_net(), losses.mse, (X, Y), config=_cfg(epochs=2, grad_clip=0.5))
    assert calls and set(calls) == {0.5} and len(calls) == res.steps
    for h in res.history:
        assert h["grad_norm_max"] > 100  # what the gradient was ...
        assert h["grad_norm_clipped_max"] <= 0.5 * (1 + 1e-4)  # ... and what the step used
    calls.clear()
    res = train(_net(), losses.mse, (X, Y), config=_cfg(epochs=1, grad_clip=None))
    assert not calls and res.history[0]["grad_norm_clipped_max"] is None


def test_dataloaders_are_accepted() -> None:
    X, Y = _regression()
    Xv, Yv = _regression(seed=1)
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(Xv, Yv), batch_size=32)
    res = train(_net(dropout=0.0), losses.mse, loader, val, _cfg(epochs=25))
    assert res.steps == 25 * 6
    assert res.history[-1]["val_loss"] < 0.2 * res.history[0]["val_loss"]


def test_callback_can_stop_and_nan_loss_raises() -> None:
    X, Y = _regression()
    res = train(_net(), losses.mse, (X, Y), config=_cfg(epochs=10),
                callback=lambda rec, _m: rec["epoch"] == 2)
    assert len(res.history) == 2
    Ybad = Y.clone()
    Ybad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 1"):
        train(_net(), losses.mse, (X, Ybad), config=_cfg())
    with pytest.raises(ValueError, match="device"):
        _cfg(device="gpu")


# -- checkpoints and resume ---------------------------------------------------------------

class Killed(Exception):
    """Stands in for the run being killed after an epoch."""


def _kill_after(epoch: int) -> Any:
    def cb(record: dict[str, Any], _model: nn.Module) -> None:
        if record["epoch"] == epoch:
            raise Killed
    return cb


@pytest.mark.parametrize("save_every", [1, 2])
def test_killed_run_resumes_from_last(tmp_path: Path, save_every: int) -> None:
    X, Y = _regression()
    Xv, Yv = _regression(seed=1)
    cfg = {"epochs": 6, "save_every": save_every}

    ref = _net()  # dropout on: the resumed run must also restore the random state
    ref_res = train(ref, losses.mse, (X, Y), (Xv, Yv), _cfg(**cfg, checkpoint_dir=tmp_path / "a"))

    ckpt = tmp_path / "b"
    with pytest.raises(Killed):
        train(_net(), losses.mse, (X, Y), (Xv, Yv), _cfg(**cfg, checkpoint_dir=ckpt),
              callback=_kill_after(3))
    _, meta = load_checkpoint(ckpt / LAST)
    saved = 3 if save_every == 1 else 2  # epochs that made it to disk
    assert meta["epoch"] == saved and not meta["finished"]
    assert meta["config"]["lr"] == 1e-2 and meta["train_seconds"] > 0

    epochs_seen: list[int] = []
    model = _net()
    res = train(model, losses.mse, (X, Y), (Xv, Yv), _cfg(**cfg, checkpoint_dir=ckpt),
                callback=lambda rec, _m: epochs_seen.append(rec["epoch"]))
    assert res.resumed_from == saved
    assert epochs_seen == list(range(saved + 1, 7))  # continues where the file left off
    assert [h["epoch"] for h in res.history] == list(range(1, 7))
    assert ([h["train_loss"] for h in res.history]
            == [h["train_loss"] for h in ref_res.history])
    assert res.best_epoch == ref_res.best_epoch
    _assert_same_weights(_weights(model), _weights(ref))

    # a finished run is not trained again
    again = _net()
    done = train(again, losses.mse, (X, Y), (Xv, Yv), _cfg(**cfg, checkpoint_dir=ckpt))
    assert done.resumed_from == 6 and len(done.history) == 6
    _assert_same_weights(_weights(again), _weights(ref))


def test_best_checkpoint_and_resume_guards(tmp_path: Path) -> None:
    X, Y = _regression()
    Xv, Yv = _regression(seed=1)
    model = _net()
    res = train(model, losses.mse, (X, Y), (Xv, Yv), _cfg(checkpoint_dir=tmp_path),
                extra_meta={"model": "tiny"})
    arrays, meta = load_checkpoint(tmp_path / "best.pt")
    assert meta["epoch"] == res.best_epoch and meta["extra"] == {"model": "tiny"}
    assert meta["config"]["epochs"] == 6 and "train_seconds" in meta
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(arrays[k], v.numpy())
    # another experiment's checkpoint is refused, not silently continued
    with pytest.raises(DataError, match="lr"):
        train(_net(), losses.mse, (X, Y), (Xv, Yv), _cfg(lr=5e-3, checkpoint_dir=tmp_path))
    with pytest.raises(DataError, match="does not fit"):
        train(_net(d=3), losses.mse, (X, Y[:, :3]), None, _cfg(checkpoint_dir=tmp_path))
    # ... unless asked to start over
    fresh = train(_net(), losses.mse, (X, Y), (Xv, Yv),
                  _cfg(lr=5e-3, checkpoint_dir=tmp_path, resume=False))
    assert fresh.resumed_from == 0 and len(fresh.history) == 6


def test_resume_state_of_other_data_is_not_continued(tmp_path: Path) -> None:
    X, Y = _regression()
    Xv, Yv = _regression(seed=1)
    train(_net(), losses.mse, (X, Y), (Xv, Yv), _cfg(epochs=3, checkpoint_dir=tmp_path))
    # same options and data: the finished state is picked up, nothing retrained
    more = train(_net(), losses.mse, (X, Y), (Xv, Yv), _cfg(epochs=3, checkpoint_dir=tmp_path))
    assert more.resumed_from == 3
    # same options, data rebuilt in place (e.g. another z-scoring): start over
    X2, Y2 = _regression(seed=2)
    other = train(_net(), losses.mse, (X2, Y2), (Xv, Yv),
                  _cfg(epochs=3, checkpoint_dir=tmp_path))
    assert other.resumed_from == 0 and len(other.history) == 3
    ref = train(_net(), losses.mse, (X2, Y2), (Xv, Yv), _cfg(epochs=3))
    assert [h["train_loss"] for h in other.history] == [h["train_loss"] for h in ref.history]


# -- losses -------------------------------------------------------------------------------

def _np_infonce(p: np.ndarray, t: np.ndarray, temp: float, labels: np.ndarray) -> float:
    """Reference: per row, softmax over the own column and the other labels' columns."""
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    s = p @ t.T / temp
    n = len(p)

    def one_way(m: np.ndarray) -> float:
        total = 0.0
        for i in range(n):
            keep = [j for j in range(n) if j == i or labels[j] != labels[i]]
            total += -m[i, i] + math.log(sum(math.exp(m[i, j]) for j in keep))
        return total / n

    return 0.5 * (one_way(s) + one_way(s.T))


def test_losses_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    P, T = torch.tensor(p), torch.tensor(t)
    assert float(losses.mse(P, T)) == pytest.approx(np.mean((p - t) ** 2))
    cos = np.sum(p * t, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
    assert float(losses.cosine(P, T)) == pytest.approx(1 - cos.mean())
    assert float(losses.hybrid(P, T, weight=0.3)) == pytest.approx(
        0.3 * (1 - cos.mean()) + 0.7 * np.mean((p - t) ** 2))
    assert float(symmetric_infonce(P, T, 0.1)) == pytest.approx(
        _np_infonce(p, t, 0.1, np.arange(5)))
    # against the textbook form with torch's cross-entropy when all targets differ
    logits = torch.nn.functional.normalize(P, dim=1) @ torch.nn.functional.normalize(T, dim=1).T
    idx = torch.arange(5)
    ce = 0.5 * (torch.nn.functional.cross_entropy(logits / 0.5, idx)
                + torch.nn.functional.cross_entropy(logits.T / 0.5, idx))
    assert float(symmetric_infonce(P, T, 0.5)) == pytest.approx(float(ce))


def test_infonce_masks_repeated_targets() -> None:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((3, 4))
    labels = np.array([0, 1, 0, 2, 1, 0])  # trials: image 0 three times, image 1 twice
    t = emb[labels]
    p = t + 0.3 * rng.standard_normal(t.shape)
    P = torch.tensor(p, requires_grad=True)
    loss = symmetric_infonce(P, torch.tensor(t), 0.1)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(_np_infonce(p, t, 0.1, labels))
    loss.backward()
    assert torch.isfinite(P.grad).all()
    # explicit labels give the same as labels found from the targets
    same = symmetric_infonce(torch.tensor(p), torch.tensor(t), 0.1, torch.tensor(labels))
    assert float(same) == pytest.approx(float(loss.detach()))
    # a perfect prediction costs ~0, whereas counting repeats as negatives would cost
    # at least log(number of repeats) on those rows
    perfect = symmetric_infonce(torch.tensor(t), torch.tensor(t), 0.01)
    assert float(perfect) < 1e-3
    # a batch holding one image only: finite, zero
    one = torch.tensor(np.repeat(emb[:1], 4, axis=0))
    assert float(symmetric_infonce(one + 0.1, one, 0.07)) == pytest.approx(0.0)


def test_get_loss_factory() -> None:
    P, T = torch.randn(4, 3), torch.randn(4, 3)
    assert get_loss("mse") is losses.mse
    assert float(get_loss("hybrid", weight=1.0)(P, T)) == pytest.approx(float(
        losses.cosine(P, T)))
    assert float(get_loss("infonce", temperature=0.2)(P, T)) == pytest.approx(float(
        symmetric_infonce(P, T, 0.2)))
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="invalid options"):
        get_loss("mse", weight=0.5)
    with pytest.raises(ValueError, match="infonce"):
        get_loss("infonce", temp=0.1)
