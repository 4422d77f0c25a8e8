"""Log-mel front end (torchaudio), its axes for rendering, and the way back to audio.

Shapes: waveforms ``(batch, channels, time)`` or ``(batch, time)`` at ``sample_rate`` Hz;
log-mel spectrograms ``(batch, 1, n_mels, frames)`` in dB re full scale (0 dB = a sine of amplitude
1.0; see :class:`LogMel`), or re each example's peak with ``LogMelConfig.relative_to_peak``, or
normalised per example (``LogMelConfig.normalize``).
The mel scale is HTK's (as ``librosa`` with ``htk=True``), without area normalisation, so that
``librosa.display.specshow(..., y_axis="mel", htk=True)`` labels the rows with the right Hz.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF

__all__ = ["LogMelConfig", "LogMel", "NORMALIZATIONS", "normalize_logmel", "pcen"]

#: Per-example normalisations of the log-mel (``LogMelConfig.normalize``); see :func:`normalize_logmel`.
NORMALIZATIONS = ("none", "clip", "bin_mean", "bin_mean_var", "pcen")
STD_FLOOR_DB = 1e-3  # a constant row or clip has no spread to divide by: it comes out as zeros
# PCEN (Wang et al. 2017) with librosa.pcen's defaults, on the mel power re full scale (dB / 10 -> power)
PCEN_TIME_CONSTANT_S, PCEN_GAIN, PCEN_BIAS, PCEN_POWER = 0.4, 0.98, 2.0, 0.5
PCEN_EPS = 1e-12  # -120 dB re full scale: below any floored cell of a clip louder than -40 dB


def normalize_logmel(db: torch.Tensor, mode: str, frame_rate_hz: float | None = None) -> torch.Tensor:
    """Per-example normalisation of a log-mel ``(B, ..., n_mels, frames)`` in dB; same shape.

    ``"none"``: unchanged. ``"clip"``: minus the example's mean over all its cells, divided by their
    standard deviation (level invariance). ``"bin_mean"``: minus each mel bin's mean over the frames
    of that example (cepstral mean normalisation: a fixed gain per band — a microphone, a room's
    colouring, a phone line — is an offset per row in dB and disappears; so does the level).
    ``"bin_mean_var"``: ``"bin_mean"``, then divided by each bin's standard deviation over the frames.
    Standard deviations are the population ones (divide by N), floored at ``STD_FLOOR_DB``.
    ``"pcen"``: per-channel energy normalisation (:func:`pcen`) of the power ``10 ** (db / 10)``;
    needs ``frame_rate_hz`` (frames per second, ``sample_rate / hop_length``). Unitless output.
    """
    if mode == "none":
        return db
    if mode == "pcen":
        if frame_rate_hz is None:
            raise ValueError("normalize='pcen' needs frame_rate_hz (sample_rate / hop_length)")
        return pcen(torch.pow(10.0, db / 10), frame_rate_hz)
    if mode == "clip":
        dims = tuple(range(1, db.dim()))
    elif mode in ("bin_mean", "bin_mean_var"):
        dims = (-1,)
    else:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {mode!r}")
    centred = db - db.mean(dim=dims, keepdim=True)
    if mode == "bin_mean":
        return centred
    std = centred.square().mean(dim=dims, keepdim=True).sqrt().clamp_min(STD_FLOOR_DB)
    return centred / std


def pcen_smoothing(frame_rate_hz: float, time_constant_s: float = PCEN_TIME_CONSTANT_S) -> float:
    """The one-pole smoother's coefficient ``s`` for a time constant (as ``librosa.pcen``):
    ``s = (sqrt(1 + 4 T^2) - 1) / (2 T^2)`` with ``T = time_constant_s * frame_rate_hz`` frames."""
    t_frames = time_constant_s * frame_rate_hz
    return (math.sqrt(1 + 4 * t_frames ** 2) - 1) / (2 * t_frames ** 2)


def pcen(power: torch.Tensor, frame_rate_hz: float) -> torch.Tensor:
    """Per-channel energy normalisation of a power spectrogram ``(..., n_mels, frames)``; same shape.

    ``M[t] = s E[t] + (1 - s) M[t - 1]`` smooths each band's power ``E`` over the frames, starting
    from its steady state at the first frame (``M[-1] = E[0]``; ``s`` from ``pcen_smoothing``,
    time constant ``PCEN_TIME_CONSTANT_S``), and
    ``PCEN = (E / (PCEN_EPS + M) ** PCEN_GAIN + PCEN_BIAS) ** PCEN_POWER - PCEN_BIAS ** PCEN_POWER``:
    an automatic gain control per band (a level or a fixed colouring divides out) followed by a
    root compression — what ``librosa.pcen`` computes with the same constants and
    ``zi = scipy.signal.lfilter_zi(...) * E[..., :1]``. The recursion is written out as one matrix
    product with the filter's impulse response over the frames, so that it runs batched on any
    device and exports to TorchScript and ONNX at any length; its ``frames ** 2`` weights take
    4 MB for 10 s at 100 frames/s and 144 MB for 60 s (float32). Computed in float32 (float64 for
    float64 input) with autocast off: in float16 the smoothed power of quiet bands rounds to 0.
    """
    dtype = torch.float64 if power.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=power.device.type, enabled=False):
        power = power.to(dtype)
        frames = power.shape[-1]
        s = pcen_smoothing(frame_rate_hz)
        log_keep = math.log1p(-s)  # log(1 - s)
        t = torch.arange(frames, device=power.device, dtype=dtype)
        # weights[k, t] = s (1 - s) ** (t - k) for k <= t, else 0: built in place, one frames^2 buffer
        weights = (t[None, :] - t[:, None]).clamp_(min=0).mul_(log_keep).exp_().triu_().mul_(s)
        start = torch.exp((t + 1) * log_keep)  # what is left of M[-1] = E[0] at frame t
        smooth = torch.matmul(power, weights) + power[..., :1] * start
        agc = power * torch.pow(smooth + PCEN_EPS, -PCEN_GAIN)
        return torch.pow(agc + PCEN_BIAS, PCEN_POWER) - PCEN_BIAS ** PCEN_POWER


@dataclass(frozen=True)
class LogMelConfig:
    """Front-end settings. Times in samples at ``sample_rate`` Hz; frequencies in Hz.

    ``top_db``: each example's log-mel is floored at its own maximum minus ``top_db`` dB, so
    silence and zero padding do not produce -100 dB outliers.
    ``relative_to_peak``: give dB relative to each example's loudest cell (values in
    ``[-top_db, 0]``), so the model cannot depend on the recording level (a gain is an offset in
    dB). Default ``False``: dB re full scale (``db_reference``).
    ``normalize``: a per-example normalisation applied last, one of ``NORMALIZATIONS`` (see
    :func:`normalize_logmel`); default ``"none"`` (the trainer sets it explicitly:
    ``TrainConfig.normalize``).
    ``db_reference``: what 0 dB is. ``"full_scale_sine"`` (default): the mel power a sine of
    amplitude 1.0 puts into the bands (see :class:`LogMel`). ``"unit_power"``: a mel power of 1.0
    as torchaudio computes it, about 42.8 dB above a full-scale sine with the default window —
    what checkpoints written before version 2 were trained with (they load with it).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min_hz: float = 20.0
    f_max_hz: float | None = None
    top_db: float = 80.0
    relative_to_peak: bool = False
    db_reference: str = "full_scale_sine"
    normalize: str = "none"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LogMelConfig":
        return cls(**d)

    @property
    def f_max(self) -> float:
        return float(self.f_max_hz if self.f_max_hz is not None else self.sample_rate / 2)


