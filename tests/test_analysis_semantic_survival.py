"""Semantic survival: the subspace basis, the split and the per-target preservation
against numpy/scipy/pandas references, and the analysis on planted, null and changed
simulated data (ground truth: the simulator's imagery gains ``imagery_sem_gain`` vs
``imagery_low_gain`` / ``imagery_coarse_gain`` / ``imagery_simple_gain``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.linalg import orth

from fmri2img.analysis.semantic import part_scores, preservation, semantic_basis, split
from fmri2img.eval.metrics import two_way_per_item
from fmri2img.experiments.analyses import semantic_survival as sem
from fmri2img.experiments.analyses.runner import run_analyze

FAST = {"n_permutations": 300, "n_bootstrap": 300}
SEM_ONLY = {"imagery_sem_gain": 1.0, "imagery_low_gain": 0.0, "imagery_coarse_gain": 0.0,
            "imagery_simple_gain": 0.0}
STRUCTURE_ONLY = {"imagery_sem_gain": 0.0, "imagery_low_gain": 1.0,
                  "imagery_coarse_gain": 1.0, "imagery_simple_gain": 1.0}


def test_full_energy_basis_spans_the_table() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(5, 3)) @ rng.normal(size=(3, 20))  # rank 3 in 20 dims
    b = semantic_basis(table, energy=1.0)
    ref = orth(table.T)
    assert b.vectors.shape == (20, 3) and b.kept_energy == pytest.approx(1.0)
    np.testing.assert_allclose(b.vectors @ b.vectors.T, ref @ ref.T, atol=1e-10)
    assert semantic_basis(table, 1.0, max_rank=2).vectors.shape == (20, 2)
    assert semantic_basis(table, 1.0, max_rank=2).capped


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(3, 12)),
              elements=st.floats(-5, 5)), st.floats(0.05, 1.0))
def test_basis_keeps_the_fewest_directions_reaching_the_energy(table, energy) -> None:
    if np.linalg.norm(table) < 1e-3:
        return
    b = semantic_basis(table, energy)
    k = b.vectors.shape[1]
    s = np.linalg.svd(table, compute_uv=False)
    cum = np.cumsum(s**2) / np.sum(s**2)
    np.testing.assert_allclose(b.vectors.T @ b.vectors, np.eye(k), atol=1e-8)
    assert k <= table.shape[1] - 1
    if k < min(table.shape[1] - 1, int(np.sum(s > s[0] * 1e-10))):
        assert cum[k - 1] >= energy - 1e-9 and (k == 1 or cum[k - 2] < energy)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6))
def test_split_is_an_orthogonal_decomposition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    basis = semantic_basis(rng.normal(size=(4, 10)), 1.0).vectors
    x = rng.normal(size=(6, 10))
    a, b = split(x, basis)
    np.testing.assert_allclose(a + b, x, atol=1e-12)
    np.testing.assert_allclose(np.sum(a * b, axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(split(a, basis)[0], a, atol=1e-12)  # idempotent


def test_part_scores_and_preservation_match_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(6, 16))
    target = np.repeat(np.arange(6), 6)
    imagery = np.tile([False, False, True, True, True, True], 6)
    pred = gallery[target] * np.where(imagery, 0.4, 1.0)[:, None] \
        + rng.normal(size=(36, 16))
    basis = semantic_basis(gallery[:3], 1.0).vectors
    s = part_scores(pred, gallery, target, basis)
    np.testing.assert_allclose(s["full"], two_way_per_item(pred, gallery, target))
    proj = basis @ basis.T
    np.testing.assert_allclose(s["semantic"],
                               two_way_per_item(pred @ proj, gallery @ proj, target))
    p = preservation(s["full"], target, imagery, {"a": [0, 1, 2], "all": range(6)},
                     n_bootstrap=200)
    df = pd.DataFrame({"s": s["full"], "t": target, "img": imagery})
    cell = df.groupby(["t", "img"])["s"].mean().unstack()
    ref = (cell[True] - 0.5) / (cell[False] - 0.5)
    np.testing.assert_allclose(np.where(cell[False] > 0.5, ref, np.nan), p.ratio)
    v, i = cell[False].mean(), cell[True].mean()
    assert p.groups["all"]["ratio"] == pytest.approx((i - 0.5) / (v - 0.5))
    assert p.groups["a"]["n_targets"] == 3


def _group(study, tmp: Path, name: str = "s") -> dict:
    torch.set_num_threads(1)
    cfg = study.analyze_config(tmp / name, ["semantic_survival"], **FAST)
    return run_analyze(cfg)["semantic_survival"]


def test_planted_semantics_survive_better(planted_study, tmp_path: Path) -> None:
    """Ground truth: ``imagery_sem_gain`` 0.6 vs ``imagery_coarse_gain`` /
    ``imagery_low_gain`` 0.15 and ``imagery_simple_gain`` 0.6: semantic - rest > 0,
    significant, and smaller for simple shapes (whose structure imagery keeps) than for
    complex images."""
    cfg = planted_study.truth.info["config"]
    assert cfg["imagery_sem_gain"] > cfg["imagery_coarse_gain"]
    assert cfg["imagery_simple_gain"] > cfg["imagery_coarse_gain"]
    res = _group(planted_study, tmp_path)
    g = res["group"]
    assert g["effect"]["value"] > 0 and g["significant"]
    assert g["difference_by_set"]["simple"] < g["difference_by_set"]["complex"]
    for r in res["subjects"].values():
        assert r["decomposition"]["testable"] and len(r["full"]["targets"]) == 18
        assert 0 < r["full"]["groups"]["all"]["ratio"] < 1
    assert (tmp_path / "s" / "figures" / "semantic_survival.png").exists()


def test_null_reports_no_difference(null_study, tmp_path: Path) -> None:
    """Ground truth: under --null imagery is perception (all gains 1): no significant
    semantic - rest difference, and the image targets' ratio near 1."""
    g = _group(null_study, tmp_path)["group"]
    assert not g["significant"]
    assert abs(g["ratios"]["full"]["simple"]["ratio"] - 1) < 0.15
    assert abs(g["ratios"]["full"]["complex"]["ratio"] - 1) < 0.15


