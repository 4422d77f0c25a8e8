"""`audioconv demo`: synthesize a corpus, train, evaluate, project, and write an HTML report."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="end-to-end demo on a built-in synthetic corpus: train, project, HTML report",
        description=__doc__.split("\n")[0].rstrip(".")
        + ". Ends with OUT/report/index.html (open it in a browser; it works offline).")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo); the corpus in it is reused")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run of every stage (tiny corpus and model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


STAGES = {
    "corpus": "synthesizing the corpus",
    "train": "training with the default augmentation chain",
    "evaluate": "evaluating best.pt on the test split",
    "top-k": "top-k activations of every conv layer, projected",
    "evolve": "feature evolution across the saved epochs",
    "sounds": "projections of test clips, as pictures and sounds",
    "report": "writing the report",
}


def run(args) -> int:
    from audioconv.app.demo import run_demo

    names = list(STAGES)

    def log(stage: str) -> None:
        i = names.index(stage) + 1 if stage in names else 0
        print(f"[{i}/{len(names)}] {STAGES.get(stage, stage)}", flush=True)

    summary = run_demo(out=args.out, device=args.device, progress=not args.no_progress, quick=args.quick, log=log)
    if args.json:
        print(json.dumps(summary, indent=1))
    minutes, seconds = divmod(summary["total_s"], 60)
    print(f"demo: test accuracy {100 * summary['accuracy']:.1f} % (macro-F1 {summary['macro_f1']:.3f}, "
          f"{summary['n_test']} clips) in {int(minutes)} min {seconds:.0f} s on {summary['device']}; "
          f"report: {summary['report']}")
    return 0
