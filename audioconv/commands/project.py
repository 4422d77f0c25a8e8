"""`audioconv project`: project hidden units (or class logits) of a trained model onto one audio file.

Writes, for each unit: a PNG (input | projection | overlay, seconds × Hz), ``masked.wav`` (the input
filtered by the projection, input phase) and ``griffinlim.wav`` (the projection alone), plus one
``projection.json`` (activation, feature-map position, receptive field in cells, Hz and seconds).
One unit → files directly in OUT; several → ``OUT/unit_<c>/``.

``--target CLASS`` (a class name, an index, ``predicted``, or a comma list) explains a class instead
of a unit: the map is the class logit's derivative under ``--mode`` (gradient, guided backprop or the
Zeiler & Fergus deconvnet; :meth:`~audioconv.interpret.projector.Projector.project_classes`, the
projector's own backward pass from the logits). The same files: the PNG, ``masked.wav`` (the input
filtered by the map's positive part: the cells that raise the logit) and, for ``guided``/``deconv``,
``griffinlim.wav`` (a signed derivative is not a spectrogram, so ``gradient`` gets none); one class →
files in OUT, several → ``OUT/class_<name>/`` (the name made safe for file systems by
:func:`audioconv.app.figures.file_stem`; ``projection.json`` keeps the real one).

The model: ``--checkpoint`` (any model a run recorded) or ``--model SPEC --weights FILE --labels FILE``
(bring your own; see :mod:`audioconv.commands._model`). ``--layer`` takes the model's short names
(``conv2``, ``stage2``), module names (``layer1.0.relu2``) and operation names (``layer1.0:add``).

``--position max`` looks only at positions whose receptive field is centred on a non-silent frame
(:mod:`audioconv.interpret.frames`; ``--keep-silence`` lifts that). A unit whose strongest
activation there is not above zero gets no picture and no sounds (they would be all zero): the
command says so and records it in ``projection.json`` (``"files": {}``, ``"note"``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audioconv.commands._args import comma_list
from audioconv.commands._model import add_model_arguments, load_cli_model


def register(subparsers) -> None:
    p = subparsers.add_parser("project", help="project hidden units onto an audio file (PNG, WAVs, JSON)",
                              description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument("--audio", required=True, help="audio file (any rate; resampled to the model's)")
    p.add_argument("--layer", help="layer name: conv3, stage2, a module name (layer1.0.relu2) or an "
                                   "operation name (layer1.0:add); with --unit")
    p.add_argument("--unit", help="channel index or comma list, e.g. 5 or 5,7,9 (needs --layer)")
    p.add_argument("--target", metavar="CLASS",
                   help="explain class logits instead of a unit: a class name, an index, 'predicted', or a comma list")
    p.add_argument("--position", default=None,
                   help="with --unit: 'max' (strongest position, default), 'F,T' (feature-map cell) or 'map' "
                        "(whole map)")
    p.add_argument("--mode", default="deconv", choices=["deconv", "guided", "gradient"])
    p.add_argument("--keep-silence", action="store_true",
                   help="let 'max' pick positions over silent frames (default: only frames more than 6 dB above "
                        "the clip's floor)")
    p.add_argument("--offset-s", type=float, default=0.0, help="start of the excerpt (s)")
    p.add_argument("--duration-s", type=float, default=None, help="length of the excerpt (s); default to the end")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if available)")
    p.add_argument("--griffin-lim-iters", type=int, default=32)
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(func=run)


def parse_units(text: str) -> list[int]:
    """``"5"`` → ``[5]``, ``"5,7,9"`` → ``[5, 7, 9]``; ValueError naming ``--unit`` otherwise."""
    try:
        units = [int(s) for s in comma_list(text)]
    except ValueError:
        raise ValueError(f"--unit must be an integer or a comma list of integers, got {text!r}") from None
    if not units:
        raise ValueError(f"--unit is empty: {text!r}")
    return units


def parse_position(text: str):
    """``"max"`` / ``"map"`` / ``"F,T"`` → the projector's ``position`` argument."""
    t = str(text).strip().lower()
    if t in ("max", "map"):
        return t
    parts = t.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"--position must be 'max', 'map' or 'F,T' (two integers), got {text!r}") from None


