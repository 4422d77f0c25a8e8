"""`audioconv report RUN` on a run made by `audioconv train` from a user's corpus (mixed formats, a
long zero-padded clip, relative paths), checked against evaluate(), the files' own headers and the
train command's own parser."""
from __future__ import annotations

import html
import json
import os
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioconv.app.run_report import data_tables, find_test_manifest, train_command
from audioconv.cli import build_parser, main
from audioconv.io.manifest import read_manifest
from audioconv.training.checkpoint import load_checkpoint
from audioconv.training.evaluate import evaluate

from _corpus import CLASSES, FORMATS, write_clip
from test_report import _check_links

SPLITS = ["train", "train", "validation", "train", "test", "train"]


def _corpus(root: Path) -> Path:
    """36 clips, 12 per class, the six formats in turn, every fifth clip 3 s long and mostly zeros;
    one manifest with a ``split`` key (relative paths)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        label = CLASSES[i % 3]
        long = i % 5 == 4
        path = write_clip(root / label / f"c{i:02d}", label, FORMATS[i % len(FORMATS)], rng,
                          clip_s=3.0 if long else 1.0, event_s=0.6 if long else None)
        rows.append({"audio_filepath": str(path.relative_to(root)), "label": label, "split": SPLITS[(i // 3) % 6]})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "m.jsonl"


TRAIN_ARGS = ["--channels", "4,8", "--epochs", "2", "--batch-size", "8", "--sample-rate", "8000", "--f-max-hz", "3000",
              "--augment", "none",
              "--no-specaugment", "--workers", "0", "--lr", "0.01", "--seed", "3", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained by the CLI from a relative manifest, in its own working directory."""
    root = tmp_path_factory.mktemp("user")
    before = os.getcwd()
    os.chdir(root)
    try:
        _corpus(Path("corpus"))
        assert main(["train", "--manifest", "corpus/m.jsonl", "--out", "runs/tiny", *TRAIN_ARGS]) == 0
        assert main(["report", "runs/tiny", "--device", "cpu", "--no-progress"]) == 0
    finally:
        os.chdir(before)
    return root


def _page(index: Path) -> str:
    return index.read_text(encoding="utf-8")


def test_report_evaluation_equals_evaluate_and_lists_every_mistake(trained):
    run = trained / "runs" / "tiny"
    index = run / "report" / "index.html"
    parser = _check_links(index)  # every link relative and present
    summary = json.loads((run / "report" / "report.json").read_text())
    manifest = trained / "corpus" / "m.jsonl"
    reference = evaluate(run / "best.pt", manifest, device="cpu", progress=False, split="test")
    assert summary["evaluation"]["confusion"] == reference["confusion"] and reference["n"] == 6
    assert summary["evaluation"]["accuracy"] == pytest.approx(reference["accuracy"])
    n_wrong = reference["n"] - int(np.trace(reference["confusion"]))
    assert summary["n_misclassified_shown"] == n_wrong
    players = [u for tag, attr, u in parser.links if tag == "source"]
    assert len(players) == n_wrong
    for url in players:  # what the model heard: the run's clip length at the model's rate
        info = sf.info(index.parent / url)
        assert (info.samplerate, info.frames) == (8000, 8000)
    page = _page(index)
    assert f"{n_wrong} of 6 test clips misclassified" in page
    epoch = load_checkpoint(run / "best.pt")["epoch"]  # the summary gives the validation of the epoch scored
    line = next(json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if json.loads(s)["epoch"] == epoch)
    assert f"val loss {line['val_loss']:.4f}, macro-F1 {line['val_macro_f1']:.4f}" in page
    recorded = json.loads((run / "config.json").read_text())["train_config"]["manifest"]  # absolute: see below
    assert f"the run&#x27;s manifest {recorded}, split &#x27;test&#x27;" in page


def test_report_command_reproduces_the_run_settings(trained):
    run = trained / "runs" / "tiny"
    command = html.unescape(re.search(r"<pre><code>(.*?)</code></pre>", _page(run / "report" / "index.html"), re.S)[1])
    words = shlex.split(command)
    assert words[:2] == ["audioconv", "train"]
    from audioconv.commands.train import config_from_args

    rebuilt = config_from_args(build_parser().parse_args(words[1:])).to_dict()
    saved = json.loads((run / "config.json").read_text())["train_config"]
    assert rebuilt == saved
    assert f"--manifest {saved['manifest']}" in command and "--no-specaugment" in command
    assert "--f-max-hz 3000" in command and "40-bin log-mel, 20–3000 Hz" in _page(run / "report" / "index.html")
    # the run records the relative --manifest it was given absolute: the command works from any folder
    assert Path(saved["manifest"]).is_absolute() and Path(saved["manifest"]).samefile(trained / "corpus" / "m.jsonl")


