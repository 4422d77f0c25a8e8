"""Layer and class names in file names: one sanitiser (app.figures.file_stem), checked against Windows'
naming rules (Microsoft's reserved characters and ``PureWindowsPath.is_reserved``) and the shell's quoting
rule (``shlex.quote`` leaves a safe word as it is); the writers use it and the JSON keeps the real name."""
import json
import shlex
from pathlib import Path, PureWindowsPath

import pytest
from hypothesis import given, settings, strategies as st

from audioconv.app.figures import file_stem
from audioconv.cli import main
from audioconv.models.registry import describe
from audioconv.training.checkpoint import save_checkpoint
import test_cli_residual

files = test_cli_residual.files  # the fixture: three tones and their manifest
from test_interpret_residual import tiny_bcresnet

WINDOWS_FORBIDDEN = set('<>:"/\\|?*') | {chr(i) for i in range(32)}


def _valid_everywhere(stem: str) -> None:
    assert stem and not (set(stem) & WINDOWS_FORBIDDEN), stem
    assert not stem.endswith((".", " ")), stem
    assert not PureWindowsPath(stem + ".png").is_reserved() and not PureWindowsPath(stem).is_reserved(), stem
    assert shlex.quote(stem) == stem, stem  # a shell word without quoting
    assert not stem.startswith(("-", ".")), stem  # not an option, not a hidden file
    assert len(stem) <= 96


@pytest.mark.parametrize("name, stem", [
    ("conv2", "conv2"), ("layer1.1:relu#2", "layer1.1__relu-2"), ("layer1.0:add", "layer1.0__add"),
    (":relu", "__relu"), ("relu#2", "relu-2"), ("blocks.1:add#2", "blocks.1__add-2"), ("a b/c", "a_b_c"),
    ("CON", "CON_"), ("nul.txt", "nul_.txt"), ("-x", "_-x"), (".hidden", "_.hidden"), ("end.", "end"), ("", "_"),
    ("chœur", "ch_ur")])
def test_file_stem_examples(name, stem):
    assert file_stem(name) == stem
    _valid_everywhere(file_stem(name))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_file_stem_is_valid_on_windows_and_in_a_shell(name):
    _valid_everywhere(file_stem(name))


@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}(\.[A-Za-z0-9_]{1,4}){0,2}", fullmatch=True), min_size=2,
                max_size=4, unique=True))
def test_operation_names_of_distinct_modules_stay_distinct(parts):
    """``module:op#n`` names of the graph (module paths of letters, digits and dots) give distinct stems."""
    names = {f"{m}:add#{n}" for m in parts for n in (1, 2)} | set(parts)
    assert len({file_stem(n) for n in names}) == len(names)


def test_long_names_are_cut_and_stay_distinct():
    a, b = "x" * 200 + "a", "x" * 200 + "b"
    assert len(file_stem(a)) == 96 and file_stem(a) != file_stem(b)


def test_topk_and_evolve_write_safe_file_names_for_operation_layers(files, capsys):
    """Before: topk_blocks.1:add#2.png (invalid on Windows, a comment in a shell). Now the file names are
    safe and index.json / evolve.json keep the real layer names (and find the files)."""
    model = tiny_bcresnet()
    spec, config = describe(model)
    ckpt = {"kind": "model", "model": model.float().state_dict(), "model_spec": spec, "model_config": config,
            "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}}
    save_checkpoint(files / "run" / "best.pt", ckpt)
    for e in (1, 2):
        save_checkpoint(files / "run" / "snapshots" / f"epoch_{e:03d}.pt", {**ckpt, "epoch": e})
    layer = "blocks.1:add#2"
    rc = main(["topk", "--checkpoint", str(files / "run" / "best.pt"), "--manifest", str(files / "m.jsonl"),
               "--layers", layer, "--units", "0,1", "--k", "2", "--device", "cpu", "--no-progress",
               "-o", str(files / "topk")])
    assert rc == 0, capsys.readouterr().err
    assert (files / "topk" / "topk_blocks.1__add-2.png").is_file()
    index = json.loads((files / "topk" / "index.json").read_text())
    assert index["layers"][layer]["png"] == "topk_blocks.1__add-2.png" and index["layers"][layer]["layer"] == layer
    rc = main(["evolve", str(files / "run"), "--probe", str(files / "m.jsonl"), "--layers", layer,
               "--units-per-layer", "2", "--cka", "linear", "--device", "cpu", "--no-progress", "-o", str(files / "evolve")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((files / "evolve" / "evolve.json").read_text())
    png = Path(summary["layers"][layer]["grid_png"])
    assert png.name == "evolution_blocks.1__add-2.png" and png.is_file()
    assert all(":" not in p.name and "#" not in p.name for p in (files / "evolve").iterdir())
