"""`audioconv topk`: the top-k activations of units over a manifest, projected; one PNG grid per layer."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def register(subparsers) -> None:
    p = subparsers.add_parser("topk", help="top-k activations per unit over a manifest (PNG grid per layer + index.json)",
                              description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt, last.pt or a snapshot")
    p.add_argument("--manifest", required=True, help="JSONL manifest of the clips to scan")
    p.add_argument("--layers", required=True, help="comma list of layers, e.g. conv1,conv2")
    p.add_argument("--k", type=int, default=9, help="activations kept per unit (default 9)")
    p.add_argument("--units", default=None,
                   help="N (the first N units of each layer) or a comma list of unit indices (a single unit: '5,'); "
                        "default all")
    p.add_argument("--mode", default="deconv", choices=["deconv", "guided", "gradient"])
    p.add_argument("--clip-s", type=float, default=None,
                   help="clip length in seconds (centre crop / zero pad); default the run's training clip_s")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
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
        units = [int(s) for s in t.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--units must be a positive count N or a comma list of unit indices, got {text!r}") from None
    bad = [u for u in units if not 0 <= u < n_channels]
    if not units or bad:
        raise ValueError(f"--units {bad or units} out of range for {layer}: valid units are 0..{n_channels - 1}")
    return units


def clip_s_from_checkpoint(path) -> float | None:
    """The training ``clip_s`` stored in a checkpoint's ``train_config`` (``None`` if absent)."""
    from audioconv.training.checkpoint import load_checkpoint

    value = (load_checkpoint(path).get("train_config") or {}).get("clip_s")
    return float(value) if value else None


def run(args) -> int:
    from audioconv.training.checkpoint import load_model
    from audioconv.data.dataset import ManifestDataset
    from audioconv.plots.render import plot_topk_grid
    from audioconv.interpret.topk import top_k

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    model, labels = load_model(args.checkpoint, device)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    if not layers:
        raise ValueError("--layers is empty")
    for layer in layers:
        if layer not in model.layer_names:
            raise ValueError(f"unknown layer {layer!r} in --layers; valid layers: {', '.join(model.layer_names)}")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    clip_s = args.clip_s if args.clip_s is not None else clip_s_from_checkpoint(args.checkpoint)
    dataset = ManifestDataset(args.manifest, sample_rate=model.config.sample_rate, clip_s=clip_s,
                              channels="mono", crop="center")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = {"checkpoint": str(args.checkpoint), "manifest": str(args.manifest), "clip_s": clip_s,
             "n_clips": len(dataset), "layers": {}}
    for layer in layers:
        units = parse_units(args.units, model.n_channels(layer), layer)
        result = top_k(model, dataset, layer, units, k=args.k, batch_size=args.batch_size, device=device,
                       mode=args.mode, progress=not args.no_progress, num_workers=args.num_workers)
        png = out / f"topk_{layer}.png"
        plot_topk_grid(result, png, logmel=None)
        entry = result.to_dict()
        entry["png"] = png.name
        index["layers"][layer] = entry
        print(f"{layer}: {len(result.channels)} units × top {result.k} over {result.n_examples} clips → {png}")
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / 'index.json'}")
    return 0
