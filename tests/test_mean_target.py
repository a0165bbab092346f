"""The mean-target control, the centred cosine, and verdicts that a pull toward the mean
target cannot win (issue: a benchmark that discriminates)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmri2img.analysis.hypotheses import add_comparisons, hypotheses, methods_summary
from fmri2img.eval import metrics as M
from fmri2img.eval.scoring import Scoring, mean_target_control

SCORING = Scoring(ks=(1,), pool_size=300, n_pools=1, n_bootstrap=500, n_permutations=50)


def _space(rng: np.random.Generator, n: int, d: int = 64, shared: float = 3.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Targets that share a mean direction (as CLIP embeddings do), and that mean."""
    mean = rng.standard_normal(d) * shared / np.sqrt(d) * 4
    targets = mean + rng.standard_normal((n, d))
    return targets, targets.mean(axis=0)


def test_centred_cosine_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    T, mu = _space(rng, 20)
    pred = T + rng.standard_normal(T.shape)
    got = M.centred_cosine_per_item(pred, T, mu)
    a, b = pred - mu, T - mu
    want = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # one centre per row gives the same as a shared one
    np.testing.assert_allclose(M.centred_cosine_per_item(pred, T, np.tile(mu, (20, 1))), got)
    # the mean target itself has no direction after centring
    assert np.all(M.centred_cosine_per_item(np.tile(mu, (20, 1)), T, mu) == 0)
    with pytest.raises(ValueError, match="centre must have shape"):
        M.centred_cosine_per_item(pred, T, mu[:5])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), seed=st.integers(0, 10_000))
