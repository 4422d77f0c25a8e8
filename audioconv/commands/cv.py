"""`audioconv cv`: k-fold cross-validation over a manifest's fold splits (ESC-50, UrbanSound8K):
one model per fold, scored on that fold; mean ± standard deviation of accuracy and macro-F1."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """which checkpoint is scored:
  --validation none (default): each model trains on all the other folds without validation and its
      last epoch is scored. Choosing the epoch on the held-out fold, as many ESC-50/UrbanSound8K
      papers do, reports the best of noisy per-epoch scores: an optimistic number.
  --validation next: the next fold (cyclically) picks best.pt; the model trains on the other K-2 folds.
examples:
  audioconv manifest esc50 ESC-50-master -o esc50.jsonl
  audioconv cv --manifest esc50.jsonl --out runs/esc50_cv --epochs 30
  audioconv cv --manifest us8k.jsonl --folds fold1,fold2,fold3 --out runs/us8k_cv --json
  audioconv cv --manifest esc50.jsonl --out runs/esc50_cv --resume      # continue after an interruption
"""


def register(subparsers) -> None:
    from audioconv.commands.train import add_options

    p = subparsers.add_parser("cv", help="k-fold cross-validation over a manifest's fold splits (mean ± std)",
                              description=__doc__.split("\n")[0] + " " + __doc__.split("\n")[1], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    fold = p.add_argument_group("cross-validation")
    fold.add_argument("--folds", help="comma list of the fold splits (default: every split named fold*)")
    fold.add_argument("--validation", choices=["none", "next"], default="none",
                      help="none: score each fold's last epoch (default); next: the next fold picks best.pt")
    add_options(p)
    p.set_defaults(func=run, out_default="runs/cv")


def format_table(result: dict) -> str:
    """Per-fold rows, then mean ± std over folds and the pooled scores."""
    lines = [f"{'fold':<10} {'n':>6} {'accuracy':>9} {'macro-F1':>9}  best epoch  run"]
    for r in result["folds"]:
        lines.append(f"{r['fold']:<10} {r['n']:>6} {r['accuracy']:>9.4f} {r['macro_f1']:>9.4f}  "
                     f"{r['best_epoch']:>10}  {r['out']}")

    def pm(mean, std):
        return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"

    lines += ["", f"accuracy   {pm(result['accuracy_mean'], result['accuracy_std'])} (mean ± sample std over "
                  f"{len(result['folds'])} folds)",
              f"macro-F1   {pm(result['macro_f1_mean'], result['macro_f1_std'])}",
              f"pooled     accuracy {result['pooled']['accuracy']:.4f}, macro-F1 {result['pooled']['macro_f1']:.4f} "
              f"over all {result['n']} held-out clips"]
    return "\n".join(lines)


def run(args) -> int:
    from audioconv.commands.train import config_from_args
    from audioconv.io.files import write_json
    from audioconv.training.cv import cross_validate

    if args.manifest is None:
        raise ValueError("--manifest is required: one manifest whose 'split' key names the folds")
    for flag in ("train", "val", "train_split", "val_split"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} is not an option of cv: each fold is held out in turn "
                             f"(choose the folds with --folds)")
    resume, args.resume = args.resume, False  # cv resumes fold by fold, not from OUT/last.pt
    args.out = args.out or args.out_default
    config = config_from_args(args)
    result = cross_validate(config, folds=args.folds, validation=args.validation, resume=resume,
                            progress=not args.no_progress,
                            log=lambda note: print(f"audioconv cv: {note}", file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1) if args.json else format_table(result), flush=True)
    path = write_json(Path(config.out) / "cv.json", result)
    if not args.json:
        print(f"summary: {path}")
    return 0
