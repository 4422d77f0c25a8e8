"""`audioconv evolve`: feature evolution across a run's snapshots (grids) and layer convergence (CKA).

The run's snapshots (``RUN/snapshots/epoch_NNN.pt``) record their model; for a run trained elsewhere,
``--model SPEC`` (with ``--labels`` / ``--n-classes``, ``--sample-rate``, ``--n-mels``) reads them as
state dicts of that architecture.
"""
from __future__ import annotations

from audioconv.commands._args import comma_list
from audioconv.commands._model import add_model_arguments, snapshot_loader


def register(subparsers) -> None:
    p = subparsers.add_parser("evolve", help="feature evolution grids and layer-convergence (CKA) curves of a run",
                              description=__doc__.split("\n")[0])
    p.add_argument("run", help="training run folder (with snapshots/epoch_NNN.pt)")
    p.add_argument("--probe", required=True, help="JSONL manifest of probe clips (order is kept)")
    p.add_argument("--layers", default=None, help="comma list of layers: short, module or operation names "
                                                   "(default the model's short names, else its activation modules)")
    p.add_argument("--units-per-layer", type=int, default=8,
                   help="units shown per layer, the most active at the final epoch (default 8; 0 = all)")
    p.add_argument("--k", type=int, default=1, help="strongest activations shown per unit and epoch")
    p.add_argument("--mode", default="deconv", choices=["deconv", "guided", "gradient"])
    p.add_argument("--cka-features", default="flatten", choices=["flatten", "pool"],
                   help="CKA on whole flattened feature maps or on per-channel spatial means")
    p.add_argument("--cka", default="debiased", choices=["debiased", "linear"],
                   help="CKA estimator shown (both are written to evolve.json): debiased (default; unbiased HSIC, "
                        "near 0 for unrelated representations) or linear (biased upward with few clips)")
    p.add_argument("--baseline", type=int, default=0, metavar="N",
                   help="also measure N freshly initialised networks of the same architecture against the final "
                        "epoch (the level CKA reaches without training; default 0)")
    p.add_argument("--clip-s", type=float, default=None, help="probe clip length (s); default the run's clip_s")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--out", default=None, help="output folder (default RUN/evolve)")
    add_model_arguments(p, checkpoint=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from audioconv.app.figures import write_evolution
    from audioconv.interpret.evolve import evolve
    from audioconv.interpret.traced import LayerNameError

    layers = comma_list(args.layers)
    if args.units_per_layer < 0:
        raise ValueError(f"--units-per-layer must be >= 0, got {args.units_per_layer}")
    try:
        evolution = evolve(args.run, args.probe, layers=layers, channels_per_layer=args.units_per_layer or None,
                           k=args.k, progress=not args.no_progress, device=args.device, mode=args.mode,
                           batch_size=args.batch_size, cka_features=args.cka_features, clip_s=args.clip_s,
                           load=snapshot_loader(args), cka_estimator=args.cka, baseline=args.baseline)
    except LayerNameError as e:
        raise ValueError(f"--layers: {e}") from None
    result = write_evolution(evolution, args.out if args.out is not None else Path(args.run) / "evolve")
    epochs = result["epochs"]
    print(f"epochs {epochs}; {args.cka} CKA vs epoch {epochs[-1]}"
          + (f" (| untrained networks: mean of {args.baseline})" if args.baseline else "") + ":")
    for layer, info in result["layers"].items():
        values = " ".join("  nan" if v is None else f"{v:5.3f}" for v in info["cka"])
        base = [v for v in info["baseline"][args.cka] if v is not None]
        extra = f" | {sum(base) / len(base):5.3f}" if base else ""
        print(f"  {layer:>6}: {values}{extra}   grid → {info['grid_png']}")
    print(f"convergence → {result['convergence_png']}; summary → {result['json']}")
    return 0
