"""A static HTML report of a run: one ``index.html`` plus an ``assets/`` folder, offline and portable.

Everything the page shows is copied into ``REPORT_DIR/assets/`` and linked with relative URLs, so
the report folder can be zipped, moved or opened from ``file://`` with no server and no network.
All text that comes from data (labels, paths, layer names, config values) is HTML-escaped.

Sections (each only when its content is there): run summary · the command that reproduces the run
(and its whole configuration) · data (tables: clips per split and label, durations, sample rates,
formats) · metrics over epochs (:func:`audioconv.plots.curves.plot_metrics` of ``metrics.jsonl``,
saved into the assets) · test evaluation (confusion matrix PNG and table, per-class recall, the
misclassified clips with ``<audio>`` players) · per layer the top-k grid and the feature-evolution
grid, with the layer-convergence curve · explanations (Grad-CAM and the other methods on test clips,
sanity checks, faithfulness curves; :class:`ExplanationFigures`) · invariance and equivariance curves per
transform (``audioconv invariance``; :class:`InvarianceFigure`) · per unit the projection figure and
the sounds (input clip, projection-masked clip, Griffin-Lim of the projection) in ``<audio>`` players.

:func:`audioconv.app.run_report.write_run_report` fills this for any training run.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audioconv.app.figures import save_figure
from audioconv.io.files import ensure_folder, write_text
from audioconv.plots.curves import plot_metrics

__all__ = ["LayerFigures", "UnitSounds", "Table", "ClipAudio", "ExplanationFigures", "InvarianceFigure",
           "ReportContent", "read_metrics",
           "write_report"]


@dataclass
class LayerFigures:
    """Figures of one conv layer. Paths may be anywhere; :func:`write_report` copies them."""

    layer: str
    topk_png: str | os.PathLike | None = None
    evolution_png: str | os.PathLike | None = None
    convergence: list[tuple[int, float]] = field(default_factory=list)  # (epoch, CKA vs final)
    note: str = ""
    cka_estimator: str = "linear"  # which CKA ``convergence`` holds ("linear" or "debiased")


@dataclass
class UnitSounds:
    """One projected unit on one clip: its figure and its sounds (WAV paths)."""

    layer: str
    unit: int
    clip_label: str
    input_wav: str | os.PathLike
    masked_wav: str | os.PathLike | None = None
    griffinlim_wav: str | os.PathLike | None = None
    figure_png: str | os.PathLike | None = None
    predicted_label: str | None = None
    activation: float | None = None
    clip_name: str = ""


@dataclass
class Table:
    """A plain table: ``header`` names, ``rows`` of cells (numbers are formatted, text escaped)."""

    title: str
    header: list[str]
    rows: list[list]
    note: str = ""


@dataclass
class ClipAudio:
    """A test clip the model got wrong: what it heard (a WAV) and what it said."""

    name: str
    wav: str | os.PathLike
    true_label: str
    predicted_label: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)
    source: str = ""


@dataclass
class InvarianceFigure:
    """The curves of one transform written by ``audioconv invariance`` (a PNG) and a line about them."""

    transform: str
    png: str | os.PathLike
    note: str = ""


@dataclass
class ExplanationFigures:
    """One block of the report's *Explanations* section: Grad-CAM (and other methods) of test clips, a
    sanity check or faithfulness curves. ``figures``: ``(caption, PNG path)`` pairs; ``tables``: numbers."""

    title: str
    figures: list[tuple[str, str | os.PathLike]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""


@dataclass
class ReportContent:
    """What goes into the report.

    ``summary`` is an ordered mapping of row name → value for the run-summary table;
    ``metrics`` the per-epoch rows of ``metrics.jsonl``; ``evaluation`` the dict of
    :func:`audioconv.training.evaluate.evaluate` (``accuracy``, ``macro_f1``, ``n``, ``labels``,
    ``per_class_recall``, ``confusion``).
    """

    title: str = "audioconv report"
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    evaluation: dict | None = None
    confusion_png: str | os.PathLike | None = None
    layers: list[LayerFigures] = field(default_factory=list)
    convergence_png: str | os.PathLike | None = None
    convergence_estimator: str = "linear"
    explanations: list[ExplanationFigures] = field(default_factory=list)
    units: list[UnitSounds] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str | None = None  # the shell command that reproduces the run
    config: dict | None = None  # the run's config.json, shown folded
    command_note: str = ""
    data_tables: list[Table] = field(default_factory=list)
    data_note: str = ""
    misclassified: list[ClipAudio] = field(default_factory=list)
    misclassified_note: str = ""
    invariance: list[InvarianceFigure] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# outputs of the interpretation commands
# ---------------------------------------------------------------------------------------------
def read_json_object(path: Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` when it cannot be read or is not a JSON object (an
    output folder the report only looks through)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def output_files(folder, names: list[str]) -> list[Path]:
    """Files called ``names`` (glob patterns) in ``folder`` and its sub-folders two levels down, where
    the interpretation commands' outputs are looked for: level by level, in ``names`` order, sorted."""
    folder = Path(folder)
    return [p for prefix in ("", "*/", "*/*/") for name in names for p in sorted(folder.glob(prefix + name))]


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (one JSON object per line; blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object, naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: bad JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}img{max-width:100%;height:auto;border:1px solid #eee}
.cm td{min-width:2.2em}.unit{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}
.sounds{display:flex;flex-wrap:wrap;gap:1.2em}.sounds figure{margin:0}figcaption{font-size:.85em;color:#555}
nav a{margin-right:1em}.muted{color:#777}.narrow img{max-width:520px}.layer{margin-bottom:1.5em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}.clips td{vertical-align:middle}
"""

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _Assets:
    """Copies files into ``report_dir/assets`` under unique safe names; returns relative URLs."""

    def __init__(self, report_dir: Path):
        self.report_dir = report_dir
        self.folder = report_dir / "assets"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.copied: dict[Path, str] = {}
        self.used: set[str] = set()

    def url(self, path: str | os.PathLike | None, prefix: str) -> str | None:
        if path is None:
            return None
        src = Path(path).resolve()
        if not src.is_file():
            raise FileNotFoundError(f"report asset not found: {src}")
        if src in self.copied:
            return self.copied[src]
        name = _SAFE.sub("_", f"{prefix}_{src.name}").strip("_") or "asset"
        stem, suffix = os.path.splitext(name)
        n = 1
        while name in self.used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        self.used.add(name)
        dst = self.folder / name
        if src != dst.resolve():
            shutil.copyfile(src, dst)
        url = f"assets/{name}"
        self.copied[src] = url
        return url


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _img(url: str | None, alt: str) -> str:
    if url is None:
        return f'<p class="muted">({_e(alt)}: not produced)</p>'
    return f'<a href="{_e(url)}"><img src="{_e(url)}" alt="{_e(alt)}" loading="eager"></a>'


def _audio(url: str | None, caption: str) -> str:
    if url is None:
        return ""
    return (f'<figure><figcaption>{_e(caption)}</figcaption>'
            f'<audio controls preload="auto"><source src="{_e(url)}" type="audio/wav"></audio></figure>')


def _summary_html(summary: dict) -> str:
    rows = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(_fmt(v))}</td></tr>' for k, v in summary.items())
    return f"<table>{rows}</table>"


def _evaluation_html(ev: dict, confusion_url: str | None) -> str:
    labels = [str(x) for x in ev.get("labels", [])]
    def score(v):
        return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else _fmt(v)

    parts = [f"<p>test accuracy <b>{_e(score(ev.get('accuracy')))}</b>, macro-F1 <b>{_e(score(ev.get('macro_f1')))}</b>, "
             f"n = {_e(ev.get('n'))} clips</p>"]
    if confusion_url:
        parts.append(f'<div class="narrow">{_img(confusion_url, "confusion matrix")}</div>')
    confusion = ev.get("confusion")
    if confusion and labels:
        head = "".join(f'<th title="predicted {_e(l)}">{_e(l)}</th>' for l in labels)
        body = []
        recall = ev.get("per_class_recall") or {}
        for i, row in enumerate(confusion):
            rec = recall.get(labels[i]) if isinstance(recall, dict) else (recall[i] if i < len(recall) else None)
            cells = "".join(f"<td>{_e(v)}</td>" for v in row)
            body.append(f'<tr><th class="l">{_e(labels[i])}</th>{cells}<td>{_e(_fmt(rec) if rec is not None else "")}</td></tr>')
        parts.append(f'<details><summary>confusion matrix as a table (rows: true class)</summary>'
                     f'<table class="cm"><tr><th class="l">true \\ predicted</th>{head}<th>recall</th></tr>'
                     f'{"".join(body)}</table></details>')
    return "\n".join(parts)


def _table_html(table: Table) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(table.header))
    body = "".join("<tr>" + "".join(f'<td class="l">{_e(_fmt(v))}</td>' if i == 0 else f"<td>{_e(_fmt(v))}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in table.rows)
    note = f'<p class="muted">{_e(table.note)}</p>' if table.note else ""
    return f"<h3>{_e(table.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def _command_html(command: str | None, config: dict | None, note: str) -> str:
    parts = []
    if command:
        parts.append(f"<pre><code>{_e(command)}</code></pre>")
    if note:
        parts.append(f'<p class="muted">{_e(note)}</p>')
    if config:
        parts.append("<details><summary>the whole configuration (config.json)</summary><pre><code>"
                     f"{_e(json.dumps(config, indent=1, ensure_ascii=False))}</code></pre></details>")
    return "\n".join(parts)


def _misclassified_html(clips: list[ClipAudio], note: str, assets: _Assets) -> str:
    parts = [f"<h3>Misclassified test clips</h3><p>{_e(note)}</p>" if note else "<h3>Misclassified test clips</h3>"]
    if clips:
        rows = []
        for c in clips:
            url = assets.url(c.wav, "misclassified")
            top = ", ".join(f"{lab} {p:.2f}" for lab, p in c.top)
            rows.append(f'<tr><td class="l">{_e(c.name)}<br><span class="muted">{_e(c.source)}</span></td>'
                        f'<td class="l">{_e(c.true_label)}</td><td class="l">{_e(c.predicted_label)} '
                        f'({_e(f"{c.probability:.2f}")})</td><td class="l">{_e(top)}</td>'
                        f'<td><audio controls preload="auto"><source src="{_e(url)}" type="audio/wav"></audio></td></tr>')
        parts.append('<table class="clips"><tr><th class="l">clip</th><th class="l">true</th><th class="l">predicted'
                     '</th><th class="l">top classes</th><th>what the model heard</th></tr>' + "".join(rows) + "</table>")
    return "\n".join(parts)


def _layers_html(layers: list[LayerFigures], assets: _Assets) -> str:
    parts = ["<p>Per conv layer: the top-k strongest activations of each unit (one per clip, on real, non-silent "
             "frames), projected back to the time–frequency plane (Zeiler &amp; Fergus deconvnet; projections "
             "above, the input patch under each receptive field below), and how each unit's strongest "
             "projection evolved across the saved training epochs.</p>"]
    for lf in layers:
        anchor = "layer-" + _SAFE.sub("-", lf.layer)
        block = [f"<h3>{_e(lf.layer)}</h3>"]
        if lf.note:
            block.append(f"<p>{_e(lf.note)}</p>")
        if lf.topk_png is not None or lf.evolution_png is None:
            block.append("<h4>Top activations</h4>"
                         + _img(assets.url(lf.topk_png, f"topk_{lf.layer}"), f"{lf.layer} top-k grid"))
        if lf.evolution_png is not None or lf.topk_png is None:
            block.append("<h4>Feature evolution over epochs</h4>"
                         + _img(assets.url(lf.evolution_png, f"evolution_{lf.layer}"), f"{lf.layer} evolution grid"))
        if lf.convergence:
            cells = "".join(f"<td>{_e(int(ep))}: {_e(_fmt(float(v)))}</td>" for ep, v in lf.convergence)
            block.append(f'<table><tr><th class="l">{_e(lf.cka_estimator)} CKA vs final epoch</th>{cells}</tr></table>')
        parts.append(f'<div class="layer" id="{_e(anchor)}">' + "\n".join(block) + "</div>")
    return "\n".join(parts)


def _invariance_html(figures: list[InvarianceFigure], assets: _Assets) -> str:
    parts = ["<p>How far each layer's feature map moves when the input is transformed (Zeiler &amp; Fergus, Fig. 5): "
             "the invariance distance (0 = unchanged, 1 = as far as another probe clip), for time and pitch shifts "
             "the equivariance distance (what is left after moving the original map at the layer's stride: small = "
             "the layer is place-coded), and the probability of the true class. <code>audioconv invariance</code>; "
             "see docs/invariance.md.</p>"]
    for f in figures:
        parts.append(f"<h3>{_e(f.transform.replace('_', ' '))}</h3>"
                     + (f'<p class="muted">{_e(f.note)}</p>' if f.note else "")
                     + _img(assets.url(f.png, "invariance"), f"invariance: {f.transform}"))
    return "\n".join(parts)


_EXPLANATIONS_INTRO = (
    "<p>Explanation maps on the log-mel plane, sanity checks (Adebayo et al. 2018: how much a method's maps "
    "change when the model's weights are randomised from the top layer down — a method whose maps barely "
    "change does not explain <em>this</em> model) and faithfulness (deletion / insertion curves: the class "
    "probability as the cells a method ranks first are removed or inserted, against a random order).</p>")


def _explanations_html(blocks: list[ExplanationFigures], assets: _Assets) -> str:
    parts = [_EXPLANATIONS_INTRO]
    for i, block in enumerate(blocks):
        html_block = [f"<h3>{_e(block.title)}</h3>"]
        if block.note:
            html_block.append(f'<p class="muted">{_e(block.note)}</p>')
        html_block += [f"<figure><figcaption>{_e(caption)}</figcaption>"
                       f"{_img(assets.url(png, f'explain{i}'), caption)}</figure>" for caption, png in block.figures]
        html_block += [_table_html(t) for t in block.tables]
        parts.append('<div class="explanation">' + "\n".join(html_block) + "</div>")
    return "\n".join(parts)


def _unit_html(u: UnitSounds, assets: _Assets) -> str:
    head = f"{u.layer} unit {int(u.unit)} on a “{u.clip_label}” clip"
    if u.clip_name:
        head += f" ({u.clip_name})"
    meta = []
    if u.predicted_label is not None:
        meta.append(f"predicted: {u.predicted_label}")
    if u.activation is not None:
        meta.append(f"activation {float(u.activation):.3g}")
    key = f"{u.layer}_u{int(u.unit)}_{u.clip_name or u.clip_label}"
    sounds = (_audio(assets.url(u.input_wav, f"{key}_input"), "input clip")
              + _audio(assets.url(u.masked_wav, f"{key}_masked"), "masked by the projection")
              + _audio(assets.url(u.griffinlim_wav, f"{key}_griffinlim"), "projection alone (Griffin-Lim)"))
    figure = _img(assets.url(u.figure_png, f"{key}_projection"), head) if u.figure_png is not None else ""
    return (f'<div class="unit"><h3>{_e(head)}</h3><p class="muted">{_e(", ".join(meta))}</p>'
            f'{figure}<div class="sounds">{sounds}</div></div>')


def _page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole HTML page: title, a nav of the sections ``(anchor, heading, html)``, the sections."""
    nav = "".join(f'<a href="#{_e(a)}">{_e(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{_e(a)}"><h2>{_e(h)}</h2>\n{b}\n</section>' for a, h, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{_CSS}</style></head>\n"
        f"<body><h1>{_e(title)}</h1><nav>{nav}</nav>\n{body}\n"
        "<p class=\"muted\">Generated by audioconv. Static page: all links are relative; works offline.</p>"
        "</body></html>\n"
    )


def write_report(report_dir: str | os.PathLike, content: ReportContent) -> Path:
    """Write ``report_dir/index.html`` (and ``report_dir/assets/``) from ``content``.

    Args:
        report_dir: output folder (created).
        content: a :class:`ReportContent`; every file it names is copied into ``assets/``; the metrics
            rows are drawn with :func:`audioconv.plots.curves.plot_metrics` into ``assets/metrics.png``.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: a file named in ``content`` does not exist.
    """
    report_dir = ensure_folder(report_dir)
    assets = _Assets(report_dir)
    sections: list[tuple[str, str, str]] = [("summary", "Run summary", _summary_html(content.summary)
                                             + "".join(f"<p>{_e(n)}</p>" for n in content.notes))]
    if content.command or content.config or content.command_note:
        sections.append(("reproduce", "Reproduce this run",
                         _command_html(content.command, content.config, content.command_note)))
    if content.data_tables or content.data_note:
        sections.append(("data", "Data", "".join(_table_html(t) for t in content.data_tables)
                         + (f'<p class="muted">{_e(content.data_note)}</p>' if content.data_note else "")))
    if content.metrics:
        metrics_png = save_figure(plot_metrics(content.metrics), report_dir / "assets" / "metrics.png",
                                  bbox_inches=None)
        assets.used.add(metrics_png.name)
        sections.append(("training", "Metrics over epochs", _img("assets/metrics.png", "metrics over epochs")))
    if content.evaluation is not None:
        sections.append(("evaluation", "Test evaluation",
                         _evaluation_html(content.evaluation, assets.url(content.confusion_png, "confusion"))
                         + (_misclassified_html(content.misclassified, content.misclassified_note, assets)
                            if content.misclassified or content.misclassified_note else "")))
    if content.layers:
        sections.append(("layers", "Layers", _layers_html(content.layers, assets)))
    if content.convergence_png is not None:
        sections.append(("convergence", "Layer convergence",
                         f"<p>{_e(content.convergence_estimator.capitalize())} CKA between each layer's activations "
                         "on the probe clips at each saved epoch and at the final epoch: a layer whose curve "
                         "reaches 1 early has stopped changing. Read it against an untrained network of the same "
                         "architecture (<code>audioconv evolve --baseline N</code>, dashed lines), which already "
                         "scores well above 0.</p>"
                         + _img(assets.url(content.convergence_png, "convergence"), "layer convergence")))
    if content.explanations:
        sections.append(("explanations", "Explanations", _explanations_html(content.explanations, assets)))
    if content.invariance:
        sections.append(("invariance", "Invariance and equivariance", _invariance_html(content.invariance, assets)))
    if content.units:
        intro = ("<p>Each unit's projection on one test clip, and what it sounds like: the clip itself, "
                 "the clip filtered by the projection (a mask on its STFT, inverted with its own phase) "
                 "and the projection alone (Griffin-Lim).</p>")
        sections.append(("sounds", "Projections you can listen to",
                         "\n".join([intro] + [_unit_html(u, assets) for u in content.units])))
    return write_text(report_dir / "index.html", _page(content.title, sections))
