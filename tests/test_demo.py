"""The demo end to end: a ``--quick`` run through the CLI (every stage, seconds), checked against
independent recomputation; the full-size demo (accuracy >= 90 %) is marked slow."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.cli import main
from audioconv.app.demo import FULL, choose_units, run_demo


class _Srcs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("#", "data:")):
                self.srcs.append((tag, value))


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    import contextlib
    import io

    buf = io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--quick", "--out", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    assert torch.get_num_threads() == threads  # training's thread setting does not leak out
    return out, buf.getvalue()


def test_cli_prints_stages_and_summary_line(quick_demo):
    out, printed = quick_demo
    lines = printed.strip().splitlines()
    assert [ln.split("]")[0] + "]" for ln in lines if ln.startswith("[")] == [f"[{i}/7]" for i in range(1, 8)]
    summary = json.loads((out / "demo_summary.json").read_text())
    last = lines[-1]
    assert last.startswith("demo: test accuracy") and f"{100 * summary['accuracy']:.1f} %" in last
    assert str(out / "report" / "index.html") in last


def test_every_stage_left_its_files(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["timings_s"]) == {"corpus", "train", "evaluate", "top-k", "evolve", "sounds", "report"}
    run = out / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and summary["epochs"] == 2
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch_001.pt", "epoch_002.pt"]
    for layer in ("conv1", "conv2"):
        assert (out / "figures" / f"topk_{layer}.png").stat().st_size > 1000
        index = json.loads((out / "figures" / f"topk_{layer}.json").read_text())
        assert [u["channel"] for u in index["units"]] == summary["units"][layer]
        assert (out / "figures" / "evolve" / f"evolution_{layer}.png").is_file()
    evo = json.loads((out / "figures" / "evolve" / "evolve.json").read_text())
    assert evo["epochs"] == [1, 2]
    assert evo["layers"]["conv2"]["cka"][-1] == pytest.approx(1.0)  # the final epoch vs itself


def test_reported_accuracy_matches_a_direct_forward_pass(quick_demo):
    """Classify the test WAVs with the saved best.pt ourselves; the demo's numbers must agree."""
    from audioconv.io.audio import load
    from audioconv.training.checkpoint import load_model
    from audioconv.io.manifest import read_manifest

    out, _ = quick_demo
    summary = json.loads((out / "demo_summary.json").read_text())
    model, labels = load_model(out / "run" / "best.pt", "cpu")
    records = read_manifest(out / "corpus" / "test.jsonl")
    waves = torch.stack([load(r["audio_filepath"])[0] for r in records])
    with torch.no_grad():
        pred = model(waves).argmax(1)
    truth = torch.as_tensor([labels.index(r["label"]) for r in records])
    assert summary["n_test"] == len(records)
    assert summary["accuracy"] == pytest.approx(float((pred == truth).double().mean()))
    evaluation = json.loads((out / "figures" / "evaluation.json").read_text())
    assert np.trace(evaluation["confusion"]) == int((pred == truth).sum())


def test_report_links_and_sounds(quick_demo):
    out, _ = quick_demo
    index = out / "report" / "index.html"
    parser = _Srcs()
    parser.feed(index.read_text(encoding="utf-8"))
    audio = [u for t, u in parser.srcs if t == "source"]
    images = [u for t, u in parser.srcs if t == "img"]
    for _, url in parser.srcs:
        assert not url.startswith("/") and "://" not in url
        assert (index.parent / unquote(url)).is_file(), url
    # the misclassified test clips (as many as the evaluation counts), then the projections' sounds
    evaluation = json.loads((out / "figures" / "evaluation.json").read_text())
    wrong = [u for u in audio if u.startswith("assets/misclassified_")]
    assert len(wrong) == evaluation["n"] - int(np.trace(evaluation["confusion"]))
    audio = [u for u in audio if u not in wrong]
    # 2 sound clips x 2 layers, each: input, masked, Griffin-Lim (the input is shared per clip)
    assert len(audio) == 12 and len(set(audio)) == 2 + 8
    # figures: metrics, confusion, (top-k + evolution) x 2 layers, convergence, 4 projections
    assert len(images) == 2 + 4 + 1 + 4
    page = index.read_text(encoding="utf-8")
    assert "audioconv train --train" in page and "Clips per label" in page  # the run report's sections
    # a projection-masked clip is the input under a mask in [0, 1]: never more energy than the input
    masked_files = sorted((out / "sounds").glob("*_masked.wav"))
    assert len(masked_files) == 4
    for path in masked_files:
        clip = re.match(r"^(.*)_conv\d+_unit\d+_masked$", path.stem).group(1)
        masked, sr = sf.read(path)
        x, _ = sf.read(out / "sounds" / f"{clip}.wav")
        assert sr == 16000 and len(masked) == len(x)
        assert np.sum(masked**2) <= np.sum(x**2) * 1.01


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo folder"):
        run_demo(out=tmp_path, quick=True, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_choose_units_prefers_selective_units_and_covers_classes():
    # 4 clips of class 0, 4 of class 1; unit 0 fires for everything (not selective), unit 1 only for
    # class 0, unit 2 only for class 1, unit 3 never; unit 4 a bit more for class 1
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    peaks = torch.zeros(8, 5)
    peaks[:, 0] = 5.0
    peaks[:4, 1] = 2.0
    peaks[4:, 2] = 1.0
    peaks[:, 4] = torch.tensor([1.0] * 4 + [2.0] * 4)
    # selectivity (best - rest) / best: unit1 = 1, unit2 = 1, unit4 = 0.5, unit0 = 0, unit3 dead
    assert choose_units(peaks, targets, 2) == [1, 2]
    # round-robin over preferred classes: class 0's next best (unit 0) before class 1's (unit 4)
    assert choose_units(peaks, targets, 4) == [1, 2, 0, 4]
    assert choose_units(peaks, targets, 5)[-1] == 3
    with pytest.raises(ValueError, match="peaks must be"):
        choose_units(peaks[0], targets, 2)


@pytest.mark.slow
def test_full_demo_reaches_ninety_percent(tmp_path):
    summary = run_demo(out=tmp_path / "demo", device="cpu", progress=False)
    assert summary["settings"] == FULL.to_dict()
    assert summary["accuracy"] >= 0.90, summary
    assert Path(summary["report"]).is_file()
