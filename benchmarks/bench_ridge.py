#!/usr/bin/env python
"""Benchmark the ``ridge`` decoder against scikit-learn's and himalaya's RidgeCV.

One run, one synthetic data set (seeded), three fits of ridge with the alpha chosen by
cross-validation from the same grid, each then scored on a held-out test set:

* **ours**: ``fmri2img`` ``Ridge`` (grouped 5-fold CV + refit on all rows; ``--backend``
  torch by default, on the CPU unless ``--device`` says otherwise);
* **sklearn**: ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)`` (efficient
  leave-one-out CV; it computes in float64 whatever the input dtype);
* **himalaya**: ``himalaya.ridge.RidgeCV(alphas, cv=<the same 5 grouped folds as ours>,
  fit_intercept=True)`` on ``--himalaya-backend`` (torch by default: it is the faster of
  its CPU backends here).

Data (``--n`` x ``--p`` -> ``--k``, float32): each of ``n/3`` stimuli has a voxel pattern
(a shared low-rank part plus voxel-specific signal) seen in 3 trials with trial noise;
``Y = X W + noise`` with per-target signal-to-noise spread over two decades. Rows carry
their stimulus as the group, so ours (and himalaya, given the same folds) never validate
on a repetition of a training image. The test set is ``--n-test`` new stimuli.

Reported: fit times, ratios ours/sklearn and ours/himalaya, mean test R^2 over targets,
the machine's float32 GEMM rate (best of 3 large products in the library ours uses), our
nominal flop count (the operations the solver performs, counted as in LAPACK) and the
fraction of the GEMM rate it reaches, and the CPU time other processes used meanwhile.

Each reference runs in a spawned child process on the same data (regenerated from the
seed), so its memory is not counted as ours and a reference that runs out of memory is
reported as such without losing our figures. Peak RSS is reported after the data, after
our fit and prediction, and overall.

Protocols:

* ``--protocol averaged`` (default): 9000 x 15724 -> 512, repetition averages. Targets:
  ours <= 0.5 x sklearn, ours <= 0.25 x himalaya, and our test R^2 no more than 0.001
  below each of theirs.
* ``--protocol single-trial``: 27000 x 15724 -> 512, the single trials MindEye2 and
  MIRAGE train on (himalaya skipped). Targets: ours at most 650 s on a machine whose
  float32 GEMM runs at 282 GFLOP/s (time x GEMM rate <= 1.83e14 flops, so the target
  travels between machines), at least 65% of the GEMM rate, peak RSS (data included)
  <= 6 GB, test R^2 no more than 0.001 below sklearn's.
* ``--targets-grid 257x768``: Brain-Diffuser's CLIP-vision token grid, k = 197,376 targets
  from 15724 voxels on n = 9000 (true weights of rank 64), ours only, weights to a file by
  default. Target: peak RSS < 16 GB (the data alone are 8.5 GB).

Examples::

    python benchmarks/bench_ridge.py --quick
    python benchmarks/bench_ridge.py --json /tmp/ridge.json          # 9000 x 15724 -> 512
    python benchmarks/bench_ridge.py --protocol single-trial --json /tmp/single.json
    python benchmarks/bench_ridge.py --targets-grid 257x768 --json /tmp/grid.json
    python benchmarks/bench_ridge.py --n 4000 --p 8000 --k 256 --skip himalaya
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmri2img.data.splits import grouped_folds
from fmri2img.models.registry import decoders
from fmri2img.models.ridge import default_alphas

log = logging.getLogger("bench_ridge")

RATIO_SKLEARN = 0.5
RATIO_HIMALAYA = 0.25
R2_TOLERANCE = 0.001
# Single-trial targets: at most 650 s on a machine whose float32 GEMM runs at 282 GFLOP/s
# (the issue's; a machine's time scales with its GEMM rate), >= 65% of the GEMM rate,
# peak RSS <= 6 GB. Target grid: peak RSS < 16 GB.
SINGLE_TRIAL_GEMM_FLOPS = 650 * 282e9
SINGLE_TRIAL_GEMM_SHARE = 0.65
SINGLE_TRIAL_RSS_MB = 6 * 1024
GRID_RSS_MB = 16 * 1024
REPEATS = 3  # trials per stimulus
BUSY_SHARE = 0.1  # other processes' share of all CPUs above which timings are flagged


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def make_data(n: int, p: int, k: int, n_test: int, seed: int,
              weight_rank: int | None = None) -> dict[str, np.ndarray]:
    """Seeded fMRI-like regression problem; see the module docstring.

    ``weight_rank``: the true weights are a product of rank ``weight_rank`` instead of a
    dense (p, k) matrix (for target grids, whose dense weights would not fit in memory).
    Noise is added a few thousand rows at a time, so the peak memory is the data's own.
    """
    rng = np.random.default_rng(seed)
    rank = 32
    mixing = rng.standard_normal((rank, p), dtype=np.float32) * np.float32(0.5)

    def trials(n_rows: int, first_stimulus: int) -> tuple[np.ndarray, np.ndarray]:
        n_stim = -(-n_rows // REPEATS)
        latent = rng.standard_normal((n_stim, rank), dtype=np.float32)
        pattern = latent @ mixing
        pattern += rng.standard_normal((n_stim, p), dtype=np.float32)
        stim = np.repeat(np.arange(n_stim), REPEATS)[:n_rows]
        X = pattern[stim]
        del pattern
        _add_noise(rng, X)  # trial noise
        return X, stim + first_stimulus

    X, groups = trials(n, 0)
    X_test, _ = trials(n_test, int(groups.max()) + 1)
    # Weights: scaled so each target's signal variance is ~1, then spread the
    # signal-to-noise ratio over two decades so targets prefer different alphas.
    if weight_rank is None:
        W = rng.standard_normal((p, k), dtype=np.float32) / np.float32(np.sqrt(1.5 * p))
        W *= (10.0 ** rng.uniform(-1.5, 0.5, size=k)).astype(np.float32)
        offset = rng.standard_normal(k).astype(np.float32)
        Y, Y_test = X @ W, X_test @ W
    else:
        gain = (10.0 ** rng.uniform(-1.5, 0.5, size=k)).astype(np.float32)
        A = rng.standard_normal((p, weight_rank), dtype=np.float32)
        B = rng.standard_normal((weight_rank, k), dtype=np.float32)
        B *= gain / np.float32(np.sqrt(1.5 * p * weight_rank))
        offset = rng.standard_normal(k).astype(np.float32)
        Y, Y_test = (X @ A) @ B, (X_test @ A) @ B
    for T in (Y, Y_test):
        T += offset
        _add_noise(rng, T)
    return {"X": X, "Y": Y, "groups": groups, "X_test": X_test, "Y_test": Y_test}


def _add_noise(rng: np.random.Generator, A: np.ndarray, rows: int = 2048) -> None:
    """``A += N(0, 1)`` in place, a block of rows at a time (the same draws as one call)."""
    for i in range(0, A.shape[0], rows):
        A[i:i + rows] += rng.standard_normal(A[i:i + rows].shape, dtype=np.float32)


def mean_r2(Y: np.ndarray, pred: np.ndarray, cols: int = 4096) -> float:
    """Mean over targets of the test R^2 (a block of targets at a time)."""
    out = []
    for j in range(0, Y.shape[1], cols):
        y = Y[:, j:j + cols].astype(np.float64)
        e = np.asarray(pred[:, j:j + cols], dtype=np.float64) - y
        out.append(1.0 - (e**2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0))
    return float(np.mean(np.concatenate(out)))


# ------------------------------------------------------------------------------------------
# machine
# ------------------------------------------------------------------------------------------
def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed(label: str, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run ``fn`` once; its wall time, our CPU time and other processes' CPU time."""
    busy0, own0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    own = _own_seconds() - own0
    others = max(0.0, _busy_seconds() - busy0 - own)
    share = others / (wall * (os.cpu_count() or 1))
    log.info("%s: %.2f s (cpu %.1f s; other processes %.1f cpu-s = %.0f%% of the machine)",
             label, wall, own, others, 100 * share)
    return out, {"s": wall, "cpu_s": own, "others_cpu_s": others, "others_share": share}


