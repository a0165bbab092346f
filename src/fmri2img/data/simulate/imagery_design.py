"""The NSD-Imagery session: targets, frames, the 720-beta design and per-subject behaviour.

One design (cue orders, shown frames, attention streams) serves every subject, as the
single ``nsdimagery_stiminfo.csv`` implies; onsets and responses differ per subject.

Frame naming. The frame folder's sorted listing defines the frame indices of the
stiminfo. For a simple or complex target with stem ``s`` the cue variants are
``s_cueX.png`` and the canonical (cue-less) frame is ``s_nocue.png``, which sorts after
them; stems of different targets do not interleave, so for a set A/B vision row the shown
target is the one whose canonical index is the smallest >= the row's frame index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fmri2img.data.keys import imagery_key, nsd_key, target_key
from fmri2img.data.nsd_layout import IMAGERY_BLOCKS, IMAGERY_N_BETAS, IMAGERY_TARGETS
from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.seeding import stream
from fmri2img.data.simulate.stimuli import (
    ARTWORK_CODE,
    ImageryRoles,
    StimulusBank,
    distractor_specs,
)

TRIALS_PER_RUN = 48
REPS_PER_RUN = 8  # each of a run's 6 targets
STREAM_LENGTH = 24  # frames per attention stream
SHORT_TRIAL_S = 4.0  # vision and imagery trials
LONG_TRIAL_S = 8.0  # attention trials
SHORT_RUN_START_S = 12.0
LONG_RUN_START_S = 16.0
BLANK_EVERY = 8  # a blank 4-s gap after this many vision / imagery trials
STREAM_LEAD_S = 0.5  # from attention trial onset to the first stream frame
TSV_COLUMNS = (
    "SUBJECT", "SESSION", "RUN", "TRIAL", "CONDITION", "CUE", "FRAMEFILE", "IMAGEFILE",
    "GROUNDTRUTH", "ISCORRECT", "CHANGEMIND", "TOTAL1", "TOTAL2", "BUTTON", "TRIALONSET",
    "TRIALEND", "IMAGEONSET", "IMAGESERIESENDS", "FINALDECISIONTIME", "RT",
)  # fmt: skip
STIMINFO_COLUMNS = ("betas", "TaskType", "StimType", "StimCond(0/1)", "Cue",
                    "Image(s) seen/imagined")
BEHAVIOUR_COLUMNS = ("stimStart", "ButtonPressed", "Value", "TargetTime")
TASK_TYPE = {"vision": 0.0, "attention": 1.0}
STIM_TYPE = {"A": 0.0, "B": 1.0, "C": 2.0}
CUE_FRAME = "blank00000_00000000_cue{code}.png"
ARTWORK_STEM = "shared0000_nsd00000"
BUTTON_VIVID, BUTTON_NOT_VIVID = 1, 2  # imagery runs
BUTTON_MATCH, BUTTON_NO_MATCH = 1, 2  # vision runs: cue matches the shown target?
BUTTON_PRESENT, BUTTON_ABSENT = 1, 2  # attention runs


@dataclass(frozen=True)
class Target:
    code: str
    stim_set: str
    number: int
    name: str  # file name (sets A, B) or word (set C)
    stem: str | None  # frame stem, sets A and B
    nsd_id: int | None  # 0-based, complex targets drawn from the shared images
    bank_row: int  # the stimulus perceived / imagined

    @property
    def key(self) -> str:
        return target_key(self.code, self.nsd_id)


@dataclass(frozen=True)
class Frame:
    name: str
    bank_row: int  # -1 for blank cue frames
    cue: str | None


@dataclass
class ImageryDesign:
    targets: dict[str, Target]
    frames: list[Frame]  # sorted by name: position = frame index
    design: pd.DataFrame  # one row per beta (720)
    concept_exemplars: dict[str, list[int]]

    def frame_index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.frames)}

    def canonical_frame(self, code: str) -> str:
        stem = self.targets[code].stem
        if stem is None:
            raise KeyError(f"target {code} has no frame")
        return f"{stem}_nocue.png"


def shared_stem(sharedix: np.ndarray, id0: int) -> str:
    """``sharedNNNN_nsdMMMMM``: 1-based position among the shared images and 1-based id."""
    pos = int(np.searchsorted(sharedix, id0))
    if pos >= sharedix.size or sharedix[pos] != id0:
        raise ValueError(f"image {id0} is not a shared image")
    return f"shared{pos + 1:04d}_nsd{id0 + 1:05d}"


def make_targets(bank: StimulusBank, roles: ImageryRoles, sharedix: np.ndarray
                 ) -> dict[str, Target]:
    out: dict[str, Target] = {}
    for t in IMAGERY_TARGETS:
        if t.stim_set == "A":
            stem = t.name.removesuffix(".png")
            out[t.code] = Target(t.code, "A", t.number, t.name, stem, None, bank.row(t.code))
        elif t.stim_set == "B" and t.code == ARTWORK_CODE:
            out[t.code] = Target(t.code, "B", t.number, f"{ARTWORK_STEM}.png", ARTWORK_STEM,
                                 None, bank.row(t.code))
        elif t.stim_set == "B":
            id0 = roles.complex_ids[t.code]
            stem = shared_stem(sharedix, id0)
            out[t.code] = Target(t.code, "B", t.number, f"{stem}.png", stem, id0, id0)
        else:
            out[t.code] = Target(t.code, "C", t.number, t.name, None, None, bank.row(t.code))
    return out


def _frames(cfg: SimulationConfig, bank: StimulusBank, roles: ImageryRoles,
            sharedix: np.ndarray, targets: dict[str, Target]) -> list[Frame]:
    frames: dict[str, Frame] = {}

    def add(name: str, row: int, cue: str | None) -> None:
        frames.setdefault(name, Frame(name, row, cue))

    set_codes = {s: [c for c, t in targets.items() if t.stim_set == s] for s in "ABC"}
    for code, t in targets.items():
        add(CUE_FRAME.format(code=code), -1, code)
        if t.stem is not None:
            add(f"{t.stem}_nocue.png", t.bank_row, None)
            for cue in set_codes[t.stim_set]:
                add(f"{t.stem}_cue{cue}.png", t.bank_row, cue)
    for stem, *_ in distractor_specs(cfg):
        add(f"{stem}.png", bank.row(f"distractor:{stem}"), None)
    plain = set(roles.distractor_ids) | {i for p in roles.concept_pools.values() for i in p}
    for id0 in sorted(plain):
        add(f"{shared_stem(sharedix, id0)}.png", id0, None)
    for pool in roles.concept_pools.values():
        for id0 in pool:
            for cue in set_codes["C"]:
                add(f"{shared_stem(sharedix, id0)}_cue{cue}.png", id0, cue)
    return [frames[name] for name in sorted(frames)]


def make_imagery_design(cfg: SimulationConfig, bank: StimulusBank, roles: ImageryRoles,
                        sharedix: np.ndarray) -> ImageryDesign:
    rng = stream(cfg.seed, "imagery-design")
    targets = make_targets(bank, roles, sharedix)
    frames = _frames(cfg, bank, roles, sharedix, targets)
    index = {f.name: i for i, f in enumerate(frames)}
    set_codes = {s: [c for c, t in targets.items() if t.stim_set == s] for s in "ABC"}
    pools = roles.concept_pools
    plain_distractors = [f"{shared_stem(sharedix, i)}.png" for i in roles.distractor_ids]

    def target_frames(code: str) -> list[str]:
        """Frames that show target ``code`` in an attention stream."""
        t = targets[code]
        if t.stem is not None:
            return [f"{t.stem}_nocue.png"]
        return [f"{shared_stem(sharedix, i)}.png" for i in pools[code]]

    stream_pool: dict[str, list[str]] = {
        "A": [f"{targets[c].stem}_nocue.png" for c in set_codes["A"]]
        + [f"{stem}.png" for stem, *_ in distractor_specs(cfg)],
        "B": [f"{targets[c].stem}_nocue.png" for c in set_codes["B"]] + plain_distractors,
        "C": [f for c in set_codes["C"] for f in target_frames(c)] + plain_distractors,
    }

    rows: list[dict] = []
    for run, block in enumerate(IMAGERY_BLOCKS, start=1):
        codes = set_codes[block.stim_set]
        order = rng.permutation(np.repeat(codes, REPS_PER_RUN))
        # Half of each target's trials get the flag (mismatching cue / target present).
        flags = {c: rng.permutation([True] * (REPS_PER_RUN // 2)
                                    + [False] * (REPS_PER_RUN - REPS_PER_RUN // 2))
                 for c in codes}
        seen = dict.fromkeys(codes, 0)
        for trial, cond in enumerate(order.tolist(), start=1):
            k = seen[cond]
            seen[cond] += 1
            flag = bool(flags[cond][k])
            base = {"run_name": block.name, "run": run, "task": block.task,
                    "stim_set": block.stim_set, "trial": trial}
            t = targets[cond]
            if block.task == "vision":
                cue = str(rng.choice([c for c in codes if c != cond])) if flag else cond
                if t.stem is not None:
                    frame, row = f"{t.stem}_cue{cue}.png", t.bank_row
                else:
                    row = pools[cond][k % len(pools[cond])]
                    frame = f"{shared_stem(sharedix, row)}_cue{cue}.png"
                rows.append({**base, "epoch": 0, "condition": cond, "cue": cue,
                             "groundtruth": float(cue == cond), "framefile": frame,
                             "images": str([index[frame]]), "bank_row": row,
                             "stream": ""})
            elif block.task == "attention":
                own = target_frames(cond)
                others = [f for f in stream_pool[block.stim_set] if f not in own]
                picks = list(rng.choice(others, STREAM_LENGTH - int(flag), replace=False))
                position = -1
                if flag:
                    position = int(rng.integers(0, STREAM_LENGTH))
                    picks.insert(position, str(rng.choice(own)))
                images = str([index[f] for f in picks])
                for epoch in range(block.betas_per_trial):
                    rows.append({**base, "epoch": epoch, "condition": cond, "cue": cond,
                                 "groundtruth": float(flag),
                                 "framefile": CUE_FRAME.format(code=cond), "images": images,
                                 "bank_row": -1, "stream": "|".join(picks),
                                 "target_position": position})
            else:
                images = (str([index[f"{t.stem}_nocue.png"]]) if t.stem is not None
                          else str([t.name]))
                rows.append({**base, "epoch": 0, "condition": cond, "cue": cond,
                             "groundtruth": np.nan, "framefile": CUE_FRAME.format(code=cond),
                             "images": images, "bank_row": t.bank_row, "stream": ""})
    design = pd.DataFrame(rows)
    design.insert(0, "beta", np.arange(len(design)))
    if len(design) != IMAGERY_N_BETAS:
        raise AssertionError(f"imagery design has {len(design)} betas, not {IMAGERY_N_BETAS}")
    design["target_position"] = design.get("target_position", -1)
    design["target_position"] = design["target_position"].fillna(-1).astype(int)
    design["stimulus_key"] = [
        _stimulus_key(bank, targets, r) for r in design.itertuples(index=False)
    ]
    return ImageryDesign(targets, frames, design, {c: list(p) for c, p in pools.items()})


def _stimulus_key(bank: StimulusBank, targets: dict[str, Target], r) -> str:
    if r.task == "attention":
        return ""
    if r.task == "imagery":
        return targets[r.condition].key
    if int(r.bank_row) < bank.n_universe:
        return nsd_key(int(r.bank_row))
    return imagery_key(r.condition)


def stiminfo_table(d: ImageryDesign) -> pd.DataFrame:
    x = d.design
    task = np.where(x.task == "imagery",
                    np.where(x.run_name.str.endswith("_1"), 2.0, 3.0),
                    x.task.map(TASK_TYPE).fillna(0.0).to_numpy(dtype=float))
    return pd.DataFrame({
        "betas": x.beta.to_numpy(),
        "TaskType": task.astype(float),
        "StimType": x.stim_set.map(STIM_TYPE).to_numpy(dtype=float),
        "StimCond(0/1)": x.groundtruth.to_numpy(dtype=float),
        "Cue": x.cue.to_numpy(),
        "Image(s) seen/imagined": x.images.to_numpy(),
    }, columns=list(STIMINFO_COLUMNS))


@dataclass
class SubjectImagery:
    """One subject's timings, responses and vividness for the 720 betas."""

    tsv: dict[str, pd.DataFrame]  # run name -> 48-row official behaviour table
    behaviour: pd.DataFrame  # 720 rows, Ashsr layout
    vividness: np.ndarray  # (720,) latent vividness in (0, 1); NaN outside imagery
    vividness_gain: np.ndarray  # (720,) gain on the imagery signal; 1 outside imagery
    noise_factor: np.ndarray  # (720,) scale of nsdgeneral trial noise


