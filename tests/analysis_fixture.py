"""Small simulated studies for the analyses' tests: a simulated root, every subject's
perception and imagery indices, and perception decoders, built once per pytest session
per distinct setting (planted, null, or changed generative parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
from fmri2img.data.nsd_layout import subject_name
from fmri2img.data.simulate import SimulationConfig, load_ground_truth, simulate
from fmri2img.experiments.analyses.runner import AnalyzeConfig
from fmri2img.experiments.train_decoder import TrainConfig, checkpoint_path, train_decoder

SUBJECTS = (1, 2, 5, 7)
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "ridge": {},
    "mlp": {"epochs": 20, "hidden": [256], "dropout": 0.2},
}


@dataclass
class Study:
    root: Path  # the simulated NSD root
    out: Path  # indices/, decoders/
    subjects: tuple[int, ...]
    models: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def truth(self):  # the simulation's ground truth (fmri2img.data.simulate.truth)
        return load_ground_truth(self.root)

    @property
    def targets(self) -> Path:
        return self.root / "targets" / "clip_like.parquet"

    @property
    def words(self) -> Path:
        return self.root / "targets" / "clip_like_words.parquet"

    def imagery_index(self, subject: str = "{subject}") -> str:
        return str(self.out / "indices" / f"{subject}_imagery.parquet")

    def perception_index(self, subject: str = "{subject}") -> str:
        return str(self.out / "indices" / f"{subject}_nsd.parquet")

    def checkpoint(self, model: str, subject: str = "{subject}") -> str:
        return str(checkpoint_path(self.out / "decoders" / subject / model))

    def analyze_config(self, output_dir: Path, analyses: list[str],
                       **kwargs: Any) -> AnalyzeConfig:
        return AnalyzeConfig(
            imagery_index=self.imagery_index(), perception_index=self.perception_index(),
            targets=self.targets, semantic_table=self.words,
            checkpoints={m: self.checkpoint(m) for m in self.models},
            subjects=list(self.subjects), analyses=analyses, output_dir=output_dir,
            **kwargs)


def build_study(out: Path, *, null: bool = False, seed: int = 0,
                subjects: tuple[int, ...] = SUBJECTS, models: tuple[str, ...] = ("ridge",),
                **overrides: Any) -> Study:
    """Simulate the ``small`` scale (with ``overrides`` of any generative parameter),
    index every subject and train the perception decoders ``models``."""
    torch.set_num_threads(1)
    root = out / "data"
    cfg = SimulationConfig.from_scale("small", seed=seed, null=null, subjects=subjects,
                                      **overrides)
    simulate(root, cfg)
    study = Study(root, out, subjects, models, overrides)
    for s in subjects:
        subj = subject_name(s)
        build_nsd_index(NSDIndexConfig(nsd_root=root, subject=s,
                                       output=Path(study.perception_index(subj)),
                                       cache_dir=out / "cache", seed=seed))
        build_imagery_index(ImageryIndexConfig(nsd_root=root, subject=s,
                                               output=Path(study.imagery_index(subj)),
                                               cache_dir=out / "cache"))
        for m in models:
            train_decoder(TrainConfig(index=Path(study.perception_index(subj)),
                                      targets=study.targets, model_type=m,
                                      model=MODEL_OPTIONS[m], seed=seed,
                                      output_dir=out / "decoders" / subj / m))
    return study
