"""The study's HTML page (``fmri2img report --study-dir DIR``): what ``fmri2img study``
wrote, gathered into one self-contained file a reader can open offline, each table and
figure with a sentence on how to read it. Reads the study folder only; computes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from fmri2img.config import StrictModel
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_text
from fmri2img.models.diffusion.base import UNTRAINED_LABEL
from fmri2img.report.formatting import DASH, fmt, fmt_ci, fmt_p, num, value_ci
from fmri2img.report.html_page import (
    Block,
    Code,
    Figure,
    Section,
    Table,
    markdown_blocks,
    markdown_table,
    render_page,
)
from fmri2img.version import __version__

log = logging.getLogger(__name__)

RESULT = "study_result.json"
UNTRAINED = UNTRAINED_LABEL
CI = "brackets: 95% bootstrap CI"
TWO_WAY = ("2-way: fraction of the other images whose target a prediction is farther from "
           "than from its own (chance 0.5)")

FIGURE_HOW = {
    "similarity_distributions": "Cosine of each prediction with its own target (orange) "
    "and with every other target (blue): the farther right the orange mass lies, the "
    "better the decoder tells images apart.",
    "retrieval_examples": "Each row: a test stimulus, then the 5 gallery images its "
    "prediction is closest to; a green frame marks its own image, red frames the others.",
    "bar_overall_metric": "Imagery cosine and 2-way accuracy per method, mean over subjects "
    "(dots: subjects, dashed line: chance); a method helps imagery only where it beats "
    "direct transfer and its *_vision control.",
    "bar_by_stimulus_type": "Imagery cosine per method within each stimulus set (simple, "
    "complex, conceptual), mean over subjects.",
    "per_subject_breakdown": "Imagery 2-way accuracy per method for each subject (error "
    "bars: 95% CI): an effect should hold in most subjects, not in the mean only.",
    "retrieval_at_k": "Imagery retrieval@K per method (own target among the K closest), "
    "mean over subjects; chance rises with K.",
    "dimensionality": "Left: mean normalised signal spectra of vision and imagery; right: "
    "imagery - vision participation ratio per representation, per subject and for the "
    "group with CIs (below 0: imagery is lower-dimensional).",
    "dissociation": "Left: each target family's imagery gap per subject; right: the "
    "semantic-structural index per subject and for the group with CIs (above 0: imagery "
    "loses more structure than meaning).",
    "fingerprints": "Left: each subject's degradation profile; middle: half-A x half-B "
    "profile correlation between subjects (a bright diagonal is a fingerprint); right: "
    "identification accuracy against its permutation null.",
    "roi_hierarchy": "Left: transfer ratio per ROI along the visual hierarchy, per subject "
    "and for the group with CIs; right: the group profile per stimulus set.",
    "semantic_survival": "Left: each target's imagery/vision preservation ratio (dots: "
    "subjects, bars: mean); middle: the semantic part vs the rest; right: semantic - rest "
    "per subject and for the group with CIs.",
    "topology": "Left: contraction ratio (imagery / vision distance among target means, "
    "below 1: contracted) with CIs; middle: kNN preservation vs chance; right: H1 "
    "persistence diagrams of the first subject.",
    "uncertainty": "Left: Spearman rho of MC-dropout uncertainty and of accuracy with "
    "vividness, per subject and for the group with CIs; right: accuracy by uncertainty bin.",
    "grid": "Rows: items; columns: the stimulus, its reconstruction from the vision-trial "
    "(perception) prediction, and from the imagery prediction.",
}
# how to read the tables inside the Markdown files, keyed by their first column titles
TABLE_HOW = {
    ("set", "ROI"): "Spearman rho of the vision and the imagery RDM per subject, stimulus "
    "set and ROI; bold: the group mean; p: exact sign-flip test over subjects.",
    ("contrast",): "Differences in vision-imagery alignment between ROIs per subject; the "
    "crossover asks for set A to align more early and set B more higher up.",
    ("set", "task"): "rho between the early-visual and the higher-visual RDM within one "
    "task: how much geometry the hierarchy shares.",
    ("method",): "Counts are subjects (of all) whose 95% CI excludes 0; an imagery gain "
    "must beat both direct transfer and the matched control.",
    ("control",): "Per subject, the baselines that predict a mean target for every item; "
    "cosine above: methods whose imagery cosine falls below the baseline's.",
    ("measure",): "The aligner vs the EEG-only control on held-out pairs; top-k among the "
    f"test pairs (chance in the last column); {CI}.",
}
TITLES = {"dimensionality": "Dimensionality gap", "uncertainty": "Uncertainty as vividness",
          "semantic_survival": "Semantic survival", "topology": "Topological signatures",
          "fingerprints": "Individual imagery fingerprints", "dissociation":
          "Semantic-structural dissociation", "roi_hierarchy": "ROI hierarchy profile",
          "bar_overall_metric": "Imagery decoding per method", "bar_by_stimulus_type":
          "Imagery cosine by stimulus set", "per_subject_breakdown":
          "Imagery 2-way identification per subject", "retrieval_at_k": "Imagery retrieval@K"}
IMAGE_METRIC_LABELS = {"pixcorr": "PixCorr ↑", "ssim": "SSIM ↑", "psnr": "PSNR dB ↑"}
DOMAIN_NAMES = {"vision": "perception"}  # the vision trials are the perception domain


class ReportConfig(StrictModel):
    study_dir: Path = Field(description="study output folder (fmri2img study --out)")
    output: Path | None = Field(None, description="HTML file to write (default: "
                                                  "STUDY_DIR/report.html)")


def run_report(cfg: ReportConfig) -> Path:
    return write_study_report(cfg.study_dir, cfg.output)


def write_study_report(study_dir: Path, output: Path | None = None) -> Path:
    study_dir = Path(study_dir)
    sections, result = study_sections(study_dir), _load_result(study_dir)
    subjects = ", ".join(p["subject"] for p in result.get("perception", []))
    cfg = _config(study_dir)
    subtitle = " · ".join(x for x in (
        str(study_dir.resolve()), f"scale {cfg['scale']}" if "scale" in cfg else "",
        f"subjects {subjects}" if subjects else "", f"data {result.get('root', '?')}",
        f"ran in {result['seconds']} s" if "seconds" in result else "",
        f"page written {datetime.now():%Y-%m-%d %H:%M} by fmri2img {__version__}") if x)
    output = Path(output) if output is not None else study_dir / "report.html"
    write_text(output, render_page(f"fmri2img study: {study_dir.resolve().name}", subtitle,
                                   sections))
    log.info("study report written to %s", output)
    return output


def study_sections(study_dir: Path) -> list[Section]:
    study_dir = Path(study_dir)
    result = _load_result(study_dir)
    sections = [_summary(result), _dataset(result), _h1(study_dir, result),
                _ablation(study_dir, result), _rsa(study_dir, result),
                _analyses(study_dir, result), _eeg(study_dir, result),
                _reconstructions(study_dir), _configuration(study_dir)]
    return [s for s in sections if s is not None]


# ----------------------------------------------------------------------------- reading
def _load_result(study_dir: Path) -> dict[str, Any]:
    path = study_dir / RESULT
    if not path.is_file():
        raise DataError(f"not a study folder (no {RESULT}); give the --out folder of "
                        "fmri2img study", study_dir)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"not readable as JSON: {exc}", path) from exc


def _json(path: Path) -> dict[str, Any] | None:
    """An optional JSON file: None when it is absent (or unreadable, with a warning)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s left out of the report: %s", path, exc)
        return None


