"""Make the gallery of docs/augmentations.md: one before/after log-mel picture and one short sound per
transform, each titled with the values drawn for it.

    python docs/make_gallery.py            # writes docs/gallery/*.png, *.ogg and the gallery section

The input is a 1.6 s synthetic clip at 16 kHz from the demo corpus's generator (a vowel, a noise
burst and a melody, with a little background noise), so the pictures need no data set. Every
transform runs with p = 1 and its own fixed seed: the output is the same on every run. The
pictures are the model's own log-mel front end (``audioconv.plots.augment_preview.plot_logmels``),
both panels on one dB scale; the sounds are Ogg Vorbis.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audioconv import augment as A  # noqa: E402
from audioconv.app import demo_corpus  # noqa: E402
from audioconv.augment.chain import SHORT_NAMES  # noqa: E402
from audioconv.io.audio import save  # noqa: E402
from audioconv.io.files import write_text  # noqa: E402
from audioconv.plots.augment_preview import plot_logmels  # noqa: E402

SR = 16000
GALLERY = ROOT / "docs" / "gallery"
PAGE = ROOT / "docs" / "augmentations.md"
START, END = "<!-- gallery:start (docs/make_gallery.py writes this part) -->", "<!-- gallery:end -->"


def source_clip() -> torch.Tensor:
    """``(1, T)``: a vowel, a noise burst and a melody (0.6 s each, overlapping) over faint pink noise."""
    parts = []
    for i, label in enumerate(("vowel", "noise_burst", "melody")):
        rng = np.random.default_rng(10 + i)
        params = demo_corpus.sample_params(label, rng, SR, 0.6)
        parts.append(demo_corpus.render_event(params, SR, 0.6))
    hop = int(0.5 * SR)
    clip = np.zeros(hop * 2 + len(parts[-1]))
    for i, part in enumerate(parts):
        clip[i * hop: i * hop + len(part)] += part / (np.abs(part).max() + 1e-9)
    clip += 0.003 * demo_corpus.colored_noise(len(clip), -3.0, np.random.default_rng(3), SR)
    return torch.from_numpy(0.3 * clip / np.abs(clip).max()).float()[None]


def events_bank() -> list[torch.Tensor]:
    """Short event recordings for AddEvents: clicks and bells from the demo generator."""
    bank = []
    for i, label in enumerate(("click_train", "bell", "chord")):
        params = demo_corpus.sample_params(label, np.random.default_rng(20 + i), SR, 0.5)
        event = demo_corpus.render_event(params, SR, 0.5)
        sounding = np.nonzero(event)[0]
        bank.append(torch.from_numpy(event[sounding[0]: sounding[-1] + 1]).float())  # without the silence
    return bank


def transforms() -> list[tuple[str, A.Augmentation]]:
    """``(file stem, transform)`` for every transform of the package, p = 1."""
    return [
        ("polarity", A.PolarityInversion(p=1.0)),
        ("eq", A.RandomEQ(SR, p=1.0)),
        ("reverb", A.Reverb(SR, rt60_s=(0.6, 0.9), p=1.0)),
        ("noise_pink", A.AddNoise(snr_db=(5, 10), color="pink", p=1.0)),
        ("gain", A.Gain(gain_db=(-18, -12), p=1.0)),
        ("shift", A.TimeShift(SR, shift_s=(0.15, 0.2), p=1.0)),
        ("speed", A.SpeedPerturb(SR, factors=(1.2,), p=1.0)),
        ("pitch_up", A.PitchShift(SR, semitones=(4, 5), p=1.0)),
        ("pitch_down", A.PitchShift(SR, semitones=(-5, -4), p=1.0)),
        ("stretch", A.TimeStretch(SR, rate=(0.8, 0.8), p=1.0)),
        ("lowpass", A.LowPass(SR, cutoff_hz=(1000, 1500), p=1.0)),
        ("highpass", A.HighPass(SR, cutoff_hz=(1500, 2400), p=1.0)),
        ("bandpass", A.BandPass(SR, centre_hz=(800, 1200), p=1.0)),
        ("bandstop", A.BandStop(SR, centre_hz=(800, 1200), bandwidth_octaves=(1.5, 2.0), p=1.0)),
        ("clip", A.Clip(threshold_db=(-20, -16), p=1.0)),
        ("distortion", A.Distortion(drive_db=(18, 24), p=1.0)),
        ("bitcrush", A.BitCrush(bits=(4, 4), p=1.0)),
        ("codec_mp3", A.Codec(SR, formats=["mp3"], compression_level=(0.95, 0.99), p=1.0)),
        ("codec_gsm", A.Codec(SR, formats=["gsm"], p=1.0)),
        ("codec_opus", A.Codec(SR, formats=["opus"], compression_level=(0.97, 0.99), p=1.0)),
        ("codec_mulaw", A.Codec(SR, formats=["mulaw"], p=1.0)),
        ("events", A.AddEvents(SR, background=events_bank(), n=(3, 3), snr_db=(0, 5), p=1.0)),
        ("fade", A.GainTransition(SR, gain_db=(-30, 0), duration_s=(0.8, 1.2), p=1.0)),
        ("time_mask", A.TimeMask(SR, max_s=0.15, min_s=0.08, n=(3, 3), p=1.0)),
    ]


def render(stem: str, aug: A.Augmentation, x: torch.Tensor, seed: int) -> str:
    """Apply, write ``stem.png`` and ``stem.ogg``; return the markdown of the entry."""
    params = aug.sample(1, generator=torch.Generator().manual_seed(seed))
    y = aug.apply(x, params)[0]
    name = type(aug).__name__
    drawn = aug.describe(params, 0)
    title = f"{name}: {drawn}" if drawn else name
    fig = plot_logmels([x, y], SR, ["input", title], ncols=2)
    fig.set_size_inches(8.0, 2.6)
    from audioconv.io.files import atomic_write

    with atomic_write(GALLERY / f"{stem}.png", "wb") as f:
        fig.savefig(f, format="png", dpi=72)
    save(GALLERY / f"{stem}.ogg", y.clamp(-1, 1), SR, subtype="VORBIS")
    short = SHORT_NAMES.get(name, name)
    return (f"### {name} ({short})\n\n![{title}](gallery/{stem}.png)\n\n"
            f"Drawn: {drawn or '—'}. Listen: [after](gallery/{stem}.ogg), [before](gallery/input.ogg).\n")


def main() -> int:
    GALLERY.mkdir(parents=True, exist_ok=True)
    x = source_clip()
    save(GALLERY / "input.ogg", x, SR, subtype="VORBIS")
    entries = [render(stem, aug, x, seed=i) for i, (stem, aug) in enumerate(transforms())]
    section = f"{START}\n\n" + "\n".join(entries) + f"\n{END}"
    page = PAGE.read_text(encoding="utf-8")
    if START not in page:
        raise SystemExit(f"{PAGE} has no gallery markers ({START} ... {END})")
    write_text(PAGE, re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, page, flags=re.S))
    print(f"wrote {len(entries)} pictures and sounds to {GALLERY} and the gallery section of {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
