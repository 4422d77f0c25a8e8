"""The offline HTML report of any training run (``audioconv report RUN``).

:func:`write_run_report` reads a run folder written by :func:`audioconv.training.loop.fit`
(``config.json``, ``labels.json``, ``metrics.jsonl``, ``best.pt`` / ``last.pt``) and writes
``RUN/report/index.html`` with :func:`audioconv.app.report.write_report`:

* **summary** — checkpoint (and the validation scores of its epoch), epochs, model, classes, training time;
* **reproduce** — the ``audioconv train`` command that reproduces the run (every setting that
  differs from the defaults, from ``config.json``), and the whole configuration;
* **data** — clips per split and label, clip durations, sample rates, channels and formats of the
  training, validation and test clips (from the manifests and the files' headers);
* **metrics over epochs** — ``metrics.jsonl``;
* **test evaluation** — accuracy, macro-F1, confusion matrix, and the misclassified test clips, most
  confident mistakes first, each with an audio player of what the model heard (the clip at the
  model's rate, centre-cropped or zero-padded to the training length) and its top classes;
* **interpretation** — the figures of ``audioconv topk`` / ``audioconv evolve`` runs found in the run
  folder (``index.json`` with per-layer PNGs, ``evolve.json``), or in the folders given;
* **explanations** — with ``explain=N``, Grad-CAM, guided Grad-CAM, gradient, guided backprop and
  deconvnet maps of N test clips; and the outputs of ``audioconv sanity`` / ``audioconv faithfulness``
  found like the interpretation figures (:mod:`audioconv.app.report_explain`).
* **invariance and equivariance** — the curves of ``audioconv invariance`` (``invariance_<transform>.json``
  next to its PNG; by default it writes to ``RUN/invariance``), found the same way.

The test set: the manifest given, else the run's own ``manifest`` when it has a ``test`` split,
else a ``*_test.jsonl`` / ``test.jsonl`` next to the run's training manifest; without one the
report says so and has no evaluation. Manifest paths in ``config.json`` are as they were given at
training time (relative to the folder training was started from).
"""
from __future__ import annotations

import os
import shlex
import statistics
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from audioconv.app.report import (ClipAudio, InvarianceFigure, LayerFigures, ReportContent, Table, output_files,
                                  read_json_object as _json, read_metrics, write_report)
from audioconv.app.report_explain import explain_test_clips, find_explanation_outputs
from audioconv.io import audio
from audioconv.io.files import ensure_folder, write_json
from audioconv.io.manifest import iter_manifest

__all__ = ["write_run_report", "build_run_report", "train_command", "find_test_manifest", "data_tables",
           "misclassified_clips", "find_interpretation", "find_invariance"]

_NEVER_FLAGS = {"resume"}  # settings a reproducing command must not carry


# ---- the command that reproduces a run -------------------------------------------------------------
def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def train_command(train_config: dict, flags=None) -> tuple[str, dict]:
    """``(command, settings without a flag)``: ``audioconv train`` with every setting of
    ``train_config`` (a ``TrainConfig.to_dict()``) that differs from the defaults.

    Args:
        train_config: the run's training settings (``config.json``'s ``train_config``).
        flags: the option strings ``audioconv train`` accepts (``{"--lr", "--no-specaugment", ...}``);
            settings without one are returned in the second item instead. ``None``: assume
            ``--name-with-dashes`` exists for every setting.
    """
    from audioconv.training.config import TrainConfig

    defaults = TrainConfig().to_dict()
    parts, missing = ["audioconv", "train"], {}
    for f in fields(TrainConfig):
        name = f.name
        if name in _NEVER_FLAGS or name not in train_config:
            continue
        value = train_config[name]
        if value == defaults.get(name) or (isinstance(value, list) and tuple(value) == tuple(defaults.get(name))):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flag = flag if value else "--no-" + name.replace("_", "-")
        if flags is not None and flag not in flags:
            missing[name] = value
            continue
        parts += [flag] if isinstance(value, bool) else [flag, _flag_value(value)]
    return " ".join(shlex.quote(p) for p in parts), missing


# ---- which manifests ---------------------------------------------------------------------------------
def _split_names(path: Path) -> set:
    return {rec.get("split") for rec in iter_manifest(path)}