def subject_imagery(cfg: SimulationConfig, d: ImageryDesign, subject: int,
                    imagery_noise_factor: float) -> SubjectImagery:
    rng = stream(cfg.seed, "imagery-behaviour", subject)
    p = cfg.imagery_params()
    x = d.design
    n = len(x)
    vividness = np.full(n, np.nan)
    gain = np.ones(n)
    noise = np.ones(n)
    mean_v = cfg.vividness_a / (cfg.vividness_a + cfg.vividness_b)
    tsv: dict[str, pd.DataFrame] = {}
    behaviour = pd.DataFrame(index=range(n), columns=list(BEHAVIOUR_COLUMNS), dtype=float)
    for run, block in enumerate(IMAGERY_BLOCKS, start=1):
        sel = np.flatnonzero((x.run == run).to_numpy())
        trials = x.iloc[sel]
        first = trials[trials.epoch == 0]
        nt = len(first)
        long = block.task == "attention"
        step = LONG_TRIAL_S if long else SHORT_TRIAL_S
        slot = np.arange(nt) + (0 if long else np.arange(nt) // BLANK_EVERY)
        start = (LONG_RUN_START_S if long else SHORT_RUN_START_S) + rng.uniform(-0.004, 0.004)
        onset = start + slot * step + np.cumsum(rng.normal(0, 0.0015, nt))
        end = onset + step + rng.normal(0, 0.0015, nt)
        gt = first.groundtruth.to_numpy(dtype=float)
        missing = rng.random(nt) < cfg.missing_response_rate
        change = (rng.random(nt) < cfg.change_mind_rate) & ~missing
        image_onset = np.full(nt, np.nan)
        series_end = np.full(nt, np.nan)
        if block.task == "imagery":
            v = rng.beta(cfg.vividness_a, cfg.vividness_b, nt)
            vivid = v + rng.normal(0, cfg.vivid_report_noise, nt) > cfg.vivid_threshold
            button = np.where(vivid, BUTTON_VIVID, BUTTON_NOT_VIVID).astype(float)
            correct = np.full(nt, np.nan)
            rt = cfg.imagery_rt_ms_median * np.exp(rng.normal(0, cfg.rt_ms_log_sd, nt))
            vividness[sel] = v
            gain[sel] = (1 - p.vividness_effect) + p.vividness_effect * v / mean_v
            noise[sel] = imagery_noise_factor
        else:
            accuracy = cfg.vision_match_accuracy
            right = rng.random(nt) < accuracy
            yes = np.where(right, gt == 1, gt != 1)
            if block.task == "vision":
                button = np.where(yes, BUTTON_MATCH, BUTTON_NO_MATCH).astype(float)
            else:
                button = np.where(yes, BUTTON_PRESENT, BUTTON_ABSENT).astype(float)
                pos = first.target_position.to_numpy()
                series_end = onset + STREAM_LEAD_S + STREAM_LENGTH * cfg.frame_duration_s
                image_onset = np.where(pos >= 0, onset + STREAM_LEAD_S
                                       + pos * cfg.frame_duration_s, np.nan)
            correct = right.astype(float)
            rt = cfg.rt_ms_median * np.exp(rng.normal(0, cfg.rt_ms_log_sd, nt))
        total1 = (button == 1).astype(int) + (change & (button == 2)).astype(int)
        total2 = (button == 2).astype(int) + (change & (button == 1)).astype(int)
        for arr in (button, correct, rt):
            arr[missing] = np.nan
        total1[missing] = 0
        total2[missing] = 0
        decision = onset + rt / 1000.0
        tsv[block.name] = pd.DataFrame({
            "SUBJECT": subject, "SESSION": 1, "RUN": run,
            "TRIAL": first.trial.to_numpy(),
            "CONDITION": first.condition.to_numpy(), "CUE": first.cue.to_numpy(),
            "FRAMEFILE": first.framefile.to_numpy(), "IMAGEFILE": np.nan,
            "GROUNDTRUTH": gt, "ISCORRECT": correct,
            "CHANGEMIND": np.where(missing, np.nan, change.astype(float)),
            "TOTAL1": total1, "TOTAL2": total2, "BUTTON": button,
            "TRIALONSET": onset, "TRIALEND": end, "IMAGEONSET": image_onset,
            "IMAGESERIESENDS": series_end, "FINALDECISIONTIME": decision, "RT": rt,
        }, columns=list(TSV_COLUMNS))
        value = np.where(button == 1, 1.0, np.where(button == 2, 0.0, np.nan))
        pressed = np.where(missing, np.nan, decision + rng.uniform(0, 1.9, nt))
        per_beta = np.repeat(np.arange(nt), block.betas_per_trial)
        behaviour.iloc[sel] = np.stack([onset[per_beta], pressed[per_beta], value[per_beta],
                                        image_onset[per_beta]], axis=1)
    return SubjectImagery(tsv, behaviour.astype(float), vividness, gain, noise)


def pair_list(d: ImageryDesign, stim_set: str) -> np.ndarray:
    """(6, 3) cell array of (target number, name, code), as ``{set}_pair_list.mat``."""
    ts = sorted((t for t in d.targets.values() if t.stim_set == stim_set),
                key=lambda t: t.number)
    cells = np.empty((len(ts), 3), dtype=object)
    for i, t in enumerate(ts):
        cells[i] = (float(t.number), t.name, t.code)
    return cells
