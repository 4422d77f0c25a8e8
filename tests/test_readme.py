"""The README's Python code runs as written and does what its comments say.

Every ```python block of README.md runs, in order and in one namespace (the tour's blocks build on
each other), in a temporary folder holding the files they name: a small keyword corpus
(``kws_train.jsonl``, ``sc_test.jsonl``, ``yes.wav``) and a checkpoint (``runs/sc/best.pt``).
Convention: an HTML comment on the line before a block, ``<!-- test: cuda -->``, runs that block only
where CUDA is available; ``<!-- test: skip -->`` never runs it (for code that needs what a test cannot
provide). References: the clip lengths we wrote, and a measured SNR."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!--\s*test:\s*(?P<marker>[\w-]+)\s*-->[ \t]*\n)?```python\n(?P<code>.*?)^```", re.S | re.M)
SR = 16000


def python_blocks(markdown: str) -> list[tuple[str | None, str]]:
    """``(marker or None, code)`` for each ```python block of ``markdown``, in order."""
    return [(m["marker"], m["code"]) for m in BLOCK.finditer(markdown)]


def test_blocks_and_their_markers_are_found():
    text = "a\n```python\nx = 1\n```\n<!-- test: cuda -->\n```python\ny = 2\n```\n```sh\nls\n```\n" \
           "<!--test:skip-->\n```python\nz = 3\n```\n"
    assert python_blocks(text) == [(None, "x = 1\n"), ("cuda", "y = 2\n"), ("skip", "z = 3\n")]
    assert len(python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))) >= 3


def _tone(f0_hz: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.3 * np.sin(2 * np.pi * f0_hz * t * (1 + 0.1 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture()
def readme_folder(tmp_path, monkeypatch) -> dict:
    """The files the README's code names, in a fresh working directory; returns what was written."""
    from audioconv.io.manifest import write_manifest
    from audioconv.models.spectrogram_cnn import SpectrogramCNN
    from audioconv.training.checkpoint import save_checkpoint

    rng = np.random.default_rng(0)
    records = []
    for i in range(22):  # 0.5 - 1.0 s clips: most are shorter than the 1-s clip_s and get zero padding
        label = ("no", "yes")[i % 2]
        path = tmp_path / "clips" / f"{label}_{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, _tone(300.0 if label == "no" else 900.0, 0.5 + 0.025 * i, rng), SR, subtype="PCM_16")
        records.append({"audio_filepath": str(path), "label": label})
    write_manifest(tmp_path / "kws_train.jsonl", records[:12])
    write_manifest(tmp_path / "sc_test.jsonl", records[12:])
    sf.write(tmp_path / "yes.wav", _tone(900.0, 1.0, rng), SR)
    torch.manual_seed(0)
    model = SpectrogramCNN(2, sample_rate=SR, channels=(8, 8, 16, 16))
    save_checkpoint(tmp_path / "runs" / "sc" / "best.pt", {
        "kind": "model", "model": model.state_dict(), "model_config": model.config.to_dict(), "labels": ["no", "yes"],
        "train_config": {"clip_s": 1.0}})
    monkeypatch.chdir(tmp_path)
    return {"train_frames": [sf.info(r["audio_filepath"]).frames for r in records[:12]], "folder": tmp_path}


def test_the_readme_python_blocks_run_and_do_what_they_say(readme_folder):
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for i, (marker, code) in enumerate(python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))):
        if marker == "skip" or (marker == "cuda" and not torch.cuda.is_available()):
            continue
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        ran += 1
    assert ran >= 3
    # the DataLoader tour: lengths are each clip's real samples, not the padded length
    wavs, lengths = namespace["wavs"], namespace["lengths"].cpu()
    assert wavs.shape == (12, 1, SR) and lengths.tolist() == readme_folder["train_frames"]
    assert all(torch.count_nonzero(w[0, n:]) == 0 for w, n in zip(wavs, lengths.tolist()))  # padding stays silent
    # "SNR over the real samples": the noise added by the last AddNoise, measured on them, is 0-20 dB
    x, y = namespace["x"].cpu(), namespace["y"].cpu()
    for b, n in enumerate(lengths.tolist()):
        snr_db = 10 * torch.log10(x[b, 0, :n].pow(2).mean() / (y - x)[b, 0, :n].pow(2).mean()).item()
        assert -0.5 < snr_db < 20.5
    # projecting a unit: the shape the comment gives, the picture, and the top-9 of conv2
    proj, model = namespace["proj"], namespace["model"]
    assert proj.maps.shape[:2] == (1, 2) and proj.maps.shape[2] == model.frontend.config.n_mels
    assert (readme_folder["folder"] / "conv3_unit5.png").stat().st_size > 0
    top = namespace["top"]
    assert top.k == 9 and json.dumps(top.to_dict())
