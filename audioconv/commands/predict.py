"""`audioconv predict`: the top-k classes of audio files (any format, rate, channels, length).

Long files are cut into windows of the training clip length (hop: half a window); each window is
classified and the file's probabilities are the mean of the window probabilities over its
non-silent windows (see :mod:`audioconv.training.predict`).
"""
from __future__ import annotations

import json

EPILOG = """examples:
  audioconv predict --checkpoint runs/esc/best.pt dog.wav street.mp3
  audioconv predict --checkpoint runs/esc/best.pt long.flac --windows --top-k 2
  audioconv predict --checkpoint runs/esc/best.pt *.ogg --json > predictions.json
"""


def register(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("predict", help="top-k classes of audio files (sliding windows over long files)",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG, MP3, ...)")
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt, last.pt or a snapshot")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per file and window (default 3)")
    p.add_argument("--window-s", type=float, default=None, help="window length in s (default the run's clip_s)")
    p.add_argument("--hop-s", type=float, default=None, help="hop between windows in s (default half a window)")
    p.add_argument("--windows", action="store_true", help="also print every window's top-k")
    p.add_argument("--json", action="store_true", help="print one JSON object (files, windows, probabilities)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _line(pairs) -> str:
    return ", ".join(f"{label} {p:.3f}" for label, p in pairs)


def _print_text(pred, top_k: int, windows: bool) -> None:
    n, quiet = len(pred.starts_s), int(pred.silent.sum())
    print(f"{pred.path}: {_line(pred.top(top_k))}")
    print(f"  {pred.duration_s:.2f} s at {pred.sample_rate} Hz, {pred.channels} channel(s); {n} window(s) of "
          f"{pred.window_s:g} s every {pred.hop_s:g} s" + (f", {quiet} silent" if quiet else "")
          + (" (all: each one counted)" if quiet == n else ""))
    if windows:
        for w, (start, end, silent) in enumerate(zip(pred.starts_s, pred.ends_s, pred.silent)):
            mark = ("  (silent)" if quiet == n else "  (silent: not counted)") if silent else ""
            print(f"  {start:7.2f}-{end:.2f} s: {_line(pred.top(top_k, w))}{mark}")


def run(args) -> int:
    from audioconv.training.predict import AGGREGATION, predict_files

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    preds = predict_files(args.checkpoint, args.files, device=args.device, window_s=args.window_s, hop_s=args.hop_s,
                          batch_size=args.batch_size, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "labels": preds[0].labels, "aggregation": AGGREGATION,
                          "files": [p.to_dict(args.top_k, windows=True) for p in preds]}, indent=1))
        return 0
    for pred in preds:
        _print_text(pred, args.top_k, args.windows)
    print(f"(file scores: {AGGREGATION})")
    return 0