def _config(study_dir: Path) -> dict[str, Any]:
    path = study_dir / "study_config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _md(path: Path, drop_title: bool = True) -> list[Block]:
    """The Markdown file's blocks, each table given its how-to-read; the file's top
    heading dropped where the section title says the same."""
    text = path.read_text()
    blocks: list[Block] = list(markdown_blocks(text))
    if drop_title and text.lstrip().startswith("# "):
        blocks = blocks[1:]
    for b in blocks:
        if isinstance(b, Table) and not b.how_to_read:
            b.how_to_read = next((how for key, how in TABLE_HOW.items()
                                  if tuple(b.columns[:len(key)]) == key), "")
    return blocks


def _title(path: Path) -> str:
    return TITLES.get(path.stem, path.stem.replace("_", " "))


def _figures(paths: list[Path], title: Callable[[Path], str] = _title) -> list[Figure]:
    return [Figure(title(p), p, FIGURE_HOW.get(p.stem, "")) for p in paths]


def _not_run(title: str, why: str) -> Section:
    return Section(title, notes=[f"Not run: {why}."])


def _ci(entry: Any) -> str:
    return fmt_ci(*value_ci(entry))


def _diff(c: Mapping[str, Any] | None) -> str:
    if not c:
        return DASH
    lo, hi = num(c["ci"][0]), num(c["ci"][1])
    star = " *" if lo > 0 or hi < 0 else ""
    return f"{num(c['mean_difference']):+.3f} [{lo:+.3f}, {hi:+.3f}]{star}"


