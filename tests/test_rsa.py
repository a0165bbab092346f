"""The vision-imagery RSA table: numerics against scipy, a hand-built index with a known
answer, the command end to end, and the simulator's planted crossover."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import pdist

from fmri2img.analysis.rsa import (
    correlation_rdm,
    crossover_contrasts,
    rdm_alignment,
    sign_flip,
    spearman,
    upper,
    zscore_within,
)
from fmri2img.cli import main
from fmri2img.data import cache as cache_mod
from fmri2img.data import index as index_mod

CODES = {"A": ["H", "R", "V", "L", "P", "E"], "B": ["W", "K", "B", "C", "D", "T"]}
KIND = {"A": "simple", "B": "complex"}


# ----------------------------------------------------------------------------- numerics
@settings(max_examples=25, deadline=None)
@given(st.integers(3, 8), st.integers(5, 40), st.integers(0, 10_000))
def test_correlation_rdm_matches_scipy(k: int, v: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(k, v))
    d = correlation_rdm(x)
    np.testing.assert_allclose(upper(d), pdist(x, "correlation"), atol=1e-12)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)


def test_constant_pattern_gives_nan_and_spearman_matches_scipy() -> None:
    x = np.random.default_rng(0).normal(size=(4, 10))
    x[2] = 1.0
    d = correlation_rdm(x)
    assert np.isnan(d[2, [0, 1, 3]]).all() and np.isfinite(d[0, 1])
    assert np.isnan(rdm_alignment(d, d))
    a = np.array([1.0, 2.0, 2.0, 5.0, 3.0])
    b = np.array([2.0, 1.0, 4.0, 4.0, 9.0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert np.isnan(spearman(a, np.ones(5)))


def test_zscore_within_groups() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, size=(12, 5))
    groups = np.repeat([1, 2, 3], 4)
    z = zscore_within(x, groups)
    for g in (1, 2, 3):
        np.testing.assert_allclose(z[groups == g], stats.zscore(x[groups == g], axis=0))


def test_sign_flip_is_exact() -> None:
    values = [0.30, 0.10, -0.05, 0.25]
    r = sign_flip(values, n_resamples=200)
    d = np.array(values)
    null = [abs(np.mean(d * s)) for s in itertools.product([1, -1], repeat=4)]
    expected = np.mean([m >= abs(d.mean()) - 1e-12 for m in null])
    assert r["exact"] and r["p_value"] == pytest.approx(expected)
    assert r["mean"] == pytest.approx(d.mean()) and r["n"] == 4
    assert sign_flip([0.2, None, float("nan")])["n"] == 1


def test_crossover_contrasts() -> None:
    rho = {"s1": {"A": {"lo": 0.5, "hi": 0.2}, "B": {"lo": 0.1, "hi": 0.4}},
           "s2": {"A": {"lo": 0.1, "hi": 0.3}, "B": {"lo": 0.2, "hi": 0.1}},
           "s3": {"A": {"lo": np.nan, "hi": 0.3}, "B": {"lo": 0.2, "hi": 0.1}}}
    c = crossover_contrasts(rho, "lo", "hi", "A", "B")
    assert c["simple_low_minus_high"] == pytest.approx({"s1": 0.3, "s2": -0.2})
    assert c["complex_high_minus_low"] == pytest.approx({"s1": 0.3, "s2": -0.1})
    assert c["interaction"] == pytest.approx({"s1": 0.6, "s2": -0.3})


# ----------------------------------------------------------------------------- fixture
def _write_index(root: Path, subject: str, perm: dict[str, dict[str, str]],
                 seed: int) -> tuple[Path, dict[str, np.ndarray]]:
    """An NSD-Imagery index whose trials carry planted target patterns, without noise:
    per set a vision run and two imagery runs of 8 repetitions of its 6 targets, plus an
    attention run. Imagery trials of target t show the pattern of ``perm[set][t]`` with a
    per-run, per-voxel affine change (which within-run z-scoring undoes)."""
    rng = np.random.default_rng(seed)
    n_vox = 60
    patterns = {s: rng.normal(size=(6, n_vox)) for s in CODES}
    rows, betas = [], []
    run = 0
    for s in CODES:
        for task in ("vision", "imagery", "imagery", "attention"):
            run += 1
            scale, shift = rng.uniform(0.5, 2.0, n_vox), rng.normal(0, 3, n_vox)
            for rep in range(8):
                for i, code in enumerate(CODES[s]):
                    shown = perm[s].get(code, code) if task == "imagery" else code
                    p = patterns[s][CODES[s].index(shown)]
                    if task == "attention":
                        p = rng.normal(size=n_vox)
                    betas.append(p * scale + shift)
                    rows.append({"run": run, "domain": {"vision": "perception"}.get(task, task),
                                 "target_code": None if task == "attention" else code,
                                 "stimulus_set": KIND[s], "repetition": rep, "trial": i})
    x = np.asarray(betas, dtype=np.float32)
    voxels = pd.DataFrame({"x": np.arange(n_vox), "y": 0, "z": 0}).astype(np.int32)
    voxels["nsdgeneral"] = np.int16(1)
    voxels["prf-visualrois"] = np.r_[np.tile(np.arange(1, 7), 4)[:20],
                                     np.zeros(40)].astype(np.int16)
    voxels["streams"] = np.r_[np.ones(20), np.full(10, 2), np.tile([5, 6, 7], 10)].astype(
        np.int16)
    atlases = {"nsdgeneral": {"1": "nsdgeneral"},
               "prf-visualrois": {str(i): n for i, n in enumerate(
                   ["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"], start=1)},
               "streams": {str(i): n for i, n in enumerate(
                   ["early", "midventral", "midlateral", "midparietal", "ventral", "lateral",
                    "parietal"], start=1)}}

    def fill(writer: cache_mod.CacheWriter) -> tuple[list, dict]:
        writer.write_rows(np.arange(len(x)), x)
        return [], {}

    cache_dir, _ = cache_mod.build_cache(
        root / "cache", {"dataset": "nsd-imagery", "subject": subject, "seed": seed},
        n_rows=len(x), voxels=voxels, dtype="float32", fill=fill,
        extra_manifest={"mask": {"atlases": atlases}})
    df = index_mod.empty_frame(len(x))
    table = pd.DataFrame(rows)
    for col in table.columns:
        df[col] = table[col].to_numpy()
    df["subject"] = subject
    df["dataset"] = "nsd-imagery"
    df["split"] = np.where(df["domain"] == "attention", "excluded", "test")
    df["beta_index"] = np.arange(len(x), dtype=np.int32)
    path = root / f"{subject}_imagery.parquet"
    index_mod.write_index(path, df, {"dataset": "nsd-imagery", "subject": subject,
                                     "cache": str(cache_dir)})
    return path, patterns


def _reference_rho(patterns: np.ndarray, perm: dict[str, str], codes: list[str],
                   roi: np.ndarray) -> float:
    """What the table must say, by scipy: imagery's mean pattern of t is the one of
    perm[t], and z-scoring within run maps equal patterns to equal patterns."""
    order = sorted(codes)
    z = stats.zscore(patterns[:, roi], axis=0)
    vis = pdist(np.array([z[codes.index(c)] for c in order]), "correlation")
    img = pdist(np.array([z[codes.index(perm.get(c, c))] for c in order]), "correlation")
    return float(stats.spearmanr(vis, img).statistic)


def test_table_on_planted_index(tmp_path: Path) -> None:
    perms = {
        "subj01": {"A": {}, "B": {}},  # imagery = vision: rho 1 everywhere
        "subj02": {"A": {"H": "R", "R": "H"}, "B": {"W": "T", "T": "K", "K": "W"}},
        "subj03": {"A": {"V": "E", "E": "V"}, "B": {"C": "D", "D": "C"}},
    }
    paths, planted = [], {}
    for n, (subject, perm) in enumerate(perms.items()):
        p, patterns = _write_index(tmp_path, subject, perm, seed=n)
        paths.append(p)
        planted[subject] = patterns
    out = tmp_path / "rsa"
    assert main(["imagery-rsa", "--imagery-index", *map(str, paths), "--output-dir",
                 str(out)]) == 0
    result = json.loads((out / "rsa.json").read_text())
    rois = {"early_visual": np.r_[np.ones(20, bool), np.zeros(40, bool)],
            "higher_visual": np.r_[np.zeros(30, bool), np.ones(30, bool)],
            "nsdgeneral": np.ones(60, bool)}
    expected: dict[str, dict[str, list[float]]] = {s: {r: [] for r in rois} for s in CODES}
    for subject, perm in perms.items():
        for s in CODES:
            for roi, mask in rois.items():
                got = result["subjects"][subject]["alignment"][s][roi]
                want = _reference_rho(planted[subject][s], perm[s], CODES[s], mask)
                assert got["rho"] == pytest.approx(want, abs=1e-9), (subject, s, roi)
                assert got["n_vision"] == 48 and got["n_imagery"] == 96
                expected[s][roi].append(want)
        assert result["subjects"]["subj01"]["alignment"]["A"]["early_visual"]["rho"] == \
            pytest.approx(1.0)
    for s in CODES:
        for roi in rois:
            g = result["group"][s][roi]
            assert g["mean"] == pytest.approx(np.mean(expected[s][roi]))
            assert g["exact"] and g["n"] == 3
            d = np.array(expected[s][roi])
            null = [abs(np.mean(d * sg)) for sg in itertools.product([1, -1], repeat=3)]
            assert g["p_value"] == pytest.approx(np.mean([m >= abs(d.mean()) - 1e-12
                                                          for m in null]))
    lo_hi = expected["A"]["early_visual"], expected["A"]["higher_visual"]
    assert result["contrasts"]["simple_low_minus_high"]["mean"] == pytest.approx(
        np.mean(np.subtract(*lo_hi)))
    text = (out / "rsa.md").read_text()
    assert "| A (simple) | early_visual |" in text and "subj03" in text
    assert (out / "config_resolved.yaml").exists()


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    path, _ = _write_index(tmp_path, "subj01", {"A": {}, "B": {}}, seed=0)
    out = tmp_path / "rsa"
    base = ["imagery-rsa", "--imagery-index", str(path), "--output-dir", str(out)]
    assert main([*base, "--rois", "v1=prf-visualrois:V9"]) == 2
    assert main([*base, "--rois", "x=floc-faces"]) == 2
    assert main(["imagery-rsa", "--imagery-index", str(tmp_path / "none.parquet"),
                 "--output-dir", str(out)]) == 2
    assert main(["imagery-rsa", "--imagery-index", str(path), "--output-dir",
                 str(path)]) == 2
    assert main(["imagery-rsa", "--imagery-index", str(path), str(path), "--output-dir",
                 str(out)]) == 2  # the same subject twice
    assert not out.exists()


def _simulated_table(root: Path, **parameters: float) -> dict:
    from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
    from fmri2img.data.simulate import SimulationConfig, simulate
    from fmri2img.experiments.imagery_rsa import ImageryRSAConfig, run_imagery_rsa

    cfg = SimulationConfig.from_scale("small", seed=0, n_sessions=1, write_images=False,
                                      **parameters)
    simulate(root / "nsd", cfg)
    paths = []
    for s in cfg.subjects:
        paths.append(root / f"subj{s:02d}_imagery.parquet")
        build_imagery_index(ImageryIndexConfig(nsd_root=root / "nsd", subject=s,
                                               output=paths[-1]))
    return run_imagery_rsa(ImageryRSAConfig(imagery_index=paths, output_dir=root / "rsa"))


def test_simulated_table_follows_the_planted_structure_gain(tmp_path: Path) -> None:
    """Reads imagery_simple_gain: imagined bars and crosses that keep their coarse structure
    (orientation, layout) align with vision in early visual cortex; without it (and
    without any coarse structure in imagery) early-visual alignment of set A falls."""
    kept = _simulated_table(tmp_path / "kept", imagery_simple_gain=1.5)
    lost = _simulated_table(tmp_path / "lost", imagery_simple_gain=0.0,
                            imagery_coarse_gain=0.0)
    a_kept = kept["group"]["A"]["early_visual"]
    a_lost = lost["group"]["A"]["early_visual"]
    assert a_kept["n"] == a_lost["n"] == 4
    assert a_kept["mean"] > a_lost["mean"] + 0.2
    assert kept["contrasts"]["simple_low_minus_high"]["mean"] > \
        lost["contrasts"]["simple_low_minus_high"]["mean"]