def test_report_data_tables_agree_with_the_files(trained):
    records = read_manifest(trained / "corpus" / "m.jsonl")
    sets = {}
    for r in records:
        sets.setdefault(r["split"], []).append(r)
    tables = {t.title: t for t in data_tables(sets, progress=False)}
    names = list(sets)
    per_label = tables["Clips per label"]
    assert per_label.header == ["label"] + names
    for row in per_label.rows[:-1]:
        assert row[1:] == [sum(r["label"] == row[0] for r in sets[n]) for n in names]
    rates = {row[0]: row[1:] for row in tables["Sample rates (Hz)"].rows}
    for i, n in enumerate(names):
        expected = Counter(sf.info(r["audio_filepath"]).samplerate for r in sets[n])
        assert {rate: counts[i] for rate, counts in rates.items() if counts[i]} == dict(expected)
    durations = {row[0]: row for row in tables["Durations"].rows}
    for n in names:
        lengths = [sf.info(r["audio_filepath"]).duration for r in sets[n]]
        assert durations[n][4] == pytest.approx(max(lengths), abs=0.01) and durations[n][6] == 0
    formats = {row[0] for row in tables["Formats"].rows}
    assert formats == {"wav", "flac", "ogg", "mp3"}
    page = _page(trained / "runs" / "tiny" / "report" / "index.html")
    assert "Clips per label" in page and "Sample rates (Hz)" in page


