"""The *Explanations* section of a run report: Grad-CAM (and the other methods) of test clips, and the
outputs of ``audioconv sanity`` / ``audioconv faithfulness`` found next to the run.

* :func:`explain_test_clips` — ``audioconv report RUN --explain N``: the maps of every method
  (:data:`~audioconv.interpret.explain.METHODS`: gradient, guided backprop, deconvnet, Grad-CAM,
  guided Grad-CAM) of the predicted class on N test clips — the first clip of each true class in
  label order, then the next clips in manifest order — one figure per clip (input and maps, s × Hz).
* :func:`find_explanation_outputs` — ``sanity.json`` and ``faithfulness.json`` in the run folder and
  the ``--interpretation`` folders (and their sub-folders, two levels), with their PNGs and a table of
  their numbers (mean |Spearman ρ| per method and randomisation step; deletion/insertion AUC per
  method and for the random order).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from audioconv.app.report import ExplanationFigures, Table, output_files, read_json_object

__all__ = ["explain_test_clips", "choose_clips", "find_explanation_outputs"]


def choose_clips(targets, n: int) -> list[int]:
    """Indices of ``n`` clips: the first clip of each class (in class order), then the next ones in order."""
    targets = np.asarray(targets)
    firsts = [int(np.nonzero(targets == c)[0][0]) for c in np.unique(targets)]
    rest = [i for i in range(len(targets)) if i not in set(firsts)]
    return (firsts + rest)[: max(0, int(n))]


def explain_test_clips(model, dataset, probs: np.ndarray, labels: list[str], folder: Path, n: int,
                       gradcam_layer: str | None = None, device: str = "auto") -> ExplanationFigures:
    """Maps of every method for the predicted class of ``n`` test clips (module docstring), one PNG each
    in ``folder``.

    Args:
        model: the model the report evaluates (in eval mode on ``device``).
        dataset: the test :class:`~audioconv.data.dataset.ManifestDataset` (clips as the model heard them).
        probs: ``(N, K)`` class probabilities of the dataset's clips; labels: the class names.
        folder: where the PNGs go; n: clips (``>= 1``); gradcam_layer: default the model's last layer.
    """
    import torch

    from audioconv.app.figures import file_stem, write_explanation
    from audioconv.features import LogMel
    from audioconv.interpret.explain import METHODS, explain

    chosen = choose_clips(dataset.targets, n)
    waves = torch.stack([dataset.load_clip(i)[0] for i in chosen])  # (n, C, T)
    methods, refused = list(METHODS), {}
    for method in METHODS:  # a method the model has no rule for (a sigmoid gate, GroupNorm) is left out, said why
        try:
            explain(model, waves[:1], [method], target=None, gradcam_layer=gradcam_layer, device=device)
        except ValueError as e:
            methods.remove(method)
            refused[method] = ": ".join(str(e).split(": ")[:2])  # "torch.sigmoid: sigmoid has no guided rule"
    if not methods:
        raise ValueError(f"no explanation method runs on this model: {next(iter(refused.values()))}")
    expl = explain(model, waves, methods, target=None, gradcam_layer=gradcam_layer, device=device)
    left_out = "".join(f" {method} is left out ({why})." for method, why in refused.items())
    block = ExplanationFigures(title=f"Grad-CAM and the other methods on {len(chosen)} test clips",
                               note=f"Each map explains the predicted class's logit; Grad-CAM at layer "
                                    f"{expl.gradcam_layer}. Gradient, guided backprop and deconvnet are signed "
                                    f"(red raises the logit); Grad-CAM is non-negative.{left_out}")
    rows = []
    for k, i in enumerate(chosen):
        name = Path(str(dataset.records[i]["audio_filepath"])).stem
        p = int(expl.target[k])
        true = labels[int(dataset.targets[i])]
        title = f"{name}: true {true}, predicted {labels[p]} ({probs[i, p]:.2f})"
        png = write_explanation(expl, folder, index=k, title=title, name=f"explain_{k + 1:02d}_{file_stem(name)}",
                                logmel=LogMel(model.frontend.config))
        block.figures.append((title, png))
        rows.append([name, true, labels[p], float(probs[i, p])])
    block.tables.append(Table("Clips explained", ["clip", "true", "predicted", "probability"], rows))
    return block


# ---- outputs of `audioconv sanity` / `audioconv faithfulness` -----------------------------------------


def _near(path: Path, png) -> Path | None:
    """A PNG named in ``path``'s JSON, looked up next to it (the folder may have moved)."""
    if not png:
        return None
    local = path.parent / Path(str(png)).name
    return local if local.is_file() else None


def _sanity_block(path: Path, obj: dict) -> ExplanationFigures | None:
    steps = obj.get("steps") or []
    summary = obj.get("spearman_abs") or {}
    figures = [(c, p) for c, p in (("rank correlation with the trained model's maps per randomisation step",
                                    _near(path, obj.get("png"))),
                                   ("one example's maps per step", _near(path, obj.get("maps_png")))) if p]
    if not figures:
        return None
    rows = [[m] + [None if v is None else float(v) for v in (summary[m].get("mean") or [])] for m in summary]
    kind = "cascading" if obj.get("cascade", True) else "independent"
    return ExplanationFigures(
        title="Sanity check (model-parameter randomisation)", figures=figures,
        tables=[Table("Mean |Spearman ρ| between the maps of the trained and the randomised model",
                      ["method"] + [str(s) for s in steps], rows,
                      note="near 1: the method's maps hardly depend on the randomised weights")],
        note=f"{kind} randomisation, {obj.get('n_examples', '?')} clips, target {obj.get('target', '?')} ({path})")


def _faithfulness_block(path: Path, obj: dict) -> ExplanationFigures | None:
    png = _near(path, obj.get("png"))
    if png is None:
        return None
    summary = obj.get("summary") or {}

    def cell(info, key):
        return f"{info.get(key, float('nan')):.3f} ± {info.get(key + '_std', float('nan')):.3f}"

    rows = [[m, cell(info, "deletion_auc"), cell(info, "insertion_auc")] for m, info in summary.items()]
    return ExplanationFigures(
        title="Faithfulness (deletion and insertion curves)", figures=[("class probability as cells are removed / "
                                                                        "inserted in each method's order", png)],
        tables=[Table("Area under the curve (mean ± sd over clips)", ["method", "deletion AUC (lower is better)",
                                                                      "insertion AUC (higher is better)"], rows)],
        note=f"patch {obj.get('patch')}, fill {obj.get('fill')}, {obj.get('n_random', '?')} random orders ({path})")


def find_explanation_outputs(folders) -> list[ExplanationFigures]:
    """Blocks for every ``sanity.json`` / ``faithfulness.json`` (with its PNGs) in ``folders`` and their
    sub-folders (two levels); a JSON whose figures are missing is skipped."""
    makers = {"sanity.json": _sanity_block, "faithfulness.json": _faithfulness_block}
    blocks, seen = [], set()
    for folder in folders:
        for path in output_files(folder, list(makers)):
            key = os.path.realpath(path)
            obj = read_json_object(path) if key not in seen else None
            seen.add(key)
            block = makers[path.name](path, obj) if obj else None
            if block is not None:
                blocks.append(block)
    return blocks
