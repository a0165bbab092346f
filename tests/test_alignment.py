"""Pairing of THINGS and NSD images (greedy one-to-one, block-wise candidates), cluster
labels, and the retrieval metrics of the EEG-fMRI alignment."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from fmri2img.eval.alignment import alignment_metrics, eeg_only_metrics, retrieval_hits
from fmri2img.targets.pairing import cluster_labels, greedy_pairs, top_candidates

torch.set_num_threads(1)


def _brute_force(a: np.ndarray, b: np.ndarray, n_pairs: int, factor: int):
    """The definition, on the full matrix: best scores first (ties by ia, ib), greedy."""
    au = a / np.linalg.norm(a, axis=1, keepdims=True)
    bu = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = au @ bu.T
    ia, ib = np.divmod(np.arange(s.size), s.shape[1])
    order = np.lexsort((ib, ia, -s.ravel()))[: n_pairs * factor]
    used_a, used_b, out = set(), set(), []
    for k in order:
        if ia[k] in used_a or ib[k] in used_b:
            continue
        used_a.add(ia[k])
        used_b.add(ib[k])
        out.append((ia[k], ib[k], s.ravel()[k]))
        if len(out) == n_pairs:
            break
    return out


def test_planted_pairs_are_recovered_exactly() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 32))
    perm = rng.permutation(60)[:40]
    # b: noisy copies of 40 rows of a, plus 25 unrelated distractors
    b = np.vstack([a[perm] + 0.05 * rng.standard_normal((40, 32)),
                   rng.standard_normal((25, 32))])
    ia, ib, scores = greedy_pairs(a, b, 40, block=7)
    assert len(ia) == 40
    assert dict(zip(ib.tolist(), ia.tolist(), strict=True)) == {j: int(perm[j]) for j in range(40)}
    assert np.all(np.diff(scores) <= 0)  # best first
    assert scores.min() > 0.99


def test_pairs_are_one_to_one() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((80, 6)), rng.standard_normal((50, 6))
    ia, ib, _ = greedy_pairs(a, b, 30, candidate_factor=20)
    assert len(np.unique(ia)) == len(ia) == 30
    assert len(np.unique(ib)) == len(ib) == 30


def test_fewer_pairs_when_candidates_run_out() -> None:
    # one hub column of b is everyone's nearest neighbour: the 3 best scores all hold it,
    # so the greedy match keeps exactly its best partner
    a = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2]])
    b = np.array([[1.0, 0.05], [-1.0, 0.0], [0.0, -1.0]])
    ia, ib, scores = greedy_pairs(a, b, 3, candidate_factor=1)
    assert ia.tolist() == [0] and ib.tolist() == [0]
    assert scores[0] == pytest.approx(1.0 / np.hypot(1.0, 0.05))
    ia, ib, _ = greedy_pairs(a, b, 3, candidate_factor=3)  # all 9 candidates: 3 pairs
    assert len(ia) == 3 and len(set(ib.tolist())) == 3


@pytest.mark.parametrize("block", [1, 3, 11, 4096])
def test_block_merge_equals_brute_force(block: int) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((37, 5)), rng.standard_normal((53, 5))
    ia, ib, s = greedy_pairs(a, b, 12, candidate_factor=3, block=block)
    expected = _brute_force(a, b, 12, 3)
    assert list(zip(ia.tolist(), ib.tolist(), strict=True)) == [(i, j) for i, j, _ in expected]
    np.testing.assert_allclose(s, [x for _, _, x in expected], rtol=0, atol=1e-12)


def test_ties_are_broken_the_same_way_for_any_block_size() -> None:
    # integer vectors: many exactly equal cosines, also at the candidate cut
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, (30, 3)).astype(float) + np.array([1.0, 0, 0])
    b = rng.integers(0, 2, (25, 3)).astype(float) + np.array([1.0, 0, 0])
    ref_cand = top_candidates(a, b, 40, block=10_000)
    ref = greedy_pairs(a, b, 8, candidate_factor=5, block=10_000)
    for block in (1, 4, 9):
        cand = top_candidates(a, b, 40, block=block)
        for x, y in zip(cand, ref_cand, strict=True):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(greedy_pairs(a, b, 8, candidate_factor=5, block=block), ref,
                        strict=True):
            np.testing.assert_array_equal(x, y)
    expected = _brute_force(a, b, 8, 5)
    assert list(zip(ref[0].tolist(), ref[1].tolist(), strict=True)) == [
        (i, j) for i, j, _ in expected]


def test_pairing_input_checks() -> None:
    a = np.ones((4, 3))
    with pytest.raises(ValueError, match="dims"):
        greedy_pairs(a, np.ones((4, 2)), 2)
    with pytest.raises(ValueError, match="NaN"):
        greedy_pairs(np.full((4, 3), np.nan), a, 2)
    with pytest.raises(ValueError, match="n_pairs"):
        greedy_pairs(a, a, 0)
    with pytest.raises(ValueError, match="k must"):
        cluster_labels(a, a, 9, seed=0)
    with pytest.raises(ValueError, match="one row per pair"):
        cluster_labels(a, np.ones((3, 3)), 2, seed=0)


def test_cluster_labels_are_deterministic_and_follow_the_a_member() -> None:
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((3, 8)) * 10
    which = rng.integers(0, 3, 40)
    a = centres[which] + rng.standard_normal((40, 8))
    b = centres[which] + rng.standard_normal((40, 8))
    l1 = cluster_labels(a, b, 3, seed=42)
    l2 = cluster_labels(a, b, 3, seed=42)
    np.testing.assert_array_equal(l1, l2)
    assert l1.dtype == np.int64 and l1.shape == (40,)
    # well separated blobs: the labels are the blobs up to renaming
    assert len({(int(x), int(y)) for x, y in zip(l1, which, strict=True)}) == 3


# -- metrics ------------------------------------------------------------------------------

def test_retrieval_hits_count_ties_fairly() -> None:
    hits, chance = retrieval_hits(np.zeros((5, 5)), 1)
    np.testing.assert_allclose(hits, 0.2)
    np.testing.assert_allclose(chance, 0.2)
    s = np.array([[0.9, 0.1, 0.9], [0.0, 0.5, 0.2], [0.3, 0.4, 0.1]])
    hits, _ = retrieval_hits(s, 1)
    # row 0: tied with one other -> 1/2; row 1: best -> 1; row 2: worst -> 0
    np.testing.assert_allclose(hits, [0.5, 1.0, 0.0])
    hits2, _ = retrieval_hits(s, 2)
    np.testing.assert_allclose(hits2, [1.0, 1.0, 0.0])


def test_records_of_one_pair_are_not_each_others_competitors() -> None:
    # rows 0 and 1 belong to one pair: row 0's best wrong column is its twin
    s = np.array([[0.5, 0.9, 0.1], [0.9, 0.5, 0.1], [0.1, 0.1, 0.5]])
    plain, _ = retrieval_hits(s, 1)
    grouped, chance = retrieval_hits(s, 1, groups=[7, 7, 8])
    np.testing.assert_allclose(plain, [0, 0, 1])
    np.testing.assert_allclose(grouped, [1, 1, 1])
    np.testing.assert_allclose(chance, [0.5, 0.5, 1 / 3])


def test_alignment_metrics_both_directions_and_control() -> None:
    rng = np.random.default_rng(5)
    f = rng.standard_normal((30, 8))
    s = rng.standard_normal((30, 30))
    s[np.arange(30), np.arange(30)] = 10.0  # every true pair wins, both ways
    s[3, :] = 20.0  # ... except that row 3 ties everywhere and beats every other column
    res = alignment_metrics(s, f + 0.01, f, ks=(1, 10), n_bootstrap=200, seed=0, eeg_emb=-f)
    assert res["mse"] < 1e-3 and res["cosine"] > 0.999
    assert res["eeg_to_fmri"]["top1"] == pytest.approx(29 / 30 + 1 / 30 / 30)
    assert res["fmri_to_eeg"]["top1"] == pytest.approx(1 / 30)
    assert res["eeg_to_fmri"]["top1_chance"] == pytest.approx(1 / 30)
    assert res["eeg_to_fmri"]["top10_chance"] == pytest.approx(10 / 30)
    lo, hi = res["eeg_to_fmri"]["top1_ci"]
    assert lo <= res["eeg_to_fmri"]["top1"] <= hi
    ctrl = res["eeg_only"]
    assert ctrl["cosine"] == pytest.approx(-1.0)
    assert ctrl["eeg_to_fmri"]["top1"] == 0.0
    assert eeg_only_metrics(f, f, ks=(1,), n_bootstrap=50)["fmri_to_eeg"]["top1"] == 1.0
    with pytest.raises(ValueError, match="S must be"):
        alignment_metrics(s[:5], f, f)