def test_report_includes_topk_figures_saved_in_the_run(trained, capsys):
    run = trained / "runs" / "tiny"
    assert main(["topk", "--checkpoint", str(run / "best.pt"), "--manifest", str(trained / "corpus" / "m.jsonl"),
                 "--layers", "conv1,conv2", "--k", "3", "--units", "2", "--device", "cpu", "--no-progress",
                 "-o", str(run / "topk")]) == 0
    out = trained / "site"
    assert main(["report", str(run), "--test", str(trained / "corpus" / "m.jsonl"), "--test-split", "validation",
                 "--device", "cpu", "--no-progress", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "interpretation figures: conv1, conv2" in printed and "on 6 clips" in printed
    parser = _check_links(out / "index.html")
    images = [u for tag, attr, u in parser.links if tag == "img"]
    assert sum("topk_conv" in u for u in images) == 2
    assert json.loads((out / "report.json").read_text())["layers"] == ["conv1", "conv2"]


def test_find_test_manifest(tmp_path):
    (tmp_path / "sc_train.jsonl").write_text("")
    (tmp_path / "sc_test.jsonl").write_text("")
    found, split, how = find_test_manifest({"train": str(tmp_path / "sc_train.jsonl")})
    assert found == tmp_path / "sc_test.jsonl" and split is None and "next to the training manifest" in how
    (tmp_path / "sc_test.jsonl").unlink()
    assert find_test_manifest({"train": str(tmp_path / "sc_train.jsonl")})[0] is None
    found, _, how = find_test_manifest({"manifest": str(tmp_path / "gone.jsonl")})
    assert found is None and "is not found from here" in how
    with pytest.raises(FileNotFoundError, match="test manifest not found"):
        find_test_manifest({}, test=tmp_path / "nope.jsonl")


def test_train_command_names_settings_without_a_flag():
    command, missing = train_command({"train": "a b.jsonl", "lr": 0.01, "warmup_frac": 0.2, "resume": True,
                                      "specaugment": False, "channels": [8, 16]},
                                     flags={"--train", "--lr", "--no-specaugment", "--channels"})
    assert command == "audioconv train --train 'a b.jsonl' --channels 8,16 --no-specaugment --lr 0.01"
    assert missing == {"warmup_frac": 0.2}


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "run folder not found: nowhere"),
    (["empty"], "no best.pt or last.pt in empty"),
    (["runs/tiny", "--test", "missing.jsonl"], "test manifest not found: missing.jsonl"),
    (["runs/tiny", "--max-misclassified", "-1"], "--max-misclassified must be >= 0"),
    (["runs/tiny", "--explain", "-2"], "--explain must be >= 0 (test clips to explain), got -2"),
])
def test_report_errors(trained, capsys, monkeypatch, args, message):
    monkeypatch.chdir(trained)
    Path("empty").mkdir(exist_ok=True)
    rc = main(["report", *args, "--device", "cpu", "--no-progress", "-o", str(trained / "bad")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("audioconv report: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_report_includes_grad_cam_sanity_and_faithfulness_figures(trained, capsys):
    """sanity/faithfulness outputs saved in the run are found; --explain adds Grad-CAM (and the other
    methods) of test clips: the HTML references every figure, each asset exists, and the tables carry
    the JSONs' numbers and evaluate()'s predictions."""
    from audioconv.app.report_explain import choose_clips
    from audioconv.data.dataset import ManifestDataset
    from audioconv.training.checkpoint import load_checkpoint, load_model, run_clip_s
    from audioconv.training.predict import predict_dataset

    run, manifest = trained / "runs" / "tiny", trained / "corpus" / "m.jsonl"
    clips = ["--checkpoint", str(run / "best.pt"), "--manifest", str(manifest), "--split", "validation",
             "--n-clips", "3", "--device", "cpu", "--no-progress"]
    assert main(["sanity", *clips, "--methods", "gradient,grad_cam", "-o", str(run / "sanity")]) == 0
    assert main(["faithfulness", *clips, "--methods", "gradient,grad_cam", "--steps", "4", "--n-random", "1",
                 "-o", str(run / "faith")]) == 0
    out = trained / "site_explain"
    capsys.readouterr()
    assert main(["report", str(run), "--test", str(manifest), "--test-split", "validation", "--explain", "4",
                 "--device", "cpu", "--no-progress", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "explanations: Grad-CAM and the other methods on 4 test clips; Sanity check" in printed
    parser = _check_links(out / "index.html")  # every link relative and its file in the report folder
    images = [u for tag, attr, u in parser.links if tag == "img"]
    page = html.unescape(_page(out / "index.html"))
    assert 'id="explanations"' in _page(out / "index.html")
    assert sum("sanity.png" in u for u in images) == 1 and sum("sanity_maps.png" in u for u in images) == 1
    assert sum("faithfulness.png" in u for u in images) == 1
    explained = [u for u in images if "explain_" in u]
    assert len(explained) == 4 and all((out / u).stat().st_size > 5000 for u in explained)
    assert json.loads((out / "report.json").read_text())["explanations"][0].startswith("Grad-CAM")
    # the sanity table holds sanity.json's mean |rho|, the faithfulness table its AUCs
    sanity = json.loads((run / "sanity" / "sanity.json").read_text())
    for v in sanity["spearman_abs"]["grad_cam"]["mean"]:
        assert v is None or f"{v:.4g}" in page
    faith = json.loads((run / "faith" / "faithfulness.json").read_text())
    for info in faith["summary"].values():
        assert f"{info['deletion_auc']:.3f} ± {info['deletion_auc_std']:.3f}" in page
    # the clips explained: the first of each class, then the next ones; predicted as evaluate()'s model says
    model, labels = load_model(run / "best.pt", "cpu")
    ds = ManifestDataset(manifest, sample_rate=8000, clip_s=run_clip_s(load_checkpoint(run / "best.pt")), labels=labels,
                         crop="center", split="validation")
    probs = predict_dataset(model, ds, progress=False)
    chosen = choose_clips(ds.targets, 4)
    targets = np.asarray(ds.targets)
    assert chosen[:3] == [int(np.argmax(targets == c)) for c in range(3)]  # the first clip of each class
    assert chosen[3] == min(set(range(len(targets))) - set(chosen[:3]))
    for i in chosen:
        name = Path(ds.records[i]["audio_filepath"]).stem
        p = int(probs[i].argmax())
        assert f"{name}: true {labels[targets[i]]}, predicted {labels[p]} ({probs[i, p]:.2f})" in page


def test_report_of_a_bcresnet_run_names_its_model_and_parameter_count(trained):
    """A residual run's report: the summary names the family and counts the parameters of the model
    the checkpoint rebuilds (this used to build a SpectrogramCNN from a BC-ResNet config and fail)."""
    from audioconv.models.registry import count_parameters
    from audioconv.training.checkpoint import load_model

    before = os.getcwd()
    os.chdir(trained)
    try:
        args = ["--model", "bcresnet", "--width", "0.5", "--epochs", "1", *TRAIN_ARGS[4:]]  # TRAIN_ARGS less channels, epochs
        assert main(["train", "--manifest", "corpus/m.jsonl", "--out", "runs/bc", *args]) == 0
        assert main(["report", "runs/bc", "--device", "cpu", "--no-progress"]) == 0
    finally:
        os.chdir(before)
    model, _ = load_model(trained / "runs" / "bc" / "best.pt", device="cpu")
    page = _page(trained / "runs" / "bc" / "report" / "index.html")
    assert "(bcresnet)" in page and f"{count_parameters(model):,} parameters" in page


def test_explanations_leave_out_the_methods_a_model_has_no_rule_for_and_say_why(trained, tmp_path):
    """A network with a sigmoid gate has no guided or deconvnet rule: the report's explanations keep
    gradient and Grad-CAM and name the left-out methods with the reason (the whole report failed)."""
    import torch

    from audioconv.app.report_explain import explain_test_clips
    from audioconv.data.dataset import ManifestDataset
    from audioconv.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("_byo_models:sigmoid", 3, 8000, frontend={"n_mels": 16}).eval()
    ds = ManifestDataset(trained / "corpus" / "m.jsonl", sample_rate=8000, clip_s=0.5, crop="center",
                         split="validation")
    probs = np.full((len(ds), 3), 1 / 3)
    block = explain_test_clips(model, ds, probs, ds.labels, tmp_path / "explain", 2, device="cpu")
    assert len(block.figures) == 2 and all(Path(png).stat().st_size > 5000 for _, png in block.figures)
    for method in ("guided", "deconv", "guided_grad_cam"):
        assert f" {method} is left out (torch.sigmoid: sigmoid has no " in block.note
    assert " gradient is left out" not in block.note and " grad_cam is left out" not in block.note
