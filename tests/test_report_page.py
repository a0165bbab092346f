"""The study's HTML page: the renderer (escaping, embedded figures, nothing external), the
Markdown tables it reads, the sections of a study folder, and the page in a browser."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from browser import find_chromium, render_dom
from PIL import Image
from pydantic import ValidationError

from fmri2img.errors import DataError
from fmri2img.report.html_page import (
    Code,
    Figure,
    Section,
    Table,
    markdown_blocks,
    markdown_table,
    render_page,
)
from fmri2img.report.study_page import (
    UNTRAINED,
    ReportConfig,
    run_report,
    study_sections,
    write_study_report,
)

# excerpts of the files a small study wrote (fmri2img study --scale small --subjects 1 5)
RESULTS_MD = """\
| subject | method | loss | fraction | imagery cosine | imagery 2-way | gain vs direct (two_way) | flags | params |
|---|---|---|---|---:|---:|---:|---|---:|
| subj01 | direct | nan | 1 | 0.517 [0.441, 0.602] | 0.841 [0.742, 0.924] | – | – | – |
| subj01 | adapter_linear | cosine | 1 | 0.705 [0.594, 0.799] | 0.864 [0.780, 0.932] | 0.023 [-0.045, 0.091] (p=0.781) | – | 262,656 |
| subj01 | imagery_only | the decoder's | 1 | 0.606 [0.389, 0.789] | 0.583 [0.409, 0.742] | -0.258 [-0.439, -0.076] (p=0.068) | mean shift | – |
"""  # noqa: E501
HYPOTHESES_MD = """\
# Hypotheses

Primary metric: **2-way identification** (cosine beside it).

## H1: imagery/vision transfer ratio (2-way identification) in the 0.6-0.8 band

**Verdict:** undecided: mean 0.79 with CI [0.70, 0.88] overlaps the band

- subj01: 0.696 [0.511, 0.872]; cosine ratio 0.643 [0.580, 0.703]
- subj05: 0.876 [0.789, 0.953]; cosine ratio 0.618 [0.560, 0.666]

## Transfer methods: gain over direct transfer

| method | loss | mean gain vs direct (2-way identification) | control | beats control |
|---|---|---:|---|---:|
| adapter_linear | cosine | +0.000 | `adapter_mlp_vision` | 2/2 |
| adapter_mlp_vision | cosine | -0.083 | (control of adapter_mlp) | - |
"""
RSA_MD = """\
# Vision-imagery RSA

Method: betas z-scored within run per voxel; alignment = Spearman rho of the RDMs.

| set | ROI | subj01 | subj05 | mean | SD | 95% CI | p |
|---|---|---:|---:|---:|---:|---:|---:|
| A (simple) | early_visual | +0.257 | -0.714 | **-0.229** | 0.687 | [-0.714, +0.257] | 1 |
| B (complex) | nsdgeneral | +0.579 | +0.664 | **+0.621** | 0.061 | [+0.579, +0.664] | 0.5 |

Crossover contrasts (per subject, then the group sign-flip test):

| contrast | subj01 | subj05 | mean | p |
|---|---:|---:|---:|---:|
| crossover (sum of both) | +0.707 | -0.443 | +0.132 | 1 |
"""
ANALYSES_MD = """\
# Perception vs imagery: analyses

- **Topological signatures** (`topology`): contraction ratio 0.382 [0.349, 0.411]
- **Individual imagery fingerprints** (`fingerprints`): not testable: 2 testable subjects
"""
ALIGN_MD = """\
# EEG-fMRI alignment, test split (6 pairs)

one item per pair (its records averaged)