def find_test_manifest(train_config: dict, test=None, test_split: str | None = None) -> tuple[Path | None, str | None, str]:
    """``(manifest, split, how it was found)`` of the test clips (module docstring); ``(None, None, why)``
    when there is none. A ``test`` given that does not exist is a ``FileNotFoundError``."""
    if test is not None:
        path = Path(test)
        if not path.is_file():
            raise FileNotFoundError(f"test manifest not found: {path}")
        return path, test_split, f"--test {path}" + (f" (split {test_split!r})" if test_split else "")
    manifest = train_config.get("manifest")
    if manifest:
        split = test_split or "test"
        if Path(manifest).is_file() and split in _split_names(Path(manifest)):
            return Path(manifest), split, f"the run's manifest {manifest}, split {split!r}"
        if not Path(manifest).is_file():
            return None, None, (f"the run's manifest {manifest} (as recorded at training time) is not found from "
                                f"here; pass --test")
        return None, None, f"the run's manifest {manifest} has no {split!r} split; pass --test (and --test-split)"
    train = train_config.get("train")
    if train:
        p = Path(train)
        for name in (p.name.replace("_train.", "_test.").replace("train.", "test."), "test.jsonl"):
            candidate = p.parent / name
            if candidate.name != p.name and candidate.is_file():
                return candidate, test_split, f"{candidate}, next to the training manifest"
    return None, None, "no test manifest found next to the run's manifests; pass --test"


def _manifest_sets(train_config: dict, test: Path | None, test_split: str | None) -> tuple[dict, list[str]]:
    """``({set name: records}, notes)`` for the data tables: train / validation (or the splits of the
    run's one manifest) and test."""
    sets, notes = {}, []
    manifest = train_config.get("manifest")
    sources = [(None, manifest)] if manifest else [("train", train_config.get("train")),
                                                    ("validation", train_config.get("val"))]
    if test is not None:
        sources.append(("test", str(test)))
    for name, path in sources:
        if not path:
            continue
        if not Path(path).is_file():
            notes.append(f"manifest {path} (as recorded) is not found from here; its clips are not counted")
            continue
        for rec in iter_manifest(path):
            key = name or str(rec.get("split", "(no split)"))
            if name == "test" and test_split is not None and rec.get("split") != test_split:
                continue
            if name == "test" and manifest and str(test) == str(manifest):
                continue  # the test split is already among the manifest's splits
            sets.setdefault(key, []).append(rec)
    return sets, notes


# ---- data tables -------------------------------------------------------------------------------------
def _clip_facts(rec: dict) -> dict | None:
    """Header facts of one record's clip, or ``None`` when its file cannot be read."""
    try:
        info = audio.info(rec["audio_filepath"])
    except (ValueError, FileNotFoundError):
        return None
    length = info.duration_s - float(rec.get("offset") or 0.0)
    if rec.get("duration") is not None:
        length = min(length, float(rec["duration"]))
    return {"duration_s": max(length, 0.0), "sample_rate": info.sample_rate, "channels": info.channels,
            "format": Path(rec["audio_filepath"]).suffix.lower().lstrip(".") or "?"}


def data_tables(sets: dict, progress: bool = True) -> list[Table]:
    """Tables of the clips of each set (``{name: records}``): clips per label and set, durations
    (s), sample rates, channels and formats (read from the headers), unreadable files."""
    names = list(sets)
    facts = {name: [_clip_facts(r) for r in tqdm(recs, disable=not progress, desc=f"headers {name}", unit="clip")]
             for name, recs in sets.items()}
    labels = sorted({str(r.get("label")) for recs in sets.values() for r in recs})
    per_label = [[lab] + [sum(str(r.get("label")) == lab for r in sets[n]) for n in names] for lab in labels]
    per_label.append(["all"] + [len(sets[n]) for n in names])
    tables = [Table("Clips per label", ["label"] + names, per_label)]
    rows = []
    for n in names:
        ok = [f for f in facts[n] if f is not None]
        d = [f["duration_s"] for f in ok] or [0.0]
        rows.append([n, len(sets[n]), round(min(d), 3), round(statistics.median(d), 3), round(max(d), 3),
                     round(sum(d) / 60, 2), len(sets[n]) - len(ok)])
    tables.append(Table("Durations", ["set", "clips", "min (s)", "median (s)", "max (s)", "total (min)",
                                      "unreadable"], rows))
    for key, title in (("sample_rate", "Sample rates (Hz)"), ("channels", "Channels"), ("format", "Formats")):
        values = sorted({f[key] for n in names for f in facts[n] if f is not None}, key=lambda v: (isinstance(v, str), v))
        tables.append(Table(title, [title.split(" (")[0].lower()] + names,
                            [[v] + [sum(1 for f in facts[n] if f is not None and f[key] == v) for n in names]
                             for v in values]))
    return tables


