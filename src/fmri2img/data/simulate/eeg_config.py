"""Parameters of the simulated THINGS-EEG2 part (:mod:`.eeg`), one preset per scale."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from fmri2img.config import StrictModel


class EEGSimConfig(StrictModel):
    """The THINGS-EEG2 layout written beside the simulated NSD root.

    Training concepts have ``images_per_concept`` images seen ``train_repetitions`` times;
    test concepts (disjoint from the training ones, the zero-shot protocol) one image seen
    ``test_repetitions`` times. ``pairs`` training images are NSD images that subject 1
    saw in its shared (test) set, re-photographed (``pair_jitter``): the true pairs the
    image pairing should find, whose fMRI no decoder trained on.

    ``snr`` is the SD of the stimulus-driven signal over trials divided by the SD of the
    background EEG, at the channels and times the components drive most (single trials;
    real single-trial EEG is well below 1). ``snr = 0`` is the null: EEG that carries
    nothing about the image. The default 0.1 was chosen once, for realism only: it puts the
    small convolutional encoder's zero-shot 200-way top-1 (10 test repetitions) at 0.30,
    inside the published range on real THINGS-EEG2 (NICE 0.16, UBP 0.51 with 80
    repetitions); 0.35 gave 0.59 and 0.15 gave 0.47.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    subjects: int = Field(1, ge=1, le=10, description="sub-01 .. sub-NN")
    train_concepts: int = Field(240, ge=2)
    images_per_concept: int = Field(5, ge=1, le=26)
    train_repetitions: int = Field(4, ge=1)
    test_concepts: int = Field(200, ge=2)
    test_repetitions: int = Field(10, ge=1)
    pairs: int = Field(200, ge=0)
    snr: float = Field(0.1, ge=0)
    evoked_gain: float = Field(1.0, ge=0, description="the image-independent ERP, in noise SDs")
    patterns_per_component: int = Field(8, ge=1)
    subject_sd: float = Field(0.3, ge=0, description="spread of spatial patterns across "
                                                     "subjects, relative to their size")
    image_jitter: float = Field(0.5, ge=0, description="within-concept spread of image "
                                                       "latents, in exemplar SDs")
    pair_jitter: float = Field(0.3, ge=0, description="how far a true pair's THINGS photo "
                                                       "lies from its NSD image, in exemplar SDs")
    image_size: int = Field(64, ge=8)

    @model_validator(mode="after")
    def _check(self) -> EEGSimConfig:
        n_train_images = self.train_concepts * self.images_per_concept
        if self.pairs > n_train_images:
            raise ValueError(f"eeg.pairs={self.pairs} exceeds the {n_train_images} training "
                             "images")
        return self


EEG_PRESETS: dict[str, dict[str, Any]] = {
    # tests: a few hundred trials, a 40-way test
    "small": {"train_concepts": 24, "images_per_concept": 4, "train_repetitions": 2,
              "test_concepts": 40, "test_repetitions": 4, "pairs": 30, "image_size": 32},
    # the demo: 4800 training trials, the 200-way zero-shot test at 10 repetitions
    "default": {},
    # THINGS-EEG2's real design
    "nsd": {"train_concepts": 1654, "images_per_concept": 10, "train_repetitions": 4,
            "test_concepts": 200, "test_repetitions": 80, "pairs": 1000, "image_size": 224},
}