| measure | aligned | p | EEG-only control | p | chance |
|---|---|---|---|---|---|
| cosine | 0.171 [-0.016, 0.356] | | -0.056 [-0.210, 0.128] | | |
| eeg to fmri top-1 | 0.000 [0.000, 0.000] | 1 | 0.167 [0.000, 0.500] | 0.629 | 0.167 |
"""


def _metric(value: float, lo: float, hi: float, p: float | None = None) -> dict[str, Any]:
    return {"value": value, "ci": [lo, hi], "p": p}


def _h1_row(subject: str, model: str) -> dict[str, Any]:
    return {
        "subject": subject, "model": model,
        "perception": {"cosine": _metric(0.913, 0.903, 0.923),
                       "retrieval_top1": _metric(0.98, 0.94, 1.0),
                       "two_way": _metric(1.0, 1.0, 1.0), "cosine_centred": None},
        "perception_pool": 50, "perception_per_item": {},
        "imagery": {"cosine": _metric(0.517, 0.441, 0.602),
                    "retrieval_top1": _metric(0.25, 0.0, 0.5),
                    "two_way": _metric(0.841, 0.742, 0.924), "cosine_centred": None},
        "vision": {"cosine": _metric(0.78, 0.7, 0.857), "two_way": _metric(1.0, 1.0, 1.0)},
        "mean_target": None,
        "transfer_ratio": {"metric": "two_way", "value": 0.696, "ci": [0.511, 0.872]},
        "transfer_ratio_cosine": {"value": 0.643, "ci": [0.58, 0.703]},
        "repetitions_matched": True,
    }


def _png(path: Path, size: tuple[int, int] = (40, 30), color: str = "steelblue") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_study(root: Path, *, skip: Iterable[str] = (),
                reconstruction: bool | None = None) -> Path:
    """A study folder shaped like ``fmri2img study``'s, small; ``skip`` leaves parts out
    as the study does when they are not run; ``reconstruction`` adds the reconstruction
    step's output, trained (False) or an untrained test pipeline (True)."""
    perception = [{"subject": s, "dataset": "nsd", "rows": 1500, "trials": 1500,
                   "images": 500, "split_rows": {"train": 1215, "test": 150, "val": 135},
                   "split_images": {"test": 50, "train": 405, "val": 45},
                   "single_trial_rows": 1500, "voxels": 300,
                   "voxels_per_roi": {"nsdgeneral": 300, "V1v": 10, "early": 63},
                   "cache": "/x"} for s in ("subj01", "subj05")]
    imagery = [{"subject": s, "betas": 720, "voxels": 300,
                "by_task": {"attention": 288, "imagery": 288, "perception": 144},
                "by_task_and_set": {"imagery/simple": 96, "imagery/complex": 96,
                                    "imagery/conceptual": 96},
                "scored": 432, "vivid_fraction": 0.598} for s in ("subj01", "subj05")]
    result: dict[str, Any] = {"root": str(root / "data"), "perception": perception,
                              "imagery": imagery, "rsa": {"group": {}}}
    result["h1"] = [_h1_row(s, m) for s in ("subj01", "subj05") for m in ("ridge", "mlp")]
    diff = {"mean_difference": 0.007, "ci": [0.003, 0.012], "p_value": 0.01, "n": 50}
    result["h1_decoders"] = [{"subject": s, "a": "ridge", "b": "mlp",
                              "metrics": {"cosine": diff, "two_way": {**diff, "ci": [0, 0.001]}}}
                             for s in ("subj01", "subj05")]
    result["ablation"] = {"output_dir": str(root / "ablation"), "seconds": 106.2, "hypotheses": {
        "primary_metric": "two_way",
        "H1": {"effect": "mean imagery/vision ratio", "verdict": "undecided: <0.6 & >0.8"},
        "H2": {"effect": "mixed - direct", "verdict": "not supported"},
        "H3": {"effect": "adapter - finetune", "verdict": "not supported"},
        "methods_verdict": "no method shows an imagery gain"}}
    result["analyses"] = {"output_dir": str(root / "analyses"), "seconds": 43.5,
                          "findings": {"topology": "contraction ratio 0.382 [0.349, 0.411]"}}
    result["eeg"] = {"n_test_images": 40, "decoders": {}, "alignment": {"n_test_pairs": 6}}
    result["seconds"] = 186.0
    for part in skip:
        result.pop(part)
    _write(root / "study_result.json", json.dumps(result))
    _write(root / "study_config.yaml", "out: /tmp/s\nscale: small\nablation_model: ridge\n")
    if "ablation" not in skip:
        _write(root / "ablation" / "results_table.md", RESULTS_MD)
        _write(root / "ablation" / "hypotheses.md", HYPOTHESES_MD)
        _png(root / "ablation" / "figures" / "bar_overall_metric.png", (400, 100))
        _png(root / "ablation" / "figures" / "retrieval_at_k.png")
    if "rsa" not in skip:
        _write(root / "rsa" / "rsa.md", RSA_MD)
    if "analyses" not in skip:
        _write(root / "analyses" / "summary.md", ANALYSES_MD)
        _png(root / "analyses" / "figures" / "topology.png")
    for mode in ("perception", "imagery"):
        _png(root / "eval" / "subj01" / "ridge" / mode / "figures" / "retrieval_examples.png")
    if "eeg" not in skip:
        ev = root / "eeg" / "decoders" / "sub-01" / "eeg_conv" / "eval"
        _write(ev / "metrics.json", json.dumps({
            "subject": "sub-01", "gallery_size": 40,
            "overall": {"retrieval_top1": 0.025, "retrieval_top5": 0.15, "two_way": 0.527,
                        "cosine": 0.002},
            "ci": {"retrieval_top1": [0.0, 0.075], "retrieval_top5": [0.05, 0.275],
                   "two_way": [0.445, 0.612], "cosine": [-0.054, 0.064]},
            "chance": {"retrieval_top1": 0.025, "retrieval_top5": 0.125, "two_way": 0.5},
            "p_vs_chance": {"retrieval_top1": 0.684}}))
        _png(ev / "figures" / "similarity_distributions.png")
        _write(root / "eeg" / "pairs" / "pairs_summary.json", json.dumps({
            "n_pairs": 40, "n_things_images": 96, "n_nsd_images": 500,
            "cosine": {"min": 0.91, "median": 0.995, "max": 0.998},
            "truth": {"n_true": 30, "recovered": 30, "recall": 1.0, "precision": 0.75}}))
        _write(root / "eeg" / "aligner" / "eval_test" / "README.md", ALIGN_MD)
    if reconstruction is not None:
        run = root / "reconstruction" / "subj01" / "ridge"
        _png(run / "grid.png", (60, 120))
        _write(run / "reconstruct.json", json.dumps(
            {"backend": "unclip", "untrained_test_pipeline": reconstruction}))
        _write(run / "image_metrics.json", json.dumps({"two_way_convention": "mindeye2",
            "domains": {
                "vision": {"n_items": 12, "pixcorr": {"mean": 0.512, "ci": [0.4, 0.6]},
                           "alexnet5": {"unavailable": "no local weights", "label": "AlexNet"}},
                "imagery": {"n_items": 12, "pixcorr": {"mean": 0.1, "ci": [0.0, 0.2]},
                            "alexnet5": {"unavailable": "no local weights"}}}}))
    return root


