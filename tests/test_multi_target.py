"""The multi_target decoder: one trunk and one head per target family; with one family it
is the mlp decoder, its loss is the weighted sum of the torch losses per family, its dims
are checked, and it saves and loads through the checkpoint machinery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmri2img.io.checkpoint import load_checkpoint
from fmri2img.models.pipeline import DecoderPipeline, fit_pipeline
from fmri2img.models.registry import decoders
from fmri2img.training.seeding import seed_everything

FAMILIES = [{"name": "semantic", "dim": 5, "weight": 2.0},
            {"name": "pixels", "dim": 3, "weight": 0.5}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 120, p: int = 12, d: int = 8, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stim = np.repeat(np.arange(n // 2), 2)
    emb = rng.standard_normal((n // 2, d))
    X = emb[stim] @ rng.standard_normal((d, p)) + 0.3 * rng.standard_normal((n, p))
    return X.astype(np.float32), emb[stim].astype(np.float32), stim


@pytest.mark.parametrize("loss", ["mse", "hybrid", "cosine"])
def test_one_family_is_the_mlp_decoder(loss: str) -> None:
    """Same seed, options and layers: the same initial weights, loss and training."""
    X, Y, groups = _data()
    opts = {"hidden": [16], "epochs": 6, "batch_size": 16, "loss": loss, "seed": 3}
    mlp = decoders.build("mlp", X.shape[1], Y.shape[1], opts).fit(X, Y, groups=groups)
    multi = decoders.build("multi_target", X.shape[1], Y.shape[1],
                           {**opts, "families": [{"name": "all", "dim": Y.shape[1]}]})
    multi.fit(X, Y, groups=groups)
    np.testing.assert_allclose(multi.predict(X), mlp.predict(X), rtol=1e-5, atol=1e-6)
    assert [h["train_loss"] for h in multi.history_] == pytest.approx(
        [h["train_loss"] for h in mlp.history_], rel=1e-5)
    # the default (no families) is that one family too
    default = decoders.build("multi_target", X.shape[1], Y.shape[1], opts)
    assert default.slices() == {"all": slice(0, Y.shape[1])}


@pytest.mark.parametrize("loss", ["mse", "cosine", "hybrid"])
def test_loss_is_the_weighted_sum_of_the_families_losses(loss: str) -> None:
    """Reference: torch's own mse_loss / cosine_similarity on each family's columns."""
    dec = decoders.build("multi_target", 4, 8, {"families": FAMILIES, "loss": loss,
                                                "hybrid_weight": 0.3})
    fn = dec._loss(dec._build_network())
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(10, 8, generator=gen), torch.randn(10, 8, generator=gen)

    def ref(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cos = 1 - F.cosine_similarity(p, t, dim=-1).mean()
        mse = ((p - t) ** 2).mean()
        return {"mse": mse, "cosine": cos, "hybrid": 0.3 * cos + 0.7 * mse}[loss]

    expected = 2.0 * ref(pred[:, :5], target[:, :5]) + 0.5 * ref(pred[:, 5:], target[:, 5:])
    assert float(fn(pred, target)) == pytest.approx(float(expected), rel=1e-6)
    # a family's loss sees its columns only: changing the other family leaves it alone
    assert dec.slices() == {"semantic": slice(0, 5), "pixels": slice(5, 8)}


def test_a_family_of_weight_zero_is_not_trained() -> None:
    X, Y, groups = _data()
    fams = [{"name": "a", "dim": 5, "weight": 1.0}, {"name": "b", "dim": 3, "weight": 0.0}]
    # no weight decay: AdamW's decoupled decay would shrink even an untrained head
    opts = {"hidden": [16], "epochs": 3, "batch_size": 16, "families": fams, "seed": 1,
            "weight_decay": 0.0}
    dec = decoders.build("multi_target", X.shape[1], Y.shape[1], opts)
    seed_everything(1)  # as fit() does before it builds the network
    initial = dec._build_network().state_dict()
    dec.fit(X, Y, groups=groups)
    trained = dec.network_.state_dict()
    for key in ("body.heads.1.weight", "body.heads.1.bias"):
        torch.testing.assert_close(trained[key], initial[key])  # no gradient ever reached it
    assert not torch.equal(trained["body.heads.0.weight"], initial["body.heads.0.weight"])


def test_dims_and_names_are_checked() -> None:
    with pytest.raises(ValueError, match=r"sum to 8 columns, but the targets have 9"):
        decoders.build("multi_target", 4, 9, {"families": FAMILIES})
    with pytest.raises(ValueError, match="distinct"):
        decoders.build("multi_target", 4, 6, {"families": [{"name": "a", "dim": 3}] * 2})
    with pytest.raises(ValueError, match="positive loss weight"):
        decoders.build("multi_target", 4, 3, {"families": [{"name": "a", "dim": 3,
                                                            "weight": 0}]})
    with pytest.raises(ValueError, match="invalid options"):
        decoders.build("multi_target", 4, 3, {"families": [{"name": "a", "dim": 0}]})
    assert "multi_target" in decoders.available()


def test_fits_saves_and_loads_through_the_checkpoint(tmp_path: Path) -> None:
    X, Y, groups = _data()
    pipe = fit_pipeline("multi_target", X, Y, groups=groups, seed=0,
                        options={"families": FAMILIES, "hidden": [32], "epochs": 40,
                                 "lr": 3e-3, "batch_size": 16, "dropout": 0.0})
    pred = pipe.predict(X)
    assert pred.shape == Y.shape and pred.dtype == np.float32
    for name, s in pipe.decoder.slices().items():  # every head learnt its family
        corr = np.mean([np.corrcoef(pred[:, j], Y[:, j])[0, 1]
                        for j in range(s.start, s.stop)])
        assert corr > 0.6, name
    path = pipe.save(tmp_path / "multi.pt", {"note": "test"})
    _, meta = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert meta["model_type"] == "multi_target"
    assert [f["name"] for f in meta["model_config"]["families"]] == ["semantic", "pixels"]
    loaded, _ = DecoderPipeline.load(path)
    np.testing.assert_array_equal(loaded.predict(X), pred)
    assert loaded.decoder.slices() == pipe.decoder.slices()
