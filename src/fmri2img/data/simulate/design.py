"""The NSD experimental design: which image each trial shows, and the subjects' behaviour.

As in NSD, one ``masterordering`` serves every subject; ``subjectim`` maps its values to
each subject's images, the first ``n_shared`` of which are the shared images. Every image
is shown 3 times; every session holds some shared trials, so every session has both
train and test trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fmri2img.data.nsd_layout import RUNS_PER_SESSION, TRIALS_PER_SESSION, run_lengths
from fmri2img.data.simulate.config import N_DESIGN_SUBJECTS, REPETITIONS, SimulationConfig
from fmri2img.data.simulate.seeding import stream

SLOTS_PER_RUN = 75  # 4-s slots per run, stimulus or blank
SLOT_SECONDS = 4.0
EDGE_BLANKS = 3  # blank slots at each end of a run
FIRST_SESSION_DATENUM = 737426.0  # 2019-01-01 in MATLAB datenum (days)
RESPONSE_COLUMNS = (
    "SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT",
    "RT", "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT",
    "TOTAL1", "TOTAL2", "BUTTON", "MISSINGDATA",
)  # fmt: skip
# [S] button meaning in the NSD recognition task; readers should not depend on it.
BUTTON_NEW, BUTTON_OLD = 1, 2


@dataclass(frozen=True)
class NSDDesign:
    sharedix: np.ndarray  # (n_shared,) 0-based ids, ascending
    subjectim: np.ndarray  # (8, n_images) 0-based ids; first n_shared columns = sharedix
    masterordering: np.ndarray  # (n_trials,) 0-based index into a subject's image list
    basiccnt: np.ndarray  # (3, n_sessions): 1st/2nd/3rd presentations per session
    stimpattern: np.ndarray  # (n_sessions, 12, 75) 1 where a slot shows a stimulus

    @property
    def n_shared(self) -> int:
        return int(self.sharedix.shape[0])

    def image_ids(self, subject: int) -> np.ndarray:
        """0-based 73k id of every design trial for a subject."""
        return self.subjectim[subject - 1, self.masterordering]

    def is_shared_trial(self) -> np.ndarray:
        return self.masterordering < self.n_shared

    def repetition(self) -> np.ndarray:
        """0, 1 or 2: which presentation of its image each trial is."""
        rep = np.zeros_like(self.masterordering)
        seen: dict[int, int] = {}
        for g, m in enumerate(self.masterordering.tolist()):
            rep[g] = seen.get(m, 0)
            seen[m] = rep[g] + 1
        return rep


def make_design(cfg: SimulationConfig) -> NSDDesign:
    rng = stream(cfg.seed, "nsd-design")
    n_img, n_sh, n_sess = cfg.n_images_per_subject, cfg.n_shared, cfg.n_design_sessions
    universe = cfg.universe_size
    ids = rng.permutation(universe)
    sharedix = np.sort(ids[:n_sh])
    rest = ids[n_sh:]
    per = n_img - n_sh
    subjectim = np.empty((N_DESIGN_SUBJECTS, n_img), dtype=np.int64)
    for s in range(N_DESIGN_SUBJECTS):
        subjectim[s, :n_sh] = sharedix
        subjectim[s, n_sh:] = np.sort(rest[s * per : (s + 1) * per])

    # Three passes over the images, cut into sessions, so each image's repetitions spread
    # over the experiment; shared images get an even share of every session.
    k_shared = np.full(n_sess, REPETITIONS * n_sh // n_sess)
    k_shared[rng.permutation(n_sess)[: REPETITIONS * n_sh - k_shared.sum()]] += 1
    shared_tokens = np.concatenate([rng.permutation(n_sh) for _ in range(REPETITIONS)])
    train_tokens = np.concatenate([rng.permutation(np.arange(n_sh, n_img))
                                   for _ in range(REPETITIONS)])
    order = np.empty(n_sess * TRIALS_PER_SESSION, dtype=np.int64)
    a = b = 0
    for s in range(n_sess):
        k = int(k_shared[s])
        session = np.concatenate([shared_tokens[a : a + k],
                                  train_tokens[b : b + TRIALS_PER_SESSION - k]])
        a, b = a + k, b + TRIALS_PER_SESSION - k
        order[s * TRIALS_PER_SESSION : (s + 1) * TRIALS_PER_SESSION] = rng.permutation(session)

    design = NSDDesign(sharedix, subjectim, order, np.zeros((3, n_sess), np.int64),
                       _stimpattern(rng, n_sess))
    rep = design.repetition().reshape(n_sess, TRIALS_PER_SESSION)
    for r in range(REPETITIONS):
        design.basiccnt[r] = (rep == r).sum(axis=1)
    return design


def _stimpattern(rng: np.random.Generator, n_sess: int) -> np.ndarray:
    pattern = np.zeros((n_sess, RUNS_PER_SESSION, SLOTS_PER_RUN), dtype=np.uint8)
    inner = np.arange(EDGE_BLANKS, SLOTS_PER_RUN - EDGE_BLANKS)
    for s in range(n_sess):
        for r, n in enumerate(run_lengths()):
            pattern[s, r, np.sort(rng.choice(inner, n, replace=False))] = 1
    return pattern


def session_runs() -> tuple[np.ndarray, np.ndarray]:
    """(run 1..12, trial-in-run 1..63) for the 750 trials of a session, in order."""
    runs, trials = [], []
    for r, n in enumerate(run_lengths(), start=1):
        runs += [r] * n
        trials += list(range(1, n + 1))
    return np.array(runs), np.array(trials)


def responses_table(cfg: SimulationConfig, design: NSDDesign, subject: int) -> pd.DataFrame:
    """The rows of responses.tsv for the acquired sessions (one row per trial, in order)."""
    rng = stream(cfg.seed, "nsd-behaviour", subject)
    n_sess = cfg.sessions_for(subject)
    n = n_sess * TRIALS_PER_SESSION
    m = design.masterordering[:n]
    ids = design.image_ids(subject)[:n]
    runs, trials = session_runs()
    session = np.repeat(np.arange(1, n_sess + 1), TRIALS_PER_SESSION)

    # Onset times: each run starts ~6 min after the previous, trials sit on their slots.
    time = np.empty(n)
    day0 = FIRST_SESSION_DATENUM + 7.0 * np.arange(n_sess) + rng.uniform(0, 2, n_sess)
    for s in range(n_sess):
        t0 = day0[s] + 9.0 / 24.0 + rng.uniform(0, 3, 1)[0] / 24.0
        g = s * TRIALS_PER_SESSION
        for r in range(RUNS_PER_SESSION):
            slots = np.flatnonzero(design.stimpattern[s, r])
            start = t0 + r * (SLOTS_PER_RUN * SLOT_SECONDS + 60.0) / 86400.0
            time[g : g + slots.size] = start + slots * SLOT_SECONDS / 86400.0
            g += slots.size

    last_seen: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    recent = np.full(n, np.nan)
    first = np.full(n, np.nan)
    is_old = np.zeros(n, dtype=np.int64)
    is_old_current = np.zeros(n, dtype=np.int64)
    for g, v in enumerate(m.tolist()):
        if v in last_seen:
            is_old[g] = 1
            recent[g] = g - last_seen[v]
            first[g] = g - first_seen[v]
            is_old_current[g] = int(last_seen[v] // TRIALS_PER_SESSION == g // TRIALS_PER_SESSION)
        else:
            first_seen[v] = g
        last_seen[v] = g

    # Recognition memory decays with the distance to the last presentation.
    p_old = np.where(
        is_old == 1,
        0.5 + (cfg.nsd_hit_rate - 0.5) * np.exp(-np.nan_to_num(recent) / cfg.nsd_hit_decay_trials),
        cfg.nsd_false_alarm_rate,
    )
    said_old = rng.random(n) < p_old
    missing = rng.random(n) < cfg.missing_response_rate
    change = (rng.random(n) < cfg.change_mind_rate) & ~missing
    rt = cfg.rt_ms_median * np.exp(rng.normal(0, cfg.rt_ms_log_sd, n))
    button = np.where(said_old, BUTTON_OLD, BUTTON_NEW).astype(float)
    correct = (said_old == (is_old == 1)).astype(float)
    correct_current = (said_old == (is_old_current == 1)).astype(float)
    total1 = np.where(button == BUTTON_NEW, 1, 0) + np.where(change & (button == BUTTON_OLD), 1, 0)
    total2 = np.where(button == BUTTON_OLD, 1, 0) + np.where(change & (button == BUTTON_NEW), 1, 0)
    for arr in (button, correct, correct_current, rt):
        arr[missing] = np.nan
    total1[missing] = 0
    total2[missing] = 0
    return pd.DataFrame(
        {
            "SUBJECT": subject,
            "SESSION": session,
            "RUN": np.tile(runs, n_sess),
            "TRIAL": np.tile(trials, n_sess),
            "73KID": ids + 1,
            "10KID": m + 1,
            "TIME": time,
            "ISOLD": is_old,
            "ISCORRECT": correct,
            "RT": rt,
            "CHANGEMIND": np.where(missing, np.nan, change.astype(float)),
            "MEMORYRECENT": recent,
            "MEMORYFIRST": first,
            "ISOLDCURRENT": is_old_current,
            "ISCORRECTCURRENT": correct_current,
            "TOTAL1": total1,
            "TOTAL2": total2,
            "BUTTON": button,
            "MISSINGDATA": missing.astype(np.int64),
        },
        columns=list(RESPONSE_COLUMNS),
    )


def stim_info_table(cfg: SimulationConfig, design: NSDDesign) -> pd.DataFrame:
    """nsd_stim_info_merged.csv: one row per universe image (section 3 of NSD_FORMAT.md).

    Only simulated subjects have ``subjectK`` / rep columns filled (trials of the sessions
    written); the others are 0, as their images have no data in this root.
    """
    rng = stream(cfg.seed, "stim-info")
    n = cfg.universe_size
    coco = rng.choice(np.arange(9, 600_000), size=n, replace=False)
    split = np.where(rng.random(n) < 0.1, "val2017", "train2017")
    crop = [f"({a:.6f}, {b:.6f}, {c:.6f}, {d:.6f})"
            for a, b, c, d in np.round(rng.uniform(0, 0.2, (n, 4)), 6)]
    shared = np.zeros(n, dtype=bool)
    shared[design.sharedix] = True
    cols: dict[str, object] = {
        "cocoId": coco,
        "cocoSplit": split,
        "cropBox": crop,
        "loss": np.round(rng.uniform(0, 0.3, n), 6),
        "nsdId": np.arange(n),
        "flagged": np.zeros(n, dtype=bool),
        "BOLD5000": rng.random(n) < 0.02,
        "shared1000": shared,
    }
    reps: dict[int, np.ndarray] = {}
    for k in range(1, N_DESIGN_SUBJECTS + 1):
        r = np.zeros((n, REPETITIONS), dtype=np.int64)
        if k in cfg.subjects:
            n_trials = cfg.sessions_for(k) * TRIALS_PER_SESSION
            ids = design.image_ids(k)[:n_trials]
            count = np.zeros(n, dtype=np.int64)
            for g, i in enumerate(ids.tolist()):
                r[i, count[i]] = g + 1
                count[i] += 1
        reps[k] = r
        cols[f"subject{k}"] = (r[:, 0] > 0).astype(np.int64)
    for k in range(1, N_DESIGN_SUBJECTS + 1):
        for j in range(REPETITIONS):
            cols[f"subject{k}_rep{j}"] = reps[k][:, j]
    return pd.DataFrame(cols)