def test_without_semantic_table_the_ratios_remain(planted_study, tmp_path: Path) -> None:
    cfg = planted_study.analyze_config(tmp_path / "n", ["semantic_survival"], **FAST)
    cfg = cfg.model_copy(update={"semantic_table": None, "subjects": [1]})
    res = run_analyze(cfg)["semantic_survival"]
    r = res["subjects"]["subj01"]
    assert r["testable"] and not r["decomposition"]["testable"]
    assert "no semantic_table" in r["decomposition"]["why"]
    assert res["group"]["effect"] is None and "not testable" in res["group"]["finding"]
    with pytest.raises(ValueError):
        sem.Options(decomposition_sets=[])


@pytest.fixture(scope="module")
def gain_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from analysis_fixture import build_study
    out = {}
    for name, over in (("semantic", SEM_ONLY), ("structure", STRUCTURE_ONLY)):
        study = build_study(tmp_path_factory.mktemp(name), subjects=(1, 5), **over)
        out[name] = _group(study, tmp_path_factory.mktemp(f"{name}_out"))["group"]
    return out


def test_the_difference_follows_the_gains(gain_settings) -> None:
    """Ground truth: ``imagery_sem_gain`` = 1 with the structure gains
    (``imagery_low_gain``, ``imagery_coarse_gain``, ``imagery_simple_gain``) 0, and the
    reverse: semantic - rest is positive in the first, negative in the second, both
    significant."""
    on, off = gain_settings["semantic"], gain_settings["structure"]
    assert on["effect"]["value"] > 0 and on["significant"]
    assert off["effect"]["value"] < 0 and off["significant"]
    assert on["part_ratio"]["semantic"] > off["part_ratio"]["semantic"]
    assert on["part_ratio"]["rest"] < off["part_ratio"]["rest"]
