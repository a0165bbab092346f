"""The EEG-fMRI aligner: it uses both inputs (Brain2Image's single-key attention did not),
its losses, fair pairwise scores, training on a planted problem and exact resumption."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fmri2img.errors import DataError
from fmri2img.eval.alignment import alignment_metrics
from fmri2img.models.alignment import (
    AlignerConfig,
    EEGfMRIAligner,
    aligners,
    build_aligner,
    load_pretrained_backbone,
)
from fmri2img.models.eeg.backbone import BackboneConfig
from fmri2img.models.eeg.heads import HeadConfig
from fmri2img.training.align import (
    AlignTrainConfig,
    LossWeights,
    alignment_loss,
    load_weights,
    mse_unit,
    proto_distill,
    read_checkpoint,
    train_alignment,
)

torch.set_num_threads(1)

C, T, D = 4, 200, 16
KINDS = ("attention", "flatten", "multitoken_vit")


def _cfg(kind: str = "attention", dropout: float = 0.1, **head: object) -> AlignerConfig:
    options = {"kind": kind, "hidden": 32, "n_queries": 3, "n_tokens": 2, "vit_layers": 1,
               "vit_heads": 2, "vit_ff": 32, "dropout": dropout, **head}
    return AlignerConfig(
        backbone=BackboneConfig(n_layer=1, nhead=2, dim_feedforward=32, drop_prob=dropout),
        head=HeadConfig(**options), n_heads=4, attn_dropout=dropout)


def _model(kind: str = "attention", seed: int = 0, **kw: object) -> EEGfMRIAligner:
    torch.manual_seed(seed)
    return EEGfMRIAligner(C, T, D, _cfg(kind, **kw))


class PairSet(Dataset):
    def __init__(self, eeg: torch.Tensor, fmri: torch.Tensor, labels: torch.Tensor,
                 pairs: torch.Tensor) -> None:
        self.eeg, self.fmri, self.labels, self.pairs = eeg, fmri, labels, pairs

    def __len__(self) -> int:
        return len(self.eeg)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"eeg": self.eeg[i], "fmri": self.fmri[i], "label": self.labels[i],
                "pair": self.pairs[i]}


def _planted(n: int, seed: int = 0, noise: float = 0.3) -> PairSet:
    """EEG = a fixed random linear map of the fMRI vector, tiled over time, plus noise."""
    g = torch.Generator().manual_seed(seed)
    fmri = torch.randn(n, D, generator=g)
    w = torch.randn(C * 50, D, generator=torch.Generator().manual_seed(99)) / D ** 0.5
    eeg = (fmri @ w.T).reshape(n, C, 50).repeat(1, 1, T // 50)
    eeg = eeg + noise * torch.randn(n, C, T, generator=g)
    return PairSet(eeg, fmri, torch.randint(0, 4, (n,), generator=g), torch.arange(n))


# -- the model uses both inputs -----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_output_changes_with_either_input_alone(kind: str) -> None:
    m = _model(kind).eval()
    g = torch.Generator().manual_seed(1)
    eeg, fmri = torch.randn(3, C, T, generator=g), torch.randn(3, D, generator=g)
    with torch.no_grad():
        out = m(eeg, fmri)
        other_fmri = m(eeg, torch.randn(3, D, generator=g))
        other_eeg = m(torch.randn(3, C, T, generator=g), fmri)
    assert out.shape == (3, D)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    # far above float32 noise (1e-7); small for the ViT head at initialisation, whose
    # learned tokens start nearly equal, so that any query mixes nearly equal values
    assert (out - other_fmri).abs().max() > 1e-5
    assert (out - other_eeg).abs().max() > 1e-5
    assert m.eeg_tokens(eeg).shape[1] == m.head.n_pooled >= 2


@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_scores_score_every_candidate_as_its_own_query(kind: str) -> None:
    m = _model(kind).eval()
    g = torch.Generator().manual_seed(2)
    eeg, fmri = torch.randn(5, C, T, generator=g), torch.randn(6, D, generator=g)
    s = m.pairwise_scores(eeg, fmri, batch=2)
    with torch.no_grad():
        tokens = m.eeg_tokens(eeg)
        ref = torch.stack([
            (m.attend(tokens[i:i + 1].expand(6, -1, -1), fmri) * F.normalize(fmri, dim=1))
            .sum(dim=1) for i in range(5)])
    assert s.shape == (5, 6)
    torch.testing.assert_close(s, ref, atol=1e-5, rtol=0)


def test_no_residual_from_the_query() -> None:
    """With all EEG tokens equal the output cannot depend on the fMRI: nothing of the query
    reaches the output except through the attention weights."""
    m = _model().eval()
    tokens = torch.randn(1, 3, D).expand(4, -1, -1).clone()
    tokens[:] = tokens[0, 0]
    with torch.no_grad():
        out = m.attend(tokens, torch.randn(4, D))
    torch.testing.assert_close(out, out[:1].expand(4, -1), atol=1e-6, rtol=0)


def test_single_key_attention_ignores_the_query() -> None:
    """Brain2Image's flaw: one key gets softmax weight 1 whatever the query is."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(D, 4, batch_first=True).eval()
    key = torch.randn(1, 1, D)
    q1, q2 = torch.randn(1, 1, D), torch.randn(1, 1, D) * 10
    with torch.no_grad():
        a, _ = mha(q1, key, key)
        b, _ = mha(q2, key, key)
        keys2 = torch.randn(1, 2, D)
        c, _ = mha(q1, keys2, keys2)
        d, _ = mha(q2, keys2, keys2)
    torch.testing.assert_close(a, b)  # the query is ignored
    assert (c - d).abs().max() > 1e-4  # two keys: it is not
    for kind, head in (("attention", {"n_queries": 1}), ("multitoken_vit", {"n_tokens": 1})):
        with pytest.raises(ValueError, match="at least 2"):
            EEGfMRIAligner(C, T, D, _cfg(kind, **head))
    with pytest.raises(ValueError, match="at least 2"):
        EEGfMRIAligner(1, T, D, _cfg("flatten"))


