"""`audioconv rirs`: generate a bank of shoebox-room impulse responses (WAVs + a label-free manifest)."""
from __future__ import annotations

import argparse
import json

from audioconv.commands._args import comma_list

EPILOG = """examples:
  audioconv rirs -o rirs/ --n 500 --rt60-s 0.2,1.0
  audioconv rirs -o rirs/ --n 200 --size-m 3,10,3,8,2.4,4 --seed 1 --engine pyroomacoustics
  then, in a chain JSON given to `audioconv train --augment`:  {"type": "Reverb", "rirs": "rirs/rirs.jsonl", "p": 0.5}
Each RIR is DIR/rir_NNNNN.wav (32-bit float, peak 1, the direct path after its travel time);
DIR/rirs.jsonl lists them with the room (size_m, source_m, mic_m, rt60_s asked for) and the
measured rt60_s (Schroeder T30) and direct-to-reverberant ratio (drr_db).
"""


def _floats(count: int | tuple[int, ...], name: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in comma_list(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma list of numbers, got {text!r}") from None
        if len(values) not in ((count,) if isinstance(count, int) else count):
            raise argparse.ArgumentTypeError(f"{name} needs {count} numbers, got {len(values)} in {text!r}")
        return values
    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser("rirs", help="generate shoebox-room impulse responses (image method) for Reverb(rirs=...)",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the WAVs and rirs.jsonl")
    p.add_argument("--n", type=int, default=500, help="number of rooms (default 500)")
    p.add_argument("--rt60-s", type=_floats(2, "--rt60-s"), default=(0.2, 1.0), metavar="MIN,MAX",
                   help="reverberation time range in seconds, drawn evenly (default 0.2,1.0)")
    p.add_argument("--size-m", type=_floats(6, "--size-m"), default=(3.0, 10.0, 3.0, 8.0, 2.4, 4.0),
                   metavar="LMIN,LMAX,WMIN,WMAX,HMIN,HMAX",
                   help="room length, width, height ranges in metres (default 3,10,3,8,2.4,4)")
    p.add_argument("--margin-m", type=float, default=0.5, help="source and microphone at least this far from "
                   "the walls, in metres (default 0.5)")
    p.add_argument("--min-distance-m", type=float, default=0.5, help="smallest source-microphone distance (default 0.5)")
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    p.add_argument("--engine", choices=["image", "pyroomacoustics"], default="image",
                   help="image: the built-in image method (numpy); pyroomacoustics: the optional extra 'rooms'")
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same rooms (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from audioconv.augment.rooms import (direct_path_index, direct_to_reverberant_db, random_rooms, room_rirs,
                                         schroeder_rt60_s)
    from audioconv.io.audio import save
    from audioconv.io.files import ensure_folder, write_text

    if args.engine == "pyroomacoustics":
        import importlib

        try:
            importlib.import_module("pyroomacoustics")
        except ModuleNotFoundError:
            raise RuntimeError("--engine pyroomacoustics: pyroomacoustics is not installed: pip install "
                               "'audioconv[rooms]' (or use the built-in image method, --engine image)") from None
    s = args.size_m
    rooms = random_rooms(args.n, rt60_s=args.rt60_s, size_m=(s[0:2], s[2:4], s[4:6]), margin_m=args.margin_m,
                         min_distance_m=args.min_distance_m, seed=args.seed)
    out = ensure_folder(Path(args.out))
    rirs = room_rirs(rooms, args.sample_rate, engine=args.engine, progress=not args.no_progress)
    lines = []
    for i, (room, rir) in enumerate(zip(rooms, rirs)):
        name = f"rir_{i:05d}.wav"
        save(out / name, torch.from_numpy(rir.astype(np.float32)), args.sample_rate, subtype="FLOAT")
        start = direct_path_index(rir)
        lines.append({"audio_filepath": name, "duration": round(len(rir) / args.sample_rate, 6), **room.to_dict(),
                      "measured_rt60_s": round(schroeder_rt60_s(rir[start:], args.sample_rate), 4),
                      "drr_db": round(direct_to_reverberant_db(rir, args.sample_rate), 2), "engine": args.engine})
    manifest = write_text(out / "rirs.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    summary = {"manifest": str(manifest), "n": len(lines), "sample_rate": args.sample_rate, "engine": args.engine,
               "rt60_s": [min(r.rt60_s for r in rooms), max(r.rt60_s for r in rooms)],
               "drr_db": [min(x["drr_db"] for x in lines), max(x["drr_db"] for x in lines)]}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"wrote {summary['n']} impulse responses to {out} and {manifest} (RT60 {summary['rt60_s'][0]:.2f}-"
              f"{summary['rt60_s'][1]:.2f} s, DRR {summary['drr_db'][0]:.1f} to {summary['drr_db'][1]:.1f} dB)")
    return 0