def _all_tables(sections: list[Section]) -> list[Table]:
    """Every table in the order the page shows them."""
    return [t for s in sections
            for t in [*s.tables, *(b for b in s.blocks if isinstance(b, Table))]]


def _all_figures(sections: list[Section]) -> list[Figure]:
    return [f for s in sections
            for f in [*(b for b in s.blocks if isinstance(b, Figure)), *s.figures]]


# ----------------------------------------------------------------------------- renderer
def test_render_page_escapes_every_text(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    page = render_page(f"T {evil}", f"sub {evil}", [Section(
        f"S {evil}", intro=f"intro {evil} **strong**",
        tables=[Table(f"tab {evil}", [f"c {evil}", "v"], [[f"a {evil} & b", "1.0"]],
                      how_to_read=f"how {evil}")],
        figures=[Figure(f"fig {evil}", tmp_path / "none.png", f"fh {evil}", label=evil)],
        notes=[f"note {evil}"], blocks=[f"para {evil}", Code(f"code {evil}", "c.yaml")])])
    assert "alert(1)</script>" not in page
    # 14 texts; the page title and the section title are each shown twice
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 16
    assert "<strong>strong</strong>" in page
    assert "a &lt;script&gt;alert(1)&lt;/script&gt; &amp; b" in page
    assert page.startswith("<!DOCTYPE html>")


def test_figures_are_embedded_and_missing_ones_said(tmp_path: Path) -> None:
    png = _png(tmp_path / "a.png")
    jpg = tmp_path / "b.jpg"
    Image.new("RGB", (8, 8), "red").save(jpg)
    svg = tmp_path / "c.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    pdf = tmp_path / "d.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    figs = [Figure("png", png), Figure("jpg", jpg), Figure("svg", svg),
            Figure("gone", tmp_path / "gone.png"), Figure("pdf", pdf)]
    page = render_page("t", "s", [Section("S", figures=figs)])
    assert page.count("<img") == 3
    uris = re.findall(r'<img src="data:([^;]+);base64,([^"]+)"', page)
    assert [m for m, _ in uris] == ["image/png", "image/jpeg", "image/svg+xml"]
    assert base64.b64decode(uris[0][1]) == png.read_bytes()
    assert f"figure missing: {tmp_path / 'gone.png'}" in page
    assert f"figure not embeddable (PNG, JPEG or SVG only): {pdf}" in page


def test_page_references_nothing_outside_itself(tmp_path: Path) -> None:
    page = render_page("t", "see https://example.org", [Section(
        "S", notes=["http://x.org/a.png"], tables=[Table("t", ["url"], [["https://a.b/c"]])],
        figures=[Figure("f", _png(tmp_path / "a.png"))])])
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"<script[^>]*\ssrc", page)
    assert re.findall(r'href="([^"]*)"', page) == ["#sec-1"]


