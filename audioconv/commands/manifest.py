"""`audioconv manifest`: build a manifest from a corpus layout, or check one."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audioconv.io.importers import import_esc50, import_folder, import_speech_commands, import_urbansound8k
from audioconv.io.manifest import check_manifest, write_manifest, write_split_manifests


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="corpus folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="output manifest (.jsonl)")
    p.add_argument("--split-files", action="store_true",
                   help="also write OUT_<split>.jsonl for each split (e.g. OUT_train.jsonl, OUT_validation.jsonl)")
    p.add_argument("--absolute", action="store_true", help="write absolute paths (default: relative to OUT's folder when under it)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable files (listed in the summary) instead of failing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    parser = subparsers.add_parser("manifest", help="build a JSONL manifest from a corpus layout, or check one",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)

    p = sub.add_parser("speech-commands", help="Google Speech Commands v2 (word folders + split lists)")
    _common(p)
    p.add_argument("--twelve", action="store_true",
                   help="12 classes: 10 words + _unknown_ (other words) + _silence_ (background crops)")
    p.add_argument("--silence-fraction", type=float, default=0.1,
                   help="with --twelve: _silence_ clips per split as a fraction of its word clips (default 0.1)")
    p.add_argument("--background-out", type=Path,
                   help="write the _background_noise_ regions (for AddNoise(background=...)) to this manifest")
    p.set_defaults(func=run_import, importer="speech-commands")

    for name, help_text in (("esc50", "ESC-50 (meta/esc50.csv + audio/): split = fold<N>, group = src_file"),
                            ("urbansound8k", "UrbanSound8K (metadata/UrbanSound8K.csv + audio/fold<N>/): group = fsID")):
        p = sub.add_parser(name, help=help_text)
        _common(p)
        p.set_defaults(func=run_import, importer=name)

    p = sub.add_parser("folder", help="one sub-folder per class; deterministic split by group hash")
    _common(p)
    p.add_argument("--val", type=float, default=0.1, help="fraction of groups for validation (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="fraction of groups for test (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--exact", action="store_true",
                   help="exact group fractions (rank of the group hashes) instead of the stable hash threshold")
    p.set_defaults(func=run_import, importer="folder")

    p = sub.add_parser("check", help="check that every clip exists and decodes; print a JSON report")
    p.add_argument("manifest", type=Path)
    p.add_argument("--headers-only", action="store_true", help="read headers only, do not decode samples")
    p.add_argument("--write", type=Path, help="write the good records, with measured duration and sample_rate, here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_check)


def run_import(args) -> int:
    progress = not args.quiet
    if args.importer == "speech-commands":
        result = import_speech_commands(args.src, twelve=args.twelve, silence_fraction=args.silence_fraction,
                                        skip_bad=args.skip_bad, progress=progress)
    elif args.importer == "esc50":
        result = import_esc50(args.src, skip_bad=args.skip_bad, progress=progress)
    elif args.importer == "urbansound8k":
        result = import_urbansound8k(args.src, skip_bad=args.skip_bad, progress=progress)
    else:
        result = import_folder(args.src, val=args.val, test=args.test, seed=args.seed, exact=args.exact,
                               skip_bad=args.skip_bad, progress=progress)
    if not result.records:
        raise ValueError(f"no clips found in {args.src}")
    relative = not args.absolute
    summary = {"manifest": str(write_manifest(args.out, result.records, relative=relative)), **result.summary()}
    if args.split_files:
        summary["split_files"] = {s: str(p) for s, p in write_split_manifests(args.out, result.records, relative=relative).items()}
    if getattr(args, "background_out", None) is not None:
        if not result.background:
            raise ValueError(f"--background-out: no recordings in {args.src / '_background_noise_'}")
        summary["background_manifest"] = str(write_manifest(args.background_out, result.background, relative=relative))
        if args.split_files:
            summary["background_split_files"] = {
                s: str(p) for s, p in write_split_manifests(args.background_out, result.background, relative=relative).items()
            }
    print(json.dumps(summary, indent=1))
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def run_check(args) -> int:
    report = check_manifest(args.manifest, decode=not args.headers_only, progress=not args.quiet)
    if args.write is not None and report.records:
        write_manifest(args.write, report.records)
    print(json.dumps(report.to_dict(), indent=1))
    return 0 if report.ok else 1
