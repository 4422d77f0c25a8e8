#!/usr/bin/env python3
"""Clips per second of the invariance probe against a plain forward pass, side by side in one run.

Task: ``--clips`` one-second 16 kHz clips (harmonic tones in noise) through a SpectrogramCNN
(``--model cnn``: channels 16-32-64-64, the demo's size) or BC-ResNet-2 (``--model bcresnet``), random
init, eval, on ``--device``::

    python benchmarks/invariance_bench.py [--clips 64] [--batch 32] [--model cnn] [--repeats 3] [--threads 2]

Contestants (interleaved, best of ``--repeats`` rounds, so a busy machine slows them alike):

* ``forward, batch B`` — ``model(waveforms)`` (front end + network → logits) on batches of ``--batch``
  clips: the plain forward pass;
* ``forward, batch 1`` — the same one clip at a time (what a probe that ran one forward per clip
  would cost per pass);
* ``probe <transform>`` — :func:`audioconv.interpret.invariance` with 4 amounts besides the identity,
  all the model's layers and the logits. It runs one batched forward per batch for the original clips
  and one per batch and amount. Its clips/s count the transformed clips (clips × 4 amounts) per second
  of the whole call (transform, front end, network, distances, geometry). The goal (issue 15) is at
  least 0.5× the plain batched forward; 4 / 5 = 0.8× would be a probe whose only cost is its forward
  passes;
* ``<transform> alone`` — the transform by itself at the same 4 amounts on the same batches (its rate
  as clips/s): what the probe pays for the augmentation, which a plain forward does not do.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

AMOUNTS = {"gain": [-12.0, -6.0, 0.0, 6.0, 12.0], "time_shift": [-0.08, -0.04, 0.0, 0.04, 0.08],
           "noise": [0.0, 10.0, 20.0, 30.0, math.inf], "reverb": [0.0, 0.2, 0.4, 0.6, 0.8],
           "pitch_shift": [-4.0, -2.0, 0.0, 2.0, 4.0]}


def _clips(n: int, sr: int = 16000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(sr) / sr
    f0 = 150 + 400 * torch.rand(n, 1, generator=g)
    tone = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))
    return (0.1 * tone + 0.01 * torch.randn(n, sr, generator=g))[:, None, :]


def _model(name: str):
    from audioconv.models import SpectrogramCNN
    from audioconv.models.bcresnet import BCResNet

    torch.manual_seed(0)
    model = SpectrogramCNN(10, channels=(16, 32, 64, 64)) if name == "cnn" else BCResNet(10, width=2.0)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--model", choices=["cnn", "bcresnet"], default="cnn")
    p.add_argument("--transforms", default="gain,time_shift,noise,reverb,pitch_shift")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from audioconv.interpret.invariance import invariance, probe_transform

    model, x = _model(args.model).to(args.device), _clips(args.clips).to(args.device)
    transforms = [t.strip() for t in args.transforms.split(",") if t.strip()]

    @torch.no_grad()
    def forward(batch: int) -> None:
        for lo in range(0, x.shape[0], batch):
            model(x[lo:lo + batch])

    def probe(name: str) -> None:
        invariance(model, x, name, AMOUNTS[name], batch_size=args.batch, device=args.device, progress=False)

    def transform_alone(name: str) -> None:  # the transform's own cost inside the probe
        pt = probe_transform(name, 16000, AMOUNTS[name])
        pos = torch.rand(x.shape[0])
        for lo in range(0, x.shape[0], args.batch):
            for a in AMOUNTS[name]:
                if a != pt.identity:
                    pt.augmentation.apply(x[lo:lo + args.batch], pt.params(a, x[lo:lo + args.batch].shape[0],
                                                                          pos[lo:lo + args.batch], x.device))

    contestants = {f"forward, batch {args.batch}": (lambda: forward(args.batch), args.clips),
                   "forward, batch 1": (lambda: forward(1), args.clips)}
    for name in transforms:
        contestants[f"probe {name}"] = (lambda name=name: probe(name), args.clips * 4)
        contestants[f"  {name} alone"] = (lambda name=name: transform_alone(name), args.clips * 4)
    best = {k: math.inf for k in contestants}
    for k, (fn, _) in contestants.items():  # warm-up: traces, FFT plans, the noise bank
        fn()
    for _ in range(args.repeats):
        for k, (fn, _) in contestants.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    base = args.clips / best[f"forward, batch {args.batch}"]
    print(f"{args.model}, {args.clips} clips of 1 s at 16 kHz, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.device}; best of {args.repeats}")
    print(f"{'contestant':<24}{'time (s)':>10}{'clips/s':>10}{'vs forward':>12}")
    for k, (_, n) in contestants.items():
        rate = n / best[k]
        print(f"{k:<24}{best[k]:>10.3f}{rate:>10.1f}{rate / base:>11.2f}x")


if __name__ == "__main__":
    main()
