"""The stimuli of a trial index: their keys, their pictures and, where known, their captions.

Where the pictures are comes from the index's metadata (``meta["stimuli"]``):

* ``nsd_hdf5``: ``imgBrick`` (n, 425, 425, 3) uint8 of ``nsd_stimuli.hdf5``, row = 73k id.
* ``nsd_imagery``: an NSD root. ``nsd:<id>`` stimuli (the complex targets and the
  exemplars shown for concepts) are ``imgBrick`` rows, so that perception and imagery of
  one picture get one embedding; a complex target falls back to its raw target image only
  where the HDF5 file is absent. ``nsdimagery:<code>`` targets of sets A and B are their
  ``rawtargetimages`` PNGs, named by ``{set}_pair_list.mat`` where present. Conceptual
  targets (set C) have no picture, only a word.
* ``npy``: ``stimuli.npy`` in the index's cache folder, row = stimulus_id, (H, W) uint8.

Images are served as (H, W, 3) uint8: grayscale replicated, alpha composited onto
mid-gray (the NSD display background). Stimuli are ordered by image row (sequential
reads of the HDF5 file), then by key.

Captions, first source that knows a stimulus wins: an explicit caption file; the word of a
conceptual target; the simulator's ``targets/clip_like.parquet`` (``caption`` column) under
the NSD root; the COCO-2017 annotations joined through ``nsd_stim_info_merged.csv`` (the
caption with the lowest annotation id, so the choice is stable). Otherwise None.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.io
from PIL import Image

from fmri2img.data.index import read_index
from fmri2img.data.keys import IMAGERY_PREFIX, NSD_PREFIX, parse_key
from fmri2img.data.nsd_layout import IMAGERY_TARGETS, NSDPaths
from fmri2img.errors import DataError

log = logging.getLogger(__name__)

# written by fmri2img.data.simulate (pipeline.EMBEDDING_TABLE), relative to the NSD root
SIMULATED_TABLE = "targets/clip_like.parquet"
COCO_ANNOTATIONS = "nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"
GRAY = 128
IMG_BRICK = "imgBrick"


@dataclass(frozen=True)
class Stimulus:
    """One row of an embedding table to be.

    ``origin`` says where the picture is: ``hdf5`` (row ``row`` of ``imgBrick`` in
    ``path``), ``npy`` (row ``row`` of the array in ``path``), ``png`` (the file ``path``)
    or ``word`` (no picture; ``caption`` is the word).
    """

    key: str
    stimulus_id: int | None
    origin: str
    path: Path | None = None
    row: int | None = None
    caption: str | None = None
    target_code: str | None = None

    @property
    def has_image(self) -> bool:
        return self.origin != "word"


@dataclass
class IndexStimuli:
    """The unique stimuli of an index, in reading order, with their image and caption sources."""

    index: Path
    source: dict[str, Any]
    stimuli: list[Stimulus]
    caption_sources: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.stimuli]

    def __len__(self) -> int:
        return len(self.stimuli)

    def image_files(self, stimuli: Sequence[Stimulus] | None = None) -> list[Path]:
        """The files the pictures of ``stimuli`` (default: all) are read from."""
        use = self.stimuli if stimuli is None else stimuli
        return sorted({s.path for s in use if s.has_image and s.path is not None})

    def check_images(self, stimuli: Sequence[Stimulus] | None = None) -> None:
        """Fail early, naming the file, when a picture cannot be read."""
        use = list(self.stimuli if stimuli is None else stimuli)
        words = [s.key for s in use if not s.has_image]
        if words:
            raise DataError(f"{len(words)} stimuli have no image, only a word "
                            f"({', '.join(words[:5])}); embed them as text", self.index)
        for path in self.image_files(use):
            rows = [s.row for s in use if s.path == path and s.row is not None]
            if not path.exists():
                raise DataError("stimulus images file not found", path)
            if path.suffix in (".hdf5", ".h5"):
                _check_hdf5(path, rows)
            elif path.suffix == ".npy":
                _check_npy(path, rows)

    def iter_images(self, stimuli: Sequence[Stimulus] | None = None, batch_size: int = 64
                    ) -> Iterator[tuple[list[Stimulus], list[np.ndarray]]]:
        """Batches of (stimuli, (H, W, 3) uint8 images), read lazily in the given order."""
        use = list(self.stimuli if stimuli is None else stimuli)
        with _Readers() as readers:
            for start in range(0, len(use), batch_size):
                batch = use[start : start + batch_size]
                yield batch, readers.read(batch)

    def load_images(self, stimuli: Sequence[Stimulus] | None = None) -> list[np.ndarray]:
        return [im for _, ims in self.iter_images(stimuli) for im in ims]


# ----------------------------------------------------------------------------- pixels
def rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or uint8 array -> (H, W, 3) uint8; gray replicated, alpha over mid-gray."""
    if isinstance(image, Image.Image):
        img = image
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "La", "RGBa"):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (GRAY, GRAY, GRAY, 255))
            img = Image.alpha_composite(canvas, rgba)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"{img.mode} images are not 8-bit; convert them first")
        return np.asarray(img.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays or PIL images, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 4:
        return rgb_array(Image.fromarray(np.ascontiguousarray(arr)))
    raise ValueError(f"images must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")


def _check_hdf5(path: Path, rows: list[int]) -> None:
    try:
        with h5py.File(path, "r") as f:
            if IMG_BRICK not in f:
                raise DataError(f"no '{IMG_BRICK}' dataset (found {sorted(f.keys())})", path)
            ds = f[IMG_BRICK]
            if ds.ndim != 4 or ds.shape[3] != 3 or ds.dtype != np.uint8:
                raise DataError(f"{IMG_BRICK} is {ds.dtype} {ds.shape}; expected uint8 "
                                "(n, H, W, 3)", path)
            n = ds.shape[0]
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file ({exc})", path) from exc
    _check_rows(path, rows, n)


def _check_npy(path: Path, rows: list[int]) -> None:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable .npy file ({exc})", path) from exc
    if arr.ndim not in (3, 4) or arr.dtype != np.uint8:
        raise DataError(f"stimuli array is {arr.dtype} {arr.shape}; expected uint8 (n, H, W)",
                        path)
    _check_rows(path, rows, arr.shape[0])


def _check_rows(path: Path, rows: list[int], n: int) -> None:
    bad = sorted({r for r in rows if not 0 <= r < n})
    if bad:
        raise DataError(f"{len(bad)} stimulus ids are outside the {n} stored images "
                        f"(first {bad[:5]})", path)


class _Readers:
    """Open files once per pass; HDF5 rows of a batch are read in one sorted selection."""

    def __init__(self) -> None:
        self._h5: dict[Path, h5py.File] = {}
        self._npy: dict[Path, np.ndarray] = {}

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._h5.values():
            f.close()

    def read(self, batch: list[Stimulus]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(batch)
        by_file: dict[Path, list[int]] = {}
        for i, s in enumerate(batch):
            if s.origin == "png":
                out[i] = _read_png(s.path)
            elif s.origin in ("hdf5", "npy"):
                by_file.setdefault(s.path, []).append(i)  # type: ignore[arg-type]
            else:
                raise DataError(f"stimulus {s.key} has no image, only the word {s.caption!r}")
        for path, idx in by_file.items():
            rows = np.array([batch[i].row for i in idx], dtype=np.int64)
            images = self._rows(path, rows)
            for i, im in zip(idx, images, strict=True):
                out[i] = rgb_array(im)
        return out  # type: ignore[return-value]

    def _rows(self, path: Path, rows: np.ndarray) -> np.ndarray:
        if not path.exists():
            raise DataError("stimulus images file not found", path)
        if path.suffix == ".npy":
            if path not in self._npy:
                self._npy[path] = np.load(path, mmap_mode="r")
            return np.asarray(self._npy[path][rows])
        if path not in self._h5:
            self._h5[path] = h5py.File(path, "r")
        ds = self._h5[path][IMG_BRICK]
        # h5py selections must be increasing and unique: read sorted, then put back in order
        uniq, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(ds[uniq.tolist()])[inverse]


def _read_png(path: Path | None) -> np.ndarray:
    if path is None or not path.exists():
        raise DataError("stimulus image not found", path)
    try:
        with Image.open(path) as img:
            img.load()
            return rgb_array(img)
    except OSError as exc:
        raise DataError(f"not a readable image ({exc})", path) from exc


# ----------------------------------------------------------------------------- stimuli
def index_stimuli(index: str | Path, *, captions: str | Path | None = None) -> IndexStimuli:
    """The unique stimuli of ``index`` with image locations and captions (nothing is read yet).

    ``captions``: an explicit caption file that overrides every other source: Parquet or
    CSV with ``caption`` and ``stimulus`` (or ``stimulus_id``) columns, or a ``.npy``
    string array, (n,) or (n, k) (first non-empty of the k), indexed by stimulus_id.
    """
    index = Path(index)
    df, meta = read_index(index)
    source = meta.get("stimuli")
    if not isinstance(source, dict) or "kind" not in source:
        raise DataError("index metadata does not say where its stimulus images are "
                        "(no 'stimuli' entry); rebuild the index", index)
    rows = df[df["stimulus"].notna()].drop_duplicates("stimulus")
    if rows.empty:
        raise DataError("index has no stimuli", index)
    kind = source["kind"]
    root: Path | None = None
    if kind == "nsd_hdf5":
        h5 = Path(source["path"])
        stimuli = [_hdf5_stimulus(r, h5, index) for r in rows.itertuples()]
        root = _nsd_root_of(h5)
    elif kind == "nsd_imagery":
        root = Path(source["root"])
        stimuli = _imagery_stimuli(rows, NSDPaths(root), index)
    elif kind == "npy":
        if "cache" not in meta:
            raise DataError("index metadata names stimuli.npy but no cache folder", index)
        npy = Path(meta["cache"]) / source.get("file", "stimuli.npy")
        stimuli = [_npy_stimulus(r, npy, index) for r in rows.itertuples()]
    elif kind == "files":  # image files under a root (THINGS), one per key
        root = Path(source["root"])
        files = source.get("files") or {}
        missing = [k for k in rows["stimulus"] if k not in files]
        if missing:
            raise DataError(f"{len(missing)} stimuli have no image file recorded (first "
                            f"{missing[0]}); the index was built without the image folders",
                            index)
        stimuli = [Stimulus(r.stimulus, _id(r.stimulus_id), "png", root / files[r.stimulus])
                   for r in rows.itertuples()]
        root = None
    else:
        raise DataError(f"unknown stimulus source kind {kind!r} in the index metadata", index)
    stimuli.sort(key=lambda s: (0, str(s.path), s.row, s.key) if s.row is not None
                 else (1, "", 0, s.key))
    found = IndexStimuli(index=index, source=dict(source), stimuli=stimuli)
    _attach_captions(found, root, Path(captions) if captions is not None else None)
    return found


def _nsd_root_of(h5: Path) -> Path | None:
    """The NSD root holding ``h5`` at its standard place (where captions may be found)."""
    parents = h5.parents
    if len(parents) > 3 and NSDPaths(parents[3]).stimuli_hdf5 == h5:
        return parents[3]
    return None


def _id(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _hdf5_stimulus(r: Any, h5: Path, index: Path) -> Stimulus:
    sid = _id(r.stimulus_id)
    if sid is None:
        raise DataError(f"stimulus {r.stimulus} has no stimulus_id (the imgBrick row)", index)
    return Stimulus(r.stimulus, sid, "hdf5", h5, sid)


def _npy_stimulus(r: Any, npy: Path, index: Path) -> Stimulus:
    sid = _id(r.stimulus_id)
    if sid is None:
        raise DataError(f"stimulus {r.stimulus} has no stimulus_id (the stimuli.npy row)",
                        index)
    return Stimulus(r.stimulus, sid, "npy", npy, sid)


def imagery_target_names(paths: NSDPaths) -> dict[str, tuple[str, str]]:
    """code -> (set, name): ``{set}_pair_list.mat`` where present, else the published list."""
    names = {t.code: (t.stim_set, t.name) for t in IMAGERY_TARGETS}
    for stim_set in "ABC":
        path = paths.imagery_experiments_dir / f"{stim_set}_pair_list.mat"
        if not path.exists():
            continue
        try:
            cells = scipy.io.loadmat(str(path))["pair_list"]
            for row in cells:
                name, code = (str(np.asarray(v).ravel()[0]).strip() for v in row[1:3])
                names[code] = (stim_set, name)
        except (KeyError, IndexError, ValueError, OSError) as exc:
            raise DataError(f"not a (6, 3) pair_list of number, name, code ({exc})",
                            path) from exc
    return names


def _target_png(paths: NSDPaths, stim_set: str, name: str) -> Path:
    folder = paths.imagery_experiments_dir / f"rawtargetimages/set{stim_set}"
    path = folder / name
    return path if path.suffix else path.with_suffix(".png")


def _imagery_stimuli(rows: pd.DataFrame, paths: NSDPaths, index: Path) -> list[Stimulus]:
    names = imagery_target_names(paths)
    h5 = paths.stimuli_hdf5
    out = []
    for r in rows.itertuples():
        code = r.target_code if isinstance(r.target_code, str) else None
        prefix, ident = parse_key(r.stimulus)
        if prefix == NSD_PREFIX:
            if not h5.exists() and code in names and names[code][0] == "B":
                # a complex target is also its raw PNG: usable when imgBrick is absent
                png = _target_png(paths, "B", names[code][1])
                out.append(Stimulus(r.stimulus, int(ident), "png", png, target_code=code))
            else:
                out.append(Stimulus(r.stimulus, int(ident), "hdf5", h5, int(ident),
                                    target_code=code))
            continue
        if prefix != IMAGERY_PREFIX or ident not in names:
            raise DataError(f"stimulus {r.stimulus} is not an NSD-Imagery target", index)
        stim_set, name = names[str(ident)]
        if stim_set == "C":
            out.append(Stimulus(r.stimulus, None, "word", caption=name, target_code=str(ident)))
        else:
            out.append(Stimulus(r.stimulus, _id(r.stimulus_id), "png",
                                _target_png(paths, stim_set, name), target_code=str(ident)))
    return out


# ----------------------------------------------------------------------------- captions
def _attach_captions(found: IndexStimuli, root: Path | None, explicit: Path | None) -> None:
    """Fill ``caption`` where a source knows it; words of conceptual targets are kept."""
    known: dict[str, str] = {}
    sources: list[str] = []

    def take(found_caps: dict[str, str], label: str) -> None:
        new = {k: v for k, v in found_caps.items() if k not in known and v}
        if new:
            known.update(new)
            sources.append(label)

    keys = found.keys
    ids = {s.key: s.stimulus_id for s in found.stimuli}
    if explicit is not None:
        take(_explicit_captions(explicit, keys, ids), str(explicit.resolve()))
    take({s.key: s.caption for s in found.stimuli if s.origin == "word" and s.caption},
         "nsd-imagery concept words")
    if root is not None:
        table = root / SIMULATED_TABLE
        if table.exists():
            take(_table_captions(table, keys), str(table.resolve()))
        take(_coco_captions(root, [k for k in keys if k not in known], ids),
             "coco-2017 annotations")
    found.stimuli = [replace(s, caption=known.get(s.key)) for s in found.stimuli]
    found.caption_sources = sources
    n = sum(1 for s in found.stimuli if s.caption)
    log.info("%s: %d stimuli, %d with captions (%s)", found.index.name, len(found), n,
             ", ".join(sources) or "no caption source")


def _table_captions(path: Path, keys: list[str]) -> dict[str, str]:
    try:
        cols = pq.read_schema(path).names
        if "caption" not in cols:
            return {}
        t = pq.read_table(path, columns=["stimulus", "caption"]).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"not a readable caption table ({exc})", path) from exc
    want = set(keys)
    return {k: c for k, c in zip(t["stimulus"], t["caption"], strict=True)
            if k in want and isinstance(c, str)}


def _explicit_captions(path: Path, keys: list[str], ids: dict[str, int | None]
                       ) -> dict[str, str]:
    if not path.exists():
        raise DataError("caption file not found", path)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        out = {}
        for k in keys:
            sid = ids.get(k)
            if sid is not None and 0 <= sid < len(arr):
                first = next((str(c).strip() for c in arr[sid] if str(c).strip()), None)
                if first:
                    out[k] = first
        return out
    try:
        t = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"not a readable caption table ({exc})", path) from exc
    if "caption" not in t.columns or not {"stimulus", "stimulus_id"} & set(t.columns):
        raise DataError("caption table needs a 'caption' column and a 'stimulus' or "
                        "'stimulus_id' column", path)
    if "stimulus" in t.columns:
        by = dict(zip(t["stimulus"], t["caption"], strict=True))
        return {k: str(by[k]) for k in keys if isinstance(by.get(k), str)}
    by_id = dict(zip(t["stimulus_id"].astype("Int64"), t["caption"], strict=True))
    return {k: str(by_id[ids[k]]) for k in keys
            if ids.get(k) is not None and isinstance(by_id.get(ids[k]), str)}


def _coco_captions(root: Path, keys: list[str], ids: dict[str, int | None]) -> dict[str, str]:
    """COCO captions of NSD images, where the annotation files are under the root."""
    want = {k: ids[k] for k in keys if k.startswith(f"{NSD_PREFIX}:") and ids[k] is not None}
    files = {s: root / COCO_ANNOTATIONS.format(split=s) for s in ("train2017", "val2017")}
    info_path = NSDPaths(root).stim_info
    if not want or not info_path.exists() or not any(p.exists() for p in files.values()):
        return {}
    info = pd.read_csv(info_path, index_col=0)
    missing = {"cocoId", "cocoSplit"} - set(info.columns)
    if missing:
        raise DataError(f"stim info lacks columns {sorted(missing)}", info_path)
    out: dict[str, str] = {}
    for split, path in files.items():
        if not path.exists():
            continue
        sel = {k: int(info["cocoId"].iat[i]) for k, i in want.items()
               if i < len(info) and info["cocoSplit"].iat[i] == split}
        if not sel:
            continue
        try:
            anns = json.loads(path.read_text())["annotations"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"not a COCO caption annotation file ({exc})", path) from exc
        first: dict[int, tuple[int, str]] = {}
        wanted = set(sel.values())
        for a in anns:
            img = a.get("image_id")
            if img in wanted and (img not in first or a["id"] < first[img][0]):
                first[img] = (a["id"], " ".join(str(a["caption"]).split()))
        out.update({k: first[c][1] for k, c in sel.items() if c in first})
    return out


__all__ = ["IndexStimuli", "Stimulus", "imagery_target_names", "index_stimuli", "rgb_array"]