def test_registry_spec_and_backbone_record() -> None:
    m = _model()
    assert aligners.get("cbramod_attention") is EEGfMRIAligner
    rebuilt = build_aligner(m.spec())
    assert rebuilt.spec() == m.spec()
    assert load_pretrained_backbone(m, m.cfg) == {"init": "random"}
    with pytest.raises(ValueError, match="divide"):
        EEGfMRIAligner(C, T, 18, _cfg())


# -- losses -------------------------------------------------------------------------------

def test_losses_against_hand_computation() -> None:
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    target[1] = target[0]  # two records of one pair
    pairs = torch.tensor([7, 7, 9])
    labels = torch.tensor([0, 1, 0])
    tau = 0.1
    cos = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).T
    torch.testing.assert_close(mse_unit(pred, target), (2 - 2 * cos.diag()).mean())

    def ce(row: list[float], i: int) -> float:
        return -row[i] + math.log(sum(math.exp(v) for v in row))

    logits = (cos / tau).tolist()
    allowed = [[i == j or pairs[i] != pairs[j] for j in range(3)] for i in range(3)]
    rows = [ce([logits[i][j] for j in range(3) if allowed[i][j]],
               [j for j in range(3) if allowed[i][j]].index(i)) for i in range(3)]
    cols = [ce([logits[j][i] for j in range(3) if allowed[j][i]],
               [j for j in range(3) if allowed[j][i]].index(i)) for i in range(3)]
    infonce = 0.5 * (sum(rows) / 3 + sum(cols) / 3)

    emb = torch.randn(3, 5, generator=g)
    protos = []
    for lab in (0, 1):
        rows_of = [i for i in range(3) if labels[i] == lab]
        pe = F.normalize(emb[rows_of].mean(0), dim=0)
        pf = F.normalize(target[rows_of].mean(0), dim=0)
        protos.append(float(((pe - pf) ** 2).sum()))
    proto = sum(protos) / 2
    assert float(proto_distill(emb, target, labels)) == pytest.approx(proto, rel=1e-5)

    w = LossWeights()
    total, parts = alignment_loss(pred, target, labels, pairs, w, tau, eeg_emb=emb)
    assert float(parts["infonce"]) == pytest.approx(infonce, rel=1e-5)
    assert float(total) == pytest.approx(5 * float(parts["mse"]) + infonce + 5 * proto,
                                         rel=1e-5)
    # without the masking the twin would be a negative: a different (larger) loss
    _, unmasked = alignment_loss(pred, target, labels, torch.arange(3), w, tau, eeg_emb=emb)
    assert float(unmasked["infonce"]) != pytest.approx(infonce, rel=1e-3)
    with pytest.raises(ValueError, match="positive"):
        LossWeights(mse=0, infonce=0, proto=0)


