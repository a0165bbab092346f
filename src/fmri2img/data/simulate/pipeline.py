"""Write a complete simulated NSD + NSD-Imagery root: ``simulate(out_dir, cfg)``."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fmri2img.data.keys import imagery_key, nsd_key
from fmri2img.data.nsd_layout import (
    IMAGERY_N_BETAS,
    ROI_LABELS,
    TRIALS_PER_SESSION,
    NSDPaths,
    subject_name,
)
from fmri2img.data.simulate import truth
from fmri2img.data.simulate.anatomy import Anatomy, make_anatomy
from fmri2img.data.simulate.config import REPETITIONS, STREAM_NAMES, SimulationConfig
from fmri2img.data.simulate.design import (
    NSDDesign,
    make_design,
    responses_table,
    stim_info_table,
)
from fmri2img.data.simulate.eeg import ThingsImages, make_things_images, write_things_eeg
from fmri2img.data.simulate.embedding import EmbeddingModel, make_embedding_model
from fmri2img.data.simulate.imagery_design import (
    STREAM_LENGTH,
    ImageryDesign,
    make_imagery_design,
    pair_list,
    stiminfo_table,
    subject_imagery,
)
from fmri2img.data.simulate.layout import contrast_maps
from fmri2img.data.simulate.render import blank_image, render_rows, stamp_cue
from fmri2img.data.simulate.seeding import stream
from fmri2img.data.simulate.stimuli import (
    ATTRIBUTES,
    LOW_FEATURES,
    PARAM_NAMES,
    Categories,
    ImageryRoles,
    StimulusBank,
    build_bank,
    caption,
    choose_roles,
    make_categories,
)
from fmri2img.data.simulate.voxels import (
    BrainVoxels,
    VoxelModel,
    imagery_basis,
    make_brain_voxels,
    make_voxel_model,
    session_drift,
    synthesize,
)
from fmri2img.data.simulate.writers import (
    StimulusBrick,
    write_betas_hdf5,
    write_betas_nifti,
    write_ctab,
    write_mat,
    write_nifti,
    write_png,
    write_table,
)
from fmri2img.errors import DataError
from fmri2img.io.atomic import write_json, write_yaml
from fmri2img.io.embedding_table import write_embedding_table

logger = logging.getLogger(__name__)

EMBEDDING_TABLE = "targets/clip_like.parquet"
# Every category, superordinate and attribute word in the same space, as a CLIP text
# tower would embed them: what spans the semantic subspace of the analyses.
WORD_TABLE = "targets/clip_like_words.parquet"
# Everything simulate() writes at the top of a root; removed before re-simulating there.
OUTPUTS = ("nsddata", "nsddata_betas", "nsddata_stimuli", "targets", truth.GROUND_TRUTH_DIR,
           truth.GROUND_TRUTH_JSON, truth.CONFIG_YAML)
IMAGERY_SESSION = "imagery"


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        yield (bar, bar.add_task("simulating sessions", total=total))


def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / truth.CONFIG_YAML).exists():
            raise DataError(
                "output directory is not empty and holds no earlier simulation; "
                "choose an empty or new directory", root
            )
        logger.info("replacing the earlier simulation in %s", root)
        for name in OUTPUTS:
            p = root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)


def simulate(out_dir: str | Path, cfg: SimulationConfig, *, progress: bool | None = None
             ) -> Path:
    """Write a complete simulated NSD + NSD-Imagery root under ``out_dir``; return it.

    The root also holds ``targets/clip_like.parquet`` (embedding table),
    ``targets/clip_like_words.parquet`` (the concept words in the same space),
    ``ground_truth.json`` + ``ground_truth/`` and ``simulation_config.yaml``.
    ``progress`` shows a bar on stderr (default: at nsd scale on a terminal).
    """
    root = Path(out_dir).resolve()
    _prepare(root)
    t_start = time.perf_counter()
    paths = NSDPaths(root)
    write_yaml(root / truth.CONFIG_YAML, cfg.model_dump(mode="json"))
    if progress is None:
        progress = cfg.scale == "nsd" and sys.stderr.isatty()

    design = make_design(cfg)
    cats = make_categories(cfg)
    roles = choose_roles(cfg, design.sharedix)
    bank = build_bank(cfg, cats, roles)
    bank.layout = contrast_maps(cfg, bank, cats)
    basis = imagery_basis(cfg, bank)
    embedder = make_embedding_model(cfg, bank)
    idesign = make_imagery_design(cfg, bank, roles, design.sharedix)
    things = (make_things_images(cfg, cats, bank, _pair_pool(cfg, design))
              if cfg.eeg.enabled else None)
    logger.info("model built: %d stimuli, %d images/subject, %d shared", bank.n,
                cfg.n_images_per_subject, cfg.n_shared)

    _write_expdesign(paths, design)
    write_table(paths.stim_info, stim_info_table(cfg, design), index=True)
    shown = _shown_ids(cfg, design, roles)
    if cfg.write_images:
        _write_stimuli(cfg, paths, bank, cats, shown)
    _write_imagery_static(cfg, paths, bank, cats, idesign)
    _write_embeddings(root, cfg, bank, cats, embedder, idesign, shown, things)
    logger.info("stimuli, design and targets written (%.1f s)", time.perf_counter() - t_start)

    subjects_info: dict[str, Any] = {}
    total = sum(cfg.sessions_for(s) + 1 for s in cfg.subjects)
    with _progress(progress, total) as bar:
        for subject in cfg.subjects:
            subjects_info[subject_name(subject)] = _simulate_subject(
                cfg, paths, subject, design, bank, basis, idesign, bar
            )
    _write_ground_truth(root, cfg, design, cats, roles, bank, basis, embedder, idesign,
                        subjects_info)
    if things is not None:
        write_things_eeg(root, cfg, cats, bank, things, embedder.sem_centre, embedder.sem_scale)
    logger.info("simulation written to %s in %.1f s", root, time.perf_counter() - t_start)
    return root


# ---------------------------------------------------------------------- NSD static files
def _write_expdesign(paths: NSDPaths, design: NSDDesign) -> None:
    write_mat(paths.expdesign, {
        "masterordering": (design.masterordering + 1)[None, :].astype(np.float64),
        "subjectim": (design.subjectim + 1).astype(np.float64),
        "sharedix": (design.sharedix + 1)[None, :].astype(np.float64),
        "basiccnt": design.basiccnt.astype(np.float64),
        "stimpattern": design.stimpattern.astype(np.float64),
    })


def _pair_pool(cfg: SimulationConfig, design: NSDDesign) -> np.ndarray:
    """NSD images the simulated THINGS set may re-photograph: the first subject's shared
    images it saw (no decoder trains on the shared images, so their fMRI is held out)."""
    s = cfg.subjects[0]
    seen = design.image_ids(s)[: cfg.sessions_for(s) * TRIALS_PER_SESSION]
    return np.intersect1d(design.sharedix, seen)


def _shown_ids(cfg: SimulationConfig, design: NSDDesign, roles: ImageryRoles) -> np.ndarray:
    """NSD images that appear in this root: trials written, plus NSD-Imagery's images."""
    ids = [design.image_ids(s)[: cfg.sessions_for(s) * TRIALS_PER_SESSION]
           for s in cfg.subjects]
    ids.append(np.array(list(roles.complex_ids.values())))
    ids.append(np.array([i for p in roles.concept_pools.values() for i in p]))
    ids.append(np.array(roles.distractor_ids))
    return np.unique(np.concatenate(ids)).astype(np.int64)


