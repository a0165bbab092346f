#!/usr/bin/env python
"""Benchmark NSD beta ingest (``build_nsd_index``) against raw sequential reads.

What it does:

1. Simulates an nsd-scale subj01 root with K sessions (``betas_sessionNN.hdf5``: int16
   (750, 83, 104, 81), one chunk per voxel time series as in the real release), in a
   child process, or reuses a finished simulation given with ``--data``.
2. Raw read throughput: ``cat <the K session files> > /dev/null``, timed.
3. Ingest throughput: ``build_nsd_index`` for those K sessions (``reuse_cache=False``) in a
   child process, timed around the call; its peak RSS is the child's own ru_maxrss
   (``os.wait4``), cross-checked with the child's VmHWM.
4. Both in two page-cache states: *cold* (every session file evicted with
   ``posix_fadvise(DONTNEED)`` right before each measurement) and *warm* (every file read
   once right before each measurement). Cold is the primary figure: real NSD subjects
   hold ~40 GB of betas and are read from disk.
5. Targets: ``ratio_raw = ingest MB/s / raw MB/s >= 0.5`` (cold) and
   ``peak RSS < 2 x session_mb + output_mb``.

Each state is measured ``--repeat`` times (default 3): times are medians, peak RSS the max.

MB = 1e6 bytes throughout. Examples::

    python benchmarks/bench_ingest.py --quick
    python benchmarks/bench_ingest.py --sessions 4 --json /tmp/ingest.json
    python benchmarks/bench_ingest.py --data /tmp/nsd_sim --keep   # reuse the simulation
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fmri2img.data.nsd_layout import SUBJECTS, TRIALS_PER_SESSION, NSDPaths

log = logging.getLogger("bench_ingest")

MB = 1e6
SUBJECT = 1
RATIO_TARGET = 0.5
BUSY_SHARE = 0.1  # other processes' share of all CPUs above which timings are flagged
_READ_BLOCK = 16 << 20
# Written last by simulate(): its presence marks a finished simulation.
_SIM_CONFIG = "simulation_config.yaml"
_SIM_DONE = "ground_truth.json"

# Runs in a fresh interpreter so that its peak RSS is the ingest's alone.
_CHILD = r"""
import json, logging, sys, time
args = json.loads(sys.argv[1])
logging.basicConfig(level=args["log_level"], format="%(asctime)s child %(name)s: %(message)s",
                    stream=sys.stderr)
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
cfg = NSDIndexConfig(nsd_root=args["root"], subject=args["subject"], output=args["output"],
                     sessions=args["sessions"], cache_dir=args["cache_dir"], reuse_cache=False)
profiler = None
if args["profile"]:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
t0 = time.perf_counter()
df, meta = build_nsd_index(cfg)
seconds = time.perf_counter() - t0
if profiler is not None:
    profiler.disable()
    profiler.dump_stats(args["profile"])
with open("/proc/self/status") as fh:
    hwm_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
with open(args["result"], "w") as fh:
    json.dump({"seconds": seconds, "cache": str(meta["cache"]), "rows": len(df),
               "vmhwm_kib": hwm_kib}, fh)
"""

# Simulation runs in a child too: a parent that once held a session in memory would pass
# its RSS high-water mark on to every later child's ru_maxrss (it survives fork and exec).
_SIM_CHILD = r"""
import json, logging, sys
args = json.loads(sys.argv[1])
logging.basicConfig(level=args["log_level"], format="%(asctime)s child %(name)s: %(message)s",
                    stream=sys.stderr)
from fmri2img.data.simulate import SimulationConfig, simulate
cfg = SimulationConfig.from_scale("nsd", seed=args["seed"], subjects=(args["subject"],),
                                  n_sessions=args["n_sessions"], write_images=False)