# ----------------------------------------------------------------------------- sections
def _summary(result: dict[str, Any]) -> Section | None:
    tables = []
    hyp = (result.get("ablation") or {}).get("hypotheses") or {}
    rows = [[h, str(hyp[h].get("effect", "")), str(hyp[h].get("verdict", ""))]
            for h in ("H1", "H2", "H3") if isinstance(hyp.get(h), Mapping)]
    if "methods_verdict" in hyp:
        rows.append(["methods", "imagery gain of each transfer method beyond its control",
                     str(hyp["methods_verdict"])])
    if rows:
        tables.append(Table("Hypotheses", ["hypothesis", "effect tested", "verdict"], rows,
                            "Each hypothesis's tested effect and verdict from the transfer "
                            "ablation (details in its section)."))
    findings = (result.get("analyses") or {}).get("findings") or {}
    if findings:
        tables.append(Table("Analyses", ["analysis", "finding"],
                            [[TITLES.get(k, k), str(v)] for k, v in findings.items()],
                            "One line per analysis: the effect with its CI and permutation p, "
                            "then what it means (details in its section)."))
    return Section("Summary", tables=tables) if tables else None


def _dataset(result: dict[str, Any]) -> Section:
    perception, imagery = result.get("perception") or [], result.get("imagery") or []
    tables = []
    if perception:
        tables.append(Table(
            "Perception (trial index + beta cache)",
            ["subject", "dataset", "trials", "index rows", "images train/val/test", "voxels"],
            [[p["subject"], str(p.get("dataset", "")), str(p["trials"]), str(p["rows"]),
              "/".join(str(p["split_images"].get(k, 0)) for k in ("train", "val", "test")),
              str(p["voxels"])] for p in perception],
            "One row per subject: trials = single-trial betas, index rows = rows after any "
            "averaging of repetitions, images = distinct stimuli per split."))
        rois = list(dict.fromkeys(k for p in perception for k in p.get("voxels_per_roi", {})))
        if rois:
            tables.append(Table(
                "Voxels per ROI (of the cached selection)", ["subject", *rois],
                [[p["subject"], *(str(p["voxels_per_roi"].get(r, 0)) for r in rois)]
                 for p in perception],
                "Voxels of each ROI within the cached selection; ROIs overlap (V1v lies in "
                "early and in nsdgeneral too), so a row does not sum to the total."))
    if imagery:
        sets = ("simple", "complex", "conceptual")
        tables.append(Table(
            "NSD-Imagery trials (vision = perception domain)",
            ["subject", "vision", "imagery", "attention (excluded)",
             *(f"imagery {s}" for s in sets), "scored", "vivid"],
            [[s["subject"], *(str(s["by_task"].get(k, 0)) for k in ("perception", "imagery",
                                                                    "attention")),
              *(str(s["by_task_and_set"].get(f"imagery/{k}", 0)) for k in sets),
              str(s["scored"]), f"{100 * num(s['vivid_fraction']):.0f}%"] for s in imagery],
            "Betas per task of the imagery session: vision = seeing a target, imagery = "
            "imagining it (by stimulus set); scored = betas in the test split; vivid = mean "
            "vividness of the imagery trials."))
    notes = [] if tables else ["No dataset summary in study_result.json."]
    return Section("Dataset", tables=tables, notes=notes)


