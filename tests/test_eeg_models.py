"""The EEG models: CBraMod weights load strictly (or are refused naming what differs), the
pooling heads pool as described, and the two EEG decoders fit, persist and learn."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fmri2img.errors import DataError
from fmri2img.io.checkpoint import load_checkpoint, save_checkpoint
from fmri2img.io.checksum import file_checksum
from fmri2img.models.base import model_entries
from fmri2img.models.eeg import backbone as bb
from fmri2img.models.eeg.backbone import BackboneConfig, build_cbramod, load_backbone_weights
from fmri2img.models.eeg.conv import _FactoredConv
from fmri2img.models.eeg.heads import AttentionHead, HeadConfig, build_head, heads
from fmri2img.models.registry import decoders

torch.set_num_threads(1)  # tiny models: extra threads only add contention

TINY_BB = {"n_layer": 1, "nhead": 2, "dim_feedforward": 32}
CHANS = 3


def _backbone(seed: int, **kw: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_cbramod(kw.pop("n_chans", CHANS), kw.pop("n_times", 200),
                         BackboneConfig(**{**TINY_BB, **kw})).eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, CHANS, 200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return _backbone(1)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- backbone ---------------------------------------------------------------------------------
def test_backbone_output_shape_and_patch_rule() -> None:
    model = _backbone(0, n_times=400)
    assert model(torch.randn(2, CHANS, 400)).shape == (2, CHANS, 2, 200)
    assert not any(k.startswith(("proj_out", "final_layer")) for k in model.state_dict())
    with pytest.raises(ValueError, match=r"n_times=300.*200 Hz.*--sfreq 200"):
        build_cbramod(CHANS, 300, BackboneConfig(**TINY_BB))
    with pytest.raises(ValueError, match="nhead must be even"):
        BackboneConfig(nhead=3)
    assert bb.init_record(BackboneConfig()) == {"init": "random"}


def test_building_without_braindecode_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "braindecode.models", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install fmri2img\[eeg\]"):
        build_cbramod(CHANS, 200, BackboneConfig(**TINY_BB))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_saved_weights_load_strictly(source: nn.Module, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(_state(source), str(path))
    else:
        torch.save(_state(source), path)
    target = _backbone(2)
    assert not _same_outputs(source, target)
    record = load_backbone_weights(target, path)
    assert _same_outputs(source, target)
    assert record["init"] == "pretrained" and record["source"] == str(path.resolve())
    assert record["checksum"] == file_checksum(path) and record["dropped_keys"] == []


def test_mismatched_weights_are_refused_naming_the_keys(source: nn.Module,
                                                        tmp_path: Path) -> None:
    state = _state(source)
    missing = dict(state)
    del missing["encoder.layers.0.linear1.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(DataError, match=r"1 missing key\(s\) \['encoder\.layers\.0\.linear1"
                                        r"\.weight'\], 0 unexpected") as err:
        load_backbone_weights(_backbone(2), tmp_path / "missing.pt")
    assert "missing.pt" in str(err.value)
    torch.save({**state, "encoder.layers.1.linear1.weight": torch.zeros(2)},
               tmp_path / "extra.pt")
    with pytest.raises(DataError, match=r"1 unexpected key\(s\) \['encoder\.layers\.1"):
        load_backbone_weights(_backbone(2), tmp_path / "extra.pt")
    bigger = _state(_backbone(0, dim_feedforward=48))
    torch.save(bigger, tmp_path / "shape.pt")
    with pytest.raises(DataError, match=r"'encoder\.layers\.0\.linear1\.weight' has shape "
                                        r"\(48, 200\) in the file but \(32, 200\)"):
        load_backbone_weights(_backbone(2), tmp_path / "shape.pt")
    torch.save({"epoch": 3}, tmp_path / "nothing.pt")
    with pytest.raises(DataError, match="no state dict"):
        load_backbone_weights(_backbone(2), tmp_path / "nothing.pt")
    with pytest.raises(DataError, match="not found"):
        load_backbone_weights(_backbone(2), tmp_path / "absent.pt")


def test_directory_form(source: nn.Module, tmp_path: Path) -> None:
    torch.save(_state(source), tmp_path / "pytorch_model.bin")
    target = _backbone(2)
    record = load_backbone_weights(target, tmp_path)
    assert _same_outputs(source, target)
    assert record["source"] == str((tmp_path / "pytorch_model.bin").resolve())
    save_file(_state(source), str(tmp_path / "model.safetensors"))  # preferred
    assert load_backbone_weights(_backbone(2), tmp_path)["source"].endswith(
        "model.safetensors")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"model\.safetensors, pytorch_model\.bin.*notes\.txt"):
        load_backbone_weights(_backbone(2), tmp_path / "empty")


def test_hub_sources(source: nn.Module, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="allow_hub"):
        load_backbone_weights(_backbone(2), "hub:x")
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    torch.save(_state(source), tmp_path / "pytorch_model.bin")
    asked = []

    def fake_download(repo_id: str, filename: str, **kw: Any) -> str:
        asked.append((repo_id, filename))
        if filename == "model.safetensors":
            raise EntryNotFoundError("no such file")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    target = _backbone(2)
    record = load_backbone_weights(target, "hub:org/cbramod", allow_hub=True)
    assert asked == [("org/cbramod", "model.safetensors"), ("org/cbramod", "pytorch_model.bin")]
    assert record["source"] == "hub:org/cbramod" and _same_outputs(source, target)


def test_original_cbramod_layout_loads_without_proj_out(source: nn.Module,
                                                        tmp_path: Path) -> None:
    # the published pretrained_weights.pth: CBraMod's reconstruction layer proj_out.0, and
    # (as a DataParallel save) every key under module.
    state = {f"module.{k}": v for k, v in _state(source).items()}
    state["module.proj_out.0.weight"] = torch.randn(200, 200)
    state["module.proj_out.0.bias"] = torch.randn(200)
    torch.save(state, tmp_path / "pretrained_weights.pth")
    target = _backbone(2)
    record = load_backbone_weights(target, tmp_path / "pretrained_weights.pth")
    assert _same_outputs(source, target)
    assert record["dropped_keys"] == ["proj_out.0.bias", "proj_out.0.weight"]
    assert any("proj_out" in n for n in record["notes"])
    assert any("'module.'" in n for n in record["notes"])
    # a training script's checkpoint: nested, with a backbone. prefix
    nested = {"epoch": torch.tensor(3),
              "model_state_dict": {f"backbone.{k}": v for k, v in _state(source).items()}}
    torch.save(nested, tmp_path / "ckpt.pt")
    target = _backbone(2)
    load_backbone_weights(target, tmp_path / "ckpt.pt")
    assert _same_outputs(source, target)


# -- heads ------------------------------------------------------------------------------------
N_IN, D_IN, OUT = 5, 40, 7
HEAD_CFG = {"hidden": 16, "n_queries": 3, "n_tokens": 2, "vit_layers": 1, "vit_heads": 4,
            "vit_ff": 32, "dropout": 0.0}
POOLED = {"flatten": (N_IN, D_IN), "attention": (3, D_IN), "multitoken_vit": (2, D_IN)}


@pytest.mark.parametrize("kind", sorted(POOLED))
def test_heads_shapes_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    head = build_head(N_IN, D_IN, OUT, HeadConfig(kind=kind, **HEAD_CFG))
    assert type(head) is heads.get(kind)
    tokens = torch.randn(4, N_IN, D_IN, requires_grad=True)
    assert head.pooled_tokens(tokens).shape == (4, *POOLED[kind])
    assert (head.n_pooled, head.d_pooled) == POOLED[kind]
    out = head(tokens)
    assert out.shape == (4, OUT)
    out.square().sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if kind != "flatten":  # the learned queries / tokens / positions are trained
        learned = [p for n, p in head.named_parameters() if n in ("queries", "tokens",
                                                                  "position")]
        assert learned and all(p.grad.abs().sum() > 0 for p in learned)
    with pytest.raises(ValueError, match=r"expects tokens of shape \(batch, 5, 40\)"):
        head(torch.randn(4, N_IN + 1, D_IN))


def test_attention_weights_sum_to_one_over_channels() -> None:
    head = AttentionHead(N_IN, D_IN, OUT, HeadConfig(**HEAD_CFG))
    tokens = torch.randn(4, N_IN, D_IN)
    w = head.attention_weights(tokens)
    assert w.shape == (4, 3, N_IN) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 3))
    torch.testing.assert_close(head.pooled_tokens(tokens)[:, 0],
                               (w[:, 0, :, None] * tokens).sum(1))
    one = build_head(N_IN, D_IN, OUT, HeadConfig(**{**HEAD_CFG, "mlp_layers": 1}))
    assert [type(m) for m in one.mlp] == [nn.Linear]


def test_vit_head_needs_heads_dividing_the_width() -> None:
    with pytest.raises(ValueError, match="vit_heads must divide 40"):
        build_head(N_IN, D_IN, OUT, HeadConfig(kind="multitoken_vit", vit_heads=3))
    vit = build_head(N_IN, D_IN, OUT, HeadConfig(kind="multitoken_vit", **HEAD_CFG))
    assert isinstance(vit.mlp[0], nn.LayerNorm) and vit.position.shape == (1, 2 + N_IN, D_IN)


# -- decoders ---------------------------------------------------------------------------------
CONV = {"temporal_filters": 8, "spatial_filters": 8, "proj_channels": 4, "proj_dim": 32,
        "epochs": 2, "batch_size": 32, "dropout": 0.1}
CBRA = {"backbone": TINY_BB, "head": {"kind": "attention", "hidden": 16, "n_queries": 2},
        "epochs": 1, "batch_size": 16}


def _random(n: int, chans: int, times: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, chans, times)).astype(np.float32),
            rng.standard_normal((n, dim)).astype(np.float32))


def _round_trip(model: Any, tmp_path: Path) -> Any:
    tensors, meta = model_entries(model)
    save_checkpoint(tmp_path / "decoder.pt", tensors, meta)
    arrays, meta = load_checkpoint(tmp_path / "decoder.pt")
    return decoders.from_entries(arrays, meta)


@pytest.mark.parametrize(("name", "options"), [("eeg_conv", CONV), ("cbramod", CBRA)])
def test_eeg_decoders_fit_predict_and_reload(name: str, options: dict[str, Any],
                                             tmp_path: Path) -> None:
    X, Y = _random(48, 4, 200, 6)
    model = decoders.build(name, (4, 200), 6, options).fit(X, Y)
    pred = model.predict(X[:5])
    assert pred.shape == (5, 6) and pred.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, rtol=1e-5)
    back = _round_trip(model, tmp_path)
    assert type(back) is type(model)
    np.testing.assert_array_equal(back.predict(X[:5]), pred)
    assert model.config.loss == "infonce" and model.config.learn_temperature
    if name == "cbramod":
        assert model.state()[1]["backbone_init"] == {"init": "random"}
        assert back.backbone_init_ == {"init": "random"}


def test_cbramod_records_pretrained_weights_and_restores_without_them(
        tmp_path: Path) -> None:
    torch.save(_state(_backbone(5, n_chans=4)), tmp_path / "w.pt")
    opts = {**CBRA, "backbone": {**TINY_BB, "pretrained": str(tmp_path / "w.pt")}}
    built = decoders.build("cbramod", (4, 200), 6, opts)
    net = built._build_network()  # what fit() starts from: the file's weights
    for k, v in torch.load(tmp_path / "w.pt", weights_only=True).items():
        torch.testing.assert_close(net.body.backbone.state_dict()[k], v)
    X, Y = _random(32, 4, 200, 6)
    model = decoders.build("cbramod", (4, 200), 6, opts).fit(X, Y)
    init = model.state()[1]["backbone_init"]
    assert init["init"] == "pretrained" and init["checksum"] == file_checksum(tmp_path / "w.pt")
    (tmp_path / "w.pt").unlink()  # a saved decoder holds its weights: the file is not read
    back = _round_trip(model, tmp_path)
    np.testing.assert_array_equal(back.predict(X[:4]), model.predict(X[:4]))
    assert back.backbone_init_ == init
    assert back.with_module(back.trainable_module()).backbone_init_ == init


def test_eeg_decoders_refuse_shapes_they_cannot_read() -> None:
    X, Y = _random(8, 4, 300, 6)
    with pytest.raises(ValueError, match=r"n_times=300.*200 Hz"):
        decoders.build("cbramod", (4, 300), 6, CBRA).fit(X, Y)
    for name in ("eeg_conv", "cbramod"):
        flat = decoders.build(name, 7, 7)  # constructing stores the arguments only
        with pytest.raises(ValueError, match=r"\(channels, times\); got input shape \(7,\)"):
            flat._build_network()
    with pytest.raises(ValueError, match="temporal_kernel=25 is longer"):
        decoders.build("eeg_conv", (4, 20), 6, CONV)._build_network()


def test_factored_conv_is_temporal_then_spatial_convolution() -> None:
    conv = _FactoredConv(n_chans=5, filters=3, kernel=7, out_channels=4)
    temporal = nn.Conv2d(1, 3, (1, 7), bias=False)
    spatial = nn.Conv2d(3, 4, (5, 1))
    with torch.no_grad():
        temporal.weight.copy_(conv.temporal[:, None, None, :])
        spatial.weight.copy_(conv.spatial[..., None])
        spatial.bias.copy_(torch.randn(4))
        conv.bias.copy_(spatial.bias)
    x = torch.randn(2, 5, 30)
    torch.testing.assert_close(conv(x), spatial(temporal(x[:, None])).squeeze(2))


@pytest.mark.parametrize("times", [50, 200, 1000])
def test_eeg_conv_pooling_scales_with_the_epoch(times: int) -> None:
    net = decoders.build("eeg_conv", (4, times), 6, CONV)._build_network().eval()
    pool = next(m for m in net.modules() if isinstance(m, nn.AvgPool1d))
    assert net(torch.randn(3, 4, times)).shape == (3, 6)
    pooled = (times - 25 + 1 - pool.kernel_size[0]) // pool.stride[0] + 1
    assert 15 <= pooled <= 40  # about NICE's 36 at any length


def test_eeg_conv_learns_a_planted_linear_map() -> None:
    """Each 16-d target drives 16 smooth waveforms through a fixed channel mixing; the
    decoder must pick the held-out targets out of their set."""
    rng = np.random.default_rng(0)
    n, n_test, chans, times, dim = 640, 100, 8, 200, 16
    t = np.linspace(0, 1, times)
    waves = np.stack([np.sin(2 * np.pi * (1 + j % 4) * t + j) * np.exp(
        -((t - 0.15 - 0.04 * j) ** 2) / 0.02) for j in range(dim)])  # (dim, times)
    mixing = rng.standard_normal((chans, dim))
    Z = rng.standard_normal((n + n_test, dim))
    X = np.einsum("cj,nj,jt->nct", mixing, Z, waves)
    X = (X + 0.5 * X.std() * rng.standard_normal(X.shape)).astype(np.float32)
    Y = Z.astype(np.float32)
    model = decoders.build("eeg_conv", (chans, times), dim,
                           {**CONV, "epochs": 6, "batch_size": 64, "lr": 3e-3,
                            "temporal_filters": 16, "spatial_filters": 16,
                            "proj_channels": 8, "proj_dim": 64})
    model.fit(X[:n], Y[:n])
    P, T = model.predict(X[n:]), Y[n:] / np.linalg.norm(Y[n:], axis=1, keepdims=True)
    sims = P @ T.T
    top1 = float(np.mean(sims.argmax(1) == np.arange(n_test)))
    # own target against each other one
    two_way = float((np.diag(sims)[:, None] > sims).sum() / (n_test * (n_test - 1)))
    assert two_way > 0.95 and top1 > 0.5, (two_way, top1)  # chance: 0.5 and 0.01