def test_numbers_right_aligned_and_wide_figures_span_the_grid(tmp_path: Path) -> None:
    t = Table("t", ["name", "value", "p"], [["a", "0.5 [0.4, 0.6]", "p<0.001"],
                                          ["b", "–", "0.5"]])
    wide = Figure("wide", _png(tmp_path / "w.png", (400, 100)))
    page = render_page("t", "s", [Section("S", tables=[t], figures=[wide])])
    assert '<th>name</th><th class="num">value</th><th class="num">p</th>' in page
    assert '<td>a</td><td class="num">0.5 [0.4, 0.6]</td>' in page
    assert '<figure class="wide">' in page


# ----------------------------------------------------------------------------- Markdown
def test_markdown_table_reads_the_study_files() -> None:
    (t,) = markdown_table(RESULTS_MD, "Ablation", "how")
    assert (t.title, t.how_to_read) == ("Ablation", "how")
    assert t.columns[:3] == ["subject", "method", "loss"] and len(t.columns) == 9
    assert len(t.rows) == 3 and all(len(r) == 9 for r in t.rows)
    assert t.rows[2][6] == "-0.258 [-0.439, -0.076] (p=0.068)"
    rsa = markdown_table(RSA_MD, "RSA")
    assert [x.title for x in rsa] == ["RSA", "RSA (2)"]
    assert rsa[0].rows[0][4] == "**-0.229**" and rsa[1].columns[0] == "contrast"
    (h,) = markdown_table(HYPOTHESES_MD, "H")
    assert h.rows[0][3] == "`adapter_mlp_vision`" and h.rows[1][4] == "-"


def test_markdown_table_edge_cases() -> None:
    md = ("text before\n\n"
          "a | b\n:--|--:\nx \\| y | 1\nshort\n\n"  # no outer bars; escaped bar; short row
          "| h1 | h2 |\n|---|---|\n| 1 | 2 | 3 |\n| 4 |\n\n"  # long row cut, short padded
          "| not | a |\n|---|\n| table | here |\n")  # separator does not match the header
    t1, t2 = markdown_table(md, "T")
    assert t1.columns == ["a", "b"] and t1.rows == [["x | y", "1"], ["short", ""]]
    assert t2.rows == [["1", "2"], ["4", ""]]
    assert markdown_table("", "T") == [] and markdown_table("no | table", "T") == []
    assert markdown_table("```\n| a |\n|---|\n| 1 |\n```", "T") == []


def test_markdown_blocks_keep_the_order() -> None:
    blocks = markdown_blocks(HYPOTHESES_MD)
    assert blocks[0] == "**Hypotheses**"
    assert blocks[1].startswith("Primary metric: **2-way identification**")
    assert blocks[3].startswith("**Verdict:**")
    assert blocks[4].splitlines() == ["• subj01: 0.696 [0.511, 0.872]; cosine ratio 0.643 "
                                      "[0.580, 0.703]", "• subj05: 0.876 [0.789, 0.953]; "
                                      "cosine ratio 0.618 [0.560, 0.666]"]
    assert isinstance(blocks[-1], Table) and blocks[-1].columns[0] == "method"
    page = render_page("t", "s", [Section("S", blocks=blocks)])
    assert "<li>subj01: 0.696" in page and "<code>adapter_mlp_vision</code>" in page


# ----------------------------------------------------------------------------- study page
def test_study_sections_of_a_full_study(tmp_path: Path) -> None:
    sections = study_sections(write_study(tmp_path / "s"))
    assert [s.title.split(":")[0].split(" ")[0] for s in sections] == [
        "Summary", "Dataset", "H1", "Transfer", "Vision-imagery", "Perception-vs-imagery",
        "EEG", "Configuration"]
    by = {s.title.split(":")[0].split(" ")[0]: s for s in sections}
    perc, rois, img = by["Dataset"].tables
    assert perc.rows[0] == ["subj01", "nsd", "1500", "1500", "405/45/50", "300"]
    assert rois.columns == ["subject", "nsdgeneral", "V1v", "early"]
    assert img.rows[1][1:] == ["144", "288", "288", "96", "96", "96", "432", "60%"]
    p, i, d = by["H1"].tables
    assert p.rows[0][2:] == ["0.980 [0.940, 1.000]", "50", "1.000 [1.000, 1.000]",
                             "0.913 [0.903, 0.923]"]
    assert i.columns[6] == "ratio (two_way)" and i.rows[0][6] == "0.696 [0.511, 0.872]"
    assert d.rows[0] == ["subj01", "ridge - mlp", "–", "+0.007 [+0.000, +0.001]",
                         "+0.007 [+0.003, +0.012] *"]
    assert [f.title for f in by["H1"].figures] == [
        "subj01 · ridge · perception: retrieval examples",
        "subj01 · ridge · imagery: retrieval examples"]
    eeg = by["EEG"].tables[0]
    assert eeg.rows[0][:6] == ["sub-01", "eeg_conv", "40", "0.025 [0.000, 0.075]", "0.025",
                               "p=0.684"]
    assert by["Configuration"].blocks[0].text.startswith("out: /tmp/s")  # type: ignore[union-attr]
    tables, figures = _all_tables(sections), _all_figures(sections)
    assert all(t.how_to_read for t in tables), [t.columns for t in tables if not t.how_to_read]
    assert all(f.how_to_read for f in figures) and all(f.path.exists() for f in figures)


