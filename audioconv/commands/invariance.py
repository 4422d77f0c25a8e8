"""`audioconv invariance`: how far each layer moves when the input is shifted, pitched, amplified, reverberated
or made noisy (Zeiler & Fergus Fig. 5 for sound).

Per layer and amount: the invariance distance (the layer's change, relative to the distance between two
different clips), the equivariance distance for time and pitch shifts (the change left after moving the
original map at the layer's stride: small = place-coded), and the true-class probability. Writes
``OUT/invariance_<transform>.png`` and ``OUT/invariance_<transform>.json`` per transform; the run report
(`audioconv report RUN`) shows them when OUT lies inside the run folder (default ``RUN/invariance``).
"""
from __future__ import annotations

import argparse

from audioconv.commands._args import parse_list
from audioconv.commands._model import add_model_arguments, clip_length_s, load_cli_model

EPILOG = """amounts (comma list, in the transform's unit; default a range per transform):
  time_shift   seconds (e.g. -0.08,-0.04,0,0.04,0.08)   pitch_shift  semitones (within ±24)
  gain         dB                                        reverb       RT60 in seconds (0 = dry)
  noise        SNR in dB (inf = clean)
  a list that starts with a minus sign needs '=': --amounts=-0.08,0,0.08

examples:
  audioconv invariance --checkpoint runs/demo/best.pt --manifest runs/demo/data/test.jsonl \\
      --transform time_shift,pitch_shift,gain,reverb,noise      # → runs/demo/invariance/
  audioconv invariance --checkpoint runs/kws/best.pt --manifest kws_test.jsonl --transform time_shift \\
      --amounts=-0.1,-0.05,0,0.05,0.1 --layers conv1,conv4 -o out/
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("invariance", help="per-layer invariance/equivariance to shifts, pitch, gain, reverb, "
                                                 "noise (PNG + JSON)",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--manifest", required=True, help="JSONL manifest of the probe clips (labels = true classes)")
    p.add_argument("--split", default=None, help="keep only this split of the manifest (e.g. test)")
    p.add_argument("--n-clips", type=int, default=64, help="clips used, evenly spaced over the manifest (default 64; "
                                                           "0 = all; at least 2)")
    p.add_argument("--transform", required=True,
                   help="comma list of time_shift, pitch_shift, gain, reverb, noise (one figure each)")
    p.add_argument("--amounts", default=None, help="comma list of amounts (units below); only with one --transform")
    p.add_argument("--layers", default=None, help="comma list of layers (default the model's layers); the logits "
                                                  "are always added")
    p.add_argument("--shift-mode", default="zero", choices=["zero", "roll"],
                   help="time_shift: fill vacated samples with zeros (default) or roll circularly")
    p.add_argument("--noise-color", default="white", help="noise: white, pink, brown or a slope in dB/octave")
    p.add_argument("--drr-db", default="6", help="reverb: direct-to-reverberant ratio in dB (default 6), or 'none'")
    p.add_argument("--clip-s", type=float, default=None, help="clip length (s); default the run's training clip_s")
    p.add_argument("--batch-size", type=int, default=32, help="clips per forward pass (default 32)")
    p.add_argument("--seed", type=int, default=0, help="draws each clip's fixed noise / RIR (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-o", "--out", default=None, help="output folder (default: the checkpoint's folder /invariance)")
    p.set_defaults(func=run)


def _color(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _drr(text: str):
    if str(text).strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--drr-db must be a number of dB or 'none', got {text!r}") from None


def _clips(args, model, labels, checkpoint):
    """``(waveforms (N, 1, T), targets (N,), paths, clip_s, unknown)`` of the chosen probe clips (``checkpoint``:
    the dict ``--checkpoint`` read, or ``None``)."""
    import numpy as np
    import torch

    from audioconv.data.dataset import ManifestDataset

    if args.n_clips < 0 or args.n_clips == 1:
        raise ValueError(f"--n-clips must be 0 (all) or at least 2, got {args.n_clips}")
    clip_s = clip_length_s(args, checkpoint)
    ds = ManifestDataset(args.manifest, sample_rate=model.frontend.config.sample_rate, clip_s=clip_s, labels=labels,
                         channels="mono", crop="center", split=args.split, allow_unknown=True)
    if len(ds) < 2:
        raise ValueError(f"{args.manifest}: {len(ds)} usable clip(s)" + (f" in split {args.split!r}" if args.split else "")
                         + "; the probe needs at least 2")
    n = len(ds) if args.n_clips == 0 else min(args.n_clips, len(ds))
    chosen = sorted(set(np.linspace(0, len(ds) - 1, n).round().astype(int).tolist()))
    items = [ds[i] for i in chosen]
    wavs = torch.stack([w for w, _, _ in items])
    lengths = torch.as_tensor([int(length) for _, _, length in items])
    targets = torch.as_tensor([ds.targets[i] for i in chosen])
    return wavs, targets, lengths, [ds.records[i]["audio_filepath"] for i in chosen], clip_s, int(ds.unknown)


def _print_table(summary: dict) -> None:
    scale = summary["display_scale"]
    heads = ["clean" if a is None else f"{a * scale:g}" for a in summary["amounts"]]
    print(f"{summary['transform']}: {summary['axis_label']}, {summary['n_clips']} clips "
          f"(distance 0 = unchanged, 1 = as far as another clip)")
    width = max(len(n) for n in summary["layers"]) + 6
    print(" " * width + "".join(f"{h:>8}" for h in heads))

    def row(label, values):
        cells = "".join(f"{'n/a':>8}" if v is None else f"{v:8.3f}" for v in values)
        print(f"  {label:<{width - 2}}{cells}")

    for name, info in summary["layers"].items():
        row(f"{name} inv", info["invariance"])
        if info["equivariance"] is not None:
            row(f"{name} eq", info["equivariance"])
    row("p(true class)", summary["probability"]["p_true"])


def run(args) -> int:
    from pathlib import Path

    from audioconv.app.figures import write_invariance
    from audioconv.interpret.invariance import TRANSFORMS, invariance
    from audioconv.utils import resolve_device

    transforms = parse_list(args.transform, "--transform")
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
        raise ValueError(f"--transform {bad[0]!r} is unknown; use {', '.join(TRANSFORMS)}")
    amounts = parse_list(args.amounts, "--amounts", number=True)
    if amounts is not None and len(transforms) > 1:
        raise ValueError("--amounts goes with a single --transform (each transform has its own unit)")
    if args.out is None and not args.checkpoint:
        raise ValueError("-o/--out is required with --model (the default is the checkpoint's folder /invariance)")
    out = Path(args.out) if args.out is not None else Path(args.checkpoint).parent / "invariance"
    device = resolve_device(args.device)
    model, labels, ckpt = load_cli_model(args, device)
    layers = parse_list(args.layers, "--layers")
    wavs, targets, lengths, paths, clip_s, unknown = _clips(args, model, labels, ckpt)
    if unknown:
        print(f"{unknown} clip(s) with labels the model does not know were left out")
    extra = {"checkpoint": args.checkpoint, "model": args.model, "manifest": str(args.manifest), "split": args.split,
             "clip_s": clip_s, "labels": labels, "clips": paths}
    for name in transforms:
        try:
            result = invariance(model, wavs, name, amounts, layers, targets, lengths=lengths,
                                shift_mode=args.shift_mode, noise_color=_color(args.noise_color),
                                drr_db=_drr(args.drr_db), seed=args.seed, batch_size=args.batch_size, device=device,
                                progress=not args.no_progress)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        summary = write_invariance(result, out, extra)
        _print_table(summary)
        print(f"figure → {summary['png']}; summary → {summary['json']}")
    return 0
