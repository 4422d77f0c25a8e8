"""`audioconv augment` end to end: WAVs, replayable params.json, a log-mel PNG with real axes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from audioconv.augment import load_chain, params_from_json
from audioconv.cli import main
from audioconv.features import LogMel, LogMelConfig
from audioconv.plots.augment_preview import plot_logmels

SR = 16000


@pytest.fixture()
def tone(tmp_path):
    t = np.arange(int(0.6 * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-2 * t)
    stereo = np.stack([left, 0.5 * left], 1).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")
    return path, stereo


def test_augment_command_writes_wavs_params_and_png(tmp_path, tone, capsys):
    path, stereo = tone
    out = tmp_path / "out"
    assert main(["augment", str(path), "-o", str(out), "--n", "4", "--seed", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    wavs = sorted(out.glob("aug_*.wav"))
    assert [w.name for w in wavs] == [f"aug_{i:02d}.wav" for i in range(4)]
    record = json.loads((out / "params.json").read_text())
    assert record["files"] == [w.name for w in wavs] and record["seed"] == 3 and record["sample_rate"] == SR
    chain_file = tmp_path / "chain.json"
    chain_file.write_text(json.dumps(record["chain"]))
    chain = load_chain(chain_file, SR)
    x = torch.from_numpy(stereo.T.copy()).expand(4, 2, -1)
    replayed = chain.apply(x, params_from_json(record["params"]))
    for i, w in enumerate(wavs):
        data, sr = sf.read(w, dtype="float32", always_2d=True)
        assert sr == SR and data.shape == stereo.shape
        np.testing.assert_allclose(data.T, replayed[i].numpy(), atol=1e-6)
        assert w.name in printed
    assert "note: the chain's BatchMix (mix) takes its partners from the batch" in printed  # the default's babble
    png = out / "logmels.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
        assert "time (s)" in im.text["Description"] and "frequency (Hz)" in im.text["Description"]
        assert np.asarray(im.convert("L")).std() > 20  # a picture, not a blank canvas


def test_png_axes_are_seconds_and_hz(tmp_path, tone):
    _, stereo = tone
    wavs = [torch.from_numpy(stereo.T.copy()), torch.from_numpy(stereo[:, 0].copy())]
    fig = plot_logmels(wavs, SR, ["a", "b"], tmp_path / "x.png")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "frequency (Hz)"
    def visible_labels(ticks, labels, lim):
        return [float(t.get_text().replace("\u2212", "-")) for v, t in zip(ticks, labels)
                if lim[0] - 1e-9 <= v <= lim[1] + 1e-9 and t.get_text()]

    seconds = visible_labels(ax.get_xticks(), ax.get_xticklabels(), ax.get_xlim())
    hertz = visible_labels(ax.get_yticks(), ax.get_yticklabels(), ax.get_ylim())
    assert len(seconds) >= 3 and 0.3 <= max(seconds) <= 0.6 + 1e-9  # the clip is 0.6 s long
    assert len(hertz) >= 3 and 1000 <= max(hertz) <= 1.03 * SR / 2 and min(hertz) >= 0  # mel axis, in Hz
    assert ax.get_ylim()[1] == pytest.approx(SR / 2, rel=0.03)  # librosa's top mel-bin edge
    assert ax.get_xlim()[1] == pytest.approx(0.6, abs=0.011)


def test_panels_show_the_models_own_front_end(tone):
    """Each panel holds exactly what ``LogMel`` gives the model (HTK mels, dB), on one colour scale."""
    _, stereo = tone
    wavs = [torch.from_numpy(stereo.T.copy()), 0.1 * torch.from_numpy(stereo[:, 0].copy())]
    front_end = LogMel(LogMelConfig(sample_rate=SR, n_mels=40))
    fig = plot_logmels(wavs, SR, ["a", "b"], front_end=front_end)
    drawn = [ax.collections[0] for ax in fig.axes[:2]]
    for mesh, wav in zip(drawn, wavs):
        expected = front_end(wav.reshape(1, -1, wav.shape[-1]))[0, 0].numpy()  # (40, frames)
        np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(expected.shape), expected, rtol=1e-6)
    top = max(float(front_end(w.reshape(1, -1, w.shape[-1])).max()) for w in wavs)
    for mesh in drawn:
        assert mesh.get_clim() == pytest.approx((top - front_end.config.top_db, top))
    with pytest.raises(ValueError, match="8000 Hz"):
        plot_logmels(wavs, SR, ["a", "b"], front_end=LogMel(LogMelConfig(sample_rate=8000)))


def test_augment_command_with_a_chain_file_and_relative_background(tmp_path, tone):
    path, _ = tone
    (tmp_path / "noises").mkdir()
    sf.write(tmp_path / "noises" / "hum.wav", (0.1 * np.sin(np.arange(4000) / 3)).astype(np.float32), 8000)
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps([{"type": "AddNoise", "snr_db": [10, 10], "background": "noises", "p": 1.0}]))
    out = tmp_path / "out"
    assert main(["augment", str(path), "-o", str(out), "--n", "2", "--chain", str(chain), "--device", "cpu"]) == 0
    record = json.loads((out / "params.json").read_text())
    assert set(record["params"]["0.AddNoise"]) == {"apply", "snr_db", "noise_pos", "noise_index"}


def test_augment_command_reports_a_missing_file(tmp_path, capsys):
    assert main(["augment", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "o")]) == 2
    assert "nope.wav" in capsys.readouterr().err


def test_preview_titles_show_the_drawn_values_on_one_db_scale(tmp_path, tone, monkeypatch, capsys):
    """Each panel is titled with what was drawn for it (``describe_example(..., values=True)``), all
    panels share one colour scale, so a -20 dB gain shows as a panel 20 dB darker, and they show the
    front end `audioconv train` builds by default."""
    import audioconv.plots.augment_preview as preview

    drawn = {}

    def spy(wavs, sample_rate, titles, path=None, **kwargs):
        fig = plot_logmels(wavs, sample_rate, titles, path, **kwargs)
        drawn.update(fig=fig, titles=titles, front_end=kwargs.get("front_end"))
        return fig

    monkeypatch.setattr(preview, "plot_logmels", spy)
    path, _ = tone
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps([{"type": "Gain", "gain_db": [-20, -20], "p": 1.0},
                                 {"type": "PitchShift", "semitones": [-3, 3], "p": 0.5},
                                 {"type": "AddNoise", "snr_db": [20, 40], "p": 1.0}]))
    out = tmp_path / "out"
    assert main(["augment", str(path), "-o", str(out), "--n", "3", "--chain", str(chain), "--device", "cpu"]) == 0
    record = json.loads((out / "params.json").read_text())
    printed = capsys.readouterr().out
    for i, title in enumerate(drawn["titles"][1:]):
        flat = " ".join(title.split())
        assert flat.startswith(f"{i:02d}: gain -20.0 dB") and "noise SNR" in flat
        assert flat.split(": ", 1)[1] in " ".join(printed.split())  # and printed
        shift = record["params"]["1.PitchShift"]
        assert (f"pitch {shift['semitones'][i]:+.1f} semitones" in flat) == shift["apply"][i]
    meshes = [ax.collections[0] for ax in drawn["fig"].axes[:4]]
    assert len({m.get_clim() for m in meshes}) == 1  # one dB scale
    peaks = [float(np.asarray(m.get_array()).max()) for m in meshes]
    assert peaks[0] - max(peaks[1:]) == pytest.approx(20, abs=1.5)  # the gain shows
    from audioconv.training.config import TrainConfig
    assert drawn["front_end"].config.n_mels == TrainConfig.n_mels  # the bands `audioconv train` gives its model


def test_a_clip_too_short_for_the_preview_is_one_line_naming_the_file(tmp_path, capsys):
    """100 samples: fewer than the front end's n_fft / 2 + 1; refused before anything is written
    (it was torch's padding message, after the WAVs and params.json had been written)."""
    path = tmp_path / "click.wav"
    sf.write(path, np.full(100, 0.5, np.float32), SR)
    out = tmp_path / "out"
    assert main(["augment", str(path), "-o", str(out), "--n", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{path} is too short for the log-mel front end: 100 samples" in err and "Padding" not in err
    assert not out.exists()
