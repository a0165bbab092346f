#!/usr/bin/env python
"""Benchmark the EEG path: CBraMod throughput, the alignment training step, and the
THINGS-EEG2 reader against raw reads.

What it measures, in one run:

1. CBraMod (braindecode, 12 layers, d_model 200, random weights) forward + backward on a
   batch of 64 epochs of 63 channels x 200 samples: samples per second (median of
   ``--repeat`` timed steps after one warm-up step).
2. One training step of the EEG-fMRI aligner (the same backbone, the attention head with 16
   queries, fMRI-query attention, 512-d fMRI features): forward, the three losses,
   backward, gradient clipping and the AdamW step; seconds per step.
3. The reader: a THINGS-EEG2 250 Hz training file (pickle flavour, float32,
   ``--images`` x 4 repetitions x 63 x 250, written once into ``--data``) read with
   :func:`fmri2img.data.things_eeg.read_eeg_file` (the restricted unpickler) against
   ``cat FILE > /dev/null`` on the same file, both warm (file read once right before);
   ``ratio_raw = reader MB/s / cat MB/s``.

Torch runs with ``--threads`` threads (default: all cores). Run it on a quiet machine:
two busy processes on 2 cores make torch 5-20x slower. Examples::

    python benchmarks/bench_eeg.py --quick
    python benchmarks/bench_eeg.py --json /tmp/eeg.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fmri2img.data.things_eeg import read_eeg_file
from fmri2img.models.alignment import AlignerConfig, EEGfMRIAligner
from fmri2img.models.eeg.backbone import BackboneConfig, build_cbramod
from fmri2img.training.align import AlignTrainConfig, LossWeights, alignment_loss

log = logging.getLogger("bench_eeg")
BATCH, CHANNELS, SAMPLES, FMRI_DIM = 64, 63, 200, 512


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up: allocations, kernels
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_cbramod(repeat: int, n_layer: int) -> dict:
    torch.manual_seed(0)
    model = build_cbramod(CHANNELS, SAMPLES, BackboneConfig(n_layer=n_layer))
    x = torch.randn(BATCH, CHANNELS, SAMPLES)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    s = _median_time(step, repeat)
    return {"n_layer": n_layer, "batch": BATCH, "seconds_per_batch": s,
            "samples_per_s": BATCH / s}


def bench_align_step(repeat: int, n_layer: int) -> dict:
    torch.manual_seed(0)
    cfg = AlignerConfig(backbone=BackboneConfig(n_layer=n_layer))
    model = EEGfMRIAligner(CHANNELS, SAMPLES, FMRI_DIM, cfg)
    tcfg = AlignTrainConfig()
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW([{"params": backbone, "lr": tcfg.lr},
                             {"params": rest, "lr": tcfg.lr * tcfg.head_lr_factor}],
                            weight_decay=tcfg.weight_decay)
    eeg = torch.randn(BATCH, CHANNELS, SAMPLES)
    fmri = torch.nn.functional.normalize(torch.randn(BATCH, FMRI_DIM), dim=-1)
    labels = torch.randint(0, 5, (BATCH,))
    pairs = torch.arange(BATCH)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        aligned, emb = model.aligned_and_embedding(eeg, fmri)
        loss, _ = alignment_loss(aligned, fmri, labels, pairs, LossWeights(),
                                 tcfg.temperature, eeg_emb=emb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    s = _median_time(step, repeat)
    return {"n_layer": n_layer, "batch": BATCH, "fmri_dim": FMRI_DIM,
            "seconds_per_step": s,
            "parameters": sum(p.numel() for p in model.parameters())}


def _write_file(path: Path, n_images: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n_images, 4, CHANNELS, 250), dtype=np.float32)
    times = -0.2 + np.arange(300) / 250.0
    with open(path, "wb") as fh:
        pickle.dump({"preprocessed_eeg_data": data, "ch_names": [f"E{i}" for i in
                                                                 range(CHANNELS)],
                     "times": times}, fh, protocol=4)


def bench_reader(path: Path, repeat: int) -> dict:
    size_mb = path.stat().st_size / 1e6

    def cat() -> None:
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)

    def read() -> None:
        eeg = read_eeg_file(path, "250hz")
        assert eeg.data.shape[1:] == (4, CHANNELS, 250)

    cat()  # warm: both read from the page cache
    t_cat = _median_time(cat, repeat)
    t_read = _median_time(read, repeat)
    return {"file_mb": size_mb, "cat_mb_per_s": size_mb / t_cat,
            "reader_mb_per_s": size_mb / t_read, "ratio_raw": t_cat / t_read}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=int, default=2000,
                    help="training images in the reader's file (x 4 x 63 x 250 float32)")
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data", type=Path, default=None, help="folder for the reader's file")
    ap.add_argument("--quick", action="store_true", help="2 repeats, 400 images")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    if args.quick:
        args.repeat, args.images = 2, 400
    torch.set_num_threads(args.threads)
    out: dict = {"threads": args.threads, "torch": torch.__version__}
    out["cbramod"] = bench_cbramod(args.repeat, args.n_layer)
    print(f"CBraMod ({args.n_layer} layers) forward+backward, batch {BATCH} x {CHANNELS} ch x "
          f"{SAMPLES}: {out['cbramod']['samples_per_s']:.1f} samples/s "
          f"({out['cbramod']['seconds_per_batch']:.2f} s/batch, {args.threads} threads)")
    out["align_step"] = bench_align_step(args.repeat, args.n_layer)
    print(f"aligner training step (batch {BATCH}, fMRI {FMRI_DIM}-d, "
          f"{out['align_step']['parameters'] / 1e6:.1f} M parameters): "
          f"{out['align_step']['seconds_per_step']:.2f} s/step")
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        path = Path(tmp) / "preprocessed_eeg_training.npy"
        _write_file(path, args.images)
        out["reader"] = bench_reader(path, args.repeat)
    r = out["reader"]
    print(f"reader: {r['reader_mb_per_s']:.0f} MB/s vs cat {r['cat_mb_per_s']:.0f} MB/s on a "
          f"{r['file_mb']:.0f} MB file (warm): ratio_raw {r['ratio_raw']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
