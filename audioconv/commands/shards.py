"""`audioconv shards`: pack a manifest's clips into WebDataset tar shards (+ the index shards.json) for training."""
from __future__ import annotations

import json

EPILOG = """examples:
  audioconv shards --manifest kws.jsonl -o shards/{split}-%06d.tar              # one set per split
  audioconv shards --manifest kws_train.jsonl -o shards/train-%06d.tar --max-size 64MB
  audioconv train --train 'shards/train-{000000..000011}.tar' --val 'shards/validation-{000000..000001}.tar' --out RUN
Each clip is stored as its audio file's bytes (no re-encoding) plus a .json of its manifest record;
shards.json next to the shards lists every shard's clip count and the labels (the trainer reads it).
"""


def register(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("shards", help="pack a manifest into WebDataset tar shards for training",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="JSONL manifest of the clips")
    p.add_argument("-o", "--out", required=True, metavar="PATTERN",
                   help="shard paths with one integer field: DIR/shard-%%06d.tar; {split} writes one set per split")
    p.add_argument("--max-size", default="256MB", help="largest shard, tar headers included (default 256MB; "
                   "units B, KB, MB, GB, KiB, MiB, GiB)")
    p.add_argument("--max-clips", type=int, default=0, help="at most this many clips per shard (default 0 = no limit)")
    p.add_argument("--split", help="only the clips whose 'split' key equals this")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable clips (listed) instead of stopping")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from audioconv.commands._skipped import skipped_lines
    from audioconv.data.shards import write_shards

    result = write_shards(args.manifest, args.out, max_size=args.max_size, max_clips=args.max_clips, split=args.split,
                          skip_bad=args.skip_bad, progress=not args.no_progress)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, part in result["sets"].items():
        print(f"{name}: {part['clips']} clips in {len(part['shards'])} shards ({part['bytes'] / 1e6:.1f} MB): "
              f"{part['spec']!r}")
    print(f"index: {result['index']} ({len(result['labels'])} labels)")
    n_clips = sum(p["clips"] for p in result["sets"].values()) + len(result["skipped"])
    for line in skipped_lines("shards", result["skipped"], n_clips):
        print(line)
    if result["repeated_files"]:
        print(f"note: {result['repeated_files']} audio files back several clips and are stored once per clip")
    if result["dropped"]:
        print(f"note: {len(result['dropped'])} shards of an earlier run are no longer in the index "
              f"(delete them): {', '.join(result['dropped'][:3])}{' ...' if len(result['dropped']) > 3 else ''}")
    return 0
