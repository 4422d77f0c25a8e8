"""`audioconv evolve`: feature evolution across a run's snapshots (grids) and layer convergence (CKA).

The run's snapshots (``RUN/snapshots/epoch_NNN.pt``) record their model; for a run trained elsewhere,
``--model SPEC`` (with ``--labels`` / ``--n-classes``, ``--sample-rate``, ``--n-mels``) reads them as
state dicts of that architecture.
"""
from __future__ import annotations

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

    layers = None if args.layers is None else [s.strip() for s in args.layers.split(",") if s.strip()]
    if args.units_per_layer < 0:
        raise ValueError(f"--units-per-layer must be >= 0, got {args.units_per_layer}")
    evolution = evolve(args.run, args.probe, layers=layers, channels_per_layer=args.units_per_layer or None, k=args.k,
                       progress=not args.no_progress, device=args.device, mode=args.mode,
                       batch_size=args.batch_size, cka_features=args.cka_features, clip_s=args.clip_s,
                       load=snapshot_loader(args))
    result = write_evolution(evolution, args.out if args.out is not None else Path(args.run) / "evolve")
    epochs = result["epochs"]
    print(f"epochs {epochs}; linear CKA vs epoch {epochs[-1]}:")
    for layer, info in result["layers"].items():
        values = " ".join("  nan" if v is None else f"{v:5.3f}" for v in info["cka"])
        print(f"  {layer:>6}: {values}   grid → {info['grid_png']}")
    print(f"convergence → {result['convergence_png']}; summary → {result['json']}")
    return 0