def _write_stimuli(cfg: SimulationConfig, paths: NSDPaths, bank: StimulusBank,
                   cats: Categories, ids: np.ndarray) -> None:
    brick = StimulusBrick(paths.stimuli_hdf5, cfg.universe_size, cfg.image_size)
    ok = False
    try:
        step = 256
        for start in range(0, ids.size, step):
            chunk = ids[start : start + step]
            brick.write(chunk, render_rows(bank, cats, chunk, cfg.image_size))
        ok = True
    finally:
        brick.close(ok)
    logger.info("rendered %d stimulus images (%d px)", ids.size, cfg.image_size)


def _write_imagery_static(cfg: SimulationConfig, paths: NSDPaths, bank: StimulusBank,
                          cats: Categories, d: ImageryDesign) -> None:
    size = cfg.image_size
    rows = sorted({f.bank_row for f in d.frames if f.bank_row >= 0})
    rendered = dict(zip(rows, render_rows(bank, cats, np.array(rows), size), strict=True))
    for frame in d.frames:
        if frame.bank_row < 0:
            image = stamp_cue(blank_image(size), frame.cue or "", centre=True)
        else:
            image = rendered[frame.bank_row]
            if frame.cue is not None:
                image = stamp_cue(image, frame.cue)
        write_png(paths.imagery_frames_dir / frame.name, image)
    for t in d.targets.values():
        if t.stem is not None:
            target_path = paths.imagery_experiments_dir / f"rawtargetimages/set{t.stim_set}"
            write_png(target_path / t.name, rendered[t.bank_row])
    for stim_set in "ABC":
        write_mat(paths.imagery_experiments_dir / f"{stim_set}_pair_list.mat",
                  {"pair_list": pair_list(d, stim_set)})
    write_table(paths.imagery_stiminfo, stiminfo_table(d))
    logger.info("NSD-Imagery frames (%d), targets and stiminfo written", len(d.frames))


