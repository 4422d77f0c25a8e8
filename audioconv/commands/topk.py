"""`audioconv topk`: the top-k activations of units over a manifest, projected; one PNG grid per layer.

The model: ``--checkpoint`` or ``--model SPEC --weights FILE --labels FILE`` (see
:mod:`audioconv.commands._model`); layers by short, module or operation name.
"""
from __future__ import annotations

from pathlib import Path

from audioconv.commands._args import comma_list, parse_list
from audioconv.commands._model import add_model_arguments, clip_length_s, load_cli_model


def register(subparsers) -> None:
    p = subparsers.add_parser("topk", help="top-k activations per unit over a manifest (PNG grid per layer + index.json)",
                              description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument("--manifest", required=True, help="JSONL manifest of the clips to scan")
    p.add_argument("--layers", required=True, help="comma list of layers, e.g. conv1,conv2 or layer1.0.relu2")
    p.add_argument("--k", type=int, default=9, help="activations kept per unit (default 9)")
    p.add_argument("--units", default=None,
                   help="N (the first N units of each layer) or a comma list of unit indices (a single unit: '5,'); "
                        "default all")
    p.add_argument("--mode", default="deconv", choices=["deconv", "guided", "gradient"])
    p.add_argument("--max-per-clip", type=int, default=1,
                   help="hits per clip and unit (default 1: the k hits come from k clips; 0 = no limit)")
    p.add_argument("--keep-silence", action="store_true",
                   help="let hits sit on silent frames (default: only frames more than 6 dB above the clip's floor; "
                        "zero padding is always left out)")
    p.add_argument("--clip-s", type=float, default=None,
                   help="clip length in seconds (centre crop / zero pad); default the run's training clip_s")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--skip-bad", action="store_true", help="leave out clips that cannot be read (listed) instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(func=run)


def parse_units(text: str | None, n_channels: int, layer: str) -> list[int] | None:
    """``None`` → all; ``"16"`` → first 16; ``"3,5,7"`` / ``"5,"`` → those units (validated)."""
    if text is None:
        return None
    t = str(text).strip()
    try:
        if "," not in t:
            n = int(t)
            if n < 1:
                raise ValueError
            return list(range(min(n, n_channels)))
        units = [int(s) for s in comma_list(t)]
    except ValueError:
        raise ValueError(f"--units must be a positive count N or a comma list of unit indices, got {text!r}") from None
    bad = [u for u in units if not 0 <= u < n_channels]
    if not units or bad:
        raise ValueError(f"--units {bad or units} out of range for {layer}: valid units are 0..{n_channels - 1}")
    return units


def _print_gaps(layer: str, result) -> None:
    """Say which units fired on fewer than k clips, and how many clips had nothing to offer."""
    where = "real frames" if result.silence_db is None else "real, non-silent frames"
    dead = [int(c) for c, n in zip(result.channels, result.n_hits) if n == 0]
    short = [f"{int(c)} ({int(n)})" for c, n in zip(result.channels, result.n_hits) if 0 < n < result.k]
    if dead:
        print(f"  {layer}: no activation above zero on the {where} of any clip: unit(s) {', '.join(map(str, dead))}")
    if short:
        print(f"  {layer}: fewer than {result.k} hits: unit(s) {', '.join(short)}")
    if result.n_silent:
        print(f"  {layer}: {result.n_silent} of {result.n_examples} clips have no {where.replace('real, ', '')} "
              f"and were left out")


def run(args) -> int:
    from audioconv.app.figures import write_topk
    from audioconv.commands._skipped import skipped_lines
    from audioconv.data.dataset import ManifestDataset
    from audioconv.interpret.frames import SILENCE_DB
    from audioconv.interpret.projector import Projector
    from audioconv.interpret.topk import top_k
    from audioconv.io.files import write_json
    from audioconv.utils import resolve_device

    device = resolve_device(args.device)
    model, labels, ckpt = load_cli_model(args, device)
    projector = Projector(model, mode=args.mode, device=device)
    layers = parse_list(args.layers, "--layers")
    channels = {}
    for layer in layers:
        try:
            channels[layer] = projector.path(layer).channels
        except ValueError as e:
            raise ValueError(f"--layers: {e}") from None
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.max_per_clip < 0:
        raise ValueError(f"--max-per-clip must be >= 1, or 0 for no limit; got {args.max_per_clip}")
    clip_s = clip_length_s(args, ckpt)
    dataset = ManifestDataset(args.manifest, sample_rate=model.frontend.config.sample_rate, clip_s=clip_s,
                              channels="mono", crop="center", skip_bad=args.skip_bad)
    out = Path(args.out)
    index = {"checkpoint": None if args.checkpoint is None else str(args.checkpoint), "model": args.model,
             "weights": args.weights, "manifest": str(args.manifest), "clip_s": clip_s,
             "n_clips": len(dataset), "layers": {}}
    for layer in layers:
        units = parse_units(args.units, channels[layer], layer)
        result = top_k(projector, dataset, layer, units, k=args.k, batch_size=args.batch_size,
                       progress=not args.no_progress, num_workers=args.num_workers,
                       max_per_clip=args.max_per_clip or None, silence_db=None if args.keep_silence else SILENCE_DB)
        png = write_topk(result, out, logmel=model.frontend, index=False)["png"]
        index["layers"][layer] = {**result.to_dict(), "png": png.name}
        print(f"{layer}: {len(result.channels)} units × top {result.k} over {result.n_examples} clips → {png}")
        _print_gaps(layer, result)
    index.update(n_clips=dataset.n_selected, skipped=dataset.skipped)  # after the scan: workers' finds included
    for line in skipped_lines("topk", index["skipped"], index["n_clips"]):
        print(line)
    print(f"wrote {write_json(out / 'index.json', index)}")
    return 0