MEL_FIT_TOLERANCE = 1e-3  # squared misfit relative to the bank's own: bfloat16 weights fit within ~1e-5


def htk_mel_bank(n_freqs: int, f_min_hz: float, f_max_hz: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """The mel filters :class:`LogMel` weighs an STFT with, ``(n_freqs, n_mels)`` float32: HTK-scale
    triangles from ``f_min_hz`` to ``f_max_hz`` with peak 1 (``torchaudio.functional.melscale_fbanks``,
    without its warning about empty bands)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        return torchaudio.functional.melscale_fbanks(n_freqs, f_min_hz, f_max_hz, n_mels, sample_rate,
                                                     norm=None, mel_scale="htk")


def mel_top_hz(filters: torch.Tensor, sample_rate: int, f_min_hz: float = LogMelConfig.f_min_hz) -> float | None:
    """The top corner in Hz (``f_max_hz``) of a mel filter bank ``(n_fft // 2 + 1, n_mels)`` that
    :class:`LogMel` built at ``sample_rate`` from ``f_min_hz`` up (``htk_mel_bank``): the corner, between
    the last frequency bin any filter weighs and the next, whose bank matches ``filters`` best (to
    0.01 Hz; the roundest value that fits as well, for weights stored in low precision). ``None`` when
    it is the Nyquist frequency (the default).

    Raises:
        ValueError: the filters weigh nothing, or no such bank fits them (``MEL_FIT_TOLERANCE``): they
            were made at another sample rate or with other settings.
    """
    from scipy.optimize import minimize_scalar

    n_freqs, n_mels = filters.shape
    target = filters.detach().double().cpu()
    weighed = torch.nonzero(target.sum(dim=1) > 0)
    if len(weighed) == 0:
        raise ValueError("the mel filters weigh no frequency (all zero)")
    scale = float(target.square().sum())
    step_hz, last = sample_rate / 2 / (n_freqs - 1), int(weighed.max())
    low, high = last * step_hz, min((last + 1) * step_hz, sample_rate / 2)

    def misfit(top_hz: float) -> float:
        return float((htk_mel_bank(n_freqs, f_min_hz, top_hz, n_mels, sample_rate).double() - target).square().sum()) / scale

    top_hz = float(minimize_scalar(misfit, bounds=(low, high), method="bounded", options={"xatol": 1e-4}).x)
    best = misfit(top_hz)
    if best > MEL_FIT_TOLERANCE:
        raise ValueError(f"the mel filters are not the {n_mels} HTK bands from {f_min_hz:g} Hz of a log-mel front end "
                         f"at {sample_rate} Hz (relative misfit {best:.1g})")
    for candidate in (sample_rate / 2, round(top_hz), round(top_hz, 1)):
        if misfit(candidate) <= 2 * best + 1e-12:
            return None if candidate == sample_rate / 2 else float(candidate)
    return round(top_hz, 2)


class LogMel(torch.nn.Module):
    """Waveform → log-mel power spectrogram in dB re full scale, ``(B, 1, n_mels, frames)``.

    Args:
        config: :class:`LogMelConfig` (or keyword overrides of its fields).

    Calibration (``db_reference="full_scale_sine"``): a sine ``A sin(2πft)`` has, in each STFT
    frame, a one-sided spectral power ``Σ_k |X_k|² = (A/2)² · n_fft · Σ_n w[n]²`` (Parseval, for a
    window ``w`` zero-padded to ``n_fft``). The HTK triangles (peak 1, no area normalisation) sum to
    1 between the first and the last band centre, so the mel bands together receive exactly that
    power. 0 dB is therefore the power ``n_fft · Σ w² / 4`` (``reference_power``; 19200 for the
    default periodic Hann of 400 samples in 512 points, +42.83 dB re 1.0): the bands of a sine of
    amplitude ``A`` sum to ``20 log10 A`` dB, and the band centred on it reads ``20 log10 A`` less
    the share of the window's main lobe (±2.6 bins) that the triangle does not weigh fully: within
    1 dB for bands at least three FFT bins wide, down to about -3 dB for a sine halfway between two
    centres, lower in bands narrower than the main lobe (the lowest bands at 16 kHz).

    Frame ``j`` is centred at ``j * hop_length / sample_rate`` seconds (``center=True``), so a clip
    of ``T`` samples has ``T // hop_length + 1`` frames. Multi-channel input is averaged to mono.
    A magnitude front end cannot see the waveform's polarity: ``LogMel(x) == LogMel(-x)``.
    """

    def __init__(self, config: LogMelConfig | None = None, **overrides):
        super().__init__()
        cfg = config or LogMelConfig()
        if overrides:
            cfg = LogMelConfig(**{**cfg.to_dict(), **overrides})
        self._validate(cfg)
        self.config = cfg
        if cfg.db_reference == "full_scale_sine":
            window = torch.hann_window(cfg.win_length, dtype=torch.float64)  # torchaudio's Spectrogram window
            self.reference_power = float(cfg.n_fft * window.square().sum() / 4.0)
        else:
            self.reference_power = 1.0
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min_hz,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=2.0,
            mel_scale="htk",
            norm=None,
            center=True,
        )

    @staticmethod
    def _validate(cfg: LogMelConfig) -> None:
        if cfg.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {cfg.sample_rate}")
        if not 0 < cfg.win_length <= cfg.n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={cfg.n_fft}, got {cfg.win_length}")
        if cfg.hop_length <= 0:
            raise ValueError(f"hop_length must be > 0, got {cfg.hop_length}")
        if not 0 <= cfg.f_min_hz < cfg.f_max <= cfg.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min_hz < f_max_hz <= Nyquist ({cfg.sample_rate / 2} Hz), "
                f"got f_min_hz={cfg.f_min_hz}, f_max_hz={cfg.f_max_hz}"
            )
        if cfg.n_mels <= 0:
            raise ValueError(f"n_mels must be > 0, got {cfg.n_mels}")
        if cfg.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {cfg.normalize!r}")
        if cfg.db_reference not in ("full_scale_sine", "unit_power"):
            raise ValueError(f"db_reference must be 'full_scale_sine' or 'unit_power', got {cfg.db_reference!r}")

    # ---- forward ------------------------------------------------------------------------
    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram ``(B, 1, n_mels, frames)`` (linear, not dB)."""
        if waveform.dim() == 3:
            waveform = waveform.mean(dim=1)
        elif waveform.dim() != 2:
            raise ValueError(f"waveform must be (batch, channels, time) or (batch, time), got {tuple(waveform.shape)}")
        if waveform.is_floating_point() is False:
            raise ValueError(f"waveform must be a float tensor, got dtype {waveform.dtype}")
        self.check_length(waveform.shape[-1])
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            return self.mel(waveform.float()).unsqueeze(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.to_db(self.power(waveform))

    def check_length(self, n_samples: int, where: str = "waveform") -> None:
        """Raise a ``ValueError`` naming ``where`` if a clip of ``n_samples`` is too short for the
        front end: its frames are centred with reflection padding of ``n_fft // 2`` samples, which
        needs more samples than that (257 at the default ``n_fft`` 512: 16 ms at 16 kHz)."""
        c = self.config
        need = c.n_fft // 2 + 1
        if n_samples < need:
            raise ValueError(f"{where} is too short for the log-mel front end: {n_samples} samples "
                             f"({n_samples / c.sample_rate * 1000:.1f} ms at {c.sample_rate} Hz); it needs at least "
                             f"{need} ({need / c.sample_rate * 1000:.1f} ms; more than n_fft / 2, "
                             f"its frames being centred with reflection padding)")

    def to_db(self, power: torch.Tensor) -> torch.Tensor:
        """Power → what the model sees: :meth:`db`, then ``normalize``; ``(B, ...)`` → same shape."""
        return normalize_logmel(self.db(power), self.config.normalize, self.config.sample_rate / self.config.hop_length)

    def db(self, power: torch.Tensor) -> torch.Tensor:
        """Power → dB re full scale with the per-example ``top_db`` floor (and, with
        ``relative_to_peak``, minus the example's peak), before ``normalize``; ``(B, ...)`` → same shape.

        ``torchaudio.functional.amplitude_to_DB`` (``10 log10(max(power, 1e-10) / reference_power)``,
        floored at the peak minus ``top_db``) on each example seen as one ``(1, 1, N)`` spectrogram,
        so the peak is the example's own. The calibration is a constant offset: the floors, and so
        every peak-relative value, are those of the uncalibrated power.
        """
        per_example = power.reshape(power.shape[0], 1, 1, -1)  # amplitude_to_DB floors per (C, F, T) item
        db = AF.amplitude_to_DB(per_example, multiplier=10.0, amin=1e-10, db_multiplier=math.log10(self.reference_power),
                                top_db=self.config.top_db).reshape(power.shape)
        if self.config.relative_to_peak:
            db = db - db.flatten(1).amax(dim=1).view(-1, *([1] * (db.dim() - 1)))
        return db

    # ---- axes ---------------------------------------------------------------------------
    def mel_hz(self) -> np.ndarray:
        """Centre frequency (Hz) of each mel bin, shape ``(n_mels,)`` (HTK mel scale)."""
        return self.mel_points_hz()[1:-1]

    def mel_points_hz(self) -> np.ndarray:
        """The mel filters' corners in Hz, shape ``(n_mels + 2,)``: bin ``b``'s triangle rises from point
        ``b``, peaks at ``b + 1`` and falls to ``b + 2`` (equally spaced on the HTK mel scale)."""
        c = self.config
        return librosa.mel_frequencies(n_mels=c.n_mels + 2, fmin=c.f_min_hz, fmax=c.f_max, htk=True)

    def frame_s(self, n_frames: int) -> np.ndarray:
        """Centre time (s) of each frame, shape ``(n_frames,)``."""
        return np.arange(n_frames) * self.config.hop_length / self.config.sample_rate

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` input samples."""
        return n_samples // self.config.hop_length + 1

    def specshow_kwargs(self) -> dict:
        """Keyword arguments that make ``librosa.display.specshow`` label our axes in s and Hz."""
        c = self.config
        return dict(sr=c.sample_rate, hop_length=c.hop_length, x_axis="time", y_axis="mel",
                    fmin=c.f_min_hz, fmax=c.f_max, htk=True)

    # ---- back to the linear-frequency STFT domain -----------------------------------------
    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """Complex STFT with the front end's window/hop, ``(..., time)`` → ``(..., n_fft//2+1, frames)``."""
        c = self.config
        window = torch.hann_window(c.win_length, device=waveform.device, dtype=waveform.dtype)
        return torch.stft(waveform, c.n_fft, c.hop_length, c.win_length, window, center=True, return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`stft`, ``(..., n_fft//2+1, frames)`` → ``(..., length)`` samples."""
        c = self.config
        window = torch.hann_window(c.win_length, device=spec.device, dtype=spec.real.dtype)
        return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, window, center=True, length=length)

    def mel_to_linear(self, mel_values: torch.Tensor) -> torch.Tensor:
        """Spread per-mel-bin values onto linear STFT bins, ``(..., n_mels, frames)`` → ``(..., n_fft//2+1, frames)``.

        Each linear bin gets the filter-weighted mean of the mel bins that cover it (bins no mel
        filter covers get 0). Use it to turn a mel-space mask into an STFT mask.
        """
        fb = self.mel.mel_scale.fb.to(mel_values.device, mel_values.dtype)  # (n_freqs, n_mels)
        weight = fb / fb.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.matmul(weight, mel_values)

    def db_to_waveform(self, logmel_db: torch.Tensor, n_samples: int, n_iter: int = 32) -> torch.Tensor:
        """Invert a log-mel (dB) ``(..., n_mels, frames)`` to audio ``(..., n_samples)``.

        dB → power (re full scale; a peak-relative log-mel comes back with its loudest cell at the
        level of a full-scale sine) →
        linear-frequency magnitude by non-negative least squares
        (``torchaudio.transforms.InverseMelScale``) → phase by Griffin-Lim (``n_iter`` iterations).
        """
        c = self.config
        power = torch.pow(10.0, logmel_db / 10.0) * self.reference_power
        inv = torchaudio.transforms.InverseMelScale(
            n_stft=c.n_fft // 2 + 1, n_mels=c.n_mels, sample_rate=c.sample_rate,
            f_min=c.f_min_hz, f_max=c.f_max, mel_scale="htk", norm=None,
        ).to(power.device)
        linear_power = inv(power.float()).clamp_min(0)
        window = torch.hann_window(c.win_length, device=power.device)
        return AF.griffinlim(linear_power.sqrt(), window, c.n_fft, c.hop_length, c.win_length,
                             power=1.0, n_iter=n_iter, momentum=0.99, length=n_samples, rand_init=False)
