"""`audioconv evaluate`: score a checkpoint on a manifest (accuracy, macro-F1, per-class recall, confusion)."""
from __future__ import annotations

import json
from pathlib import Path

from audioconv.commands._skipped import skipped_lines


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="accuracy, macro-F1 and confusion matrix of a checkpoint on a manifest",
                              description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt, RUN/last.pt or a snapshot")
    p.add_argument("--manifest", required=True, help="JSONL manifest to score")
    p.add_argument("--split", help="only clips whose 'split' key equals this (e.g. test)")
    p.add_argument("--allow-unknown", action="store_true",
                   help="count clips whose label the model does not know instead of stopping")
    p.add_argument("--skip-bad", action="store_true", help="leave out clips that cannot be read (listed) instead of stopping")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="auto (default): the weights the run validated (the EMA of a run trained with --ema); "
                        "ema or raw: those (last.pt of an --ema run holds both)")
    p.add_argument("--by", metavar="KEY", help="also the accuracy per value of this manifest key (group, speaker, "
                                               "fold ...), worst first")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--png", help="confusion-matrix picture (default: next to the checkpoint); written after the "
                                 "result is printed")
    p.add_argument("--no-png", action="store_true", help="do not draw the confusion-matrix picture")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader decode processes")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def default_png_path(checkpoint: str, manifest: str, split: str | None) -> Path:
    """``RUN/<checkpoint stem>_confusion_<manifest stem>[_<split>].png``."""
    ck, man = Path(checkpoint), Path(manifest)
    return ck.with_name(f"{ck.stem}_confusion_{man.stem}{'_' + split if split else ''}.png")


def format_table(result: dict) -> str:
    """Readable report: scores, per-class recall, confusion matrix with labels (and the accuracy per
    value of a manifest key with ``--by``)."""
    labels = result["labels"]
    lines = [f"checkpoint {result['checkpoint']}", f"manifest   {result['manifest']}",
             f"accuracy   {result['accuracy']:.4f}", f"macro-F1   {result['macro_f1']:.4f}",
             f"n          {result['n']} of {result.get('n_clips', result['n'])} clips"]
    if result.get("weights") == "ema":
        lines.insert(2, "weights    EMA (exponential moving average of the trained weights)")
    if result["unknown"]:
        lines.append(f"unknown    {result['unknown']} clips skipped: {result['unknown_labels']}")
    lines += skipped_lines("evaluate", result.get("skipped") or {}, result.get("n_clips", result["n"]))
    if result.get("n_longer"):
        lines.append(f"longer     {result['n_longer']} clips last longer than the run's {result['clip_s']:g} s: each "
                     f"was scored on its central {result['clip_s']:g} s (`audioconv predict` scores every window)")
    width = max(8, *(len(lab) for lab in labels))
    lines += ["", f"{'class':<{width}}  recall   support"]
    for lab, row in zip(labels, result["confusion"]):
        r = result["per_class_recall"][lab]
        lines.append(f"{lab:<{width}}  {'   -  ' if r is None else f'{r:6.4f}'}   {sum(row):7d}")
    cell = max(5, *(len(str(v)) for row in result["confusion"] for v in row)) + 1
    short = [lab[: cell - 1] for lab in labels]
    lines += ["", "confusion (rows = true, columns = predicted)",
              " " * (width + 2) + "".join(f"{s:>{cell}}" for s in short)]
    for lab, row in zip(labels, result["confusion"]):
        lines.append(f"{lab:<{width}}  " + "".join(f"{v:>{cell}}" for v in row))
    if result.get("by"):
        groups = result["by"]["groups"]
        width = max(8, *(len(g["value"]) for g in groups)) if groups else 8
        lines += ["", f"accuracy by {result['by']['key']} (worst first)", f"{'value':<{width}}  accuracy   clips"]
        lines += [f"{g['value']:<{width}}  {g['accuracy']:8.4f}  {g['n']:6d}" for g in groups]
    return "\n".join(lines)


def run(args) -> int:
    from audioconv.app.figures import save_figure
    from audioconv.plots.confusion import plot_confusion
    from audioconv.training.evaluate import evaluate

    result = evaluate(args.checkpoint, args.manifest, device=args.device, batch_size=args.batch_size,
                      allow_unknown=args.allow_unknown, progress=not args.no_progress, split=args.split,
                      workers=args.workers, skip_bad=args.skip_bad, weights=args.weights, by=args.by)
    png = None if args.no_png else Path(args.png) if args.png else default_png_path(args.checkpoint, args.manifest,
                                                                                     args.split)
    result["png"] = None if png is None else str(png)
    # the result first, so that a picture that cannot be written (a read-only run folder) loses nothing
    print(json.dumps(result, indent=1) if args.json else format_table(result), flush=True)
    if png is not None:
        save_figure(plot_confusion(result), png, dpi=100)
        if not args.json:
            print(f"\nconfusion matrix picture: {png}")
    return 0