simulate(args["root"], cfg, progress=False)
"""


# ----------------------------------------------------------------------------- page cache
def evict(paths: Sequence[Path]) -> None:
    """Drop the files' pages from the page cache (dirty pages are written first)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_up(paths: Sequence[Path]) -> None:
    """Read every file once so that it sits in the page cache."""
    buf = bytearray(_READ_BLOCK)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def resident_fraction(paths: Sequence[Path]) -> float | None:
    """Share of the files' pages in the page cache (mincore), or None where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_mmap, c_munmap, c_mincore = libc.mmap, libc.munmap, libc.mincore
    except (OSError, AttributeError):
        return None
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
    c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    c_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    resident = total = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        n_pages = (size + page - 1) // page
        with open(path, "rb") as fh:
            addr = c_mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * n_pages)()
            if c_mincore(addr, size, vec) != 0:
                return None
            resident += int((np.frombuffer(vec, dtype=np.uint8) & 1).sum())
        finally:
            c_munmap(addr, size)
        total += n_pages
    return resident / total if total else None


def set_cache_state(state: str, paths: Sequence[Path]) -> float | None:
    """Put the files in the page-cache state; returns their resident fraction after."""
    if state == "cold":
        evict(paths)
    else:
        warm_up(paths)
    return resident_fraction(paths)


# ----------------------------------------------------------------------------- data
def _finished_simulation(root: Path, n_sessions: int) -> bool:
    """True when ``root`` holds a finished nsd-scale simulation of subj01 with the sessions."""
    cfg_path, done = root / _SIM_CONFIG, root / _SIM_DONE
    if not (cfg_path.is_file() and done.is_file()):
        return False
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError:
        return False
    if not isinstance(cfg, dict) or cfg.get("scale") != "nsd" or "hdf5" not in cfg.get(
        "formats", ()
    ) or SUBJECT not in cfg.get("subjects", ()):
        return False
    paths = NSDPaths(root)
    return all(paths.betas_session(SUBJECT, s, "hdf5").is_file()
               for s in range(1, n_sessions + 1))


def ensure_simulation(root: Path, n_sessions: int, seed: int, log_level: str
                      ) -> tuple[Path, float | None]:
    """Reuse a finished simulation at ``root`` or write one; returns (root, seconds spent)."""
    if _finished_simulation(root, n_sessions):
        log.info("reusing the simulation in %s", root)
        return root, None
    need = 1.15 * (n_sessions + 1) * 1.1e9  # K sessions + the imagery session + slack
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < need:
        raise SystemExit(f"{root}: {free / 1e9:.1f} GB free, the simulation needs "
                         f"~{need / 1e9:.1f} GB")
    log.info("simulating nsd-scale subj01, %d session(s), in %s", n_sessions, root)
    args = {"root": str(root), "seed": seed, "subject": SUBJECT, "n_sessions": n_sessions,
            "log_level": log_level}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SIM_CHILD, json.dumps(args)], check=True)
    seconds = time.perf_counter() - t0
    if not _finished_simulation(root, n_sessions):
        raise SystemExit(f"the simulation in {root} did not finish")
    log.info("simulation written in %.1f s", seconds)
    return root, seconds


# ----------------------------------------------------------------------------- measurements
@dataclass
class Ingest:
    seconds: float
    cpu_s: float  # user + system CPU of the child, whole process
    peak_rss_mb: float
    rusage_maxrss_mb: float
    vmhwm_mb: float
    parent_maxrss_mb: float
    child_wall_s: float
    cache: str
    rows: int
    manifest: dict[str, Any]


def time_cat(paths: Sequence[Path]) -> float:
    """Seconds for ``cat FILES > /dev/null``."""
    t0 = time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def run_ingest(root: Path, sessions: list[int], out_dir: Path, *, log_level: str,
               profile: Path | None = None) -> Ingest:
    """``build_nsd_index`` in a fresh interpreter; its own rusage gives the peak RSS.

    ``os.wait4`` returns the rusage of this child alone (``RUSAGE_CHILDREN`` is a running
    max over every child waited for). On Linux a child's ru_maxrss also starts at the
    parent's RSS high-water mark (it survives fork/vfork and exec), so the parent is kept
    small, and the child's own ``VmHWM`` (high-water mark of its post-exec address space)
    is read as a cross-check and used if the parent's mark masks the child's.
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    result = out_dir / "result.json"
    args = {
        "root": str(root), "subject": SUBJECT, "sessions": sessions,
        "output": str(out_dir / "index.parquet"), "cache_dir": str(out_dir / "cache"),
        "result": str(result), "log_level": log_level,
        "profile": str(profile) if profile else None,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    parent_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after > before and after != usage.ru_maxrss:
        log.warning("rusage mismatch: wait4 %d KiB, RUSAGE_CHILDREN %d KiB",
                    usage.ru_maxrss, after)
    res = json.loads(result.read_text())
    manifest = json.loads((Path(res["cache"]) / "manifest.json").read_text())
    summary = {k: manifest[k] for k in ("timings", "build_seconds") if k in manifest}
    summary["shape"] = manifest.get("shape")
    rusage_kib, hwm_kib = usage.ru_maxrss, res["vmhwm_kib"]
    peak_kib = rusage_kib
    if parent_kib >= rusage_kib and hwm_kib < rusage_kib:
        log.warning("the child's ru_maxrss (%d KiB) is the parent's high-water mark (%d KiB); "
                    "using the child's VmHWM (%d KiB)", rusage_kib, parent_kib, hwm_kib)
        peak_kib = hwm_kib
    return Ingest(seconds=res["seconds"], cpu_s=usage.ru_utime + usage.ru_stime,
                  peak_rss_mb=peak_kib * 1024 / MB,
                  rusage_maxrss_mb=rusage_kib * 1024 / MB, vmhwm_mb=hwm_kib * 1024 / MB,
                  parent_maxrss_mb=parent_kib * 1024 / MB, child_wall_s=wall,
                  cache=res["cache"], rows=res["rows"], manifest=summary)


@dataclass
class StateResult:
    state: str
    raw_s: float
    ingest_s: float
    raw_mb_s: float
    ingest_mb_s: float
    ratio_raw: float
    peak_rss_mb: float
    session_mb: float
    output_mb: float
    memory_limit_mb: float
    resident_before_raw: float | None
    resident_before_ingest: float | None
    child_wall_s: float
    child_cpu_s: float
    rss_detail: dict[str, float]
    raw_s_all: list[float]
    ingest_s_all: list[float]
    library_timings: dict[str, Any]

    @property
    def throughput_pass(self) -> bool:
        return self.ratio_raw >= RATIO_TARGET

    @property
    def memory_pass(self) -> bool:
        return self.peak_rss_mb < self.memory_limit_mb


def _worst(state: str, fractions: Sequence[float | None]) -> float | None:
    """The resident fraction furthest from the intended state (cold: 0, warm: 1)."""
    known = [f for f in fractions if f is not None]
    if not known:
        return None
    return max(known) if state == "cold" else min(known)


def measure(state: str, root: Path, files: list[Path], sessions: list[int], work: Path,
            repeat: int, log_level: str) -> StateResult:
    total_mb = sum(f.stat().st_size for f in files) / MB
    session_mb = max(f.stat().st_size for f in files) / MB
    raw_times, ingest_runs = [], []
    res_raw: list[float | None] = []
    res_ingest: list[float | None] = []
    for i in range(repeat):
        res_raw.append(set_cache_state(state, files))
        raw_times.append(time_cat(files))
        log.info("%s raw read %d/%d: %.2f s (%.0f MB/s), resident before: %s", state, i + 1,
                 repeat, raw_times[-1], total_mb / raw_times[-1], _pct(res_raw[-1]))
        res_ingest.append(set_cache_state(state, files))
        ingest_runs.append(run_ingest(root, sessions, work / f"ingest_{state}",
                                      log_level=log_level))
        run = ingest_runs[-1]
        log.info("%s ingest %d/%d: %.2f s (%.0f MB/s), peak RSS %.0f MB (child VmHWM %.0f MB,"
                 " parent %.0f MB), resident before: %s", state, i + 1, repeat, run.seconds,
                 total_mb / run.seconds, run.peak_rss_mb, run.vmhwm_mb, run.parent_maxrss_mb,
                 _pct(res_ingest[-1]))
    raw_s = statistics.median(raw_times)
    ingest_s = statistics.median(r.seconds for r in ingest_runs)
    # The cache directory of the median run (each run replaces the previous one's).
    median_run = min(range(repeat), key=lambda k: abs(ingest_runs[k].seconds - ingest_s))
    timings = dict(ingest_runs[median_run].manifest)
    cache = Path(ingest_runs[-1].cache)
    output_mb = (cache / "betas.npy").stat().st_size / MB
    shutil.rmtree(work / f"ingest_{state}")
    return StateResult(
        state=state, raw_s=raw_s, ingest_s=ingest_s, raw_mb_s=total_mb / raw_s,
        ingest_mb_s=total_mb / ingest_s, ratio_raw=raw_s / ingest_s,
        peak_rss_mb=max(r.peak_rss_mb for r in ingest_runs), session_mb=session_mb,
        output_mb=output_mb, memory_limit_mb=2 * session_mb + output_mb,
        resident_before_raw=_worst(state, res_raw),
        resident_before_ingest=_worst(state, res_ingest),
        child_wall_s=statistics.median(r.child_wall_s for r in ingest_runs),
        child_cpu_s=statistics.median(r.cpu_s for r in ingest_runs),
        rss_detail={
            "rusage_maxrss_mb": max(r.rusage_maxrss_mb for r in ingest_runs),
            "child_vmhwm_mb": max(r.vmhwm_mb for r in ingest_runs),
            "parent_maxrss_mb": max(r.parent_maxrss_mb for r in ingest_runs),
        },
        raw_s_all=raw_times, ingest_s_all=[r.seconds for r in ingest_runs],
        library_timings=timings,
    )


def profile_ingest(root: Path, sessions: list[int], files: list[Path], work: Path,
                   out: Path, log_level: str) -> None:
    """One extra cold ingest under cProfile (not timed); logs the top functions."""
    import pstats

    evict(files)
    run_ingest(root, sessions, work / "ingest_profile", log_level=log_level, profile=out)
    shutil.rmtree(work / "ingest_profile")
    stats = pstats.Stats(str(out), stream=sys.stderr)
    log.info("cProfile of a cold ingest written to %s (top 20 by cumulative time below)", out)
    stats.sort_stats("cumulative").print_stats(20)


class OtherCpu:
    """CPU time the rest of the machine used over a window: all busy time in /proc/stat
    minus this process's and its waited-for children's (kernel threads count as other)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0, self.ours0 = self._busy(), self._ours()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        busy = sum(fields[:3]) + sum(fields[5:8])
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN)))

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.t0
        busy = self._busy()
        other = (None if busy is None or self.busy0 is None
                 else max(0.0, busy - self.busy0 - (self._ours() - self.ours0)))
        share = None if other is None else other / (wall * (os.cpu_count() or 1))
        return {"wall_s": wall, "other_cpu_s": other, "other_share": share}


# ----------------------------------------------------------------------------- output
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(cold: StateResult, warm: StateResult, n_sessions: int, total_mb: float,
           cpu: dict[str, float | None]) -> None:
    print()
    print(f"NSD ingest benchmark: simulated nsd-scale subj01, {n_sessions} session(s) "
          f"x {TRIALS_PER_SESSION} trials; MB = 1e6 bytes")
    print(f"  session files: {n_sessions} x {cold.session_mb:.1f} MB = {total_mb:.1f} MB; "
          f"output betas.npy {cold.output_mb:.1f} MB (shape "
          f"{cold.library_timings.get('shape')}, float32)")
    header = (f"  {'page cache':<16}{'raw cat MB/s':>13}{'ingest MB/s':>13}{'ratio_raw':>11}"
              f"{'raw s':>8}{'ingest s':>10}{'peak RSS MB':>13}")
    print(header)
    for r, label in ((cold, "cold (primary)"), (warm, "warm")):
        print(f"  {label:<16}{r.raw_mb_s:>13.0f}{r.ingest_mb_s:>13.0f}{r.ratio_raw:>11.2f}"
              f"{r.raw_s:>8.2f}{r.ingest_s:>10.2f}{r.peak_rss_mb:>13.0f}")
    print("  cold = each session file evicted (fsync + POSIX_FADV_DONTNEED) before each "
          "measurement;")
    print("  warm = each session file read once before each measurement.")
    slow = warm.raw_mb_s / cold.raw_mb_s if cold.raw_mb_s else math.nan
    evicted = slow > 1.3 and (cold.resident_before_raw is None or cold.resident_before_raw
                              < 0.05)
    print(f"  eviction check: cold cat {cold.raw_mb_s:.0f} MB/s vs warm {warm.raw_mb_s:.0f} "
          f"MB/s ({slow:.1f}x); resident before cold reads {_pct(cold.resident_before_raw)}, "
          f"before warm reads {_pct(warm.resident_before_raw)} -> "
          f"{'evicted' if evicted else 'EVICTION NOT CONFIRMED'}")
    rd = cold.rss_detail
    print(f"  peak RSS = the ingest child's ru_maxrss (os.wait4), cold: "
          f"{rd['rusage_maxrss_mb']:.0f} MB; its VmHWM {rd['child_vmhwm_mb']:.0f} MB; "
          f"benchmark parent {rd['parent_maxrss_mb']:.0f} MB")
    lt = cold.library_timings
    print(f"  library timings (cold, median run, manifest.json): {lt.get('timings')}, "
          f"build_seconds {lt.get('build_seconds')}")
    print(f"  runs (s): cold cat {_fmt(cold.raw_s_all)}, ingest {_fmt(cold.ingest_s_all)}; "
          f"warm cat {_fmt(warm.raw_s_all)}, ingest {_fmt(warm.ingest_s_all)}")
    print(f"  ingest child (median): cold {cold.child_wall_s:.2f} s wall / {cold.child_cpu_s:.2f} s"
          f" CPU, warm {warm.child_wall_s:.2f} s wall / {warm.child_cpu_s:.2f} s CPU "
          "(whole process, interpreter start and imports included)")
    other, share = cpu.get("other_cpu_s"), cpu.get("other_share")
    if other is not None and share is not None:
        flag = "  <- BUSY: timings disturbed" if share > BUSY_SHARE else ""
        print(f"  other processes' CPU during the measurements: {other:.1f} s over "
              f"{cpu['wall_s']:.1f} s on {os.cpu_count()} CPUs ({100 * share:.0f}% of the "
              f"machine){flag}")
    print("  targets (cold):")
    print(f"    throughput: ratio_raw {cold.ratio_raw:.2f} >= {RATIO_TARGET} : "
          f"{_verdict(cold.throughput_pass)}")
    print(f"    memory: peak RSS {cold.peak_rss_mb:.0f} MB < 2 x {cold.session_mb:.1f} + "
          f"{cold.output_mb:.1f} = {cold.memory_limit_mb:.0f} MB : "
          f"{_verdict(cold.memory_pass)}")
    print(f"  targets (warm, for reference): throughput {_verdict(warm.throughput_pass)} "
          f"(ratio_raw {warm.ratio_raw:.2f}), memory {_verdict(warm.memory_pass)} "
          f"(peak RSS {warm.peak_rss_mb:.0f} MB)")


def _state_json(r: StateResult) -> dict[str, Any]:
    d = asdict(r)
    d["targets"] = {"throughput_pass": r.throughput_pass, "memory_pass": r.memory_pass}
    return d


def results_json(cold: StateResult, warm: StateResult, n_sessions: int, total_mb: float,
                 extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "page_cache": "cold",
        "ingest_mb_s": cold.ingest_mb_s,
        "raw_mb_s": cold.raw_mb_s,
        "ratio_raw": cold.ratio_raw,
        "peak_rss_mb": cold.peak_rss_mb,
        "session_mb": cold.session_mb,
        "output_mb": cold.output_mb,
        "memory_limit_mb": cold.memory_limit_mb,
        "ingest_s": cold.ingest_s,
        "raw_s": cold.raw_s,
        "total_mb": total_mb,
        "n_sessions": n_sessions,
        "targets": {
            "throughput_pass": cold.throughput_pass,
            "memory_pass": cold.memory_pass,
            "ratio_raw_min": RATIO_TARGET,
            "memory_rule": "peak_rss_mb < 2 * session_mb + output_mb",
        },
        "cold": _state_json(cold),
        "warm": _state_json(warm),
        **extra,
    }


# ----------------------------------------------------------------------------- main
def n_sessions_from(args: argparse.Namespace) -> int:
    n_max = SUBJECTS[SUBJECT].n_sessions
    if args.quick:
        return 1
    if args.fraction is not None:
        if not 0 < args.fraction <= 1:
            raise SystemExit("--fraction must be in (0, 1]")
        return max(1, round(args.fraction * n_max))
    if not 1 <= args.sessions <= n_max:
        raise SystemExit(f"--sessions must be in 1..{n_max}")
    return args.sessions


@contextlib.contextmanager
def workdir(path: Path | None, keep: bool) -> Iterator[Path]:
    """The work directory; removed at the end unless ``keep`` (only what we created)."""
    created = path is None or not path.exists()
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir="/tmp"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if keep:
            log.info("keeping %s", path)
        elif created:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s", path)
        else:
            for name in ("nsd", "ingest_cold", "ingest_warm", "ingest_profile"):
                shutil.rmtree(path / name, ignore_errors=True)
            log.info("removed the benchmark's files from %s", path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--sessions", type=int, default=4, help="sessions to ingest (default 4)")
    size.add_argument("--fraction", type=float,
                      help="fraction of subj01's 40 sessions (round(F*40), at least 1)")
    size.add_argument("--quick", action="store_true", help="1 session")
    p.add_argument("--workdir", type=Path, help="work directory (default: a temp dir in /tmp)")
    p.add_argument("--data", type=Path,
                   help="NSD root to reuse if it holds a finished simulation with the "
                        "sessions, else to simulate into (never removed)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--repeat", type=int, default=3,
                   help="measurements per page-cache state; medians are reported "
                        "(peak RSS: the max) (default 3)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--profile", type=Path,
                   help="also run one cold ingest under cProfile, stats written here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("-v", "--verbose", action="store_true", help="library INFO logs too")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("fmri2img").setLevel(logging.WARNING)
    child_level = "INFO" if args.verbose else "WARNING"
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    n_sessions = n_sessions_from(args)
    sessions = list(range(1, n_sessions + 1))
    t_start = time.perf_counter()
    with workdir(args.workdir, args.keep) as work:
        root_dir = args.data.resolve() if args.data else work / "nsd"
        root, sim_s = ensure_simulation(root_dir, n_sessions, args.seed, child_level)
        paths = NSDPaths(root)
        files = [paths.betas_session(SUBJECT, s, "hdf5") for s in sessions]
        total_mb = sum(f.stat().st_size for f in files) / MB
        mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if total_mb * MB > 0.7 * mem_total:
            log.warning("%.0f MB of session files do not fit the page cache: the warm "
                        "figures are only partly warm", total_mb)
        log.info("session files: %d, %.1f MB in all", len(files), total_mb)

        load_start = os.getloadavg()[0]
        window = OtherCpu()
        cold = measure("cold", root, files, sessions, work, args.repeat, child_level)
        warm = measure("warm", root, files, sessions, work, args.repeat, child_level)
        cpu = window.stop()
        if (cpu["other_share"] or 0.0) > BUSY_SHARE:
            log.warning("other processes used %.0f%% of the CPUs during the measurements: "
                        "the timings are disturbed", 100 * (cpu["other_share"] or 0.0))
        report(cold, warm, n_sessions, total_mb, cpu)
        if args.profile:
            profile_ingest(root, sessions, files, work, args.profile.resolve(), child_level)
        extra = {
            "simulate_s": sim_s,
            "data": str(root),
            "data_reused": sim_s is None,
            "benchmark_wall_s": time.perf_counter() - t_start,
            "machine": {"cpus": os.cpu_count(), "loadavg_1min_start": load_start,
                        "loadavg_1min_end": os.getloadavg()[0], **cpu,
                        "disturbed": (cpu["other_share"] or 0.0) > BUSY_SHARE},
        }
        results = results_json(cold, warm, n_sessions, total_mb, extra)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            log.info("results written to %s", args.json)
    log.info("benchmark finished in %.1f s", time.perf_counter() - t_start)
    ok = cold.throughput_pass and cold.memory_pass
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
