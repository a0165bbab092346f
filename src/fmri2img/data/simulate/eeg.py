"""Simulated THINGS-EEG2: images, their embeddings and 63-channel EEG in the 250 Hz layout.

Written under ``<root>/things-eeg2/``::

    image_set/image_metadata.npy                      np.save of the metadata dict
    image_set/training_images/<NNNNN>_<concept>/<concept>_<NN><letter>.jpg
    image_set/test_images/<NNNNN>_<concept>/<concept>_<NN><letter>.jpg
    Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy   pickle.dump'ed dicts
    ground_truth.json, ground_truth.npz

Images are drawn from the same generative model as the NSD images (categories, semantic
and low-level latents, the CLIP-like embedding); a THINGS concept is a point of the
semantic space near a category prototype and its images scatter around it. The EEG of a
trial is an image-independent ERP plus, per component (P1, N1, P2, N400-like), a few
spatial patterns over the channels of the component's regions, each with its own latency
and an amplitude linear in the image's latents (P1 low-level, N1 both, later components
semantic). Background EEG: spatially mixed sources with 1/f-like AR(1) time courses and
a posterior alpha rhythm, plus sensor noise. Epochs run from -0.2 to 1.0 s at 250 Hz and
the first 50 samples are cut as NICE's files are, while ``times`` keeps all 300 values.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.signal import lfilter

from fmri2img.data.keys import nsd_key, things_key
from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.eeg_config import EEGSimConfig
from fmri2img.data.simulate.embedding import EmbeddingModel
from fmri2img.data.simulate.render import render_rows
from fmri2img.data.simulate.seeding import stream
from fmri2img.data.simulate.stimuli import (
    Categories,
    StimulusBank,
    _draw_params,
    _low_features,
)
from fmri2img.io.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)

THINGS_DIR = "things-eeg2"
IMAGE_SET = "image_set"
EEG_DIR = "Preprocessed_data_250Hz"
TRAIN_FILE = "preprocessed_eeg_training.npy"
TEST_FILE = "preprocessed_eeg_test.npy"
SFREQ = 250.0
EPOCH_START = -0.2
N_EPOCH = 300  # -0.2 .. 0.996 s
N_CUT = 50  # NICE's files drop the pre-stimulus samples but keep all 300 times

CHANNELS = (
    "Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 "
    "FT8 FT10 T7 C5 C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 "
    "P3 P1 Pz P2 P4 P6 P8 PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()
_REGION_PREFIXES = ("Fp", "AF", "FC", "FT", "TP", "CP", "PO", "F", "T", "C", "P", "O")

# name, latency (s), width (s), region weights, latents read ("low", "sem", "both")
COMPONENTS = (
    ("P1", 0.10, 0.020, {"O": 1.0, "PO": 0.9, "P": 0.3}, "low"),
    ("N1", 0.17, 0.030, {"PO": 1.0, "O": 0.6, "P": 0.6, "TP": 0.5, "T": 0.3}, "both"),
    ("P2", 0.25, 0.040, {"P": 0.8, "CP": 0.6, "PO": 0.5, "C": 0.3}, "sem"),
    ("N400", 0.40, 0.080, {"CP": 0.9, "C": 0.8, "P": 0.6, "FC": 0.4}, "sem"),
)
N_SOURCES = 20
AR_COEF = 0.95  # 1/f-like background at 250 Hz
SENSOR_NOISE = 0.5


def region(channel: str) -> str:
    return next(p for p in _REGION_PREFIXES if channel.startswith(p))


@dataclass
class ThingsImages:
    """The simulated THINGS images (training rows first, then test rows)."""

    files: list[str]  # "<NNNNN>_<concept>/<concept>_<NN><letter>.jpg"
    concepts: list[str]  # "<NNNNN>_<concept>" per image
    is_test: np.ndarray  # (n,) bool
    category: np.ndarray  # (n,) int16
    params: np.ndarray  # (n, n_params)
    z_sem: np.ndarray  # what the brain encodes
    z_low: np.ndarray
    z_private: np.ndarray  # what only the embedding sees
    pairs: list[tuple[int, int]]  # (image row, NSD 0-based id): the same picture

    @property
    def keys(self) -> list[str]:
        return [things_key(f) for f in self.files]

    def embeddings(self, embedder: EmbeddingModel) -> np.ndarray:
        return embedder.embed(self.z_sem + self.z_private, self.z_low)


def make_things_images(cfg: SimulationConfig, cats: Categories, bank: StimulusBank,
                       pair_pool: np.ndarray) -> ThingsImages:
    """Concepts, images and latents; ``pairs`` training images copy NSD images drawn from
    ``pair_pool`` (0-based ids)."""
    e = cfg.eeg
    rng = stream(cfg.seed, "things-images")
    n_concepts = e.train_concepts + e.test_concepts
    cat_of = rng.choice(np.asarray(cats.universe), size=n_concepts).astype(np.int16)
    z_concept = bank.prototypes[cat_of] + rng.normal(0, cfg.exemplar_sd,
                                                     (n_concepts, cfg.sem_dim))
    files: list[str] = []
    concepts: list[str] = []
    concept_of: list[int] = []
    counts = [e.images_per_concept] * e.train_concepts + [1] * e.test_concepts
    for c, n_img in enumerate(counts):
        test = c >= e.train_concepts
        number = c - e.train_concepts + 1 if test else c + 1
        name = f"{cats.names[int(cat_of[c])]}_{c + 1:04d}"  # unique over both sets
        folder = f"{number:05d}_{name}"
        for j in range(n_img):
            letter = "s" if test else chr(ord("a") + int(rng.integers(0, 26)))
            files.append(f"{folder}/{name}_{j + 1:02d}{letter}.jpg")
            concepts.append(folder)
            concept_of.append(c)
    idx = np.asarray(concept_of)
    n = idx.size
    category = cat_of[idx]
    z_sem = (z_concept[idx] + rng.normal(0, e.image_jitter * cfg.exemplar_sd, (n, cfg.sem_dim)))
    params = _draw_params(cfg, cats, category, np.zeros((n, 2), bool), rng)
    z_private = rng.normal(0, cfg.embed_private_sd, (n, cfg.sem_dim))

    # true pairs: a training image of a concept of the NSD image's category re-photographs it
    pairs: list[tuple[int, int]] = []
    if e.pairs:
        if e.pairs > pair_pool.size:
            raise ValueError(f"eeg.pairs={e.pairs} exceeds the {pair_pool.size} NSD images "
                             "available for pairing (subject 1's shared images)")
        n_train = e.train_concepts * e.images_per_concept
        free = list(rng.permutation(n_train))
        for nsd_id in rng.choice(pair_pool, size=e.pairs, replace=False):
            cat = int(bank.category[nsd_id])
            row = next((r for r in free if category[r] == cat), None)
            if row is None:
                row = free[0]
                category[row] = cat
            free.remove(row)
            z_sem[row] = bank.z_sem[nsd_id] + rng.normal(0, e.pair_jitter * cfg.exemplar_sd,
                                                         cfg.sem_dim)
            # what the embedding sees beyond the brain's latent: mostly the scene's own,
            # partly this photo's
            z_private[row] = 0.8 * bank.z_private[nsd_id] + 0.6 * z_private[row]
            params[row] = bank.params[nsd_id]
            params[row, :2] += rng.normal(0, 0.01, 2)  # another photo of the same scene
            pairs.append((int(row), int(nsd_id)))
    z_low = (_low_features(params) - bank.low_mean) / bank.low_sd
    is_test = idx >= e.train_concepts
    return ThingsImages(files, concepts, is_test, category, params.astype(np.float32),
                        z_sem.astype(np.float32), z_low.astype(np.float32),
                        z_private.astype(np.float32), sorted(pairs))


# ----------------------------------------------------------------------------- EEG model
@dataclass
class EEGModel:
    patterns: list[np.ndarray]  # per component (C, R)
    weights: list[np.ndarray]  # per component (R, d_latent)
    waves: list[np.ndarray]  # per component (R, T)
    evoked: np.ndarray  # (C, T) the image-independent ERP
    mixing: np.ndarray  # (C, n_sources)
    alpha_gain: np.ndarray  # (n_sources,)
    scale: float = 1.0  # signal units per latent unit, set so the SNR is cfg.snr


def _region_weights(weights: dict[str, float]) -> np.ndarray:
    return np.array([weights.get(region(ch), 0.0) for ch in CHANNELS])


def epoch_times() -> np.ndarray:
    return EPOCH_START + np.arange(N_EPOCH) / SFREQ


def make_eeg_model(cfg: SimulationConfig, subject: int, d_low: int) -> EEGModel:
    """Subject ``subject``'s EEG generator; what every subject shares is drawn from one
    stream, the subject's deviations from its own."""
    e: EEGSimConfig = cfg.eeg
    shared = stream(cfg.seed, "eeg-shared")
    own = stream(cfg.seed, "eeg-subject", subject)
    t = epoch_times()
    n_ch, d_sem = len(CHANNELS), cfg.sem_dim
    patterns, weights, waves = [], [], []
    evoked = np.zeros((n_ch, t.size))
    for _name, latency, width, regions, reads in COMPONENTS:
        w_region = _region_weights(regions)[:, None]
        r = e.patterns_per_component
        base = shared.normal(size=(n_ch, r))
        patterns.append(w_region * (base + e.subject_sd * own.normal(size=(n_ch, r))))
        w = shared.normal(size=(r, d_sem + d_low))
        if reads == "low":
            w[:, :d_sem] = 0
        elif reads == "sem":
            w[:, d_sem:] = 0
        weights.append(w / np.sqrt(np.count_nonzero(w[0])))
        lat = latency + shared.uniform(-0.02, 0.02, r)[:, None]
        waves.append(np.exp(-0.5 * ((t[None, :] - lat) / width) ** 2))
        sign = shared.choice([-1.0, 1.0])
        evoked += sign * w_region * np.exp(-0.5 * ((t - latency) / width) ** 2)[None, :]
    home = own.integers(0, len(_REGION_PREFIXES), N_SOURCES)
    near = np.array([[region(ch) == _REGION_PREFIXES[h] for h in home] for ch in CHANNELS])
    mixing = own.normal(size=(n_ch, N_SOURCES)) * (0.3 + 0.7 * near)
    posterior = np.isin(np.array([_REGION_PREFIXES[h] for h in home]), ["O", "PO", "P"])
    alpha_gain = np.where(posterior, 1.5, 0.3)
    return EEGModel(patterns, weights, waves, e.evoked_gain * evoked, mixing, alpha_gain)