def test_mean_target_control_is_at_chance_in_identification(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    T, mu = _space(rng, n)
    res = mean_target_control(SCORING, mu, T, centre=mu)
    # a constant prediction ranks every pair one way: 2-way is exactly chance
    assert res["overall"]["two_way"] == pytest.approx(0.5, abs=1e-12)
    assert res["overall"]["cosine_centred"] == 0.0
    lo, hi = res["ci"]["two_way"]
    assert lo <= 0.5 <= hi


def test_mean_target_control_has_high_cosine() -> None:
    rng = np.random.default_rng(1)
    T, mu = _space(rng, 12)
    noisy = T + 2.0 * rng.standard_normal(T.shape)  # a weak but real decoder
    ctrl = mean_target_control(SCORING, mu, T, centre=mu)["overall"]
    real = {k: float(np.mean(v)) for k, v in SCORING.items(noisy, T, centre=mu).items()}
    assert ctrl["cosine"] > real["cosine"]  # cosine alone would rank the control first
    assert real["two_way"] > ctrl["two_way"] + 0.2  # identification does not
    assert real["cosine_centred"] > ctrl["cosine_centred"]


# ------------------------------------------------------------------ verdict rows
def _scores(pred: np.ndarray, T: np.ndarray, mu: np.ndarray) -> dict[str, dict[str, float]]:
    keys = [f"t{i:02d}" for i in range(len(T))]
    per = Scoring(ks=(1,), pool_size=len(T), n_pools=1).items(pred, T, centre=mu)
    return {m: dict(zip(keys, map(float, v), strict=True)) for m, v in per.items()}


def _row(subject: str, method: str, per_target: dict[str, dict[str, float]],
         control: str | None = None, control_of: str | None = None,
         controls: dict[str, Any] | None = None) -> dict[str, Any]:
    keys = sorted(per_target["cosine"])
    return {
        "subject": subject, "method": method, "fraction": 1.0, "protocol": "lto",
        "strategy": {"direct": "direct", "mixed": "mixed", "mixed_vision": "mixed"}[method],
        "loss": None if method == "direct" else "the decoder's",
        "control": control, "control_of": control_of,
        "imagery": {m: {"value": float(np.mean(list(v.values()))), "ci": [0, 1]}
                    for m, v in per_target.items()},
        "per_target": per_target,
        "per_target_set": {k: ("simple" if i % 2 else "complex") for i, k in enumerate(keys)},
        "perception_per_item": None, "transfer_ratios": {}, "train_seconds": 1.0,
        "n_params": 10, "controls": controls or {}}


def _study(shift: float, n_subjects: int = 4, n_targets: int = 12
           ) -> list[dict[str, Any]]:
    """Per subject: direct predictions (targets + noise); ``mixed`` = noisier predictions
    pulled toward the mean target by ``shift`` (what the transfer methods did on the old
    simulated default: cosine up, identification down); its control the same."""
    rows = []
    for s in range(n_subjects):
        rng = np.random.default_rng(100 + s)
        T, mu = _space(rng, n_targets)
        direct = T + 5.0 * rng.standard_normal(T.shape)  # 2-way 0.8-0.95
        mixed = ((1 - shift) * (direct + 5.0 * rng.standard_normal(T.shape))
                 + shift * 4 * mu)  # toward (and along) the mean
        subj = f"subj{s + 1:02d}"
        ctrl = mean_target_control(Scoring(ks=(1,), pool_size=n_targets, n_pools=1,
                                           n_bootstrap=200), mu, T, centre=mu)
        keys = [f"t{i:02d}" for i in range(n_targets)]
        controls = {"mean_target": {
            "prediction": "mean training target",
            "imagery": {k: {"value": v, "ci": ctrl["ci"][k]} for k, v in ctrl["overall"].items()},
            "per_target": {m: dict(zip(keys, map(float, v), strict=True))
                           for m, v in ctrl["per_item"].items()}}}
        rows += [_row(subj, "direct", _scores(direct, T, mu), controls=controls),
                 _row(subj, "mixed", _scores(mixed, T, mu), control="mixed_vision"),
                 _row(subj, "mixed_vision", _scores(mixed, T, mu), control_of="mixed")]
    return rows


@pytest.mark.parametrize("primary", ["two_way", "cosine"])
def test_a_shift_toward_the_mean_target_is_flagged_not_a_gain(primary: str) -> None:
    rows = add_comparisons(_study(shift=0.85), primary, n_resamples=500)
    mixed = [r for r in rows if r["method"] == "mixed"]
    # the shifted predictions gain cosine ...
    assert all(r["vs_direct"]["cosine"]["mean_difference"] > 0 for r in mixed)
    # ... lose identification, and are flagged
    assert all(r["mean_shift"] for r in mixed)
    h = hypotheses(rows, primary, n_resamples=500)
    assert "shift toward the mean target" in h["H2"]["verdict"]
    assert "in 4/4 subjects, not an imagery gain" in h["H2"]["verdict"]
    assert not h["H2"]["verdict"].startswith("imagery gain")
    summary = methods_summary(rows)
    assert summary["mixed"]["mean_shift"] == 4
    assert summary["mixed"]["significant_gain_vs_direct"] == 0  # never counted as a gain
    assert summary["mixed"]["significant_imagery_gain"] == 0
    assert "no method" in h["methods_verdict"]
    assert "shift toward the mean target" in h["methods_verdict"]
    # the mean-target control rows exist, are flagged themselves, and beat mixed on cosine
    ctrl = [r for r in rows if r["method"] == "mean_target"]
    assert len(ctrl) == 4 and all(r["mean_shift"] for r in ctrl)
    assert all(r["imagery"]["two_way"]["value"] == pytest.approx(0.5) for r in ctrl)


def test_no_shift_no_flag_and_a_real_gain_counts() -> None:
    rows = _study(shift=0.0)
    # mixed: less noise than direct (a genuine gain); its control stays at direct's level
    for s in range(4):
        rng = np.random.default_rng(100 + s)
        T, mu = _space(rng, 12)
        better = T + 0.3 * rng.standard_normal(T.shape)
        r = next(r for r in rows if r["subject"] == f"subj{s + 1:02d}" and r["method"] == "mixed")
        r.update(_row(r["subject"], "mixed", _scores(better, T, mu), control="mixed_vision"))
    rows = add_comparisons(rows, "two_way", n_resamples=500)
    assert not any(r["mean_shift"] for r in rows if r["method"] == "mixed")
    summary = methods_summary(rows)
    assert summary["mixed"]["significant_imagery_gain"] >= 3
    assert hypotheses(rows, "two_way", n_resamples=500)["H2"]["verdict"].startswith(
        "imagery gain")


def test_decoders_compared_on_the_same_items() -> None:
    """Two decoders whose marginal CIs overlap still differ when the difference is paired
    over the same images."""
    from fmri2img.analysis.decoders import compare_decoders
    from fmri2img.eval.stats import bootstrap_ci

    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 1.0, 300)  # item difficulty dominates the spread
    items = {f"i{k}": k for k in range(300)}
    a = {k: float(base[i] + 0.01) for k, i in items.items()}
    b = {k: float(base[i] + 0.01 * rng.standard_normal() * 0.1) for k, i in items.items()}
    (res,) = compare_decoders({"a": {"two_way": a}, "b": {"two_way": b}}, 1000, 0)
    diff = res["metrics"]["two_way"]
    assert (res["a"], res["b"]) == ("a", "b") and diff["n"] == 300
    assert diff["ci"][0] > 0  # paired: clearly different
    lo_a, _ = bootstrap_ci(np.array(list(a.values())), n_resamples=1000, seed=0)
    _, hi_b = bootstrap_ci(np.array(list(b.values())), n_resamples=1000, seed=0)
    assert lo_a < hi_b  # marginal CIs overlap