def _h1(study_dir: Path, result: dict[str, Any]) -> Section:
    title = "H1: perception-trained decoders on perception and imagery"
    rows = result.get("h1")
    if not rows:
        return _not_run(title, "no decoders were trained (--models none)")
    metric = rows[0]["transfer_ratio"].get("metric", "two_way")
    perc = Table("Perception test images, value [95% CI]",
                 ["subject", "model", "top-1", "pool", "2-way", "cosine"],
                 [[r["subject"], r["model"], _ci(r["perception"].get("retrieval_top1")),
                   str(r.get("perception_pool", DASH)), _ci(r["perception"].get("two_way")),
                   _ci(r["perception"].get("cosine"))] for r in rows],
                 f"top-1: fraction of test images whose prediction is closest to its own "
                 f"target in a pool of N (chance 1/N); {TWO_WAY}; cosine: prediction vs "
                 f"target; {CI} over images.")
    img = Table("NSD-Imagery session: vision vs imagery, value [95% CI]",
                ["subject", "model", "vision 2-way", "imagery 2-way", "vision cosine",
                 "imagery cosine", f"ratio ({metric})", "ratio (cosine)"],
                [[r["subject"], r["model"], _ci(r["vision"].get("two_way")),
                  _ci(r["imagery"].get("two_way")), _ci(r["vision"].get("cosine")),
                  _ci(r["imagery"].get("cosine")), _ci(r["transfer_ratio"]),
                  _ci(r.get("transfer_ratio_cosine"))] for r in rows],
                "Vision and imagery trials of the 12 simple + complex targets (2-way chance "
                "0.5); ratio = (imagery - chance) / (vision - chance) with repetitions "
                f"matched: 1 is full transfer, 0 none; {CI}.")
    tables = [perc, img]
    comps = result.get("h1_decoders") or []
    if comps:
        tables.append(Table(
            "Decoders compared on the same perception test images: paired difference "
            "[95% CI]", ["subject", "pair", "top-1", "2-way", "cosine"],
            [[c["subject"], f"{c['a']} - {c['b']}",
              *(_diff(c["metrics"].get(k)) for k in ("retrieval_top1", "two_way", "cosine"))]
             for c in comps],
            "Mean of a - b over the shared test images with its 95% bootstrap CI; * marks "
            "a CI that excludes 0 (the two decoders differ)."))
    # subject, then decoder in the table's order, perception before imagery
    models = list(dict.fromkeys(r["model"] for r in rows))
    figs = sorted((study_dir / "eval").glob("*/*/*/figures/*.png"), key=lambda p: (
        p.parts[-5], models.index(p.parts[-4]) if p.parts[-4] in models else len(models),
        p.parts[-3] != "perception", p.name))
    return Section(title, intro="Each decoder is trained on the subject's NSD perception "
                   "trials, then scored on its perception test images and on the NSD-Imagery "
                   "session.", tables=tables,
                   figures=_figures(figs, lambda p: "{} · {} · {}: {}".format(
                       *p.parts[-5:-2], _title(p))))


def _ablation(study_dir: Path, result: dict[str, Any]) -> Section:
    title = "Transfer ablation (H2, H3)"
    abl = result.get("ablation")
    if not abl:
        return _not_run(title, "no --ablation-model among the trained --models, or no "
                        "--ablation-methods")
    out = study_dir / "ablation"
    table_md, hyp_md = out / "results_table.md", out / "hypotheses.md"
    notes = [f"{p} missing." for p in (table_md, hyp_md) if not p.is_file()]
    tables = markdown_table(
        table_md.read_text(), "Every method per subject, value [95% CI]",
        "One row per subject and method (with its matched *_vision control and the "
        "mean-target baselines); values over held-out targets with 95% bootstrap CIs; "
        "gain vs direct: paired difference to direct transfer, with its sign-flip p.") \
        if table_md.is_file() else []
    blocks = _md(hyp_md) if hyp_md.is_file() else []
    order = list(FIGURE_HOW)
    figs = sorted((out / "figures").glob("*.png"),
                  key=lambda p: (order.index(p.stem) if p.stem in order else len(order),
                                 p.name))
    cfg = _config(study_dir)
    intro = (f"Perception-to-imagery transfer methods on the {cfg.get('ablation_model', '?')}"
             " decoder, leave-targets-out"
             + (f", {abl['seconds']} s" if "seconds" in abl else "") + ".")
    return Section(title, intro=intro, tables=tables, blocks=blocks,
                   figures=_figures(figs), notes=notes)