def _write_embeddings(root: Path, cfg: SimulationConfig, bank: StimulusBank, cats: Categories,
                      embedder: EmbeddingModel, d: ImageryDesign, ids: np.ndarray,
                      things: ThingsImages | None) -> None:
    keys = [nsd_key(int(i)) for i in ids]
    rows = [int(i) for i in ids]
    stimulus_ids: list[int | None] = [int(i) for i in ids]
    for t in d.targets.values():
        if t.nsd_id is None:
            keys.append(imagery_key(t.code))
            rows.append(t.bank_row)
            stimulus_ids.append(None)
    emb = embedder.embed(bank.z_embedding(rows), bank.z_low[rows])
    captions = [caption(bank, cats, r, cfg.size_range) for r in rows]
    if things is not None:  # the THINGS images share the table (one embedding space)
        keys += things.keys
        stimulus_ids += [None] * len(things.keys)
        emb = np.concatenate([emb, things.embeddings(embedder)])
        captions += [f"a {cats.names[int(c)]}" for c in things.category]
    write_embedding_table(
        root / EMBEDDING_TABLE, keys, emb, stimulus_ids=stimulus_ids, captions=captions,
        meta={"model": "simulated-clip-like", "space": "clip_like", "seed": cfg.seed,
              "simulated": True},
    )
    words = sorted(bank.word_latents)
    # a word has no low-level content of its own: the population mean (0 after scaling)
    w_emb = embedder.embed(np.stack([bank.word_latents[w] for w in words]),
                           np.zeros((len(words), bank.z_low.shape[1]), np.float32))
    write_embedding_table(
        root / WORD_TABLE, [f"word:{w}" for w in words], w_emb, captions=words,
        meta={"model": "simulated-clip-like", "space": "clip_like", "seed": cfg.seed,
              "simulated": True, "kind": "words"},
    )


def _write_rois(paths: NSDPaths, anat: Anatomy) -> None:
    s = anat.subject
    write_nifti(paths.brainmask(s), anat.brain.astype(np.int16), anat.affine)
    for atlas, vol in (("nsdgeneral", anat.nsdgeneral), ("prf-visualrois", anat.prf),
                       ("streams", anat.streams)):
        write_nifti(paths.roi(s, atlas), vol.astype(np.int16), anat.affine)
        write_ctab(paths.roi_ctab(s, atlas), ROI_LABELS[atlas])


