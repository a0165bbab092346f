"""``fmri2img imagery-rsa``: the vision-imagery RSA table of NSD-Imagery indices.

Reads one imagery index per subject (simulated or real), resolves each named ROI on the
cache's voxel table, and computes per subject, stimulus set and ROI the alignment of
:mod:`fmri2img.analysis.rsa`; then the group means with exact sign-flip p-values and the
crossover contrasts. Writes ``rsa.json``, ``rsa.md`` and the resolved config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from fmri2img.analysis.rsa import (
    crossover_contrasts,
    rdm_alignment,
    sign_flip,
    vision_imagery_alignment,
)
from fmri2img.config import StrictModel
from fmri2img.data.nsd_layout import STIM_SET_KIND
from fmri2img.data.rois import RoiSelection, label_ids
from fmri2img.data.trials import IndexData
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json, write_text
from fmri2img.report.rsa_report import render

log = logging.getLogger(__name__)

StimSet = Literal["A", "B", "C"]
# The public NSD-Imagery analysis' ROIs: V1-V3 of the pRF atlas; the ventral, lateral
# and parietal streams; all of nsdgeneral.
DEFAULT_ROIS = {
    "early_visual": "prf-visualrois:V1v,V1d,V2v,V2d,V3v,V3d",
    "higher_visual": "streams:ventral,lateral,parietal",
    "nsdgeneral": "nsdgeneral",
}
TASKS = {"perception": "vision", "imagery": "imagery"}


class ImageryRSAConfig(StrictModel):
    """Options of ``fmri2img imagery-rsa``."""

    imagery_index: list[Path] = Field(min_length=1, description="NSD-Imagery indices, one "
                                      "per subject (build-imagery-index outputs)")
    output_dir: Path
    sets: list[StimSet] = Field(default_factory=lambda: ["A", "B"],
                                description="stimulus sets (A simple, B complex, C concepts)")
    rois: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROIS),
                                 description="ROI name -> selection on the cache's voxel "
                                             "table (ATLAS or ATLAS:NAME,...)")
    low_roi: str = Field("early_visual", description="the crossover's low-level ROI")
    high_roi: str = Field("higher_visual", description="the crossover's high-level ROI")
    n_bootstrap: int = Field(2000, ge=100)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ImageryRSAConfig:
        if not self.rois:
            raise ValueError("rois must name at least one ROI")
        for name, text in self.rois.items():
            RoiSelection.parse(text)
            if not name:
                raise ValueError("ROI names must not be empty")
        if len(set(self.sets)) != len(self.sets):
            raise ValueError(f"sets must be distinct, got {self.sets}")
        for name in {p.resolve() for p in self.imagery_index}:
            if self.output_dir.resolve() == name:
                raise ValueError(f"output_dir {self.output_dir} is an input index")
        return self


def roi_masks(voxels: pd.DataFrame, atlases: dict[str, dict[str, str]],
              rois: dict[str, str], where: Path) -> dict[str, np.ndarray]:
    """Boolean voxel masks of named ROI selections, from a cache's voxel table and the
    label names its manifest records."""
    out = {}
    for name, text in rois.items():
        sel = RoiSelection.parse(text)
        if sel.atlas not in voxels.columns:
            raise DataError(f"ROI {name!r} needs atlas {sel.atlas!r}, which the cache's voxel "
                            f"table does not hold (it has {sorted(atlases) or 'none'}); build "
                            "the imagery index with that atlas file present", where)
        values = voxels[sel.atlas].to_numpy()
        if not sel.labels:
            mask = values >= 1
        else:
            names = {int(k): v for k, v in atlases.get(sel.atlas, {}).items()}
            mask = np.isin(values, label_ids(sel, names, where))
        if not mask.any():
            raise DataError(f"ROI {name!r} ({text}) selects no voxels of the index", where)
        out[name] = mask
    return out


def subject_alignments(data: IndexData, sets: list[str], rois: dict[str, str],
                       low: str, high: str) -> dict[str, Any]:
    """One index: ``alignment[set][roi]`` (:meth:`Alignment.as_dict`, or ``rho`` None and
    ``why``) and ``second_order[set][task]``, the rho between the ``low`` and ``high``
    ROIs' RDMs (shared geometry along the hierarchy)."""
    df = data.frame
    if str(df["dataset"].iloc[0]) != "nsd-imagery":
        raise DataError("not an NSD-Imagery index (dataset "
                        f"{df['dataset'].iloc[0]!r})", data.path)
    manifest = data.cache.manifest
    masks = roi_masks(data.cache.voxels(), (manifest.get("mask") or {}).get("atlases") or {},
                      rois, data.path)
    task = df["domain"].map(TASKS).to_numpy()
    alignment: dict[str, dict[str, Any]] = {}
    second: dict[str, dict[str, float | None]] = {}
    for s in sets:
        kind = STIM_SET_KIND[s]
        in_set = (df["stimulus_set"] == kind).to_numpy()
        used_runs = df.loc[in_set & pd.notna(task), "run"].unique()
        rows = df[df["run"].isin(used_runs)]
        rtask = rows["domain"].map(TASKS).fillna("other").to_numpy()
        scored = ((rows["stimulus_set"] == kind) & (rows["split"] != "excluded")
                  & rows["target_code"].notna()).to_numpy()
        code = np.where(scored, rows["target_code"].astype(object).to_numpy(), None)
        targets = sorted(set(code[scored & (rtask == "vision")])
                         & set(code[scored & (rtask == "imagery")]))
        if len(targets) < 3:
            why = (f"set {s} has {len(targets)} targets with both vision and imagery trials; "
                   "an RDM alignment needs 3")
            alignment[s] = {roi: {"rho": None, "why": why} for roi in rois}
            log.warning("%s: %s", data.subject, why)
            continue
        betas = data.betas(rows)
        found = {roi: vision_imagery_alignment(betas, rows["run"].to_numpy(), rtask, code,
                                               targets, mask)
                 for roi, mask in masks.items()}
        alignment[s] = {roi: {**a.as_dict(), "targets": targets} for roi, a in found.items()}
        if low in found and high in found:
            second[s] = {
                "vision": _finite(rdm_alignment(found[low].vision_rdm, found[high].vision_rdm)),
                "imagery": _finite(rdm_alignment(found[low].imagery_rdm,
                                                 found[high].imagery_rdm))}
    return {"alignment": alignment, "second_order": second}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarize(per_subject: dict[str, dict[str, Any]], sets: list[str], rois: list[str],
              low: str, high: str, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Group means, SDs, CIs and exact sign-flip p-values; crossover contrasts."""
    rho = {subj: {s: {r: v["alignment"][s][r]["rho"] for r in rois} for s in sets}
           for subj, v in per_subject.items()}
    group = {s: {r: {**sign_flip([v[s][r] for v in rho.values()], n_bootstrap, seed),
                     "per_subject": {subj: v[s][r] for subj, v in rho.items()}}
                 for r in rois} for s in sets}
    contrasts: dict[str, Any] = {}
    if "A" in sets and "B" in sets and low in rois and high in rois:
        numeric = {subj: {s: {r: (np.nan if x is None else x) for r, x in v.items()}
                          for s, v in by.items()} for subj, by in rho.items()}
        raw = crossover_contrasts(numeric, low, high, "A", "B")
        contrasts = {k: {**sign_flip(list(v.values()), n_bootstrap, seed), "per_subject": v}
                     for k, v in raw.items()}
        means = {(s, r): group[s][r]["mean"] for s in ("A", "B") for r in (low, high)}
        if all(m is not None for m in means.values()):
            contrasts["crossover_in_means"] = bool(means[("A", low)] > means[("A", high)]
                                                   and means[("B", high)] > means[("B", low)])
    second = {s: {t: {**sign_flip([v["second_order"].get(s, {}).get(t)
                                   for v in per_subject.values()], n_bootstrap, seed),
                      "per_subject": {subj: v["second_order"].get(s, {}).get(t)
                                      for subj, v in per_subject.items()}}
                  for t in ("vision", "imagery")} for s in sets}
    return {"group": group, "contrasts": contrasts, "second_order": second}


def run_imagery_rsa(cfg: ImageryRSAConfig) -> dict[str, Any]:
    for name in (cfg.low_roi, cfg.high_roi):
        if name not in cfg.rois:
            log.info("crossover contrasts need ROI %r, which is not among --rois", name)
    per_subject: dict[str, dict[str, dict[str, Any]]] = {}
    for path in cfg.imagery_index:
        if not Path(path).exists():
            raise DataError("imagery index not found", path)
        data = IndexData.open(path)
        if data.subject in per_subject:
            raise DataError(f"a second index for {data.subject}; give one per subject", path)
        per_subject[data.subject] = subject_alignments(data, cfg.sets, cfg.rois,
                                                       cfg.low_roi, cfg.high_roi)
        log.info("%s: %s", data.subject, "; ".join(
            f"{s} " + ", ".join(f"{r} {_fmt(v[r]['rho'])}" for r in cfg.rois)
            for s, v in per_subject[data.subject]["alignment"].items()))
    result = {"config": cfg.resolved(),
              "method": "betas z-scored within run per voxel; repetitions averaged per "
                        "target; RDM = 1 - Pearson r across the ROI's voxels; alignment = "
                        "Spearman rho of the vision and imagery RDMs' off-diagonal "
                        "distances; group p = exact two-sided sign-flip test over subjects",
              "subjects": per_subject,
              **summarize(per_subject, cfg.sets, list(cfg.rois), cfg.low_roi, cfg.high_roi,
                          cfg.n_bootstrap, cfg.seed)}
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.output_dir / "rsa.json", result)
    write_text(cfg.output_dir / "rsa.md", render(result))
    cfg.save(cfg.output_dir / "config_resolved.yaml")
    return result


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"
