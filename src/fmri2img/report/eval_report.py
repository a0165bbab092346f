"""What an evaluation shows a person: its README (tables of every metric with CI, chance and
p; the transfer ratio; per-set scores; reference bounds) and its figures (similarity
distributions, retrieval examples)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.eval.metrics import cosine_matrix
from fmri2img.report import figures


def write_figures(folder: Path, pred: np.ndarray, targets: np.ndarray,
                  images: np.ndarray | None, title: str) -> None:
    """Similarity distributions (own vs other targets) and, when the scored stimuli's
    ``images`` are given (one per row of ``targets``), retrieval examples (stimulus, then
    its top-5 retrieved)."""
    sims = cosine_matrix(pred, targets)
    own = np.eye(len(sims), dtype=bool)
    figures.similarity_distributions(sims[own], sims[~own], folder / "similarity_distributions",
                                     title=title)
    if images is not None:
        figures.retrieval_examples(images, sims, folder / "retrieval_examples", title=title)


def _fmt(result: dict[str, Any], k: str) -> str:
    v = result["overall"][k]
    lo, hi = result["ci"][k]
    p = result.get("p_vs_chance", {}).get(k)
    ch = result.get("chance", {}).get(k)
    return (f"| {k} | {v:.3f} | [{lo:.3f}, {hi:.3f}] | "
            f"{'-' if ch is None else f'{ch:.3f}'} | {'-' if p is None else f'{p:.4f}'} |")


def render_readme(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"# Evaluation: {result['model_type']} on {result['subject']}, {result['mode']} "
        f"({result['split']} split)",
        "",
        *([f"> **Warning.** {result['warning']}", ""] if result.get("warning") else []),
        f"Checkpoint `{result['checkpoint']['path']}`, index `{cfg['index']}`, targets "
        f"`{cfg['targets']}`.",
        "",
        *([f"Imagery protocol: {result['protocol']}; each item is scored only by models "
           "that did not see it in training.", ""] if result.get("protocol") else []),
        f"{result['n_items']} scored items; retrieval pools of {cfg['pool_size']} "
        f"(capped at the gallery of {result['gallery_size']}), {cfg['n_pools']} pools; "
        f"CIs: {cfg['n_bootstrap']} bootstrap resamples over items (95%); p: "
        f"{cfg['n_permutations']} permutations of the item-target pairing (one-sided).",
        "",
        "| metric | value | 95% CI | chance | p vs chance |",
        "|---|---|---|---|---|",
        *[_fmt(result, k) for k in result["overall"]],
        "",
    ]
    if result["mode"] == "imagery":
        tr = result["transfer"]
        lines += ["## Vision trials of the same session", "",
                  "| metric | value | 95% CI | chance | p vs chance |", "|---|---|---|---|---|",
                  *[_fmt({**result["vision"], "chance": result["chance"]}, k)
                    for k in result["vision"]["overall"]], "",
                  "## Transfer ratio", "", tr["definition"] + ".", "",
                  "| metric | imagery | vision | ratio | 95% CI |", "|---|---|---|---|---|"]
        for k, v in tr["metrics"].items():
            if v["ratio"] is None:
                continue
            lines.append(f"| {k} | {v['imagery']:.3f} | {v['vision']:.3f} | {v['ratio']:.3f} | "
                         f"[{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] |")
        if "vs_perception_test" in tr:
            vp = tr["vs_perception_test"]
            lines += ["", f"Against the perception test result ({vp['label']}): " + ", ".join(
                f"{k} {v:.3f}" for k, v in vp["ratios"].items() if v is not None) + "."]
        lines.append("")
    lines += ["## By stimulus set", "", "| set | items | cosine | two_way | retrieval_top1 |",
              "|---|---|---|---|---|"]
    for name, v in result["by_stimulus_set"].items():
        lines.append(f"| {name} | {v['n_items']} | {v.get('cosine', float('nan')):.3f} | "
                     f"{v.get('two_way', float('nan')):.3f} | "
                     f"{v.get('retrieval_top1', float('nan')):.3f} |")
    lines += ["", "## Reference bounds (same scoring)", "",
              "| predictions | cosine | two_way | retrieval_top1 |", "|---|---|---|---|"]
    for name, v in result["bounds"].items():
        lines.append(f"| {name} | {v['cosine']:.3f} | {v['two_way']:.3f} | "
                     f"{v['retrieval_top1']:.3f} |")
    for name, c in (result.get("controls") or {}).items():
        o = c["overall"]
        lines.append(f"| {name} ({c['prediction']}) | {o['cosine']:.3f} | "
                     f"{o['two_way']:.3f} | {o.get('retrieval_top1', float('nan')):.3f} |")
    if result.get("controls"):
        lines += ["", "The mean-target rows predict every item with the mean training "
                  "target: their cosine is high because every target shares that direction, "
                  "their identification is at chance. A decoder whose cosine is below theirs "
                  "has learnt less about its targets than their mean; judge by 2-way and "
                  "retrieval, and by `cosine_centred` (prediction and target minus that "
                  "mean)."]
    lines += ["", "Files: `metrics.json` (everything above, plus per-stimulus values), "
              "`per_trial.csv` (single-trial predictions: cosine to their target, 2-way and "
              "retrieval rank among the scored targets), `config_resolved.yaml`.", ""]
    return "\n".join(lines)