def gemm_rate(backend: str, device: str, size: int) -> float:
    """Best-of-3 float32 GEMM rate (GFLOP/s) of ``size``^3 in the library ours uses."""
    flops = 2.0 * size**3
    best = float("inf")
    if backend == "torch":
        import torch

        dev = torch.device(device)
        a = torch.randn(size, size, device=dev)
        b = torch.randn(size, size, device=dev)
        for _ in range(3):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - t0)
    else:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        for _ in range(3):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


# ------------------------------------------------------------------------------------------
# the three fits
# ------------------------------------------------------------------------------------------
def fit_ours(d: dict[str, np.ndarray], alphas: list[float], args: argparse.Namespace) -> Any:
    p = d["X"].shape[1]
    model = decoders.build("ridge", p, d["Y"].shape[1], {
        "alphas": alphas, "alpha_per_target": True, "n_folds": 5, "dtype": "float32",
        "backend": args.backend, "device": args.device, "seed": 0,
        "factorization": args.factorization, "target_block": args.target_block,
        "coef_storage": args.coef_storage, "coef_dir": args.coef_dir,
    })
    return model.fit(d["X"], d["Y"], groups=d["groups"])


def fit_sklearn(d: dict[str, np.ndarray], alphas: list[float]) -> Any:
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=alphas, alpha_per_target=True).fit(d["X"], d["Y"])


