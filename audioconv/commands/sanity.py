"""`audioconv sanity`: model-parameter randomisation test of explanation methods (Adebayo et al. 2018).

Re-initialises the model's Conv/Linear layers from the top down and reports, per method and step,
the Spearman rank correlation between the maps of the trained and the randomised model
(``OUT/sanity.json``, ``OUT/sanity.png``, ``OUT/sanity_maps.png``).

The model: ``--checkpoint`` or ``--model SPEC --weights FILE --labels FILE`` (see
:mod:`audioconv.commands._model`); ``--gradcam-layer`` takes short, module or operation names (a
brought network's own names too) and defaults to the model's last feature map ``(B, C, F, T)``.
"""
from __future__ import annotations

from audioconv.commands._args import comma_list
from audioconv.commands._model import add_model_arguments, clip_length_s, load_cli_model


def add_clip_arguments(p) -> None:
    """The options `sanity` and `faithfulness` share: model, clips, target, methods, device."""
    add_model_arguments(p)
    p.add_argument("--manifest", required=True, help="JSONL manifest of the clips to explain")
    p.add_argument("--split", default=None, help="keep only this split of the manifest (e.g. test)")
    p.add_argument("--n-clips", type=int, default=16,
                   help="clips used, evenly spaced over the manifest (default 16; 0 = all)")
    p.add_argument("--methods", default="gradient,guided,deconv,grad_cam,guided_grad_cam",
                   help="comma list of gradient, guided, deconv, grad_cam, guided_grad_cam")
    p.add_argument("--target", default="predicted",
                   help="class explained: 'predicted' (default), 'label' (the manifest's), a class name or index")
    p.add_argument("--gradcam-layer", default=None,
                   help="Grad-CAM layer: short, module or operation name (default: the model's last layer with "
                        "feature maps (B, C, F, T) below the target)")
    p.add_argument("--clip-s", type=float, default=None, help="clip length (s); default the run's training clip_s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-o", "--out", required=True, help="output folder")


def register(subparsers) -> None:
    p = subparsers.add_parser("sanity", help="model-randomisation sanity check of explanation methods (JSON + PNG)",
                              description=__doc__.split("\n")[0])
    add_clip_arguments(p)
    p.add_argument("--unit", default=None,
                   help="explain a hidden unit instead of a class: LAYER:CHANNEL, e.g. conv4:12 (its strongest cell)")
    p.add_argument("--layers", default=None,
                   help="comma list of module names to re-initialise, in order (default: every Conv/Linear, top first)")
    p.add_argument("--independent", action="store_true",
                   help="re-initialise each layer alone instead of cumulatively from the top")
    p.set_defaults(func=run)


def parse_methods(text: str) -> list[str]:
    from audioconv.interpret.explain import check_methods

    methods = comma_list(text)
    try:
        return check_methods(methods)
    except ValueError as e:
        raise ValueError(f"--methods: {e}") from None


def parse_unit(text: str):
    """``"conv4:12"`` → ``Unit("conv4", 12)``; ValueError naming ``--unit`` otherwise."""
    from audioconv.interpret.targets import Unit

    layer, sep, channel = str(text).rpartition(":")
    try:
        if not sep or not layer:
            raise ValueError
        return Unit(layer, int(channel))
    except ValueError:
        raise ValueError(f"--unit must be LAYER:CHANNEL (e.g. conv4:12), got {text!r}") from None


def class_target(text: str, labels: list[str], clip_labels: list[int]):
    """``--target`` → ``None`` (predicted), the clips' label indices, or one class index."""
    t = str(text).strip()
    if t == "predicted":
        return None
    if t == "label":
        return list(clip_labels)
    from audioconv.commands._classes import class_index

    return class_index(t, labels, choices="'predicted', 'label'")


