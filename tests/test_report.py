"""The static report: every link relative and present, portable, data-derived text escaped."""
from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile as sf
from matplotlib.figure import Figure

from audioconv.app.figures import save_figure
from audioconv.app.report import LayerFigures, ReportContent, UnitSounds, read_metrics, write_report
from audioconv.plots.curves import plot_metrics

EVIL = '<script>alert("x")</script> & \'quotes\''


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attr, url)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append((tag, name, value))

    def handle_data(self, data):
        self.text.append(data)


def _png(path: Path, value: float = 0.5) -> Path:
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [0, value])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _wav(path: Path, freq_hz: float = 440.0) -> Path:
    t = np.arange(8000) / 16000
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq_hz * t), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def fake_run(tmp_path):
    """A run folder laid out like the demo's, with hostile names in labels and paths."""
    run = tmp_path / "run with space"
    rows = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_accuracy": 1 - 0.5 / e,
             "val_macro_f1": 1 - 0.6 / e, "lr": 1e-3 / e, "note": "text is ignored"} for e in range(1, 6)]
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    labels = ["chirp", EVIL]
    evaluation = {"accuracy": 0.95, "macro_f1": 0.94, "n": 40, "labels": labels,
                  "per_class_recall": {"chirp": 1.0, EVIL: 0.9}, "confusion": [[20, 0], [2, 18]]}
    layers = [LayerFigures(layer, _png(run / "topk" / f"{layer}.png"), _png(run / "evolve" / f"{layer}.png"),
                           convergence=[(1, 0.5), (5, 1.0)]) for layer in ("conv1", "conv2")]
    units = [UnitSounds("conv1", 3, EVIL, _wav(run / "sounds" / "clip ä#1.wav"),
                        _wav(run / "sounds" / "masked?.wav", 880), _wav(run / "sounds" / "gl.wav", 660),
                        _png(run / "sounds" / "proj.png"), predicted_label="chirp", activation=1.5,
                        clip_name="clip ä#1"),
             # same file names in another folder must not collide in assets/
             UnitSounds("conv2", 0, "chirp", _wav(run / "other" / "clip ä#1.wav", 220))]
    content = ReportContent(title=f"demo {EVIL}", summary={"run": str(run), "label set": EVIL, "epochs": 5},
                            metrics=read_metrics(run / "metrics.jsonl"), evaluation=evaluation,
                            confusion_png=_png(run / "confusion.png"), layers=layers,
                            convergence_png=_png(run / "convergence.png"), units=units)
    return run, content, rows


def _check_links(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    assert parser.links
    for tag, attr, url in parser.links:
        parsed = urlparse(url)
        if url.startswith("#"):
            continue
        if parsed.scheme == "data":  # inline favicon, no request
            continue
        assert parsed.scheme == "" and parsed.netloc == "", (tag, url)
        assert not url.startswith("/") and ".." not in url, (tag, url)
        assert (index.parent / unquote(parsed.path)).is_file(), (tag, url)
    return parser


def test_links_relative_existing_and_portable(fake_run, tmp_path):
    run, content, _ = fake_run
    index = write_report(run / "report", content)
    parser = _check_links(index)
    assert sum(t == "source" for t, _, _ in parser.links) == 4  # 3 sounds of unit 1 + 1 of unit 2
    # metrics, confusion, 2 x (top-k, evolution), convergence, one projection figure
    assert sum(t == "img" for t, _, _ in parser.links) == 8
    # the two different "clip ä#1.wav" files became two different assets with their own content
    wav_urls = [u for t, _, u in parser.links if t == "source"]
    assert len(set(wav_urls)) == 4
    data = {u: sf.read(index.parent / unquote(u))[0] for u in wav_urls}
    freqs = sorted(np.abs(np.fft.rfft(x)).argmax() * 16000 / len(x) for x in data.values())
    np.testing.assert_allclose(freqs, [220, 440, 660, 880], atol=2)
    # anchors in the nav point to existing ids
    page = index.read_text(encoding="utf-8")
    for _, _, url in parser.links:
        if url.startswith("#"):
            assert f'id="{url[1:]}"' in page
    # move the report elsewhere and delete the run: it still works
    moved = tmp_path / "elsewhere" / "rep"
    shutil.copytree(run / "report", moved)
    shutil.rmtree(run)
    _check_links(moved / "index.html")


def test_labels_and_paths_are_escaped(fake_run):
    run, content, _ = fake_run
    index = write_report(run / "report", content)
    page = index.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;" in page
    parser = _Links()
    parser.feed(page)
    assert "script" not in parser.tags
    # the unescaped text the browser would show contains the label verbatim
    assert EVIL in "".join(parser.text)
    assert str(run) in "".join(parser.text)


def test_confusion_table_matches_evaluation(fake_run):
    run, content, _ = fake_run
    page = write_report(run / "report", content).read_text(encoding="utf-8")
    for row in content.evaluation["confusion"]:
        assert "".join(f"<td>{v}</td>" for v in row) in page
    assert "<td>0.9</td>" in page and "<b>0.950</b>" in page and "<b>0.940</b>" in page


def test_metrics_plot_draws_the_recorded_numbers(fake_run, tmp_path):
    run, content, rows = fake_run
    fig = plot_metrics(rows)
    save_figure(fig, tmp_path / "m.png", bbox_inches=None)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"}
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), [r["val_loss"] for r in rows])
    np.testing.assert_allclose(lines["val_accuracy"].get_xdata(), [1, 2, 3, 4, 5])
    loss_ax = next(ax for ax in fig.axes if "val_loss" in [l.get_label() for l in ax.get_lines()])
    assert "train_loss" in [l.get_label() for l in loss_ax.get_lines()]
    image = mpimg.imread(tmp_path / "m.png")
    assert image.shape[0] > 100 and image.shape[1] > 300 and image.std() > 0


def test_missing_asset_and_bad_metrics_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path / "r", ReportContent(layers=[LayerFigures("conv1", tmp_path / "nope.png")]))
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_metrics(bad)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="no metric rows"):
        plot_metrics([])