# ---- the test set: scores and mistakes -------------------------------------------------------------------
def misclassified_clips(dataset, probs: np.ndarray, labels: list[str], folder: Path, limit: int = 24,
                        top: int = 3) -> list[ClipAudio]:
    """The clips of ``dataset`` whose most probable class is wrong, most confident first (at most
    ``limit``), each written to ``folder`` as a WAV of what the model heard."""
    targets = np.asarray(dataset.targets)
    predicted = probs.argmax(axis=1)
    wrong = np.nonzero(predicted != targets)[0]
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][: max(0, int(limit))]
    clips = []
    for n, i in enumerate(wrong.tolist()):
        wav, _ = dataset.load_clip(i)
        name = f"{n + 1:02d}_{Path(dataset.records[i]['audio_filepath']).stem}"
        path = audio.save(folder / f"{name}.wav", wav, dataset.sample_rate)
        order = np.argsort(-probs[i], kind="stable")[:top]
        clips.append(ClipAudio(name=name, wav=path, true_label=labels[targets[i]], predicted_label=labels[predicted[i]],
                               probability=float(probs[i, predicted[i]]),
                               top=[(labels[j], float(probs[i, j])) for j in order],
                               source=str(dataset.records[i]["audio_filepath"])))
    return clips


# ---- interpretation figures ---------------------------------------------------------------------------


def find_interpretation(folders) -> tuple[list[LayerFigures], Path | None]:
    """``(per-layer figures, convergence PNG)`` from the outputs of ``audioconv topk`` (``index.json``
    with ``layers.<name>.png``) and ``audioconv evolve`` (``evolve.json``) in ``folders`` and their
    sub-folders (two levels). Figures are looked up next to their JSON."""
    layers: dict[str, LayerFigures] = {}
    convergence = None
    for folder in folders:
        for path in output_files(folder, ["index.json", "evolve.json"]):
            obj = _json(path) if path.is_file() else None
            if not obj or not isinstance(obj.get("layers"), dict):
                continue
            for name, info in obj["layers"].items():
                png = info.get("png") or info.get("grid_png") if isinstance(info, dict) else None
                if not png or not (path.parent / Path(png).name).is_file():
                    continue
                entry = layers.setdefault(name, LayerFigures(name))
                if path.name == "index.json" and entry.topk_png is None:
                    entry.topk_png = path.parent / Path(png).name
                    entry.note = f"top {info.get('k', '?')} over {info.get('n_examples', '?')} clips ({path.parent})"
                elif path.name == "evolve.json" and entry.evolution_png is None:
                    entry.evolution_png = path.parent / Path(png).name
                    entry.convergence = [(e, v) for e, v in zip(obj.get("epochs", []), info.get("cka", []))
                                         if v is not None]
                    entry.cka_estimator = str(obj.get("cka_estimator", "linear"))  # older evolve.json: linear
            conv = obj.get("convergence_png")
            if path.name == "evolve.json" and conv and convergence is None and (path.parent / Path(conv).name).is_file():
                convergence = path.parent / Path(conv).name
    return list(layers.values()), convergence


def find_invariance(folders) -> list[InvarianceFigure]:
    """The figures of ``audioconv invariance`` (``invariance_<transform>.json`` with its PNG beside it) in
    ``folders`` and their sub-folders (two levels), one per transform (the first found), in the order of
    :data:`~audioconv.interpret.invariance.TRANSFORMS`."""
    from audioconv.interpret.invariance import TRANSFORMS

    found: dict[str, InvarianceFigure] = {}
    for folder in folders:
        for path in output_files(folder, ["invariance_*.json"]):
            obj = _json(path)
            name = obj.get("transform") if obj else None
            png = path.with_suffix(".png")
            if name not in TRANSFORMS or name in found or not png.is_file():
                continue
            where = f"{obj.get('n_clips', '?')} clips of {obj.get('manifest', '?')}"
            found[name] = InvarianceFigure(name, png, f"{where}; {path.parent}")
    return [found[name] for name in TRANSFORMS if name in found]