def _rsa(study_dir: Path, result: dict[str, Any]) -> Section:
    title = "Vision-imagery RSA"
    if "rsa" not in result:
        return _not_run(title, "--no-rsa")
    md = study_dir / "rsa" / "rsa.md"
    if result["rsa"] is None or not md.is_file():
        return Section(title, notes=["Skipped: the imagery indices lack an atlas it needs "
                                     "(see the study's log)."])
    return Section(title, blocks=_md(md),
                   figures=_figures(sorted((study_dir / "rsa").glob("*.png"))))


def _analyses(study_dir: Path, result: dict[str, Any]) -> Section:
    title = "Perception-vs-imagery analyses"
    if "analyses" not in result:
        return _not_run(title, "--analyses none, or no decoders trained")
    out = study_dir / "analyses"
    md = out / "summary.md"
    if not result["analyses"] or not md.is_file():
        return Section(title, notes=["No analysis ran: each needs a decoder the study did "
                                     "not train (--models)."])
    return Section(title, blocks=_md(md),
                   figures=_figures(sorted((out / "figures").rglob("*.png"))))


def _eeg(study_dir: Path, result: dict[str, Any]) -> Section:
    title = "EEG: THINGS-EEG2 decoders, image pairing, EEG-fMRI alignment"
    eeg = result.get("eeg")
    if eeg is None:
        return _not_run(title, "--no-eeg")
    if "skipped" in eeg:
        return Section(title, notes=[f"Skipped: {eeg['skipped']}."])
    out = study_dir / "eeg"
    tables, blocks, notes, rows = [], [], [], []
    for path in sorted((out / "decoders").glob("*/*/eval/metrics.json")):
        m = _json(path) or {}
        val = {k: _ci({"value": v, "ci": m.get("ci", {}).get(k)})
               for k, v in m.get("overall", {}).items()}
        ch = m.get("chance", {})
        rows.append([str(m.get("subject", path.parts[-4])), path.parts[-3],
                     str(m.get("gallery_size", DASH)), val.get("retrieval_top1", DASH),
                     fmt(num(ch.get("retrieval_top1"))),
                     fmt_p(num(m.get("p_vs_chance", {}).get("retrieval_top1"))) or DASH,
                     val.get("retrieval_top5", DASH), fmt(num(ch.get("retrieval_top5"))),
                     val.get("two_way", DASH), val.get("cosine", DASH)])
    if rows:
        tables.append(Table(
            "EEG -> image decoders, zero-shot (test repetitions averaged)",
            ["subject", "model", "candidates", "top-1", "chance", "p", "top-5", "chance",
             "2-way", "cosine"], rows,
            "Each test EEG response's prediction ranked against the targets of all N test "
            f"images, none seen in training (top-1 chance 1/N); p: permutation test of top-1 "
            f"vs chance; {CI}."))
    pairs = _json(out / "pairs" / "pairs_summary.json")
    if pairs:
        cos = pairs.get("cosine", {})
        t = pairs.get("truth")
        tables.append(Table(
            "Image pairing (THINGS x NSD, by embedding cosine)",
            ["pairs", "THINGS images", "NSD images", "cosine min / median / max",
             "true pairs recovered", "recall", "precision"],
            [[str(pairs.get("n_pairs", DASH)), str(pairs.get("n_things_images", DASH)),
              str(pairs.get("n_nsd_images", DASH)),
              " / ".join(fmt(num(cos.get(k))) for k in ("min", "median", "max")),
              f"{t['recovered']} of {t['n_true']}" if t else DASH,
              fmt(num(t.get("recall"))) if t else DASH,
              fmt(num(t.get("precision"))) if t else DASH]],
            "Greedy one-to-one pairs of THINGS and NSD images; where the true pairs are "
            "known (simulated data) recall and precision say how many were found."))
    for md in sorted((out / "aligner").glob("eval_*/README.md")):
        blocks += _md(md, drop_title=False)
    skipped = (eeg.get("alignment") or {}).get("skipped")
    if skipped:
        notes.append(f"Alignment skipped: {skipped}.")
    figs = sorted((out / "decoders").glob("*/*/eval/figures/*.png"))
    return Section(title, tables=tables, blocks=blocks, notes=notes, figures=_figures(
        figs, lambda p: f"{p.parts[-5]} · {p.parts[-4]}: {_title(p)}"))