def latent_matrix(z_sem: np.ndarray, z_low: np.ndarray, centre: np.ndarray,
                  scale: float) -> np.ndarray:
    return np.concatenate([(z_sem - centre) / scale, z_low], axis=1)


def stimulus_signal(model: EEGModel, z: np.ndarray) -> np.ndarray:
    """(n, C, T) image-driven signal (before ``model.scale``)."""
    out = np.zeros((z.shape[0], len(CHANNELS), N_EPOCH))
    for a, w, wave in zip(model.patterns, model.weights, model.waves, strict=True):
        amp = z @ w.T  # (n, R)
        out += np.einsum("nr,cr,rt->nct", amp, a, wave, optimize=True)
    return out


def calibrate(model: EEGModel, z_all: np.ndarray, snr: float, noise_sd: float) -> None:
    """Scale the image-driven signal so that its SD over images, at the 5% most driven
    (channel, time) cells, is ``snr`` noise SDs."""
    sig = stimulus_signal(model, z_all[: min(len(z_all), 2000)])
    sd = sig.std(axis=0)
    peak = float(np.quantile(sd, 0.95))
    model.scale = 0.0 if snr == 0 or peak == 0 else snr * noise_sd / peak


def background(model: EEGModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, C, T) background EEG of unit-order variance per channel."""
    t = epoch_times()
    white = rng.normal(size=(n, N_SOURCES, N_EPOCH))
    src = lfilter([np.sqrt(1 - AR_COEF**2)], [1.0, -AR_COEF], white, axis=-1)
    freq = rng.uniform(9.0, 11.0, (n, N_SOURCES, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, N_SOURCES, 1))
    amp = model.alpha_gain[None, :, None] * rng.uniform(0.2, 1.0, (n, N_SOURCES, 1))
    src = src + amp * np.sin(2 * np.pi * freq * t[None, None, :] + phase)
    out = np.einsum("cs,nst->nct", model.mixing, src, optimize=True)
    out += SENSOR_NOISE * rng.normal(size=out.shape)
    return out


def noise_sd(model: EEGModel) -> float:
    """The background's SD per channel (averaged), from a fixed draw."""
    return float(background(model, 64, np.random.default_rng(0)).std(axis=(0, 2)).mean())


