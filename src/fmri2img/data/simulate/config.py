"""Every parameter of the simulator's generative model, with the three scale presets.

A config fully determines the output: same config (seed included) => byte-identical arrays.
Units: responses in percent signal change (PSC); image geometry in fractions of the image
width; volumes in voxels of 1.8 mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fmri2img.data.nsd_layout import SUBJECTS, TRIALS_PER_SESSION
from fmri2img.data.simulate.eeg_config import EEG_PRESETS, EEGSimConfig
from fmri2img.data.simulate.stream_tables import (
    STREAM_NAMES,
    default_imagery_participation,
    default_layout_share,
    default_low_weight,
    default_prf_size_factor,
)

Scale = Literal["small", "default", "nsd"]
Format = Literal["hdf5", "nifti"]
# Each image is shown this many times over the design, as in NSD.
REPETITIONS = 3
N_DESIGN_SUBJECTS = 8


def _default_categories() -> dict[str, list[str]]:
    # The conceptual targets need zebra and banana, and mammal / fruit as superordinates.
    return {
        "mammal": ["zebra", "dog", "cat", "elephant", "giraffe"],
        "fruit": ["banana", "apple", "orange", "pear"],
        "vehicle": ["car", "bus", "bicycle", "airplane", "boat"],
        "object": ["chair", "clock", "umbrella", "kite", "painting"],
    }


def _default_attribute_rates() -> dict[str, dict[str, float]]:
    # "*" is the rate for every category not listed.
    return {
        "stripes": {"zebra": 1.0, "*": 0.06},
        "yellow": {"banana": 0.95, "bus": 0.4, "*": 0.06},
    }


@dataclass(frozen=True)
class ImageryParams:
    """The imagery parameters actually used (the null model replaces the configured ones)."""

    low_gain: float
    coarse_gain: float
    simple_gain: float
    layout_blur: float
    sem_gain: float
    sem_rank: int | None  # None: no subspace restriction
    noise_factor: float
    offset_mean: float
    offset_sd: float
    subject_gain_sd: float
    vividness_effect: float
    participation: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "low_gain": self.low_gain,
            "coarse_gain": self.coarse_gain,
            "simple_gain": self.simple_gain,
            "layout_blur": self.layout_blur,
            "sem_gain": self.sem_gain,
            "sem_rank": self.sem_rank,
            "noise_factor": self.noise_factor,
            "offset_mean": self.offset_mean,
            "offset_sd": self.offset_sd,
            "subject_gain_sd": self.subject_gain_sd,
            "vividness_effect": self.vividness_effect,
            "participation": dict(self.participation),
        }


class SimulationConfig(BaseModel):
    """Resolved parameters of one simulation. Build with :meth:`from_scale`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- run
    scale: Scale | Literal["custom"] = "custom"
    seed: int = Field(0, ge=0)
    null: bool = False  # imagery statistically identical to perception
    subjects: tuple[int, ...] = (1, 2, 5, 7)
    formats: tuple[Format, ...] = ("hdf5",)
    write_images: bool = True
    # --- THINGS-EEG2 beside the NSD root (:mod:`.eeg`)
    eeg: EEGSimConfig = Field(default_factory=EEGSimConfig)

    # --- NSD design
    n_design_sessions: int = Field(4, ge=1, le=40)  # length of masterordering / 750
    n_sessions: int | None = Field(None, ge=1)  # sessions acquired and written; None: all
    use_real_session_counts: bool = False  # cap acquired sessions at SUBJECTS[s].n_sessions
    n_shared: int = Field(100, ge=1)
    n_universe: int | None = Field(None, ge=1)  # None: shared + 8 x per-subject images
    image_size: int = Field(64, ge=16, le=1024)
    n_concept_exemplars: int = Field(6, ge=1)  # shared images per conceptual target
    n_attention_distractors: int = Field(24, ge=24)  # >= one 24-frame attention stream
    frame_duration_s: float = 0.3  # attention stream frames

    # --- anatomy
    volume_shape: tuple[int, int, int] | None = (32, 38, 30)  # subj01 (X,Y,Z); None: real
    nsdgeneral_voxels: int | None = Field(2000, ge=20)  # subj01; None: real counts
    brain_radius_fraction: float = Field(0.88, gt=0.3, le=1.0)
    roi_field_sigma: float = Field(0.12, gt=0)  # smooth-field sigma, fraction of shortest axis
    roi_field_amplitude: float = Field(0.15, ge=0)
    early_fraction: float = Field(0.21, gt=0, lt=1)  # of nsdgeneral, by hierarchy coordinate
    mid_fraction: float = Field(0.10, gt=0, lt=1)
    mid_split: tuple[float, float, float] = (0.36, 0.30, 0.34)  # ventral, lateral, parietal
    high_split: tuple[float, float, float] = (0.40, 0.41, 0.19)
    prf_coverage: float = Field(0.85, gt=0, le=1)  # share of early labelled V1-V3
    hv4_fraction: float = Field(0.6, gt=0, le=1)  # share of midventral labelled hV4

    # --- semantic latent
    sem_dim: int = Field(32, ge=8)
    categories: dict[str, list[str]] = Field(default_factory=_default_categories)
    superordinate_sd: float = 1.0
    category_sd: float = 0.6
    exemplar_sd: float = 0.35
    attribute_rates: dict[str, dict[str, float]] = Field(default_factory=_default_attribute_rates)
    attribute_strength: float = 1.2  # length of an attribute direction in the latent
    word_attribute_scale: float = 1.5  # attribute words sit this far along their direction

    # --- low-level latent (physical parameters of the rendered object)
    position_sd: float = 0.1
    size_range: tuple[float, float] = (0.18, 0.4)  # object half-extent
    saturation_range: tuple[float, float] = (0.3, 1.0)
    value_range: tuple[float, float] = (0.45, 1.0)
    background_range: tuple[float, float] = (0.1, 0.9)
    log2_frequency_range: tuple[float, float] = (1.0, 3.5)  # texture cycles per object
    category_hue_sd: float = 0.08
    yellow_hue: float = 0.15

    # --- CLIP-like embedding
    embed_dim: int = Field(512, ge=8)
    embed_hidden: int = Field(256, ge=8)
    embed_nonlinear_weight: float = 0.5
    embed_low_weight: float = 0.25
    # sd of each stimulus's private semantic deviation: what the embedding model sees and
    # the brain does not encode (CLIP and cortex are different representations), so a
    # decoder is limited by representational mismatch, not only by trial noise
    embed_private_sd: float = Field(0.0, ge=0)

    # --- voxel model (perception)
    low_weight: dict[str, float] = Field(default_factory=default_low_weight)
    low_weight_jitter: float = 0.05
    retinotopy_strength: float = 0.6
    layout_share: dict[str, float] = Field(default_factory=default_layout_share)
    layout_grid: int = Field(16, ge=4, le=64)  # contrast-map cells per image side
    layout_supersample: int = Field(3, ge=1, le=8)  # rendered pixels per cell side
    prf_max_eccentricity: float = Field(0.45, gt=0, le=0.75)  # image widths from centre
    prf_size_min: float = Field(0.02, gt=0)  # pRF sd at the fovea, image widths
    prf_size_slope: float = Field(0.25, ge=0)  # pRF sd growth per unit eccentricity
    prf_size_factor: dict[str, float] = Field(default_factory=default_prf_size_factor)
    signal_sd: float = 1.0  # PSC sd of the stimulus-driven response
    signal_sd_spread: float = 0.35  # lognormal sigma across voxels
    evoked_mean: float = 1.5  # mean evoked PSC in visual cortex
    evoked_sd: float = 0.8
    noise_sd: float = 2.0
    noise_sd_spread: float = 0.25
    nonvisual_noise_sd: float = 1.5
    global_noise_sd: float = 0.6  # a trial-wide fluctuation shared by all voxels
    global_loading_sd: float = 0.3  # how unevenly voxels load on it (mean 1)
    session_offset_sd: float = 0.4
    session_gain_sd: float = 0.1

    # --- imagery (ignored under null; see imagery_params)
    imagery_low_gain: float = 0.15  # fine low-level features (colour, value, texture, ...)
    # Coarse structure (position, size, orientation and the pRFs' view of the contrast
    # layout) of an imagined natural image, and of an imagined simple shape (the bars and
    # crosses of set A): simple, high-contrast targets keep their structure in imagery.
    imagery_coarse_gain: float = Field(0.15, ge=0)
    imagery_simple_gain: float = Field(0.6, ge=0)
    imagery_layout_blur: float = Field(0.06, ge=0)  # sd of the imagined layout's blur,
    # image widths: coarse structure survives imagery, fine detail does not
    imagery_sem_gain: float = 0.6
    imagery_sem_rank: int = Field(4, ge=1)
    imagery_noise_factor: float = 1.25
    imagery_offset_mean: float = -0.3
    imagery_offset_sd: float = 0.5
    imagery_subject_gain_sd: float = 0.2
    imagery_participation: dict[str, float] = Field(
        default_factory=default_imagery_participation
    )
    vividness_a: float = 3.0
    vividness_b: float = 2.5
    vividness_effect: float = Field(0.8, ge=0, le=1)
    vivid_threshold: float = 0.5
    vivid_report_noise: float = 0.1
    attention_gain: float = 0.8
    attention_cue_gain: float = 0.3

    # --- behaviour
    nsd_hit_rate: float = 0.85
    nsd_hit_decay_trials: float = 4000.0
    nsd_false_alarm_rate: float = 0.15
    vision_match_accuracy: float = 0.95
    missing_response_rate: float = 0.01
    change_mind_rate: float = 0.02
    rt_ms_median: float = 800.0
    rt_ms_log_sd: float = 0.25
    imagery_rt_ms_median: float = 1500.0

    # ------------------------------------------------------------------ validation
    @field_validator("subjects")
    @classmethod
    def _subjects(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("subjects must not be empty")
        if any(s not in SUBJECTS for s in v) or len(set(v)) != len(v):
            raise ValueError(f"subjects must be distinct values of 1..8, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats must be distinct values of hdf5, nifti: {self.formats}")
        if self.n_sessions is not None and self.n_sessions > self.n_design_sessions:
            raise ValueError(
                f"n_sessions={self.n_sessions} exceeds the design's {self.n_design_sessions}"
            )
        n_img = self.n_images_per_subject
        if self.n_shared >= n_img:
            raise ValueError(f"n_shared={self.n_shared} must be below {n_img} images/subject")
        if REPETITIONS * self.n_shared < self.n_design_sessions:
            raise ValueError("too few shared images to put shared trials in every session")
        if REPETITIONS * self.n_shared / self.n_design_sessions > TRIALS_PER_SESSION / 2:
            raise ValueError("shared trials would fill more than half of each session")
        needed = 6 * self.n_concept_exemplars + 5 + self.n_attention_distractors
        if needed > self.n_shared:
            raise ValueError(
                f"n_shared={self.n_shared} cannot hold the imagery exemplars and "
                f"distractors ({needed})"
            )
        if self.n_universe is not None and self.n_universe < self.min_universe:
            raise ValueError(f"n_universe must be >= {self.min_universe}")
        if (self.volume_shape is None) != (self.nsdgeneral_voxels is None):
            raise ValueError("volume_shape and nsdgeneral_voxels are both set or both None")
        for name in ("low_weight", "imagery_participation", "layout_share",
                     "prf_size_factor"):
            table = getattr(self, name)
            if set(table) != set(STREAM_NAMES):
                raise ValueError(f"{name} needs exactly the streams {STREAM_NAMES}")
        for name in ("low_weight", "imagery_participation", "layout_share"):
            bad_v = {k: v for k, v in getattr(self, name).items() if not 0 <= v <= 1}
            if bad_v:
                raise ValueError(f"{name} values must lie in [0, 1], got {bad_v}")
        if any(v <= 0 for v in self.prf_size_factor.values()):
            raise ValueError("prf_size_factor values must be positive")
        for superordinate in ("mammal", "fruit"):
            if superordinate not in self.categories:
                raise ValueError(f"categories must include the superordinate {superordinate!r}")
        names = [c for cats in self.categories.values() for c in cats]
        if len(set(names)) != len(names):
            raise ValueError("category names must be unique")
        for word in ("zebra", "banana"):
            if word not in names:
                raise ValueError(f"categories must include {word!r}")
        if "zebra" not in self.categories["mammal"] or "banana" not in self.categories["fruit"]:
            raise ValueError("zebra must be a mammal and banana a fruit")
        if len(self.categories["mammal"]) < 2 or len(self.categories["fruit"]) < 2:
            raise ValueError("mammal and fruit need members besides zebra and banana")
        if set(self.attribute_rates) != {"stripes", "yellow"}:
            raise ValueError("attribute_rates must define exactly stripes and yellow")
        if self.early_fraction + self.mid_fraction >= 1:
            raise ValueError("early_fraction + mid_fraction must be below 1")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def n_design_trials(self) -> int:
        return self.n_design_sessions * TRIALS_PER_SESSION

    @property
    def n_images_per_subject(self) -> int:
        return self.n_design_trials // REPETITIONS

    @property
    def min_universe(self) -> int:
        return self.n_shared + N_DESIGN_SUBJECTS * (self.n_images_per_subject - self.n_shared)

    @property
    def universe_size(self) -> int:
        return self.n_universe if self.n_universe is not None else self.min_universe

    def sessions_for(self, subject: int) -> int:
        """Sessions acquired (written) for a subject."""
        n = self.n_sessions if self.n_sessions is not None else self.n_design_sessions
        if self.use_real_session_counts and self.n_sessions is None:
            n = min(n, SUBJECTS[subject].n_sessions)
        return n

    def volume_shape_for(self, subject: int) -> tuple[int, int, int]:
        """(X, Y, Z): the real shape, or the reference shape scaled like the real ones."""
        real = SUBJECTS[subject].shape_1pt8mm
        if self.volume_shape is None:
            return real
        ref = SUBJECTS[1].shape_1pt8mm
        return tuple(  # type: ignore[return-value]
            max(6, round(b * r / r1)) for b, r, r1 in zip(self.volume_shape, real, ref, strict=True)
        )

    def nsdgeneral_voxels_for(self, subject: int) -> int:
        real = SUBJECTS[subject].nsdgeneral_voxels
        if self.nsdgeneral_voxels is None:
            return real
        return max(20, round(self.nsdgeneral_voxels * real / SUBJECTS[1].nsdgeneral_voxels))

    def imagery_params(self) -> ImageryParams:
        if self.null:
            return ImageryParams(
                low_gain=1.0,
                coarse_gain=1.0,
                simple_gain=1.0,
                layout_blur=0.0,
                sem_gain=1.0,
                sem_rank=None,
                noise_factor=1.0,
                offset_mean=0.0,
                offset_sd=0.0,
                subject_gain_sd=0.0,
                vividness_effect=0.0,
                participation={s: 1.0 for s in STREAM_NAMES},
            )
        return ImageryParams(
            low_gain=self.imagery_low_gain,
            coarse_gain=self.imagery_coarse_gain,
            simple_gain=self.imagery_simple_gain,
            layout_blur=self.imagery_layout_blur,
            sem_gain=self.imagery_sem_gain,
            sem_rank=min(self.imagery_sem_rank, self.sem_dim),
            noise_factor=self.imagery_noise_factor,
            offset_mean=self.imagery_offset_mean,
            offset_sd=self.imagery_offset_sd,
            subject_gain_sd=self.imagery_subject_gain_sd,
            vividness_effect=self.vividness_effect,
            participation=dict(self.imagery_participation),
        )

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_scale(
        cls,
        scale: Scale,
        seed: int = 0,
        null: bool = False,
        subjects: tuple[int, ...] = (1, 2, 5, 7),
        n_sessions: int | None = None,
        formats: tuple[str, ...] = ("hdf5",),
        write_images: bool = True,
        **overrides: Any,
    ) -> SimulationConfig:
        """A preset filled in; ``n_sessions`` larger than the preset's design extends it."""
        if scale not in PRESETS:
            raise ValueError(f"unknown scale {scale!r}: expected one of {sorted(PRESETS)}")
        values: dict[str, Any] = dict(PRESETS[scale])
        if n_sessions is not None and n_sessions > values["n_design_sessions"]:
            values["n_design_sessions"] = n_sessions
        values.update(
            scale=scale,
            seed=seed,
            null=null,
            subjects=tuple(subjects),
            n_sessions=n_sessions,
            formats=tuple(formats),
            write_images=write_images,
        )
        eeg = overrides.pop("eeg", None) or {}
        if isinstance(eeg, EEGSimConfig):
            eeg = eeg.model_dump()
        values["eeg"] = {**EEG_PRESETS[scale], **eeg}
        values.update(overrides)
        return cls.model_validate(values)


# Generative values of the realistic presets (issue 17): NSD-like single-trial SNR, a
# representational mismatch between brain and embedding, imagery calibrated on the real
# NSD-Imagery vision-imagery RSA table.
_REALISTIC: dict[str, Any] = {
    "noise_sd": 3.0,
    "embed_private_sd": 1.15,
    "imagery_sem_gain": 0.22,
    "imagery_simple_gain": 1.1,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: for tests. Two sessions, a few hundred voxels, 32-px images.
    "small": {
        "n_design_sessions": 2,
        "n_shared": 50,
        "image_size": 32,
        "n_concept_exemplars": 3,
        "n_attention_distractors": 24,
        "volume_shape": (14, 16, 12),
        "nsdgeneral_voxels": 300,
    },
    # The demo: 3000 trials and 1000 images per subject, 300 of them shared (the test
    # split, so retrieval uses the field's 300-way pools), ~2000 nsdgeneral voxels.
    # Trial noise at NSD's single-trial SNR (signal sd / noise sd = 1/3). What keeps
    # decoding from saturating is what the embedding sees and the brain does not
    # (embed_private_sd): ridge's perception 300-way top-1 near 0.26, 2-way near 0.976.
    # The imagery gains reproduce the real NSD-Imagery vision-imagery RSA table (README)
    # and put direct-transfer imagery 2-way near 0.75, below the session's vision
    # trials. Nothing was tuned toward any transfer verdict.
    "default": {
        "n_design_sessions": 4,
        "n_shared": 300,
        "image_size": 96,
        "n_concept_exemplars": 6,
        "n_attention_distractors": 24,
        "volume_shape": (32, 38, 30),
        "nsdgeneral_voxels": 2000,
        **_REALISTIC,
    },
    # Real trial counts, volume shapes and nsdgeneral sizes.
    "nsd": {
        "n_design_sessions": 40,
        "n_shared": 1000,
        "image_size": 425,
        "n_concept_exemplars": 8,
        "n_attention_distractors": 36,
        "volume_shape": None,
        "nsdgeneral_voxels": None,
        "use_real_session_counts": True,
        **_REALISTIC,
    },
}