def test_parts_not_run_are_left_out_with_a_note(tmp_path: Path) -> None:
    sections = study_sections(write_study(tmp_path / "s",
                                          skip=("ablation", "rsa", "analyses", "eeg")))
    notes = {s.title: s.notes for s in sections}
    assert "Summary" not in notes and "Reconstructions" not in notes
    not_run = [t for t, n in notes.items() if n and n[0].startswith("Not run:")]
    assert len(not_run) == 4 and any("--no-eeg" in n[0] for n in notes.values() if n)
    assert all(not s.tables and not s.figures for s in sections if s.title in not_run)


def test_untrained_reconstructions_are_labelled(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", reconstruction=True)
    (rec,) = [s for s in study_sections(study) if s.title == "Reconstructions"]
    (fig,) = [b for b in rec.blocks if isinstance(b, Figure)]
    assert fig.label == UNTRAINED and fig.path == study / "reconstruction/subj01/ridge/grid.png"
    (t,) = [b for b in rec.blocks if isinstance(b, Table)]
    assert t.columns == ["metric", "perception", "imagery"]
    assert t.rows[0] == ["n images", "12", "12"]
    assert t.rows[1] == ["PixCorr ↑", "0.512 [0.400, 0.600]", "0.100 [0.000, 0.200]"]
    assert t.rows[2][1] == "unavailable (no local weights)"
    page = write_study_report(study).read_text()
    assert UNTRAINED in page and '<div class="label">' + UNTRAINED in page
    trained = write_study(tmp_path / "t", reconstruction=False)
    (rec,) = [s for s in study_sections(trained) if s.title == "Reconstructions"]
    assert [b.label for b in rec.blocks if isinstance(b, Figure)] == [None]
    assert UNTRAINED not in write_study_report(trained).read_text()


def test_not_a_study_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a study folder"):
        study_sections(tmp_path)
    with pytest.raises(DataError, match="not a study folder"):
        run_report(ReportConfig(study_dir=tmp_path))
    with pytest.raises(ValidationError):
        ReportConfig(study_dir=tmp_path, out=tmp_path)  # type: ignore[call-arg]


def test_write_study_report(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", reconstruction=True)
    out = write_study_report(study)
    assert out == study / "report.html"
    page = out.read_text()
    assert page.count("<img") == len(_all_figures(study_sections(study))) == 7
    assert not list(study.glob(".report.html.*"))  # written atomically, nothing left
    custom = run_report(ReportConfig(study_dir=study, output=tmp_path / "x" / "r.html"))
    assert custom == tmp_path / "x" / "r.html" and custom.exists()


# ----------------------------------------------------------------------------- browser
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium not installed (apt install chromium)")


@needs_chromium
def test_page_in_a_browser(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", reconstruction=True)
    page_path = write_study_report(study)
    n_img = page_path.read_text().count("<img")
    dom = render_dom(page_path)
    assert n_img > 0
    assert 'data-images-broken="0"' in dom
    assert f'data-images-loaded="{n_img}"' in dom
    dom_tables = re.findall(r"<table>.*?</table>", dom, re.S)
    tables = _all_tables(study_sections(study))
    assert [t.count("<tr") for t in dom_tables] == [len(t.rows) + 1 for t in tables]


@needs_chromium
def test_browser_counts_a_broken_figure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    page = tmp_path / "p.html"
    page.write_text(render_page("t", "s", [Section("S", figures=[
        Figure("ok", _png(tmp_path / "ok.png")), Figure("bad", bad)])]))
    dom = render_dom(page)
    assert 'data-images-loaded="1"' in dom and 'data-images-broken="1"' in dom
    assert "1 of 2 figures failed to load" in dom