def synthesize(model: EEGModel, z: np.ndarray, reps: int, rng: np.random.Generator,
               block: int = 256) -> np.ndarray:
    """(n_images, reps, C, T - N_CUT) float32 epochs."""
    n = z.shape[0]
    out = np.empty((n, reps, len(CHANNELS), N_EPOCH - N_CUT), dtype=np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        sig = model.scale * stimulus_signal(model, z[a:b]) + model.evoked[None]
        for r in range(reps):
            epoch = sig + background(model, b - a, rng)
            out[a:b, r] = epoch[:, :, N_CUT:]
    return out


# ----------------------------------------------------------------------------- writers
def _write_pickle(path: Path, obj: dict[str, Any]) -> None:
    # NICE's 250 Hz files are pickle.dump'ed dicts under a .npy name; written the same way
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def _write_images(root: Path, cfg: SimulationConfig, cats: Categories, bank: StimulusBank,
                  imgs: ThingsImages) -> None:
    n = len(imgs.files)
    view = StimulusBank(
        n_universe=n, category=imgs.category, attributes=np.zeros((n, 2), bool),
        params=imgs.params, z_sem=imgs.z_sem, z_low=imgs.z_low, low_mean=bank.low_mean,
        low_sd=bank.low_sd, superordinate_means=bank.superordinate_means,
        prototypes=bank.prototypes, attribute_directions=bank.attribute_directions,
        word_latents={})
    size = cfg.eeg.image_size
    for start in range(0, n, 256):
        rows = np.arange(start, min(n, start + 256))
        for i, image in zip(rows, render_rows(view, cats, rows, size), strict=True):
            sub = "test_images" if imgs.is_test[i] else "training_images"
            path = root / IMAGE_SET / sub / imgs.files[i]
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=90)


