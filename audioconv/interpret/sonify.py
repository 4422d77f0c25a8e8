"""Listen to a projection.

* :func:`masked_audio` — *what part of this sound drives the unit*: a mask made from the
  projection (log-mel space) is spread onto the linear STFT bins, multiplied with the input's
  complex STFT, and inverted with the input's own phase (Choi, Fazekas & Sandler 2016,
  "Explaining deep convolutional neural networks on music classification").
* :func:`griffin_lim_audio` — the projection on its own, as if it were a mel magnitude, with
  phase estimated by Griffin-Lim.

Both return waveforms; :func:`audioconv.io.audio.save` writes them.
"""
from __future__ import annotations

import torch

from audioconv.features import LogMel

__all__ = ["projection_mask", "mel_mask_to_stft", "masked_audio", "griffin_lim_audio"]


def _as_map(projection_map, n_mels: int) -> torch.Tensor:
    m = torch.as_tensor(projection_map).detach()
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or m.shape[0] != n_mels:
        raise ValueError(f"projection_map must be (n_mels={n_mels}, frames), got shape {tuple(m.shape)}")
    return m.to(torch.float64)


def projection_mask(projection_map, part: str = "positive") -> torch.Tensor:
    """Turn a signed projection ``(n_mels, frames)`` into a mask in [0, 1] (float64).

    Args:
        projection_map: projection in log-mel space, ``(n_mels, frames)``.
        part: ``"positive"`` keeps the positive part (what excites the unit), ``"abs"`` the
            magnitude. Either is divided by its maximum; an all-zero map gives an all-zero mask.
    """
    m = torch.as_tensor(projection_map).detach().to(torch.float64)
    if part == "positive":
        m = m.clamp_min(0)
    elif part == "abs":
        m = m.abs()
    else:
        raise ValueError(f"part must be 'positive' or 'abs', got {part!r}")
    peak = m.max() if m.numel() else torch.tensor(0.0, dtype=torch.float64)
    return m / peak if float(peak) > 0 else torch.zeros_like(m)


def mel_mask_to_stft(mask_mel: torch.Tensor, logmel: LogMel) -> torch.Tensor:
    """Spread a mel-space mask ``(..., n_mels, frames)`` onto STFT bins ``(..., n_fft//2+1, frames)``.

    Uses :meth:`LogMel.mel_to_linear` (filter-weighted mean of the covering mel bins); linear bins
    no mel filter covers (below ``f_min_hz``, at/above ``f_max_hz``) take the value of the nearest
    covered bin, so a constant mel mask gives the same constant on every STFT bin.
    """
    lin = logmel.mel_to_linear(mask_mel)
    fb = logmel.mel.mel_scale.fb  # (n_freqs, n_mels)
    covered = torch.nonzero(fb.sum(dim=1) > 0).flatten()
    if covered.numel() == 0:
        raise ValueError("the log-mel filterbank covers no STFT bin; check n_mels / n_fft")
    bins = torch.arange(fb.shape[0], device=covered.device)
    pick = covered[(bins[:, None] - covered[None, :]).abs().argmin(dim=1)]  # nearest covered bin (itself if covered)
    return lin.index_select(-2, pick.to(lin.device))


def masked_audio(waveform: torch.Tensor, projection_map, logmel: LogMel, part: str = "positive") -> torch.Tensor:
    """The input sound filtered by its projection: ``iSTFT(STFT(x) * mask)`` with the input's phase.

    Args:
        waveform: ``(time,)`` or ``(channels, time)`` at ``logmel.config.sample_rate`` Hz — the
            waveform the projection was computed from (its log-mel has ``frames`` frames).
        projection_map: the projection ``(n_mels, frames)`` (log-mel space, signed).
        logmel: the model's :class:`~audioconv.features.LogMel` front end (same STFT settings).
        part: see :func:`projection_mask`.

    Returns:
        Waveform of the input's shape and dtype. An all-ones mask returns the input (up to STFT
        round-off); a mask on one band keeps only that band's energy.
    """
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2):
        raise ValueError(f"waveform must be a (time,) or (channels, time) tensor, got "
                         f"{tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__}")
    n_mels = logmel.config.n_mels
    mask = projection_mask(_as_map(projection_map, n_mels), part)
    n_samples = waveform.shape[-1]
    n_frames = logmel.n_frames(n_samples)
    if mask.shape[-1] != n_frames:
        raise ValueError(f"projection_map has {mask.shape[-1]} frames but the waveform of {n_samples} samples "
                         f"gives {n_frames} frames")
    x = waveform.detach().to(torch.float64)
    spec = logmel.stft(x)  # (..., n_freqs, frames) complex128
    lin_mask = mel_mask_to_stft(mask.to(x.device), logmel)
    out = logmel.istft(spec * lin_mask, length=n_samples)
    return out.to(waveform.dtype)


def griffin_lim_audio(projection_map, logmel: LogMel, n_samples: int, n_iter: int = 32,
                      part: str = "positive", peak: float = 0.5) -> torch.Tensor:
    """The projection alone as sound, ``(n_samples,)`` float32.

    The mask of :func:`projection_mask` is read as a mel *power* spectrogram, turned into a
    linear-frequency magnitude and given a phase by Griffin-Lim
    (:meth:`LogMel.db_to_waveform`), then scaled to a peak of ``peak`` (silence stays silence).
    """
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    mask = projection_mask(_as_map(projection_map, logmel.config.n_mels), part)
    if float(mask.max()) == 0.0:
        return torch.zeros(int(n_samples))
    db = 10.0 * torch.log10(mask.clamp_min(1e-10)).float()
    wav = logmel.db_to_waveform(db, int(n_samples), n_iter=n_iter).float().cpu()
    top = wav.abs().max()
    return wav * (peak / top) if float(top) > 0 else wav
