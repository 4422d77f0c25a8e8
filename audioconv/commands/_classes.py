"""`audioconv project --target CLASS`: class saliency of one audio file, written like unit projections.

For each class: ``projection.png`` (input | map | overlay, seconds × Hz), ``masked.wav`` (the input
filtered by the map's positive part, input phase) and, for ``guided``/``deconv``, ``griffinlim.wav``
(the map alone; a signed gradient is not a spectrogram, so ``gradient`` gets none). A map with no
positive cell gets no sounds (they would be silent); the JSON says so. One class → files in OUT,
several → ``OUT/class_<name>/``.
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["parse_targets", "class_index", "project_classes"]

SOUND_MODES = {"masked.wav": ("deconv", "guided", "gradient"), "griffinlim.wav": ("deconv", "guided")}


def parse_targets(text: str, labels: list[str]) -> list[int] | None:
    """``--target`` → class indices (``None`` for ``predicted``): names or indices, comma separated.

    A name is matched exactly first (so a class called ``"3"`` or ``"a,b"`` is reachable by its whole
    text); ValueError naming ``--target`` and the valid names otherwise.
    """
    t = str(text).strip()
    if t == "predicted":
        return None
    if t in labels:
        return [labels.index(t)]
    return list(dict.fromkeys(class_index(part.strip(), labels) for part in t.split(",")))


def class_index(part: str, labels: list[str], choices: str = "'predicted'") -> int:
    """One ``--target`` class, by name or index → its index; ValueError naming ``--target``, the
    other accepted words (``choices``) and the valid names otherwise."""
    if part in labels:
        return labels.index(part)
    try:
        index = int(part)
    except ValueError:
        raise ValueError(f"--target {part!r} is not a class: use {choices}, a class name ({', '.join(labels)}) "
                         f"or an index 0..{len(labels) - 1}") from None
    if not 0 <= index < len(labels):
        raise ValueError(f"--target {index} is out of range: the model has classes 0..{len(labels) - 1}")
    return index


def _write_class(folder: Path, proj, k: int, mono, logmel_cpu, sr: int, n_iter: int, title: str) -> list[str]:
    """The figure and the sounds that make sense for map ``k``; returns the file names written."""
    from audioconv.app.figures import save_figure
    from audioconv.interpret.sonify import griffin_lim_audio, masked_audio
    from audioconv.io import audio
    from audioconv.plots.projection import plot_projection

    save_figure(plot_projection(proj, (0, k), logmel=logmel_cpu, title=title), folder / "projection.png")
    written = ["projection.png"]
    pmap = proj.maps[0, k]
    if float(pmap.max()) <= 0:
        return written
    if proj.mode in SOUND_MODES["masked.wav"]:
        audio.save(folder / "masked.wav", masked_audio(mono, pmap, logmel_cpu), sr)
        written.append("masked.wav")
    if proj.mode in SOUND_MODES["griffinlim.wav"]:
        audio.save(folder / "griffinlim.wav", griffin_lim_audio(pmap, logmel_cpu, mono.shape[-1], n_iter=n_iter), sr)
        written.append("griffinlim.wav")
    return written


def project_classes(args, projector, labels: list[str], mono: torch.Tensor) -> int:
    """Class saliency of ``mono`` ``(1, T)`` for ``--target`` under ``--mode``; writes OUT (module docstring)."""
    from audioconv.app.figures import file_stem
    from audioconv.features import LogMel
    from audioconv.io.files import write_json

    classes = parse_targets(args.target, labels)
    proj = projector.project_classes(mono[None], classes, progress=False)
    logits = projector.traced.logits(projector.to_logmel(mono[None], "waveform"))[0].double()
    probs = torch.softmax(logits, dim=0)
    predicted = int(logits.argmax())
    logmel_cpu = LogMel(projector.model.frontend.config)
    sr = logmel_cpu.config.sample_rate
    out = Path(args.out)
    K = proj.maps.shape[1]
    entries = []
    for k in range(K):
        c = proj.channel_of(0, k)
        name = labels[c]
        folder = out if K == 1 else out / f"class_{file_stem(name)}"
        info = {"class": name, "index": c, "logit": float(logits[c]), "probability": float(probs[c]),
                "is_predicted": c == predicted, "map_max": float(proj.maps[0, k].max()),
                "map_min": float(proj.maps[0, k].min())}
        title = (f"class {name!r} (index {c}): logit {info['logit']:.3g}, p = {info['probability']:.2f} — "
                 f"{args.mode} map of the logit's derivative")
        written = _write_class(folder, proj, k, mono, logmel_cpu, sr, args.griffin_lim_iters, title)
        info["files"] = {n: str((folder / n).relative_to(out)) for n in written}
        if info["map_max"] <= 0:
            info["note"] = "no cell raises the logit (the map has no positive value), so no sounds were written"
        print(f"class {name} (logit {info['logit']:.4g}, p {info['probability']:.3f}"
              f"{', predicted' if info['is_predicted'] else ''}): {', '.join(written)} → {folder}")
        entries.append(info)
    summary = {"checkpoint": None if args.checkpoint is None else str(args.checkpoint), "model": args.model,
               "weights": args.weights, "audio": str(args.audio), "target": args.target, "layer": "logits",
               "mode": args.mode, "seeding": "class", "sample_rate": sr, "predicted": labels[predicted],
               "classes": entries}
    if K == 1:
        summary.update(entries[0])
    print(f"wrote {write_json(out / 'projection.json', summary)}")
    return 0