def write_things_eeg(root: Path, cfg: SimulationConfig, cats: Categories, bank: StimulusBank,
                     imgs: ThingsImages, centre: np.ndarray, scale: float) -> dict[str, Any]:
    """Write the THINGS-EEG2 part under ``root/things-eeg2``; returns its ground truth."""
    e = cfg.eeg
    out = root / THINGS_DIR
    train = ~imgs.is_test
    meta = {
        "train_img_files": [f.rsplit("/", 1)[1] for f, t in zip(imgs.files, train,
                                                                 strict=True) if t],
        "train_img_concepts": [c for c, t in zip(imgs.concepts, train, strict=True) if t],
        "test_img_files": [f.rsplit("/", 1)[1] for f, t in zip(imgs.files, train,
                                                                strict=True) if not t],
        "test_img_concepts": [c for c, t in zip(imgs.concepts, train, strict=True) if not t],
    }
    meta["train_img_concepts_THINGS"] = list(meta["train_img_concepts"])
    meta["test_img_concepts_THINGS"] = list(meta["test_img_concepts"])
    (out / IMAGE_SET).mkdir(parents=True, exist_ok=True)
    with atomic_path(out / IMAGE_SET / "image_metadata.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, meta, allow_pickle=True)
    if cfg.write_images:
        _write_images(out, cfg, cats, bank, imgs)

    z = latent_matrix(imgs.z_sem, imgs.z_low, centre, scale)
    times = epoch_times()
    subjects = {}
    for s in range(1, e.subjects + 1):
        model = make_eeg_model(cfg, s, imgs.z_low.shape[1])
        sd = noise_sd(model)
        calibrate(model, z, e.snr, sd)
        rng = stream(cfg.seed, "eeg-trials", s)
        folder = out / EEG_DIR / f"sub-{s:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows, reps in ((TRAIN_FILE, train, e.train_repetitions),
                                 (TEST_FILE, imgs.is_test, e.test_repetitions)):
            data = synthesize(model, z[rows], reps, rng)
            _write_pickle(folder / name, {"preprocessed_eeg_data": data,
                                          "ch_names": list(CHANNELS), "times": times})
        subjects[f"sub-{s:02d}"] = {"noise_sd": sd, "signal_scale": model.scale}
        logger.info("simulated THINGS-EEG2 sub-%02d: %d training and %d test images",
                    s, int(train.sum()), int(imgs.is_test.sum()))
    truth = {
        "config": e.model_dump(mode="json"),
        "null": e.snr == 0,
        "pairs": [[things_key(imgs.files[r]), nsd_key(i)] for r, i in imgs.pairs],
        "channels": list(CHANNELS),
        "sfreq": SFREQ,
        "components": [{"name": c[0], "latency": c[1], "width": c[2], "regions": c[3],
                        "reads": c[4]} for c in COMPONENTS],
        "subjects": subjects,
        "snr_definition": "SD over images of the image-driven signal / SD of the background, "
                          "at the 95th percentile of (channel, time) cells, single trials",
    }
    write_json(out / "ground_truth.json", truth)
    return truth
