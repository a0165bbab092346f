"""Paths and constants of the NSD / NSD-Imagery release, shared by readers and the simulator.

Everything here follows ``shared/docs/NSD_FORMAT.md``; section numbers below refer to it.
Readers check these facts against the files and fail loudly where they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmri2img.errors import DataError

BETA_SCALE = 300.0  # stored int16 = percent signal change x 300 (section 6)
TRIALS_PER_SESSION = 750  # section 2
RUNS_PER_SESSION = 12
DEFAULT_BETAS_VERSION = "betas_fithrf_GLMdenoise_RR"
DEFAULT_IMAGERY_VERSION = "nsdimagerybetas_fithrf_GLMdenoise_RR"


@dataclass(frozen=True)
class SubjectInfo:
    n_sessions: int
    shape_1pt8mm: tuple[int, int, int]  # (X, Y, Z) as nibabel returns it
    nsdgeneral_voxels: int


# Section 1.
SUBJECTS: dict[int, SubjectInfo] = {
    1: SubjectInfo(40, (81, 104, 83), 15724),
    2: SubjectInfo(40, (82, 106, 84), 14278),
    3: SubjectInfo(32, (81, 106, 82), 15226),
    4: SubjectInfo(30, (85, 99, 80), 13153),
    5: SubjectInfo(40, (79, 97, 78), 13039),
    6: SubjectInfo(32, (85, 113, 83), 17907),
    7: SubjectInfo(40, (78, 95, 81), 12682),
    8: SubjectInfo(30, (80, 103, 78), 14386),
}


def run_lengths(n_trials: int = TRIALS_PER_SESSION) -> list[int]:
    """Trials per run in a session: odd runs 63, even runs 62 (section 2)."""
    if n_trials != TRIALS_PER_SESSION:
        raise ValueError(f"NSD sessions have {TRIALS_PER_SESSION} trials, got {n_trials}")
    return [63 if r % 2 == 1 else 62 for r in range(1, RUNS_PER_SESSION + 1)]


def parse_subject(value: str | int) -> int:
    """'subj01', 'subj1', '1' or 1 -> 1; anything else is a clear error."""
    text = str(value).strip().lower()
    digits = text[4:] if text.startswith("subj") else text
    if not digits.isdigit() or int(digits) not in SUBJECTS:
        raise DataError(
            f"unknown subject {value!r}: expected one of "
            + ", ".join(subject_name(s) for s in SUBJECTS)
        )
    return int(digits)


def subject_name(subject: int) -> str:
    return f"subj{subject:02d}"


# ROI atlases and their label names (section 7). Used when no .ctab file is present.
ROI_LABELS: dict[str, dict[int, str]] = {
    "nsdgeneral": {1: "nsdgeneral"},
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {
        1: "early",
        2: "midventral",
        3: "midlateral",
        4: "midparietal",
        5: "ventral",
        6: "lateral",
        7: "parietal",
    },
}

# NSD-Imagery beta blocks (section 10.1): name, first beta, number of betas, task, set.
@dataclass(frozen=True)
class ImageryBlock:
    name: str
    start: int
    n_betas: int
    task: str  # vision | attention | imagery
    stim_set: str  # A | B | C
    betas_per_trial: int

    @property
    def stop(self) -> int:
        return self.start + self.n_betas


IMAGERY_BLOCKS: tuple[ImageryBlock, ...] = (
    ImageryBlock("visA", 0, 48, "vision", "A", 1),
    ImageryBlock("attA", 48, 96, "attention", "A", 2),
    ImageryBlock("imgA_1", 144, 48, "imagery", "A", 1),
    ImageryBlock("visB", 192, 48, "vision", "B", 1),
    ImageryBlock("attB", 240, 96, "attention", "B", 2),
    ImageryBlock("imgB_1", 336, 48, "imagery", "B", 1),
    ImageryBlock("visC", 384, 48, "vision", "C", 1),
    ImageryBlock("attC", 432, 96, "attention", "C", 2),
    ImageryBlock("imgC_1", 528, 48, "imagery", "C", 1),
    ImageryBlock("imgA_2", 576, 48, "imagery", "A", 1),
    ImageryBlock("imgB_2", 624, 48, "imagery", "B", 1),
    ImageryBlock("imgC_2", 672, 48, "imagery", "C", 1),
)
IMAGERY_N_BETAS = 720
STIM_SET_KIND = {"A": "simple", "B": "complex", "C": "conceptual"}
# stiminfo.csv TaskType codes (section 10.5)
TASK_TYPE_CODES = {0: "vision", 1: "attention", 2: "imagery", 3: "imagery"}


@dataclass(frozen=True)
class ImageryTarget:
    code: str
    stim_set: str
    number: int  # 1..6 within its set
    name: str  # file name (sets A, B) or word (set C)
    nsd_id: int | None  # 0-based 73k id where the target is an NSD image


# Section 10.4. The real complex targets' 73k ids are 1-based in their names.
IMAGERY_TARGETS: tuple[ImageryTarget, ...] = (
    ImageryTarget("H", "A", 1, "bar_000.0deg_450L_43W.png", None),
    ImageryTarget("R", "A", 2, "bar_045.0deg_450L_43W.png", None),
    ImageryTarget("V", "A", 3, "bar_090.0deg_450L_43W.png", None),
    ImageryTarget("L", "A", 4, "bar_135.0deg_450L_43W.png", None),
    ImageryTarget("P", "A", 5, "crs_000.0deg_450L_43W.png", None),
    ImageryTarget("E", "A", 6, "crs_045.0deg_450L_43W.png", None),
    ImageryTarget("W", "B", 1, "shared0385_nsd28752.png", 28751),
    ImageryTarget("K", "B", 2, "shared0413_nsd30857.png", 30856),
    ImageryTarget("B", "B", 3, "shared0741_nsd53882.png", 53881),
    ImageryTarget("C", "B", 4, "shared0842_nsd61178.png", 61177),
    ImageryTarget("D", "B", 5, "shared0907_nsd65873.png", 65872),
    ImageryTarget("T", "B", 6, "shared0000_nsd00000.png", None),
    ImageryTarget("S", "C", 1, "stripes", None),
    ImageryTarget("Z", "C", 2, "zebra", None),
    ImageryTarget("M", "C", 3, "mammal", None),
    ImageryTarget("Y", "C", 4, "yellow", None),
    ImageryTarget("N", "C", 5, "banana", None),
    ImageryTarget("F", "C", 6, "fruit", None),
)


@dataclass(frozen=True)
class NSDPaths:
    """Where every NSD / NSD-Imagery file lives under an NSD root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- perception (sections 2-7)
    @property
    def expdesign(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"

    @property
    def stimuli_hdf5(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def responses_tsv(self, subject: int) -> Path:
        return self.root / f"nsddata/ppdata/{subject_name(subject)}/behav/responses.tsv"

    def betas_dir(self, subject: int, version: str = DEFAULT_BETAS_VERSION) -> Path:
        return self.root / f"nsddata_betas/ppdata/{subject_name(subject)}/func1pt8mm/{version}"

    def betas_session(
        self, subject: int, session: int, fmt: str, version: str = DEFAULT_BETAS_VERSION
    ) -> Path:
        ext = {"hdf5": "hdf5", "nifti": "nii.gz"}[fmt]
        return self.betas_dir(subject, version) / f"betas_session{session:02d}.{ext}"

    def roi(self, subject: int, atlas: str) -> Path:
        return self.root / f"nsddata/ppdata/{subject_name(subject)}/func1pt8mm/roi/{atlas}.nii.gz"

    def roi_ctab(self, subject: int, atlas: str) -> Path:
        return self.root / f"nsddata/freesurfer/{subject_name(subject)}/label/{atlas}.mgz.ctab"

    def brainmask(self, subject: int) -> Path:
        return self.root / f"nsddata/ppdata/{subject_name(subject)}/func1pt8mm/brainmask.nii.gz"

    # --- imagery (section 10)
    def imagery_betas(
        self, subject: int, fmt: str, version: str = DEFAULT_IMAGERY_VERSION
    ) -> Path:
        ext = {"hdf5": "hdf5", "nifti": "nii.gz"}[fmt]
        return (
            self.root
            / f"nsddata_betas/ppdata/{subject_name(subject)}/func1pt8mm/{version}"
            / f"betas_nsdimagery.{ext}"
        )

    @property
    def imagery_bdata_dir(self) -> Path:
        return self.root / "nsddata/bdata/nsdimagery"

    def imagery_run_tsv(self, subject: int, run_name: str) -> Path:
        return self.imagery_bdata_dir / f"nsdimagery_{subject_name(subject)}_{run_name}.tsv"

    @property
    def imagery_experiments_dir(self) -> Path:
        return self.root / "nsddata/experiments/nsdimagery"

    @property
    def imagery_stiminfo(self) -> Path:
        """The per-beta stimulus table (Ashsr layout; not part of the official release)."""
        return self.imagery_experiments_dir / "nsdimagery_stiminfo.csv"

    def imagery_behaviour_csv(self, subject: int) -> Path:
        """Per-beta vividness table (Ashsr layout)."""
        return self.imagery_bdata_dir / f"subj{subject:02d}_Imagery_Behavioralresponse.csv"

    def imagery_target_image(self, target: ImageryTarget) -> Path:
        return self.imagery_experiments_dir / f"rawtargetimages/set{target.stim_set}/{target.name}"

    @property
    def imagery_frames_dir(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsdimagery"