def fit_himalaya(d: dict[str, np.ndarray], alphas: list[float], backend_name: str) -> Any:
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    set_backend(backend_name, on_error="raise")
    folds = grouped_folds(d["groups"], len(d["groups"]), 5, 0)
    cv = [(np.flatnonzero(folds != v), np.flatnonzero(folds == v)) for v in range(5)]
    model = RidgeCV(alphas=np.asarray(alphas), cv=cv, fit_intercept=True,
                    solver_params={"warn": False})
    return model.fit(d["X"], d["Y"])


def fit_himalaya_kernel(d: dict[str, np.ndarray], alphas: list[float],
                        backend_name: str) -> Any:
    """himalaya's kernel ridge, which it recommends over its RidgeCV when n < p (the
    comparison in the targets is with RidgeCV, as specified; this one is extra context)."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    set_backend(backend_name, on_error="raise")
    folds = grouped_folds(d["groups"], len(d["groups"]), 5, 0)
    cv = [(np.flatnonzero(folds != v), np.flatnonzero(folds == v)) for v in range(5)]
    model = KernelRidgeCV(alphas=np.asarray(alphas), kernel="linear", cv=cv,
                          fit_intercept=True)
    return model.fit(d["X"], d["Y"])


REFERENCES: dict[str, Callable[[dict[str, np.ndarray], dict[str, Any]], Any]] = {
    "sklearn": lambda d, spec: fit_sklearn(d, spec["alphas"]),
    "himalaya": lambda d, spec: fit_himalaya(d, spec["alphas"], spec["himalaya_backend"]),
    "himalaya_kernel": lambda d, spec: fit_himalaya_kernel(d, spec["alphas"],
                                                           spec["himalaya_backend"]),
}


def _reference_child(name: str, spec: dict[str, Any], queue: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    d = make_data(spec["n"], spec["p"], spec["k"], spec["n_test"], spec["seed"],
                  weight_rank=spec["weight_rank"])
    model, t = timed(name, lambda: REFERENCES[name](d, spec))
    t["r2"] = mean_r2(d["Y_test"], _to_numpy(model.predict(d["X_test"])))
    t["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(t)


def reference_in_child(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Fit reference ``name`` in a spawned child; its timing, test R^2 and peak RSS, or
    ``{"error": ...}`` if it died (killed for memory, for instance)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_reference_child, args=(name, spec, queue))
    proc.start()
    out: dict[str, Any] | None = None
    while out is None and (proc.is_alive() or not queue.empty()):
        try:
            out = queue.get(timeout=5)
        except Exception:  # queue.Empty: still running
            continue
    proc.join()
    if out is None:
        return {"error": f"exit code {proc.exitcode}"
                         + (" (killed by a signal: out of memory?)" if proc.exitcode and
                            proc.exitcode < 0 else "")}
    return out


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2000 x 3000 -> 128")
    ap.add_argument("--n", type=int, help="training trials (default 9000)")
    ap.add_argument("--p", type=int, help="voxels (default 15724)")
    ap.add_argument("--k", type=int, help="targets (default 512)")
    ap.add_argument("--n-test", type=int, help="test trials (default 1000; --quick 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["torch", "numpy"], default="torch",
                    help="our backend (default torch)")
    ap.add_argument("--device", default="cpu", help="our torch device (default cpu)")
    ap.add_argument("--protocol", choices=["averaged", "single-trial"], default="averaged",
                    help="averaged: 9000 x 15724 -> 512 (repetition averages); single-trial: "
                         "27000 x 15724 -> 512 (MindEye2's and MIRAGE's training scale; "
                         "himalaya skipped)")
    ap.add_argument("--targets-grid", metavar="TOKENSxDIM",
                    help="a target grid such as 257x768 (Brain-Diffuser's CLIP-vision tokens): "
                         "k = TOKENS x DIM from 15724 voxels on n = 9000, true weights of "
                         "rank 64, ours only; weights in a file unless --coef-storage memory")
    ap.add_argument("--factorization", choices=["auto", "eigh", "cholesky", "eigh_full"],
                    default="auto", help="our route (default auto: the cost model's choice)")
    ap.add_argument("--target-block", type=int, help="targets per block (default: automatic)")
    ap.add_argument("--coef-storage", choices=["auto", "memory", "file"], default="auto")
    ap.add_argument("--coef-dir", help="directory of the weight file (default: temporary)")
    ap.add_argument("--himalaya-backend", default="torch",
                    choices=["numpy", "torch", "torch_cuda"])
    ap.add_argument("--with-kernel-ridge", action="store_true",
                    help="also time himalaya's KernelRidgeCV (extra context, not a target)")
    ap.add_argument("--skip", action="append", default=[], choices=["sklearn", "himalaya"],
                    help="leave a reference out (repeatable)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    n, p, k, n_test = (2000, 3000, 128, 500) if args.quick else (9000, 15724, 512, 1000)
    weight_rank = None
    if args.protocol == "single-trial":
        n = 27000
        args.skip.append("himalaya")
    if args.targets_grid:
        try:
            tokens, dim = (int(x) for x in args.targets_grid.lower().split("x"))
        except ValueError:
            ap.error(f"--targets-grid: expected TOKENSxDIM such as 257x768, got "
                     f"{args.targets_grid!r}")
        k, weight_rank = tokens * dim, 64
        args.skip += ["sklearn", "himalaya"]
    n, p, k = args.n or n, args.p or p, args.k or k
    n_test = args.n_test or n_test
    alphas = default_alphas()

    log.info("data: %d x %d -> %d (+ %d test rows), float32, %d alphas", n, p, k, n_test,
             len(alphas))
    d = make_data(n, p, k, n_test, args.seed, weight_rank=weight_rank)
    data_mb = sum(a.nbytes for a in d.values()) / 2**20
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = gemm_rate(args.backend, args.device, 4096)
    log.info("float32 GEMM (%s, %s): %.0f GFLOP/s", args.backend, args.device, rate)

    res: dict[str, Any] = {"protocol": args.protocol, "targets_grid": args.targets_grid,
                           "n": n, "p": p, "k": k, "n_test": n_test, "n_alphas": len(alphas),
                           "data_mb": data_mb, "peak_rss_data_mb": rss_data,
                           "cpus": os.cpu_count(), "backend": args.backend,
                           "device": args.device, "himalaya_backend": args.himalaya_backend,
                           "gemm_gflops": rate, "loadavg_before": os.getloadavg()[0]}
    ours, t = timed("ours", lambda: fit_ours(d, alphas, args))
    res["ours_s"], res["ours_timing"] = t["s"], t
    res["r2_ours"] = mean_r2(d["Y_test"], ours.predict(d["X_test"]))
    res["ours_info"] = ours.fit_info_
    res["ours_flops"] = float(ours.fit_info_["flops"])
    res["ours_gflops"] = res["ours_flops"] / t["s"] / 1e9
    res["ours_gemm_fraction"] = res["ours_gflops"] / rate
    res["ours_median_alpha"] = float(np.median(ours.alpha_))
    res["ours_distinct_alphas"] = int(np.unique(ours.alpha_).size)
    # the process's peak so far: the data plus everything our fit and prediction held
    res["peak_rss_ours_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del ours

    # Each reference runs in a child process of its own on the same data (regenerated from
    # the seed): its memory does not count as ours, and running out of it (sklearn's
    # leave-one-out SVD of 27,000 x 15,724 float64 rows needs ~20 GB) loses no figures.
    spec = {"n": n, "p": p, "k": k, "n_test": n_test, "seed": args.seed,
            "weight_rank": weight_rank, "alphas": alphas,
            "himalaya_backend": args.himalaya_backend}
    refs = [name for name in ("sklearn", "himalaya") if name not in args.skip]
    if args.with_kernel_ridge:
        refs.append("himalaya_kernel")
    for name in refs:
        out = reference_in_child(name, spec)
        res[f"{name}_timing"] = out
        if "r2" not in out:
            log.warning("%s did not finish: %s", name, out.get("error"))
            continue
        res[f"{name}_s"] = out["s"]
        res[f"r2_{name}"] = out["r2"]
        res[f"ratio_{name}"] = res["ours_s"] / out["s"]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    checks = {}
    if "ratio_sklearn" in res:
        if args.protocol == "averaged":
            checks["time vs sklearn"] = res["ratio_sklearn"] <= RATIO_SKLEARN
        checks["R^2 vs sklearn"] = abs(res["r2_ours"] - res["r2_sklearn"]) <= R2_TOLERANCE
    if args.protocol == "single-trial" and not args.targets_grid:
        # the 650 s at its machine's 282 GFLOP/s, in machine-independent units
        res["ours_gemm_seconds"] = res["ours_s"] * rate * 1e9 / SINGLE_TRIAL_GEMM_FLOPS * 650
        checks["time <= 650 s at 282 GFLOP/s"] = res["ours_s"] * rate * 1e9 \
            <= SINGLE_TRIAL_GEMM_FLOPS
        checks[f">= {SINGLE_TRIAL_GEMM_SHARE:.0%} of GEMM"] = \
            res["ours_gemm_fraction"] >= SINGLE_TRIAL_GEMM_SHARE
        checks[f"peak RSS <= {SINGLE_TRIAL_RSS_MB / 1024:.0f} GB"] = \
            res["peak_rss_ours_mb"] <= SINGLE_TRIAL_RSS_MB
    if args.targets_grid:
        checks[f"peak RSS < {GRID_RSS_MB / 1024:.0f} GB"] = res["peak_rss_ours_mb"] < GRID_RSS_MB
    if "ratio_himalaya" in res:
        checks["time vs himalaya"] = res["ratio_himalaya"] <= RATIO_HIMALAYA
        checks["R^2 vs himalaya"] = res["r2_ours"] >= res["r2_himalaya"] - R2_TOLERANCE
    res["checks"] = checks
    res["pass"] = all(checks.values())
    disturbed = [name for name in ("ours", "sklearn", "himalaya", "himalaya_kernel")
                 if res.get(f"{name}_timing", {}).get("others_share", 0.0) > BUSY_SHARE]
    res["disturbed"] = disturbed

    print(f"\nridge benchmark: {n} x {p} -> {k}, {len(alphas)} alphas, float32, "
          f"{os.cpu_count()} CPUs; ours on {args.backend}/{args.device}, "
          f"himalaya on {args.himalaya_backend}")
    print(f"{'':16s} {'fit s':>9s} {'ours/x':>8s} {'test R^2':>9s}")
    print(f"{'ours':16s} {res['ours_s']:9.2f} {'':>8s} {res['r2_ours']:9.4f}")
    for name in ("sklearn", "himalaya", "himalaya_kernel"):
        if "error" in res.get(f"{name}_timing", {}):
            print(f"{name:16s} did not finish: {res[f'{name}_timing']['error']}")
        if f"{name}_s" in res:
            print(f"{name:16s} {res[f'{name}_s']:9.2f} {res[f'ratio_{name}']:8.3f} "
                  f"{res[f'r2_{name}']:9.4f}")
    print(f"peak RSS: {res['peak_rss_data_mb'] / 1024:.2f} GB after the data "
          f"({data_mb / 1024:.2f} GB of arrays), {res['peak_rss_ours_mb'] / 1024:.2f} GB "
          f"after ours, {res['peak_rss_mb'] / 1024:.2f} GB in all; ours: "
          f"{res['ours_info']['n_target_blocks']} target block(s) of "
          f"{res['ours_info']['target_block']}, weights in {res['ours_info']['coef_storage']}")
    print(f"GEMM float32 {rate:.0f} GFLOP/s; ours {res['ours_flops'] / 1e9:.0f} GFLOP nominal "
          f"-> {res['ours_gflops']:.0f} GFLOP/s = {100 * res['ours_gemm_fraction']:.0f}% of "
          f"GEMM ({res['ours_info']['solver']}, "
          f"{res['ours_info'].get('primal_route', res['ours_info']['factorization'])})")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if disturbed:
        print(f"  note: other processes used > {BUSY_SHARE:.0%} of the CPUs during "
              f"{', '.join(disturbed)}; timings are disturbed")
    print("PASS" if res["pass"] else "FAIL")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float))
        log.info("wrote %s", args.json)
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