# -- training -----------------------------------------------------------------------------

def test_training_on_a_planted_problem_beats_chance(tmp_path: Path) -> None:
    data = _planted(64)
    train = PairSet(*(t[:48] for t in (data.eeg, data.fmri, data.labels, data.pairs)))
    test = PairSet(*(t[48:] for t in (data.eeg, data.fmri, data.labels, data.pairs)))
    m = _model(dropout=0.0, hidden=64, n_queries=4)
    cfg = AlignTrainConfig(epochs=20, batch_size=16, lr=1e-3, seed=0)
    result = train_alignment(m, train, test, cfg, tmp_path, meta={"spec": m.spec()})
    assert result["finished"] and result["epochs_run"] == 20 and result["steps"] == 60
    s = m.pairwise_scores(test.eeg, test.fmri).numpy()
    with torch.no_grad():
        m.eval()
        aligned = m(test.eeg, test.fmri).numpy()
        emb = m.eeg_embedding(test.eeg).numpy()
    res = alignment_metrics(s, aligned, test.fmri.numpy(), ks=(1,), n_bootstrap=100,
                            eeg_emb=emb)
    chance = res["eeg_to_fmri"]["top1_chance"]
    assert chance == pytest.approx(1 / 16)
    assert res["eeg_to_fmri"]["top1"] >= 4 * chance
    assert res["fmri_to_eeg"]["top1"] >= 4 * chance
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = tmp_path / "checkpoints"
    assert (ckpt / "best.safetensors").exists() and (ckpt / "best.json").exists()
    info = load_weights(_model(dropout=0.0, hidden=64, n_queries=4), ckpt / "best.safetensors")
    assert info["epoch"] == result["best_epoch"] and info["meta"]["spec"] == m.spec()


def _run(out: Path, stop_after: int | None = None, meta: dict | None = None,
         **changes: object) -> EEGfMRIAligner:
    m = _model(dropout=0.1)  # dropout on: the random state must resume too
    options: dict = {"epochs": 4, "batch_size": 8, "lr": 1e-3, "seed": 5, **changes}
    train_alignment(m, _planted(20, seed=1), _planted(8, seed=2), AlignTrainConfig(**options),
                    out, meta=meta or {"spec": m.spec()}, stop_after=stop_after)
    return m


def test_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    fresh = _run(tmp_path / "fresh")
    _run(tmp_path / "split", stop_after=2)
    _, info = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert info["epoch"] == 2 and info["step"] == 6
    resumed = _run(tmp_path / "split")
    for (k, a), (_, b) in zip(fresh.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    _, info = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert info["epoch"] == 4 and len(info["history"]) == 4


def test_resume_refuses_another_run(tmp_path: Path) -> None:
    _run(tmp_path, stop_after=1)
    # the cosine schedule spans all epochs: more epochs is another run, not a continuation
    with pytest.raises(DataError, match="epochs"):
        _run(tmp_path, epochs=5)
    with pytest.raises(DataError, match=r"lr, temperature"):
        _run(tmp_path, lr=2e-3, temperature=0.2)
    with pytest.raises(DataError, match=r"meta\.spec"):
        _run(tmp_path, meta={"spec": "another model"})
    _run(tmp_path, num_workers=0, device="cpu")  # options that do not change the result