def _describe(proj, b: int, k: int, hz: np.ndarray, seconds: np.ndarray) -> dict:
    def arr(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    f0, f1, t0, t1 = (int(v) for v in arr(proj.receptive_fields)[b, k])
    f, t = (int(v) for v in arr(proj.positions)[b, k])
    return {
        "channel": int(arr(proj.channels)[k]),
        "activation": float(arr(proj.activations)[b, k]),
        "position": [f, t],
        "receptive_field": {"cells": [f0, f1, t0, t1], "hz": [float(hz[f0]), float(hz[f1 - 1])],
                            "seconds": [float(seconds[t0]), float(seconds[t1 - 1])]},
        "centre_hz": float(hz[(f0 + f1 - 1) // 2]),
        "centre_s": float(seconds[(t0 + t1 - 1) // 2]),
    }


def _write_unit(folder: Path, proj, k: int, mono: torch.Tensor, logmel_cpu, sr: int, n_iter: int) -> None:
    """The figure and the two sounds of unit ``k`` of ``proj`` into ``folder``."""
    from audioconv.app.figures import save_figure
    from audioconv.interpret.sonify import griffin_lim_audio, masked_audio
    from audioconv.io import audio
    from audioconv.plots.projection import plot_projection

    save_figure(plot_projection(proj, (0, k), logmel=logmel_cpu), folder / "projection.png")
    pmap = proj.maps[0, k]
    audio.save(folder / "masked.wav", masked_audio(mono, pmap, logmel_cpu), sr)
    audio.save(folder / "griffinlim.wav", griffin_lim_audio(pmap, logmel_cpu, mono.shape[-1], n_iter=n_iter), sr)


def _max_frames(projector, mono, args):
    """The frames ``position="max"`` may use: the non-silent ones (all with ``--keep-silence``); a clip
    without any is an error naming the file."""
    from audioconv.interpret.frames import SILENCE_DB, active_frames

    frames = active_frames(projector.traced.loudness_logmel(mono[None], "waveform"), None,
                           None if args.keep_silence else SILENCE_DB).cpu()
    if not bool(frames.any()):
        raise ValueError(f"{args.audio}: every frame is silent (no mel bin more than {SILENCE_DB:g} dB above the "
                         f"clip's floor), so there is no strongest position to project; give --position F,T "
                         f"or --keep-silence")
    return frames


def _check_choice(args) -> None:
    """Exactly one of ``--unit`` (with ``--layer``) and ``--target``; ValueError naming the option otherwise."""
    if args.unit is None and args.target is None:
        raise ValueError("give --unit (with --layer) to project hidden units, or --target CLASS to explain a class")
    if args.unit is not None and args.target is not None:
        raise ValueError("give --unit or --target, not both")
    if args.unit is not None and not args.layer:
        raise ValueError("--unit needs --layer (e.g. --layer conv3 --unit 5)")
    if args.target is not None and (args.layer or args.position is not None or args.keep_silence):
        given = [f for f, v in (("--layer", args.layer), ("--position", args.position),
                                ("--keep-silence", args.keep_silence)) if v]
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{', '.join(given)} {verb} only to --unit; --target explains the class logits of the whole clip")


def run(args) -> int:
    from audioconv.interpret.projector import Projector
    from audioconv.io import audio
    from audioconv.utils import resolve_device

    _check_choice(args)
    device = resolve_device(args.device)
    if args.target is None:
        units, position = parse_units(args.unit), parse_position(args.position or "max")
    model, labels, _ = load_cli_model(args, device)
    projector = Projector(model, mode=args.mode, device=device)
    sr = model.frontend.config.sample_rate
    wav, _ = audio.load(args.audio, offset_s=args.offset_s, duration_s=args.duration_s, sample_rate=sr)
    mono = audio.to_mono(wav)  # (1, T): the front end averages channels too
    model.frontend.check_length(mono.shape[-1], str(args.audio))
    if args.target is not None:
        from audioconv.commands._classes import project_classes

        return project_classes(args, projector, labels, mono)
    return _run_units(args, projector, units, position, mono)


def _run_units(args, projector, units, position, mono) -> int:
    from audioconv.features import LogMel
    from audioconv.io.files import write_json

    model = projector.model
    try:
        n = projector.path(args.layer).channels
    except ValueError as e:
        raise ValueError(f"--layer: {e}") from None
    bad = [u for u in units if not 0 <= u < n]
    if bad:
        raise ValueError(f"--unit {bad} out of range for {args.layer}: valid units are 0..{n - 1}")
    sr = model.frontend.config.sample_rate
    frames = _max_frames(projector, mono, args) if position == "max" else None
    proj = projector.project(mono[None], args.layer, units, position=position, progress=False, frames=frames)
    logmel_cpu = LogMel(model.frontend.config)  # a CPU copy of the front end for rendering and sound
    out = Path(args.out)
    entries = []
    for k, unit in enumerate(units):
        folder = out if len(units) == 1 else out / f"unit_{unit}"
        info = _describe(proj, 0, k, proj.hz, proj.seconds)
        if info["activation"] > 0:
            _write_unit(folder, proj, k, mono, logmel_cpu, sr, args.griffin_lim_iters)
            info["files"] = {name: str((folder / name).relative_to(out))
                             for name in ("projection.png", "masked.wav", "griffinlim.wav")}
            print(f"{args.layer} unit {unit}: activation {info['activation']:.4g} at {tuple(info['position'])} "
                  f"≈ {info['centre_s']:.2f} s, {info['centre_hz']:.0f} Hz → {folder}")
        else:
            where = ("at that position" if isinstance(position, tuple) else "anywhere in the clip"
                     if position == "map" or args.keep_silence else "on the clip's non-silent frames")
            info["files"] = {}
            info["note"] = (f"no activation above zero {where} (strongest {info['activation']:.4g}); "
                            f"its projection is all zero, so no picture and no sounds were written")
            print(f"{args.layer} unit {unit}: {info['note']}")
        entries.append(info)
    summary = {"checkpoint": None if args.checkpoint is None else str(args.checkpoint),
               "model": args.model, "weights": args.weights, "audio": str(args.audio), "layer": args.layer,
               "mode": args.mode, "position": args.position or "max", "keep_silence": bool(args.keep_silence),
               "sample_rate": sr, "units": entries}
    if len(entries) == 1:
        summary.update({key: entries[0][key] for key in ("channel", "activation", "position", "receptive_field",
                                                         "centre_hz", "centre_s")})
    print(f"wrote {write_json(out / 'projection.json', summary)}")
    return 0