# ---------------------------------------------------------------------- per subject
def _simulate_subject(cfg: SimulationConfig, paths: NSDPaths, subject: int, design: NSDDesign,
                      bank: StimulusBank, basis: np.ndarray, d: ImageryDesign, bar: Any
                      ) -> dict[str, Any]:
    t0 = time.perf_counter()
    anat = make_anatomy(cfg, subject)
    model = make_voxel_model(cfg, anat, bank, basis, bank.layout)
    brain = make_brain_voxels(cfg, anat, model)
    _write_rois(paths, anat)
    n_sessions = cfg.sessions_for(subject)
    write_table(paths.responses_tsv(subject), responses_table(cfg, design, subject), sep="\t")

    ids = design.image_ids(subject)
    offsets, gains = [], []
    for session in range(1, n_sessions + 1):
        g0 = (session - 1) * TRIALS_PER_SESSION
        trial_ids = ids[g0 : g0 + TRIALS_PER_SESSION]

        def signal(a: int, b: int, trial_ids: np.ndarray = trial_ids) -> np.ndarray:
            rows = trial_ids[a:b]
            return model.perception_signal(bank.z_low[rows], bank.z_sem[rows],
                                           bank.layout[rows])

        drift = _write_session(
            cfg, paths, anat, brain, model, session, signal,
            np.ones(TRIALS_PER_SESSION), TRIALS_PER_SESSION,
            [paths.betas_session(subject, session, fmt) for fmt in cfg.formats],
        )
        offsets.append(drift.offset[brain.visual_pos])
        gains.append(drift.gain)
        if bar is not None:
            bar[0].advance(bar[1])
        logger.debug("%s session %d written", subject_name(subject), session)

    imagery = subject_imagery(cfg, d, subject, model.imagery_noise_factor)
    for run_name, table in imagery.tsv.items():
        write_table(paths.imagery_run_tsv(subject, run_name), table, sep="\t")
    write_table(paths.imagery_behaviour_csv(subject), imagery.behaviour)
    signal_all = _imagery_signal(cfg, model, bank, d, imagery.vividness_gain)
    drift = _write_session(
        cfg, paths, anat, brain, model, IMAGERY_SESSION,
        lambda a, b: signal_all[a:b], imagery.noise_factor, IMAGERY_N_BETAS,
        [paths.imagery_betas(subject, fmt) for fmt in cfg.formats],
    )
    offsets.append(drift.offset[brain.visual_pos])
    gains.append(drift.gain)
    if bar is not None:
        bar[0].advance(bar[1])

    gt_dir = paths.root / truth.GROUND_TRUTH_DIR
    gt_dir.mkdir(parents=True, exist_ok=True)
    model.save(paths.root / truth.voxels_file(subject),
               session_offset=np.array(offsets), session_gain=np.array(gains))
    np.savez_compressed(paths.root / truth.imagery_file(subject),
                        vividness=imagery.vividness, vividness_gain=imagery.vividness_gain,
                        noise_factor=imagery.noise_factor)
    logger.info("%s: %d sessions + imagery written (%.1f s)", subject_name(subject),
                n_sessions, time.perf_counter() - t0)
    return {
        "volume_shape": list(anat.shape),
        "n_brain_voxels": int(anat.brain.sum()),
        "nsdgeneral_voxels": int(anat.visual.sum()),
        "roi_counts": anat.roi_counts(),
        "sessions": n_sessions,
        "imagery_gains": {"low": model.imagery_low_gain, "coarse": model.imagery_coarse_gain,
                          "simple": model.imagery_simple_gain, "sem": model.imagery_sem_gain},
        "imagery_noise_factor": model.imagery_noise_factor,
        "imagery_participating_voxels": int(model.imagery_participation.sum()),
        "vivid_reports": int(np.nansum(imagery.behaviour["Value"].to_numpy()[
            d.design.task.to_numpy() == "imagery"])),
        "files": {"voxels": truth.voxels_file(subject), "imagery": truth.imagery_file(subject)},
    }


def _write_session(cfg: SimulationConfig, paths: NSDPaths, anat: Anatomy, brain: BrainVoxels,
                   model: VoxelModel, session: int | str, signal: Any,
                   noise_factor: np.ndarray, n_trials: int, targets: list[Path]) -> Any:
    drift = session_drift(cfg, anat.subject, session, brain, model.n_voxels)
    rng = stream(cfg.seed, "trial-noise", anat.subject, str(session))
    # One session of one subject: brain voxels x trials, int16.
    betas = synthesize(cfg, brain, drift, signal, n_trials, noise_factor, rng)
    for fmt, path in zip(cfg.formats, targets, strict=True):
        if fmt == "hdf5":
            write_betas_hdf5(path, betas, brain.flat_zyx, anat.shape)
        else:
            write_betas_nifti(path, betas, brain.flat_zyx, anat.shape, anat.affine)
    del betas
    return drift


def _imagery_signal(cfg: SimulationConfig, model: VoxelModel, bank: StimulusBank,
                    d: ImageryDesign, vividness_gain: np.ndarray) -> np.ndarray:
    """Noise-free nsdgeneral response of each of the 720 imagery-session betas."""
    x = d.design
    out = np.empty((len(x), model.n_voxels), dtype=np.float32)
    task = x.task.to_numpy()
    rows = x.bank_row.to_numpy()
    vis = np.flatnonzero(task == "vision")
    out[vis] = model.perception_signal(bank.z_low[rows[vis]], bank.z_sem[rows[vis]],
                                       bank.layout[rows[vis]])
    img = np.flatnonzero(task == "imagery")
    out[img] = model.imagery_signal(bank.z_low[rows[img]], bank.z_sem[rows[img]],
                                    bank.layout[rows[img]], bank.simple[rows[img]],
                                    vividness_gain[img])
    att = np.flatnonzero(task == "attention")
    frame_rows = {f.name: f.bank_row for f in d.frames}
    streams = [[frame_rows[n] for n in s.split("|")] for s in x.stream.to_numpy()[att]]
    z_low = np.array([bank.z_low[r].mean(axis=0) for r in streams])
    z_sem = np.array([bank.z_sem[r].mean(axis=0) for r in streams])
    maps = np.array([bank.layout[r].mean(axis=0) for r in streams])
    seen = model.perception_signal(z_low, z_sem, maps)
    detect = model.evoked + cfg.attention_gain * (seen - model.evoked)
    cue = np.broadcast_to(model.evoked * cfg.attention_cue_gain, detect.shape)
    # [S] first beta of a pair = cue epoch, second = detection epoch.
    epoch = x.epoch.to_numpy()[att]
    out[att] = np.where((epoch == 0)[:, None], cue, detect)
    if not all(len(s) == STREAM_LENGTH for s in streams):
        raise AssertionError("attention streams must have STREAM_LENGTH frames")
    return out


