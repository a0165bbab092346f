"""``fmri2img analyze`` and ``fmri2img figures`` end to end: the registry, the dry run,
bad input, every analysis on the small simulation, reuse of finished cells, a Dask
cluster giving the same results, and figures redrawn from saved results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fmri2img.cli import main
from fmri2img.experiments import analyses
from fmri2img.experiments.analyses.base import Analysis

PACKAGE = Path(analyses.__file__).parent
NOT_ANALYSES = {"__init__", "base", "runner", "roi_decoding"}


def test_registry_lists_every_analysis_module() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - NOT_ANALYSES
    assert modules == set(analyses.NAMES)
    for name in analyses.NAMES:
        a = analyses.get(name)
        assert isinstance(a, Analysis) and a.name == name and a.title
        opts = a.Options()
        assert isinstance(a.needs(opts), list)
    with pytest.raises(KeyError, match="unknown analysis"):
        analyses.get("phrenology")


def _write_config(study, out: Path, tmp: Path, **extra) -> Path:
    cfg = {
        "imagery_index": study.imagery_index(),
        "perception_index": study.perception_index(),
        "targets": str(study.targets),
        "semantic_table": str(study.words),
        "checkpoints": {m: study.checkpoint(m) for m in study.models},
        "subjects": list(study.subjects),
        "output_dir": str(out),
        "n_bootstrap": 200,
        "n_permutations": 200,
        **extra,
    }
    path = tmp / "analyses.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dry_run_prints_one_line_per_analysis(planted_study, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    cfg = _write_config(planted_study, out, tmp_path)
    assert main(["analyze", "--config", str(cfg), "--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines] == list(analyses.NAMES)
    assert all("subj01, subj02, subj05, subj07" in ln for ln in lines)
    assert not out.exists()


def _err(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_bad_input_stops_with_exit_2_naming_it(planted_study, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    cfg = _write_config(planted_study, out, tmp_path,
                        imagery_index=str(tmp_path / "{subject}_missing.parquet"))
    assert main(["analyze", "--config", str(cfg), "--dry-run"]) == 2
    err = _err(capsys)
    assert "subj01_missing.parquet" in err and "not found" in err
    cfg = _write_config(planted_study, out, tmp_path, analyses=["uncertainty"],
                        checkpoints={"ridge": planted_study.checkpoint("ridge")})
    assert main(["analyze", "--config", str(cfg)]) == 2
    assert "needs a mlp decoder" in _err(capsys)
    cfg = _write_config(planted_study, out, tmp_path, options={"topology": {"nope": 1}})
    assert main(["analyze", "--config", str(cfg), "--dry-run"]) == 2
    assert not out.exists()


def test_all_analyses_end_to_end_reuse_and_figures(planted_study, tmp_path: Path) -> None:
    """Every analysis on the planted small simulation: results/<analysis>.json with a
    finding, summary.md with one line each, PNG and PDF figures; a rerun reuses every
    cell; ``figures`` redraws them from the saved results alone."""
    out = tmp_path / "out"
    cfg = _write_config(planted_study, out, tmp_path)
    assert main(["analyze", "--config", str(cfg)]) == 0
    summary = (out / "summary.md").read_text().splitlines()
    assert len([ln for ln in summary if ln.startswith("- ")]) == len(analyses.NAMES)
    for name in analyses.NAMES:
        res = json.loads((out / "results" / f"{name}.json").read_text())
        assert set(res["subjects"]) == {"subj01", "subj02", "subj05", "subj07"}
        assert res["group"]["finding"]
        assert {"name", "value", "ci", "p"} <= set(res["group"]["effect"] or {"name": 0,
                                                   "value": 0, "ci": 0, "p": 0})
        assert list((out / "figures").glob(f"{name}*.png"))
        assert list((out / "figures").glob(f"{name}*.pdf"))
    cells = sorted((out / "cells").rglob("result.json"))
    assert len(cells) == len(analyses.NAMES) * 4
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    assert main(["analyze", "--config", str(cfg)]) == 0
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps

    redrawn = tmp_path / "redrawn"
    assert main(["figures", "--results-dir", str(out / "results"),
                 "--output-dir", str(redrawn)]) == 0
    for name in analyses.NAMES:
        assert list(redrawn.glob(f"{name}*.png")) and list(redrawn.glob(f"{name}*.pdf"))


def test_local_workers_give_the_same_results(planted_study, tmp_path: Path) -> None:
    """The executor ``ablate`` uses: cells on two local worker processes give the
    in-process results."""
    results = {}
    for how, extra in (("inline", []), ("workers", ["--workers", "2"])):
        out = tmp_path / how
        cfg = _write_config(planted_study, out, tmp_path, analyses=["dimensionality"])
        assert main(["analyze", "--config", str(cfg), "--no-figures", *extra]) == 0
        res = json.loads((out / "results" / "dimensionality.json").read_text())
        results[how] = {s: {k: v for k, v in r.items() if k != "seconds"}
                        for s, r in res["subjects"].items()}
    assert results["inline"] == results["workers"]


def test_figures_refuses_a_folder_without_results(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["figures", "--results-dir", str(tmp_path)]) == 2
    assert "no analysis results" in _err(capsys)


def test_simulator_writes_the_concept_words_in_the_targets_space(planted_study) -> None:
    from fmri2img.data.trials import Targets
    words = Targets.open(planted_study.words)
    targets = Targets.open(planted_study.targets)
    names = {k.split(":", 1)[1] for k in words.keys}
    config = planted_study.truth.info["config"]
    assert {c for cats in config["categories"].values() for c in cats} <= names
    assert {"mammal", "fruit", "stripes", "yellow"} <= names
    assert words.dim == targets.dim
    import numpy as np
    np.testing.assert_allclose(np.linalg.norm(words.embeddings, axis=1), 1, atol=1e-5)
    # the conceptual target "zebra" is the word zebra embedded the same way
    zebra = [k for k, c in zip(targets.keys, targets.captions, strict=True) if c == "zebra"]
    assert zebra
    cos = float(words.rows(["word:zebra"])[0] @ targets.rows(zebra)[0])
    assert cos > 0.9