def _metric_cell(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return str(entry) if entry is not None else DASH
    if "unavailable" in entry:
        return f"unavailable ({entry['unavailable']})"
    ci = entry.get("ci") or [None, None]
    value = entry.get("mean", entry.get("value"))
    return fmt_ci(num(value), num(ci[0]), num(ci[1]))


def _image_metrics(metrics: dict[str, Any], untrained: bool) -> Table:
    domains = metrics.get("domains", metrics)
    domains = {d: v for d, v in domains.items() if isinstance(v, Mapping)}
    names = list(dict.fromkeys(k for v in domains.values() for k, e in v.items()
                               if isinstance(e, Mapping)))
    rows = []
    for name in names:
        entry = next((v[name] for v in domains.values() if isinstance(v.get(name), Mapping)),
                     {})
        label = IMAGE_METRIC_LABELS.get(name) or str(entry.get("label", name))
        if name not in IMAGE_METRIC_LABELS and entry.get("metric"):
            label += " 2-way ↑" if entry["metric"] == "two_way" else " dist ↓"
        rows.append([label, *(_metric_cell(v.get(name)) for v in domains.values())])
    n = ["n images", *(f"unavailable ({v['unavailable']})" if "unavailable" in v
                       else str(v.get("n_items", DASH)) for v in domains.values())]
    title = "Image metrics, value [95% CI]" + (" (untrained test pipeline: the numbers "
                                               "show the plumbing)" if untrained else "")
    return Table(title, ["metric", *(DOMAIN_NAMES.get(d, d) for d in domains)], [n, *rows],
                 "Each metric of the reconstructions against their stimuli, with its 95% "
                 "bootstrap CI over images; ↑ higher is better, ↓ lower is better; 2-way "
                 "chance 0.5.")


def _reconstructions(study_dir: Path) -> Section | None:
    runs = sorted(p for p in (study_dir / "reconstruction").glob("*/*") if p.is_dir()
                  and ((p / "grid.png").exists() or (p / "image_metrics.json").exists()))
    if not runs:
        return None  # an older study without the step: nothing to say
    blocks: list[Block] = []
    for run in runs:
        info = _json(run / "reconstruct.json") or {}
        untrained = bool(info.get("untrained_test_pipeline"))
        name = f"{run.parent.name} · {run.name}" + (f" → {info['backend']}"
                                                     if info.get("backend") else "")
        if untrained:
            blocks.append(f"**{name}: {UNTRAINED}.**")
        if (run / "grid.png").exists():
            blocks.append(Figure(f"{name}: stimulus | perception | imagery reconstruction",
                                 run / "grid.png", FIGURE_HOW["grid"],
                                 UNTRAINED if untrained else None))
        metrics = _json(run / "image_metrics.json")
        if metrics:
            t = _image_metrics(metrics, untrained)
            t.title = f"{name}: {t.title}"
            blocks.append(t)
    return Section("Reconstructions", intro="The imagery session's predictions (imagery "
                   "and vision trials of the same targets) through a diffusion pipeline.",
                   blocks=blocks)


def _configuration(study_dir: Path) -> Section:
    path = study_dir / "study_config.yaml"
    if not path.is_file():
        return Section("Configuration", notes=[f"{path} missing."])
    return Section("Configuration", intro="The resolved options of the run (rerun with "
                   "fmri2img study --config study_config.yaml).",
                   blocks=[Code(path.read_text(), "study_config.yaml")])