# ---------------------------------------------------------------------- ground truth
def _write_ground_truth(root: Path, cfg: SimulationConfig, design: NSDDesign, cats: Categories,
                        roles: ImageryRoles, bank: StimulusBank, basis: np.ndarray,
                        embedder: EmbeddingModel, d: ImageryDesign,
                        subjects: dict[str, Any]) -> None:
    gt = root / truth.GROUND_TRUTH_DIR
    gt.mkdir(parents=True, exist_ok=True)
    extra_names = sorted(bank.extra_index, key=bank.extra_index.__getitem__)
    words = sorted(bank.word_latents)
    np.savez_compressed(
        gt / "stimuli.npz",
        z_sem=bank.z_sem, z_low=bank.z_low, layout=bank.layout, z_private=bank.z_private,
        simple=bank.simple, category=bank.category,
        attributes=bank.attributes, params=bank.params, low_mean=bank.low_mean,
        low_sd=bank.low_sd, prototypes=bank.prototypes,
        superordinate_means=bank.superordinate_means,
        attribute_directions=bank.attribute_directions,
        extra_names=np.array(extra_names), word_names=np.array(words),
        word_latents=np.array([bank.word_latents[w] for w in words]),
        imagery_basis=basis,
    )
    embedder.save(gt / "embedding_model.npz")
    d.design.to_csv(gt / "imagery_design.csv", index=False)

    p = cfg.imagery_params()
    info = {
        "format": truth.FORMAT_NAME,
        "version": truth.FORMAT_VERSION,
        "null": cfg.null,
        "seed": cfg.seed,
        "seeds": {
            "base": cfg.seed,
            "scheme": "np.random.default_rng(SeedSequence([seed, crc32(name), *numbers]))",
        },
        "config": cfg.model_dump(mode="json"),
        "derived": {
            "n_universe": cfg.universe_size,
            "n_shared": cfg.n_shared,
            "n_images_per_subject": cfg.n_images_per_subject,
            "n_design_sessions": cfg.n_design_sessions,
            "n_design_trials": cfg.n_design_trials,
            "repetitions": REPETITIONS,
            "image_size": cfg.image_size,
            "sem_dim": cfg.sem_dim,
            "low_dim": len(LOW_FEATURES),
            "low_features": list(LOW_FEATURES),
            "physical_parameters": list(PARAM_NAMES),
            "attributes": list(ATTRIBUTES),
            "categories": cats.as_records(),
            "superordinates": list(cats.superordinates),
            "streams": list(STREAM_NAMES),
            "low_weight_by_stream": cfg.low_weight,
            "imagery_effective": p.as_dict(),
            "imagery_basis_rank": int(basis.shape[1]),
            "sharedix": design.sharedix.tolist(),
        },
        "imagery_targets": [
            {
                "code": t.code, "set": t.stim_set, "number": t.number, "name": t.name,
                "key": t.key, "nsd_id": t.nsd_id, "bank_row": t.bank_row,
                "canonical_frame": d.canonical_frame(t.code) if t.stem else None,
                "category": cats.names[int(bank.category[t.bank_row])]
                if bank.category[t.bank_row] >= 0 else None,
            }
            for t in d.targets.values()
        ],
        "concept_exemplars": d.concept_exemplars,
        "attention_distractors": roles.distractor_ids,
        "frames": [f.name for f in d.frames],
        "subjects": subjects,
        "keys": {"nsd": "nsd:<0-based 73k id>", "imagery": "nsdimagery:<code>",
                 "complex_targets": "their NSD key"},
        "arrays": {
            "stimuli": f"{truth.GROUND_TRUTH_DIR}/stimuli.npz",
            "embedding_model": f"{truth.GROUND_TRUTH_DIR}/embedding_model.npz",
            "imagery_design": f"{truth.GROUND_TRUTH_DIR}/imagery_design.csv",
            "voxels": {s: v["files"]["voxels"] for s, v in subjects.items()},
            "imagery": {s: v["files"]["imagery"] for s, v in subjects.items()},
        },
        "embedding_table": EMBEDDING_TABLE,
        "units": {"betas": "percent signal change x 300, int16", "signal": "PSC"},
    }
    write_json(root / truth.GROUND_TRUTH_JSON, truth.to_jsonable(info))
