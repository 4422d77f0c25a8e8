"""`audioconv report RUN`: the offline HTML report of a training run (RUN/report/index.html).

Metrics over epochs, test evaluation with the misclassified clips to listen to, a data summary, the
command that reproduces the run, and the interpretation figures the run folder holds (outputs of
`audioconv topk` / `evolve` saved inside it, or folders given with --interpretation), Grad-CAM and the
other explanation methods on test clips (--explain N), and the figures of `audioconv sanity` /
`audioconv faithfulness` found the same way.
"""
from __future__ import annotations

import argparse

EPILOG = """examples:
  audioconv report runs/esc                          # test set found from the run (split 'test' or *_test.jsonl)
  audioconv report runs/esc --test esc.jsonl --test-split test -o site/esc
  audioconv topk --checkpoint runs/esc/best.pt --manifest test.jsonl --layers conv2,conv3 -o runs/esc/topk
  audioconv report runs/esc                          # now with the top-k grids
  audioconv sanity --checkpoint runs/esc/best.pt --manifest test.jsonl --split test -o runs/esc/sanity
  audioconv faithfulness --checkpoint runs/esc/best.pt --manifest test.jsonl --split test -o runs/esc/faith
  audioconv report runs/esc --explain 6              # + Grad-CAM of 6 test clips, sanity and faithfulness
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="offline HTML report of a training run",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="training run folder (config.json, metrics.jsonl, best.pt)")
    p.add_argument("--test", default=None, help="test manifest (default: the run's split 'test', or *_test.jsonl "
                                                "next to its training manifest)")
    p.add_argument("--test-split", default=None, help="only the test manifest's clips with this 'split'")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default RUN/best.pt, else last.pt)")
    p.add_argument("--interpretation", action="append", default=[], metavar="DIR",
                   help="a folder with `audioconv topk` / `evolve` outputs (repeatable; RUN is always searched)")
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="explain N test clips (one per class first) with Grad-CAM, guided Grad-CAM, gradient, "
                        "guided backprop and deconvnet (default 0)")
    p.add_argument("--gradcam-layer", default=None, help="Grad-CAM layer for --explain (default the model's last)")
    p.add_argument("--max-misclassified", type=int, default=24, help="misclassified clips shown (default 24)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-o", "--out", default=None, help="report folder (default RUN/report)")
    p.set_defaults(func=run)


def train_flags() -> set[str]:
    """The option strings `audioconv train` accepts (read from its parser)."""
    from audioconv.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return {s for action in sub._actions for s in action.option_strings}


def run(args) -> int:
    from audioconv.app.run_report import write_run_report

    if args.max_misclassified < 0:
        raise ValueError(f"--max-misclassified must be >= 0, got {args.max_misclassified}")
    if args.explain < 0:
        raise ValueError(f"--explain must be >= 0 (test clips to explain), got {args.explain}")
    summary = write_run_report(args.run, args.out, checkpoint=args.checkpoint, test=args.test,
                               test_split=args.test_split, interpretation=args.interpretation, device=args.device,
                               max_misclassified=args.max_misclassified, train_flags=train_flags(),
                               progress=not args.no_progress, explain=args.explain,
                               gradcam_layer=args.gradcam_layer)
    ev = summary["evaluation"]
    if ev is None:
        print("no test evaluation (no test manifest found; pass --test)")
    else:
        print(f"test accuracy {ev['accuracy']:.4f}, macro-F1 {ev['macro_f1']:.4f} on {ev['n']} clips of {summary['test']}"
              f"; {summary['n_misclassified_shown']} misclassified clips shown")
    if summary["layers"]:
        print(f"interpretation figures: {', '.join(summary['layers'])}")
    if summary["explanations"]:
        print(f"explanations: {'; '.join(summary['explanations'])}")
    print(f"wrote {summary['index']}")
    return 0
