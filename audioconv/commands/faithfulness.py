"""`audioconv faithfulness`: deletion and insertion curves of explanation methods against random orders.

Removes (deletion) or restores (insertion) log-mel cells in the order each method ranks them and
records the explained class's probability; writes ``OUT/faithfulness.json`` and ``OUT/faithfulness.png``.

The model: ``--checkpoint`` or ``--model SPEC --weights FILE --labels FILE`` (see
:mod:`audioconv.commands._model`); ``--gradcam-layer`` takes short, module or operation names (a
brought network's own names too) and defaults to the model's last feature map ``(B, C, F, T)``.
"""
from __future__ import annotations

from audioconv.commands.sanity import add_clip_arguments, class_target, load_clips, model_source, parse_methods


def register(subparsers) -> None:
    p = subparsers.add_parser("faithfulness", help="deletion/insertion curves of explanation methods (JSON + PNG)",
                              description=__doc__.split("\n")[0])
    add_clip_arguments(p)
    p.add_argument("--steps", type=int, default=32, help="points on each curve after the start (default 32)")
    p.add_argument("--patch", default="1,1", help="FREQ_BINS,FRAMES removed together (default 1,1: single cells)")
    p.add_argument("--fill", default="mean",
                   help="value of removed cells: 'mean' (each clip's mean dB, default), 'min' (its floor) or a dB value")
    p.add_argument("--n-random", type=int, default=3, help="random orders averaged as the baseline (default 3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run)


def parse_patch(text: str) -> tuple[int, int]:
    try:
        f, t = (int(v) for v in str(text).split(","))
        if f < 1 or t < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--patch must be two positive integers FREQ_BINS,FRAMES (e.g. 4,4), got {text!r}") from None
    return f, t


def parse_fill(text: str):
    t = str(text).strip()
    if t in ("mean", "min"):
        return t
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"--fill must be 'mean', 'min' or a number in dB, got {text!r}") from None


def run(args) -> int:
    from audioconv.app.figures import write_faithfulness
    from audioconv.interpret.faithfulness import faithfulness

    methods = parse_methods(args.methods)
    patch, fill = parse_patch(args.patch), parse_fill(args.fill)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.n_random < 1:
        raise ValueError(f"--n-random must be >= 1, got {args.n_random}")
    model, labels, wavs, clips, clip_s, device = load_clips(args)
    target = class_target(args.target, labels, clips["labels"])
    result = faithfulness(model, wavs, methods, target, gradcam_layer=args.gradcam_layer, n_random=args.n_random,
                          seed=args.seed, steps=args.steps, patch=patch, fill=fill, batch_size=args.batch_size,
                          device=device, progress=not args.no_progress)
    extra = {**model_source(args), "manifest": str(args.manifest), "clip_s": clip_s, "clips": clips["paths"],
             "labels": labels}
    summary = write_faithfulness(result, args.out, extra=extra)
    print(f"deletion AUC (lower = more faithful) and insertion AUC (higher), {len(clips['paths'])} clips:")
    for name, row in summary["summary"].items():
        print(f"  {name:>16}: deletion {row['deletion_auc']:.3f} ± {row['deletion_auc_std']:.3f}   "
              f"insertion {row['insertion_auc']:.3f} ± {row['insertion_auc_std']:.3f}")
    print(f"figure → {summary['png']}; summary → {summary['json']}")
    return 0