def load_clips(args):
    """(model, labels, waveforms (N, 1, T), chosen clips {"paths", "labels"}, clip_s, device) from the shared options.

    Layer names given on the command line (``--gradcam-layer``, ``--unit``'s layer) are checked here,
    before any clip is explained: an unknown one is a one-line error naming its flag."""
    import numpy as np
    import torch

    from audioconv.data.dataset import ManifestDataset
    from audioconv.utils import resolve_device

    if args.n_clips < 0:
        raise ValueError(f"--n-clips must be >= 0, got {args.n_clips}")
    device = resolve_device(args.device)
    model, labels, ckpt = load_cli_model(args, device)
    check_layer_flags(model, args, device)
    clip_s = clip_length_s(args, ckpt)
    frontend = getattr(model, "frontend", None)
    if frontend is None or not hasattr(frontend, "config"):
        raise ValueError("the model has no LogMel front end (frontend.config): the clips are waveforms")
    dataset = ManifestDataset(args.manifest, sample_rate=frontend.config.sample_rate, clip_s=clip_s, labels=labels,
                              channels="mono", crop="center", split=args.split)
    n = len(dataset) if args.n_clips == 0 else min(args.n_clips, len(dataset))
    chosen = sorted(set(np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()))
    wavs = torch.stack([dataset[i][0] for i in chosen])
    clips = {"paths": [dataset.records[i]["audio_filepath"] for i in chosen],
             "labels": [dataset.targets[i] for i in chosen]}
    return model, labels, wavs, clips, clip_s, device


def check_layer_flags(model, args, device) -> None:
    """``--gradcam-layer`` and ``--unit``'s layer resolved as every interpretation command resolves layer
    names (:meth:`~audioconv.interpret.traced.TracedModel.key`); ``ValueError`` starting with the flag."""
    from audioconv.interpret.traced import TracedModel

    traced = TracedModel(model, device)
    unit = getattr(args, "unit", None)
    for flag, name in (("--gradcam-layer", args.gradcam_layer), ("--unit", parse_unit(unit).layer if unit else None)):
        if name is None:
            continue
        try:
            key = traced.key(name)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
        shape = traced.census().order[key][1]
        if flag == "--gradcam-layer" and len(shape) != 4:
            raise ValueError(f"--gradcam-layer: layer {name!r} gives {tuple(shape)}; Grad-CAM needs feature maps "
                             "(B, C, F, T)")


def model_source(args) -> dict:
    """Where the model came from, for the summary JSON: the checkpoint, or --model and --weights."""
    if args.checkpoint:
        return {"checkpoint": str(args.checkpoint)}
    return {"checkpoint": None, "model": args.model, "weights": args.weights}


def _cell(row: dict, i: int) -> str:
    """One table cell: the mean ρ, with the count of undefined clips when there are any."""
    mean, undefined = row["mean"][i], row["n_undefined"][i]
    text = "n/a" if mean is None else f"{mean:.3f}"
    return f"{text + (f' ({undefined} n/a)' if undefined and mean is not None else ''):>16}"


def run(args) -> int:
    from audioconv.app.figures import write_sanity
    from audioconv.features import LogMel
    from audioconv.interpret.sanity import sanity_check

    methods = parse_methods(args.methods)
    unit = parse_unit(args.unit) if args.unit else None
    layers = comma_list(args.layers)
    model, labels, wavs, clips, clip_s, device = load_clips(args)
    target = unit if unit is not None else class_target(args.target, labels, clips["labels"])
    result = sanity_check(model, wavs, methods, target, gradcam_layer=args.gradcam_layer, layers=layers,
                          cascade=not args.independent, seed=args.seed, device=device, progress=not args.no_progress)
    extra = {**model_source(args), "manifest": str(args.manifest), "clip_s": clip_s, "clips": clips["paths"],
             "labels": labels}
    summary = write_sanity(result, args.out, logmel=LogMel(model.frontend.config), extra=extra)
    print(f"Spearman rho of |maps|, trained vs randomised ({'cascade' if result.cascade else 'independent'}; "
          f"{result.n_examples} clips, {result.target}):")
    width = max(len(s) for s in result.steps)
    print(" " * (width + 2) + "".join(f"{m:>16}" for m in result.methods))
    table = summary["spearman_abs"]
    for i, step in enumerate(result.steps):
        print(f"  {step:>{width}}" + "".join(_cell(table[m], i) for m in result.methods))
    print("  (k n/a: k clips whose map became constant, e.g. an all-zero Grad-CAM; left out of the mean)")
    print(f"figures → {summary['png']}, {summary['maps_png']}; summary → {summary['json']}")
    return 0
