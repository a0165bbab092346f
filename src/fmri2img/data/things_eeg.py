"""THINGS-EEG2 (Gifford et al. 2022): preprocessed EEG files and the image metadata.

Three published flavours of the preprocessed epochs are read, all laid out as
images x repetitions x channels x time (see docs/THINGS_EEG_FORMAT.md, section 1):

* ``official``: ``preprocessed_data/sub-XX/preprocessed_eeg_{training,test}.npy``, 17
  occipito-parietal channels at 100 Hz, ``np.save`` of a dict (a 0-d object array);
* ``250hz`` (NICE/ATM): ``Preprocessed_data_250Hz/sub-XX/...`` with the same names, 63
  channels, 250 samples, written by ``pickle.dump`` under a ``.npy`` name; its ``times`` keeps
  the 300 values of the uncut -0.2..1.0 s epoch, so the last 250 are the ones that apply;
* ``whiten`` (UBP, used by Brain2Image): ``Preprocessed_data_250Hz_whiten/sub-XX/{train,test}
  .pt`` from ``torch.save``, float16 EEG plus per-trial labels and sessions, per-image paths
  and concept names.

Also read: ``image_metadata.npy`` (the image order of the rows) or, without it, the image
folders themselves. The pickled ``.npy`` files are read through a restricted unpickler
(things_eeg_pickle) and the ``.pt`` files with ``torch.load(weights_only=True)``: a pickle
can name any callable, and these are large files downloaded from mirrors, so nothing in them
is executed unless the caller says the file is trusted (``allow_pickle=True``).

Everything here only reads; arrays are returned as stored (no dtype conversion, no copy), so
callers resample or write a 2-8 GB training file block by block.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import scipy.signal
import torch

from fmri2img.data.things_eeg_pickle import file_kind, load_pickled_dict, load_torch_dict
from fmri2img.errors import DataError

log = logging.getLogger(__name__)

FLAVOURS = ("official", "250hz", "whiten")
FLAVOUR_DIRS = {"official": "preprocessed_data", "250hz": "Preprocessed_data_250Hz",
                "whiten": "Preprocessed_data_250Hz_whiten"}
_NPY_NAMES = {"train": "preprocessed_eeg_training.npy", "test": "preprocessed_eeg_test.npy"}
FLAVOUR_FILES = {"official": _NPY_NAMES, "250hz": _NPY_NAMES,
                 "whiten": {"train": "train.pt", "test": "test.pt"}}
EXPECTED_REPS = {"train": 4, "test": 80}
NPY_KEYS = ("preprocessed_eeg_data", "ch_names", "times")
WHITEN_KEYS = ("eeg", "ch_names", "times")
METADATA_KEYS = ("train_img_files", "train_img_concepts", "test_img_files", "test_img_concepts")
TRAIN_IMAGE_DIRS = ("training_images", "train_images")
TEST_IMAGE_DIR = "test_images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# ~16M elements per block: 64 MB of float32 input keeps temporaries near the output's size
_BLOCK_ELEMS = 1 << 24

@dataclass
class EEGArray:
    """One THINGS-EEG2 file (training or test) of one subject."""

    path: Path
    flavour: str  # one of FLAVOURS
    data: np.ndarray  # (n_images, n_reps, n_channels, n_times), dtype as stored, not copied
    ch_names: list[str]
    times: np.ndarray  # (n_times,) float64 seconds, aligned with data's last axis
    sfreq: float
    sessions: np.ndarray | None  # (n_images, n_reps) int, whiten only
    image_files: list[str] | None  # per image relative path, whiten 'img' only
    concepts: list[str] | None  # per image concept text, whiten 'text' only
    labels: np.ndarray | None = None  # (n_images, n_reps) int concept index, whiten only


@dataclass
class ImageMetadata:
    """Image order of the EEG rows: row i of the training data shows train_files[i]."""

    train_files: list[str]
    train_concepts: list[str]
    test_files: list[str]
    test_concepts: list[str]
    train_concepts_things: list[str] | None
    test_concepts_things: list[str] | None
    path: Path


# ---------------------------------------------------------------- EEG files


def read_eeg_file(path: str | Path, flavour: str = "auto", *,
                  allow_pickle: bool = False) -> EEGArray:
    """Read one preprocessed THINGS-EEG2 file. ``flavour="auto"`` tells them apart by suffix
    and first bytes. ``allow_pickle=True`` lets a ``.pt`` file holding arbitrary pickled
    objects load with ``weights_only=False``, which runs its code: only for trusted files."""
    path = Path(path)
    if not path.is_file():
        raise DataError("THINGS-EEG2 file not found", path)
    if flavour == "auto":
        flavour = _detect_flavour(path)
        log.debug("%s: detected flavour %s", path, flavour)
    elif flavour not in FLAVOURS:
        raise ValueError(f"flavour must be 'auto' or one of {FLAVOURS}, got {flavour!r}")
    if flavour == "whiten":
        raw = load_torch_dict(path, allow_pickle)
        keys, data_key = WHITEN_KEYS, "eeg"
    else:
        raw = load_pickled_dict(path)
        keys, data_key = NPY_KEYS, "preprocessed_eeg_data"
    missing = [k for k in keys if k not in raw]
    if missing:
        raise DataError(f"not a THINGS-EEG2 {flavour} file: missing keys {missing}; "
                        f"keys found: {sorted(map(str, raw))}", path)
    data = _as_numpy(raw[data_key], data_key, path)
    if data.ndim != 4:
        raise DataError(f"{data_key!r} has shape {data.shape}; expected 4 axes (images, "
                        "repetitions, channels, times)", path)
    if not np.issubdtype(data.dtype, np.floating):
        raise DataError(f"{data_key!r} has dtype {data.dtype}; expected floating point", path)
    n_img, n_rep, n_ch, n_t = data.shape
    ch_names = _str_list(raw["ch_names"], "ch_names", path)
    if len(ch_names) != n_ch:
        raise DataError(f"{len(ch_names)} channel names for {n_ch} channels "
                        f"({data_key!r} has shape {data.shape})", path)
    times = _times(raw["times"], n_t, flavour, path)
    eeg = EEGArray(path=path, flavour=flavour, data=data, ch_names=ch_names, times=times,
                   sfreq=_sfreq(times, path), sessions=None, image_files=None, concepts=None)
    if flavour == "whiten":
        if raw.get("session") is not None:
            eeg.sessions = _per_trial(raw["session"], "session", n_img, n_rep, path)
        if raw.get("label") is not None:
            eeg.labels = _per_trial(raw["label"], "label", n_img, n_rep, path)
        if raw.get("img") is not None:
            eeg.image_files = _per_image(raw["img"], "img", n_img, n_rep, path)
        if raw.get("text") is not None:
            eeg.concepts = _per_image(raw["text"], "text", n_img, n_rep, path)
    return eeg


def _detect_flavour(path: Path) -> str:
    if path.suffix == ".pt":
        return "whiten"
    if path.stat().st_size == 0:
        raise DataError("file is empty", path)
    kind = file_kind(path)
    if kind == "npy":
        return "official"
    if kind == "pickle":
        return "250hz"
    if zipfile.is_zipfile(path):  # torch.save's zip container under another name
        return "whiten"
    raise DataError("cannot tell the THINGS-EEG2 flavour: not a .pt file, no \\x93NUMPY "
                    "magic and not a pickle stream", path)


def _as_numpy(value: Any, name: str, path: Path) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16: the one copy we make
            log.info("%s: %r is bfloat16, converted to float32", path, name)
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name!r} is not array-like ({type(value).__name__})", path) from exc


def _str_list(value: Any, name: str, path: Path) -> list[str]:
    if isinstance(value, (str, bytes)):
        raise DataError(f"{name!r} is one string, expected a list of strings", path)
    items = value.tolist() if isinstance(value, np.ndarray) else list(value)
    if not all(isinstance(s, str) for s in items):
        bad = next(s for s in items if not isinstance(s, str))
        raise DataError(f"{name!r} holds a {type(bad).__name__} ({bad!r}), expected strings",
                        path)
    return [str(s) for s in items]


def _times(value: Any, n_t: int, flavour: str, path: Path) -> np.ndarray:
    times = np.asarray(_as_numpy(value, "times", path), dtype=np.float64)
    if times.ndim != 1:
        raise DataError(f"'times' has shape {times.shape}, expected one axis", path)
    if len(times) == n_t:
        return times
    # Both 250 Hz flavours cut the first 50 of 300 samples but kept the full epoch's times.
    if len(times) > n_t and flavour in ("250hz", "whiten"):
        log.info("%s: 'times' has %d values for %d samples; using the last %d (the first %d "
                 "samples were cut from the epoch)", path, len(times), n_t, n_t,
                 len(times) - n_t)
        return times[len(times) - n_t:]
    raise DataError(f"'times' has {len(times)} values but the data have {n_t} samples"
                    + ("" if flavour != "official" else
                       " (only the 250 Hz flavours may keep extra leading times)"), path)


def _sfreq(times: np.ndarray, path: Path) -> float:
    if len(times) < 2:
        raise DataError(f"cannot tell the sampling rate from {len(times)} time point(s)", path)
    step = np.diff(times)
    dt = float(times[-1] - times[0]) / (len(times) - 1)
    if not np.all(step > 0) or dt <= 0:
        raise DataError("'times' is not strictly increasing", path)
    if np.max(np.abs(step - dt)) > 1e-3 * dt:
        raise DataError(f"'times' is not evenly spaced (steps {step.min():g}..{step.max():g} s)",
                        path)
    return round(1.0 / dt, 6)


def _per_trial(value: Any, name: str, n_img: int, n_rep: int, path: Path) -> np.ndarray:
    arr = np.asarray(_as_numpy(value, name, path))
    if arr.shape in ((n_img, n_rep), (n_img * n_rep,)):  # not any same-size shape: (reps, N)
        arr = arr.reshape(n_img, n_rep)
    elif arr.shape == (n_img,):  # one value per image: the same for all its repetitions
        arr = np.repeat(arr[:, None], n_rep, axis=1)
    else:
        raise DataError(f"{name!r} has shape {arr.shape}; expected ({n_img}, {n_rep}) to match "
                        "the EEG", path)
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise DataError(f"{name!r} has non-integer values (dtype {arr.dtype})", path)
    return arr.astype(np.int64)


def _per_image(value: Any, name: str, n_img: int, n_rep: int, path: Path) -> list[str]:
    items = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(items, (list, tuple)) and items and isinstance(items[0], (list, tuple)):
        items = [s for row in items for s in row]
    items = _str_list(items, name, path)
    if len(items) == n_img:
        return items
    if len(items) == n_img * n_rep:  # tiled per trial like 'label': one per image wanted
        rows = [items[i * n_rep:(i + 1) * n_rep] for i in range(n_img)]
        if all(len(set(r)) == 1 for r in rows):
            return [r[0] for r in rows]
    raise DataError(f"{name!r} has {len(items)} entries; expected one per image ({n_img})",
                    path)


def _subject_dir(subject: str | int) -> str:
    found = re.fullmatch(r"(?:sub-?)?0*(\d+)", str(subject).strip(), re.IGNORECASE)
    if not found:
        raise DataError(f"subject {subject!r} is not like 'sub-01', '01' or 1")
    return f"sub-{int(found.group(1)):02d}"


def find_eeg_files(eeg_root: str | Path, subject: str | int, *,
                   flavour: str = "auto") -> dict[str, Path]:
    """{"train": ..., "test": ...} for ``subject`` under ``eeg_root``: the folder holding
    ``preprocessed_data/`` and/or ``Preprocessed_data_250Hz[_whiten]/``, one of those folders,
    or the subject's folder itself. Several flavours found -> DataError unless ``flavour``
    picks one."""
    root = Path(eeg_root)
    sub = _subject_dir(subject)
    if not root.is_dir():
        raise DataError("THINGS-EEG2 folder not found", root)
    if flavour != "auto" and flavour not in FLAVOURS:
        raise ValueError(f"flavour must be 'auto' or one of {FLAVOURS}, got {flavour!r}")
    wanted = FLAVOURS if flavour == "auto" else (flavour,)
    places = [(root / FLAVOUR_DIRS[f] / sub, f, False) for f in wanted]
    # a renamed mirror folder: the file names say .npy or .pt, the first bytes the rest
    places += [(d, f, True) for d in (root / sub, root) for f in wanted]
    found: dict[Path, tuple[str, dict[str, Path]]] = {}
    partial: list[str] = []
    for folder, fl, sniff in places:
        names = FLAVOUR_FILES[fl]
        paths = {split: folder / names[split] for split in ("train", "test")}
        exists = {split: p.is_file() for split, p in paths.items()}
        if not any(exists.values()):
            continue
        if not all(exists.values()):
            partial += [str(p) for split, p in paths.items() if not exists[split]]
            continue
        if sniff and _detect_flavour(paths["train"]) != fl:
            continue
        found.setdefault(paths["train"].resolve(), (fl, paths))
    if not found:
        detail = (f"missing {sorted(set(partial))}" if partial else
                  "looked for " + ", ".join(f"{FLAVOUR_DIRS[f]}/{sub}/" for f in wanted))
        raise DataError(f"no THINGS-EEG2 train/test pair for {sub}: {detail}", root)
    if len(found) > 1:
        listed = "; ".join(f"{fl}: {p['train'].parent}" for fl, p in found.values())
        raise DataError(f"several THINGS-EEG2 files for {sub} ({listed}); pass flavour= to "
                        "pick one", root)
    return next(iter(found.values()))[1]


# ---------------------------------------------------------------- checks and resampling


def check_finite(eeg: EEGArray) -> None:
    """DataError naming the first (image, repetition), 0-based, holding NaN or inf."""
    data = eeg.data
    per_image = int(np.prod(data.shape[1:])) or 1
    step = max(1, _BLOCK_ELEMS // per_image)
    for start in range(0, data.shape[0], step):
        block = data[start:start + step]
        bad = ~np.isfinite(block).all(axis=tuple(range(2, block.ndim)))
        if bad.any():
            image, rep = (int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"NaN or inf in the epoch of image {start + image}, repetition {rep} "
                            "(0-based; the first such epoch)", eeg.path)


def resample(data: np.ndarray, times: np.ndarray, sfreq: float,
             new_sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Fourier resampling along the last axis (``scipy.signal.resample``, as Brain2Image
    does for 250 -> 200 Hz). Returns float32 data and the new times; rows are processed in
    blocks so temporaries stay small next to the output."""
    times = np.asarray(times, dtype=np.float64)
    n_t = data.shape[-1]
    if times.shape != (n_t,):
        raise ValueError(f"times has shape {times.shape}; data have {n_t} samples")
    if not (sfreq > 0 and new_sfreq > 0):
        raise ValueError(f"sampling rates must be > 0 (got {sfreq}, {new_sfreq})")
    n_new = round(n_t * new_sfreq / sfreq)
    if n_new < 1:
        raise ValueError(f"{n_t} samples at {sfreq} Hz leave no sample at {new_sfreq} Hz")
    out = np.empty((*data.shape[:-1], n_new), dtype=np.float32)
    if data.ndim == 1:
        out[:] = scipy.signal.resample(data, n_new)
    else:
        step = max(1, _BLOCK_ELEMS // (int(np.prod(data.shape[1:])) or 1))
        for start in range(0, data.shape[0], step):
            out[start:start + step] = scipy.signal.resample(data[start:start + step], n_new,
                                                            axis=-1)
    return out, times[0] + np.arange(n_new) / new_sfreq


# ---------------------------------------------------------------- images


def image_concept(folder_name: str) -> tuple[int, str]:
    """``"00001_aircraft_carrier"`` -> ``(1, "aircraft_carrier")``; concept names contain
    ``_``, so only the first one separates the number."""
    found = re.fullmatch(r"(\d+)_(.+)", folder_name)
    if not found:
        raise DataError(f"image folder name {folder_name!r} is not <number>_<concept>")
    return int(found.group(1)), found.group(2)


def read_image_metadata(path: str | Path) -> ImageMetadata:
    """``image_metadata.npy`` (np.save or pickle.dump of a dict of lists), read safely."""
    path = Path(path)
    raw = load_pickled_dict(path)
    missing = [k for k in METADATA_KEYS if k not in raw]
    if missing:
        raise DataError(f"not a THINGS-EEG2 image_metadata file: missing keys {missing}; keys "
                        f"found: {sorted(map(str, raw))}", path)
    lists = {k: _str_list(raw[k], k, path) for k in METADATA_KEYS}
    things = {split: (_str_list(raw[f"{split}_img_concepts_THINGS"],
                                f"{split}_img_concepts_THINGS", path)
                      if raw.get(f"{split}_img_concepts_THINGS") is not None else None)
              for split in ("train", "test")}
    for split in ("train", "test"):
        n = len(lists[f"{split}_img_files"])
        others = {f"{split}_img_concepts": lists[f"{split}_img_concepts"],
                  f"{split}_img_concepts_THINGS": things[split] or [None] * n}
        for key, values in others.items():
            if len(values) != n:
                raise DataError(f"{key!r} has {len(values)} entries but {split}_img_files has "
                                f"{n}", path)
    return ImageMetadata(train_files=lists["train_img_files"],
                         train_concepts=lists["train_img_concepts"],
                         test_files=lists["test_img_files"],
                         test_concepts=lists["test_img_concepts"],
                         train_concepts_things=things["train"],
                         test_concepts_things=things["test"], path=path)


def _scan_split(folder: Path) -> tuple[list[str], list[str]]:
    files: list[str] = []
    concepts: list[str] = []
    last = -1
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            number, _ = image_concept(sub.name)
        except DataError as exc:
            raise DataError(str(exc), sub) from None
        # sorted names give the EEG row order only with zero-padded, increasing numbers
        if number <= last:
            raise DataError(f"folder number {number} is out of order after {last} (numbers "
                            "must be zero-padded and unique)", sub)
        last = number
        names = sorted(f.name for f in sub.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        if not names:
            raise DataError("image folder holds no images", sub)
        files += [f"{sub.name}/{n}" for n in names]
        concepts += [sub.name] * len(names)
    if not files:
        raise DataError("no <number>_<concept>/ image folders", folder)
    return files, concepts


def scan_image_folders(image_root: str | Path) -> ImageMetadata:
    """Image order from ``training_images/`` (or ``train_images/``) and ``test_images/``:
    folders and the files in them in sorted order, files as ``<folder>/<file>``."""
    root = Path(image_root)
    train_dirs = [root / d for d in TRAIN_IMAGE_DIRS if (root / d).is_dir()]
    if not train_dirs:
        raise DataError(f"no {' or '.join(TRAIN_IMAGE_DIRS)} folder", root)
    if len(train_dirs) > 1:
        raise DataError(f"both {' and '.join(TRAIN_IMAGE_DIRS)} exist; keep one", root)
    if not (root / TEST_IMAGE_DIR).is_dir():
        raise DataError(f"no {TEST_IMAGE_DIR} folder", root)
    train_files, train_concepts = _scan_split(train_dirs[0])
    test_files, test_concepts = _scan_split(root / TEST_IMAGE_DIR)
    return ImageMetadata(train_files=train_files, train_concepts=train_concepts,
                         test_files=test_files, test_concepts=test_concepts,
                         train_concepts_things=None, test_concepts_things=None, path=root)


def _same_image(eeg_file: str, meta_file: str) -> bool:
    # metadata may hold bare names or <folder>/<name>, the .pt files train_images/<...>:
    # compare as many trailing path parts as the shorter one has
    a = PurePosixPath(eeg_file.replace("\\", "/")).parts
    b = PurePosixPath(meta_file.replace("\\", "/")).parts
    k = min(len(a), len(b))
    return a[len(a) - k:] == b[len(b) - k:]


def _concept_words(concept: str) -> str:
    return " ".join(re.sub(r"^\d+_", "", concept).replace("_", " ").lower().split())


def check_against_metadata(eeg: EEGArray, meta: ImageMetadata,
                           which: Literal["train", "test"], *,
                           expected_reps: int | None = None) -> None:
    """DataError unless ``eeg`` has one row per metadata image, ``expected_reps``
    repetitions when given, and (whiten) the same image files and concepts in the same
    order. The metadata says nothing of repetitions: a count other than the release's
    (4 training, 80 test) is only logged, since subsets and simulations differ."""
    if which not in EXPECTED_REPS:
        raise ValueError(f"which must be 'train' or 'test', got {which!r}")
    files = meta.train_files if which == "train" else meta.test_files
    concepts = meta.train_concepts if which == "train" else meta.test_concepts
    n_img, n_rep = eeg.data.shape[:2]
    if n_img != len(files):
        raise DataError(f"{n_img} images in the EEG data but the image metadata {meta.path} "
                        f"lists {len(files)} {which} images", eeg.path)
    if expected_reps is not None and n_rep != expected_reps:
        raise DataError(f"{n_rep} repetitions per image; expected {expected_reps} "
                        f"({len(files)} {which} images in {meta.path})", eeg.path)
    if n_rep != EXPECTED_REPS[which]:
        log.info("%s: %d repetitions per %s image (the THINGS-EEG2 release has %d)",
                    eeg.path, n_rep, which, EXPECTED_REPS[which])
    if eeg.image_files is not None:
        bad = [i for i, (a, b) in enumerate(zip(eeg.image_files, files, strict=True))
               if not _same_image(a, b)]
        if bad:
            i = bad[0]
            raise DataError(f"{len(bad)} image files differ from the image metadata "
                            f"{meta.path}; the first, image {i}: {eeg.image_files[i]!r} vs "
                            f"{files[i]!r}", eeg.path)
    if eeg.concepts is not None:
        # the .pt 'text' may be a bare name or a phrase around it ("a photo of ...")
        bad = [i for i, (text, c) in enumerate(zip(eeg.concepts, concepts, strict=True))
               if not re.search(rf"(?<!\w){re.escape(_concept_words(c))}(?!\w)",
                                 _concept_words(text))]
        if bad:
            i = bad[0]
            raise DataError(f"{len(bad)} concepts differ from the image metadata {meta.path}; "
                            f"the first, image {i}: {eeg.concepts[i]!r} vs {concepts[i]!r}",
                            eeg.path)