# ---- the report ------------------------------------------------------------------------------------------
def _run_files(run_dir: Path, checkpoint) -> tuple[Path, dict]:
    """The checkpoint to score (``best.pt``, else ``last.pt``) and ``config.json`` (``{}`` if absent)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if checkpoint is None:
        checkpoint = next((run_dir / n for n in ("best.pt", "last.pt") if (run_dir / n).is_file()), None)
        if checkpoint is None:
            raise FileNotFoundError(f"no best.pt or last.pt in {run_dir}; is it a training run folder?")
    config_path = run_dir / "config.json"
    config = _json(config_path) if config_path.is_file() else None
    if config_path.is_file() and config is None:
        raise ValueError(f"{config_path} is not a JSON object")
    return Path(checkpoint), config or {}


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _summary_rows(run_dir: Path, checkpoint: Path, ckpt: dict, config: dict, metrics: list[dict], found: str) -> dict:
    """The summary table of the run (``ckpt``: the checkpoint dict read from ``checkpoint``)."""
    from audioconv.models.registry import count_parameters, rebuild
    from audioconv.training.checkpoint import run_clip_s

    mc, spec = ckpt["model_config"], ckpt.get("model_spec", "cnn")
    model = rebuild(spec, mc)
    shape = (f"channels {list(mc.get('channels', []))}, {mc.get('activation', 'relu')}" if spec == "cnn"
             else f"width {mc['width']}" if "width" in mc else "")
    rows = {"run folder": str(run_dir.resolve()), "checkpoint": f"{checkpoint.name} (epoch {ckpt.get('epoch', '?')})",
            "epochs recorded": len(metrics), "classes": ", ".join(map(str, ckpt["labels"])),
            "model": f"{type(model).__name__} ({spec}){', ' + shape if shape else ''}, "
                     f"{count_parameters(model):,} parameters",
            "input": f"{run_clip_s(ckpt):g} s clips at {mc.get('sample_rate')} Hz, "
                     f"{model.frontend.config.n_mels}-bin log-mel, {model.frontend.config.f_min_hz:g}–"
                     f"{model.frontend.config.f_max:g} Hz",
            "test set": found}
    if metrics:
        line = next((r for r in metrics if r.get("epoch") == ckpt.get("epoch")), None)  # the scored epoch's
        if line is not None and isinstance(line.get("val_loss"), (int, float)):
            rows["validation at that epoch"] = (f"val loss {_number(line.get('val_loss'))}, macro-F1 "
                                                f"{_number(line.get('val_macro_f1'))}, accuracy "
                                                f"{_number(line.get('val_accuracy'))}")
        times = [r["time_s"] for r in metrics if isinstance(r.get("time_s"), (int, float))]
        if times:
            rows["training time"] = f"{max(times):.1f} s"
    for key in ("device", "world_size", "torch"):
        if key in config:
            rows[key.replace("_", " ")] = config[key]
    return rows


def _mistakes_note(ds, probs: np.ndarray, shown: int, unknown: int) -> str:
    n_wrong = int((probs.argmax(axis=1) != np.asarray(ds.targets)).sum())
    note = f"{n_wrong} of {len(ds)} test clips misclassified"
    if n_wrong > shown:
        note += f"; the {shown} most confident mistakes"
    if unknown:
        note += f". {unknown} clips with labels the model does not know were left out"
    return note + (f". Audio: each clip as the model heard it ({ds.clip_s:g} s at {ds.sample_rate} Hz, centre crop "
                   f"or zero padding).")


def build_run_report(run_dir: str | os.PathLike, media_dir: str | os.PathLike, checkpoint=None, test=None,
                     test_split: str | None = None, interpretation=(), device: str = "auto",
                     max_misclassified: int = 24, train_flags=None, progress: bool = True, explain: int = 0,
                     gradcam_layer: str | None = None) -> ReportContent:
    """The :class:`~audioconv.app.report.ReportContent` of a run (module docstring); the misclassified
    clips' WAVs, the confusion PNG and the explanation figures are written to ``media_dir`` (copied
    into the report later).

    Args: see :func:`write_run_report`.
    """
    from audioconv.app.figures import save_figure
    from audioconv.plots.confusion import plot_confusion
    from audioconv.training.checkpoint import load_checkpoint
    from audioconv.training.evaluate import score_checkpoint

    run_dir, media_dir = Path(run_dir), Path(media_dir)
    checkpoint, config = _run_files(run_dir, checkpoint)
    train_config = config.get("train_config") or {}
    metrics = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    test_path, split, found = find_test_manifest(train_config, test, test_split)
    ckpt = load_checkpoint(checkpoint)  # read once: the summary, the evaluation and the explanations use it
    content = ReportContent(title=f"audioconv run report: {run_dir.resolve().name}", metrics=metrics,
                            summary=_summary_rows(run_dir, checkpoint, ckpt, config, metrics, found),
                            config=config or None)
    if train_config:
        content.command, missing = train_command(train_config, train_flags)
        content.command_note = (f"settings with no command-line flag (put them in a config): {missing}" if missing
                                else "") + " Manifest paths are as given when the run was trained."
    else:
        content.command_note = f"{run_dir / 'config.json'} not found: the command cannot be rebuilt."
    sets, notes = _manifest_sets(train_config, test_path, split)
    content.data_tables = data_tables(sets, progress) if sets else []
    content.data_note = " ".join(notes) or ("" if sets else "no manifest of the run could be read")
    if test_path is not None:
        scored = score_checkpoint(ckpt, checkpoint, test_path, device, allow_unknown=True, progress=progress,
                                  split=split)  # scored as `audioconv evaluate` scores
        result, ds, probs, labels = scored.result, scored.dataset, scored.probs, scored.result["labels"]
        content.evaluation = result
        content.confusion_png = save_figure(plot_confusion(result), media_dir / "confusion.png", dpi=100)
        content.misclassified = misclassified_clips(ds, probs, labels, media_dir / "clips", max_misclassified)
        content.misclassified_note = _mistakes_note(ds, probs, len(content.misclassified), result["unknown"])
        if explain and len(ds):
            content.explanations.append(explain_test_clips(scored.model, ds, probs, labels, media_dir / "explain",
                                                           explain, gradcam_layer, device))
    else:
        content.notes.append(f"No test evaluation: {found}." + (" No explanations of test clips either (--explain "
                                                                  "needs a test set)." if explain else ""))
    content.layers, content.convergence_png = find_interpretation([run_dir, *interpretation])
    content.convergence_estimator = next((lf.cka_estimator for lf in content.layers if lf.convergence), "linear")
    content.explanations += find_explanation_outputs([run_dir, *interpretation])
    content.invariance = find_invariance([run_dir, *interpretation])
    return content


def write_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, checkpoint=None, test=None,
                     test_split: str | None = None, interpretation=(), device: str = "auto",
                     max_misclassified: int = 24, train_flags=None, progress: bool = True, explain: int = 0,
                     gradcam_layer: str | None = None) -> dict:
    """Write the HTML report of a training run (module docstring).

    Args:
        run_dir: the run folder (``config.json``, ``metrics.jsonl``, ``best.pt`` …).
        out: report folder (default ``RUN/report``); ``index.html`` and ``assets/`` go there.
        checkpoint: the checkpoint to evaluate (default ``RUN/best.pt``, else ``RUN/last.pt``).
        test: test manifest (default: found from the run, module docstring); ``test_split``: only its
            clips with that ``split``.
        interpretation: more folders to search for ``audioconv topk`` / ``evolve`` / ``invariance`` outputs.
        device: where to classify the test clips.
        max_misclassified: misclassified clips shown (most confident first).
        train_flags: the option strings ``audioconv train`` accepts (see :func:`train_command`).
        progress: tqdm bars.
        explain: test clips to explain with every method (Grad-CAM …; 0 = none); ``gradcam_layer``
            the Grad-CAM layer (default the model's last layer).

    Returns:
        ``{"index": path of index.html, "evaluation": dict or None, "test": path or None,
        "n_misclassified_shown": int, "layers": [names], "explanations": [block titles],
        "invariance": [transforms]}`` (also written to ``OUT/report.json``).
    """
    if isinstance(explain, bool) or not isinstance(explain, (int, np.integer)) or explain < 0:
        raise ValueError(f"explain must be an int >= 0 (test clips to explain), got {explain!r}")
    out = ensure_folder(out if out is not None else Path(run_dir) / "report")  # a file in the way: said now
    with tempfile.TemporaryDirectory(prefix="audioconv-report-") as media:
        content = build_run_report(run_dir, media, checkpoint, test, test_split, interpretation, device,
                                   max_misclassified, train_flags, progress, int(explain), gradcam_layer)
        index = write_report(out, content)
    summary = {"index": str(index), "evaluation": content.evaluation,
               "test": None if content.evaluation is None else content.evaluation["manifest"],
               "n_misclassified_shown": len(content.misclassified), "layers": [lf.layer for lf in content.layers],
               "explanations": [block.title for block in content.explanations],
               "invariance": [f.transform for f in content.invariance]}
    write_json(out / "report.json", summary)
    return summary
