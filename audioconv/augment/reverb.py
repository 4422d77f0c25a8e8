"""Reverberation by FFT convolution with a synthetic or recorded room impulse response (RIR)."""
from __future__ import annotations

import math

import torch

from .clips import ClipBank, ClipSource
from .base import Augmentation, uniform
from .dsp import NOISE_BANK_SAMPLES, circular_windows, fft_convolve, gain_to_power, mean_power, shared_noise_bank
from .validation import check_range, check_sample_rate

__all__ = ["Reverb", "synthetic_rir", "shape_rir", "direct_path"]

LN_1000 = 3 * math.log(10)  # amplitude decays by 1000 (energy by 60 dB) over one RT60
RIR_NOISE_SEED = 60


def _decay(rt60_s: torch.Tensor, length: int, sample_rate: int, block: int = 128) -> torch.Tensor:
    """``exp(-ln(1000) t / rt60_s)`` at ``t = 0 .. length - 1`` samples, ``(B, length)``: the product
    of a per-block and a within-block exponential, so only ``~2 sqrt(length)`` exponentials are
    taken per example instead of ``length``."""
    rate = (LN_1000 / sample_rate) / rt60_s[:, None]  # (B, 1) per sample
    steps = torch.arange(block, device=rt60_s.device, dtype=rt60_s.dtype)
    blocks = torch.arange(-(-length // block), device=rt60_s.device, dtype=rt60_s.dtype) * block
    envelope = torch.exp(-rate * blocks)[:, :, None] * torch.exp(-rate * steps)[:, None, :]
    return envelope.reshape(rt60_s.shape[0], -1)[:, :length]


def shape_rir(noise: torch.Tensor, rt60_s: torch.Tensor, sample_rate: int,
              drr_db: torch.Tensor | None = None) -> torch.Tensor:
    """Turn noise into room impulse responses: exponential decay and a direct path.

    Args:
        noise (Tensor): ``(B, L)`` white noise.
        rt60_s (Tensor): ``(B,)`` reverberation time in seconds: the energy envelope falls by
            60 dB over ``rt60_s``.
        sample_rate (int): Hz.
        drr_db (Tensor or None): ``(B,)`` direct-to-reverberant energy ratio in dB; sample 0 is
            replaced by a direct-path impulse with that much more energy than the rest. ``None``
            keeps the plain decaying noise.

    Returns:
        ``(B, L)`` (not normalised).
    """
    rir = noise * _decay(rt60_s.to(noise), noise.shape[-1], sample_rate)
    if drr_db is not None:
        tail = torch.linalg.vector_norm(rir[:, 1:], dim=-1).square()
        rir[:, 0] = (tail * 10.0 ** (drr_db.to(noise) / 10)).sqrt()
    return rir


def synthetic_rir(rt60_s: float | torch.Tensor, sample_rate: int, drr_db: float | torch.Tensor | None = None,
                  generator: torch.Generator | None = None, length_s: float | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Synthetic room impulse response: Gaussian noise under an exponential decay.

    Args:
        rt60_s (float or Tensor): reverberation time in seconds (> 0), a number or ``(B,)``.
        sample_rate (int): Hz.
        drr_db (float, Tensor or None): direct-to-reverberant ratio in dB (see ``shape_rir``);
            ``None`` (default) gives pure decaying noise.
        generator (torch.Generator or None): source of the noise (drawn on its device).
        length_s (float or None): length in seconds; default the largest ``rt60_s`` (where the
            envelope is 60 dB down).
        device, dtype: of the result (default: the generator's device, float32).

    Returns:
        ``(L,)`` for a number ``rt60_s``, ``(B, L)`` for a tensor; peak magnitude 1.
    """
    sample_rate = check_sample_rate(sample_rate)
    rt60 = torch.as_tensor(rt60_s, dtype=torch.float64)
    if rt60.dim() > 1 or rt60.numel() == 0 or not torch.isfinite(rt60).all() or (rt60 <= 0).any():
        raise ValueError(f"rt60_s must be a positive number or a 1-D tensor of them (seconds), got {rt60_s!r}")
    if length_s is not None and not length_s > 0:
        raise ValueError(f"length_s must be > 0 seconds, got {length_s!r}")
    batch = rt60.reshape(-1)
    length = max(1, math.ceil((length_s or float(batch.max())) * sample_rate))
    gdev = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(batch.shape[0], length, generator=generator, device=gdev, dtype=torch.float64)
    drr = None if drr_db is None else torch.as_tensor(drr_db, dtype=torch.float64).expand(batch.shape[0])
    rir = shape_rir(noise, batch.to(gdev), sample_rate, None if drr is None else drr.to(gdev))
    rir = (rir / rir.abs().amax(-1, keepdim=True)).to(device=device or gdev, dtype=dtype)
    return rir[0] if rt60.dim() == 0 else rir


def direct_path(rir: torch.Tensor) -> torch.Tensor:
    """Index of the direct path of each impulse response ``(B, L)`` → ``(B,)`` int64: the first tap
    whose magnitude reaches half the largest one. (In a room the largest tap is not always the direct
    sound: several reflections can arrive together, and a fractional delay splits a tap in two.)"""
    magnitude = rir.abs()
    return (magnitude >= 0.5 * magnitude.amax(-1, keepdim=True)).to(torch.uint8).argmax(-1)


class Reverb(Augmentation):
    """Convolve each example with a room impulse response, keeping its timing and level.

    Synthetic RIRs (``shape_rir`` of noise) get an RT60 drawn evenly in ``rt60_s`` and a
    direct-to-reverberant ratio evenly in ``drr_db``; their noise is a window of a fixed noise
    bank at a drawn position, so the parameters replay exactly on any device. With ``rirs`` each
    example gets a recorded RIR drawn from the bank instead (decoded once, cached per device).

    The convolution runs by FFT at a fast length. The output is taken from the RIR's
    direct path on (:func:`direct_path`: its first tap of at least half the largest magnitude),
    so an impulse at sample ``t`` stays at ``t``
    and labels keep their timing; it has the input's length and, per example, the input's RMS
    (over the real samples when ``lengths`` is given).

    Args:
        sample_rate (int): Hz.
        rt60_s ((min, max)): reverberation times in seconds (> 0). Default (0.2, 1.0).
        drr_db ((min, max) or None): direct-to-reverberant ratios in dB. Default (0, 12);
            ``None`` leaves the RIR as plain decaying noise.
        rirs: recorded RIRs — a tensor ``(L,)`` / ``(N, L)``, a list of tensors or audio paths, a
            folder, or a ``.jsonl`` manifest; ``None`` (default) uses synthetic RIRs.
        p (float): per-example probability. Default 0.5.

    Params: synthetic — ``rt60_s``, ``drr_db`` (if used), ``noise_pos`` (position in the
    noise bank, in [0, 1)), each ``(B,)``; recorded — ``rir_index`` ``(B,)`` int64.
    """

    def __init__(self, sample_rate: int, rt60_s=(0.2, 1.0), drr_db=(0.0, 12.0),
                 rirs: ClipSource | None = None, p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.rt60_s = check_range("rt60_s", rt60_s, low=0.0, low_inclusive=False, unit="s")
        self.drr_db = None if drr_db is None else check_range("drr_db", drr_db, unit="dB")
        self.rirs = rirs
        self._bank = None if rirs is None else ClipBank(rirs, self.sample_rate, "rirs")
        if self._bank is not None:
            self.param_keys = ("rir_index",)
        else:
            self.param_keys = ("rt60_s", "noise_pos") + (("drr_db",) if self.drr_db is not None else ())

    def _draw(self, batch, generator, device):
        if self._bank is not None:
            return {"rir_index": torch.randint(len(self._bank), (batch,), generator=generator, device=device)}
        params = {"rt60_s": uniform(*self.rt60_s, (batch,), generator, device)}
        if self.drr_db is not None:
            params["drr_db"] = uniform(*self.drr_db, (batch,), generator, device)
        params["noise_pos"] = torch.rand(batch, generator=generator, device=device)
        return params

    def rirs_for(self, params, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The impulse responses ``(B, L)`` that ``params`` (on the target device) describe."""
        if self._bank is not None:
            return self._bank.padded(params["rir_index"], dtype)[0]
        device = params["rt60_s"].device
        length = max(1, math.ceil(self.rt60_s[1] * self.sample_rate))
        start = (params["noise_pos"].double() * NOISE_BANK_SAMPLES).long()
        noise = circular_windows(shared_noise_bank(0.0, RIR_NOISE_SEED, device, dtype), start, length,
                                 period=NOISE_BANK_SAMPLES)
        return shape_rir(noise, params["rt60_s"], self.sample_rate, params.get("drr_db"))

    def _transform(self, x, params, lengths):
        channels, time = x.shape[1:]
        rir = self.rirs_for(params, x.dtype)
        if self._bank is None and self.drr_db is not None and self.drr_db[0] >= 0:
            latest = 0  # the direct path outweighs the whole tail, so sample 0 is the peak
        else:
            peak = direct_path(rir)  # (N,)
            latest = int(peak.max())  # one sync on CUDA

        def finish(wet, dry, start, stop):  # wet (n, C, latest + T): align to the direct path, keep the RMS
            if latest:
                shift = (peak[start:stop, None] + torch.arange(time, device=x.device)).expand(channels, -1, -1)
                wet = torch.gather(wet, -1, shift.transpose(0, 1))
            part = None if lengths is None else lengths[start:stop]
            gain = gain_to_power(mean_power(dry, part), mean_power(wet, part))[:, None, None]
            return wet * gain if wet.requires_grad else wet.mul_(gain)  # (autograd keeps wet for the power)

        return fft_convolve(x, rir[:, None, :], keep=latest + time, finish=finish)

    def describe(self, params, index):
        if "rir_index" in params:
            return f"RIR {int(params['rir_index'][index])}"
        return f"RT60 {float(params['rt60_s'][index]):.2f} s"
