"""Lossy and companding codecs: each example encoded and decoded by the real encoder (libsndfile),
or companded on the batch's device for G.711 (``g711.py``)."""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import torch
import torchaudio.functional as AF

from .base import Augmentation, uniform
from .dsp import finite_rows
from .g711 import alaw_round_trip, mulaw_round_trip
from .params import params_select
from .validation import check_range, check_sample_rate

__all__ = ["Codec", "CODECS", "codec_rate"]


class CodecSpec(NamedTuple):
    """How libsndfile writes a codec: container, subtype, the sample rates it takes (``None``: any),
    whether ``compression_level`` sets its bitrate, its bitrate mode and whether it is mono only."""

    file_format: str
    subtype: str
    rates: tuple[int, ...] | None
    uses_level: bool
    bitrate_mode: str | None = None
    mono: bool = False


MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1, -2 and -2.5 layer III
CODECS = {
    "mulaw": CodecSpec("WAV", "ULAW", None, False),  # G.711 mu-law: 8 bits per sample, companded
    "alaw": CodecSpec("WAV", "ALAW", None, False),  # G.711 A-law
    "mp3": CodecSpec("MP3", "MPEG_LAYER_III", MP3_RATES, True, "CONSTANT"),  # LAME, constant bitrate
    "vorbis": CodecSpec("OGG", "VORBIS", None, True),
    "opus": CodecSpec("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000), True),
    "gsm": CodecSpec("WAV", "GSM610", (8000,), False, mono=True),  # GSM 06.10 full rate, 13 kbit/s, 8 kHz
}
G711 = {"mulaw": mulaw_round_trip, "alaw": alaw_round_trip}  # companding on the batch's device, not libsndfile
MP3_DELAY = 1105  # LAME's encoder delay (576) + the decoder's (529), when the file carries no gapless tag
MAX_LEVEL = {"mp3": 0.99}  # libsndfile refuses compression level 1 for MP3


def codec_rate(name: str, sample_rate: int) -> int:
    """The rate (Hz) ``name`` is encoded at for data at ``sample_rate``: ``sample_rate`` itself if
    the codec takes it, else the lowest rate it takes above it (the highest if none is)."""
    rates = CODECS[name].rates
    if rates is None or sample_rate in rates:
        return sample_rate
    above = [r for r in rates if r > sample_rate]
    return min(above) if above else max(rates)


def _round_trip(x: torch.Tensor, name: str, rate: int, level: float) -> torch.Tensor:
    """``(C, T)`` at ``rate`` Hz through codec ``name`` and back, aligned to ``x`` and ``T`` long."""
    from audioconv.io.audio import codec_round_trip  # deferred: augmenting without codecs needs no file I/O

    spec = CODECS[name]
    level = min(level, MAX_LEVEL.get(name, 1.0)) if spec.uses_level else None
    parts = x.split(1) if spec.mono else (x,)
    decoded = [codec_round_trip(p, rate, spec.file_format, spec.subtype, level, spec.bitrate_mode)[0] for p in parts]
    y = torch.cat(decoded) if len(decoded) > 1 else decoded[0]
    time = x.shape[-1]
    if name == "mp3" and y.shape[-1] >= time + MP3_DELAY:  # decoded without its delay trimmed
        y = y[:, MP3_DELAY:]
    return y[:, :time] if y.shape[-1] >= time else torch.nn.functional.pad(y, (0, time - y.shape[-1]))


class Codec(Augmentation):
    """Pass each example through a real audio codec, drawn per example from ``formats``.

    Every example is encoded to a file in memory and decoded again by libsndfile (through
    ``audioconv.io.audio.codec_round_trip``) — MP3 (LAME, constant bitrate), Ogg Vorbis, Ogg
    Opus and GSM 06.10 full-rate telephony (13 kbit/s) — or, for G.711 mu-law and A-law (8-bit
    companding, about 38 dB SNR), companded sample by sample on the batch's device to the levels
    libsndfile gives (``g711.py``; equal to them in the tests). ``compression_level``
    (libsndfile's, 0 = best) sets the bitrate of MP3, Vorbis and Opus; the others have one. What
    the codecs do, measured on 1 s of white noise at 16 kHz (tests/test_augment_codec.py;
    docs/augmentations.md has the table for 2 s): MP3 179 kbit/s at level 0 down to 9 kbit/s at
    0.99, band-limited to ~3-7 kHz at low rates; Opus 270 down to 12 kbit/s; Vorbis 101 kbit/s at
    level 0, 71 at 0.5, 59 at 1 — of which ~30 are the ~4 kB of headers every Vorbis stream
    carries (over 10 s: 70, 42, 32 kbit/s); GSM band-limited to 4 kHz.

    A codec that does not take the data's rate (Opus: 8/12/16/24/48 kHz; MP3: 8-48 kHz; GSM:
    8 kHz only) gets the example resampled to the next rate it takes (``codec_rate``; GSM: down
    to 8 kHz, so the telephone band) and back. The decoded signal is aligned to the input (the
    codecs' delays removed: MP3's 1105 samples when the file has no gapless tag) and cut or
    zero-padded to the input's length; only the real samples (``lengths``) are encoded. Samples
    beyond ±1 clip, as in any file; an example holding NaN or inf is left as it was.

    Not differentiable (the output carries no gradient). The file codecs run on the CPU, one
    example at a time (libsndfile): slow next to the batched transforms (a few to tens of ms per
    second of audio), so put them in the DataLoader's ``transform``, which runs in the worker
    processes. Given a CUDA batch, the examples drawn for them go to the CPU and back (one
    synchronisation) rather than failing; mu-law and A-law stay on the device.

    Args:
        sample_rate (int): Hz.
        formats (list of str): names from ``CODECS``: ``"mulaw"``, ``"alaw"``, ``"mp3"``,
            ``"vorbis"``, ``"opus"``, ``"gsm"``; one is drawn per example, evenly. Default all six.
        compression_level ((min, max) in [0, 1]): drawn evenly; 0 is the best quality (MP3: 0.99
            at most). Default (0.5, 0.99).
        p (float): per-example probability. Default 0.5.

    Params: ``format_index`` ``(B,)`` int64 (into ``formats``), ``compression_level`` ``(B,)``.
    """

    param_keys = ("format_index", "compression_level")

    def __init__(self, sample_rate: int, formats: Sequence[str] = tuple(CODECS), compression_level=(0.5, 0.99),
                 p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        names = None if isinstance(formats, str) or not isinstance(formats, Iterable) else list(formats)
        if not names or not all(isinstance(f, str) for f in names):
            raise ValueError(f"formats must be a non-empty list of codec names {sorted(CODECS)}, got {formats!r}")
        unknown = [f for f in names if f not in CODECS]
        if unknown:
            raise ValueError(f"formats: unknown codec(s) {unknown}; known: {', '.join(CODECS)}")
        self.formats = names
        self.compression_level = check_range("compression_level", compression_level, low=0.0, high=1.0)

    def _draw(self, batch, generator, device):
        return {"format_index": torch.randint(len(self.formats), (batch,), generator=generator, device=device),
                "compression_level": uniform(*self.compression_level, (batch,), generator, device)}

    def _transform(self, x, params, lengths):
        names = [self.formats[f] for f in params["format_index"].tolist()]
        files = [i for i, n in enumerate(names) if n not in G711]
        if len(files) == len(names):
            return self._through_files(x, params, lengths)
        y = x.detach().clone()
        for law, round_trip in G711.items():
            rows = [i for i, n in enumerate(names) if n == law]
            if rows:
                part = x[rows].detach()
                finite = torch.isfinite(part).flatten(1).all(1)[:, None, None]  # NaN/inf examples pass as they were
                y[rows] = torch.where(finite, round_trip(part), part)
        if files:
            index = torch.tensor(files, device=x.device)
            y[index] = self._through_files(x[index], params_select(params, index),
                                           None if lengths is None else lengths[index])
        return y

    def _through_files(self, x, params, lengths):
        """The examples through libsndfile, one at a time on the CPU."""
        device, dtype = x.device, x.dtype
        x = x.detach().to("cpu", torch.float32)  # libsndfile works on the CPU: rows go there and back
        time = x.shape[-1]
        real = [time] * x.shape[0] if lengths is None else lengths.tolist()
        which, levels = params["format_index"].tolist(), params["compression_level"].tolist()
        y = torch.zeros_like(x)
        finite = finite_rows(x).tolist()
        for i, (n, f, level) in enumerate(zip(real, which, levels)):
            if not finite[i]:  # an encoder would turn NaN into noise: the example passes as it was
                y[i] = x[i]
                continue
            if n == 0:
                continue
            name = self.formats[f]
            rate = codec_rate(name, self.sample_rate)
            clip = x[i, :, :n] if rate == self.sample_rate else AF.resample(x[i, :, :n], self.sample_rate, rate)
            out = _round_trip(clip, name, rate, level)
            if rate != self.sample_rate:
                out = AF.resample(out, rate, self.sample_rate)
            y[i, :, :min(n, out.shape[-1])] = out[:, :n]
        return y.to(device=device, dtype=dtype)

    def describe(self, params, index):
        name = self.formats[int(params["format_index"][index])]
        if not CODECS[name].uses_level:
            return name
        return f"{name}, level {float(params['compression_level'][index]):.2f}"
