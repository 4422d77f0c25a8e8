"""SpecAugment masks (Park et al., 2019) on log-mel batches, drawn per example from a torch.Generator.

Frequency masks blank ``f ~ U{0..freq_mask_bins}`` consecutive mel bins starting at
``f0 ~ U{0..F-f}``; time masks blank ``t ~ U{0..time_mask_frames}`` consecutive frames starting at
``t0 ~ U{0..T-t}``. Each example draws its own masks. Masked cells are set to the example's own
mean log-mel value (dB), so a mask carries no energy information and does not create outliers
that the model's input normalisation would have to absorb. (Time warping is not implemented.)

Optionally, before the masks, a vocal-tract-length-style frequency warp (VTLP, Jaitly & Hinton,
2013): each example draws ``alpha ~ U[1 - freq_warp, 1 + freq_warp]`` and its spectrum is
scaled along linear frequency, ``S'(f) = S(f / alpha)``, so formants and harmonics move by the
factor ``alpha`` (a longer or shorter vocal tract, a higher or lower voice). On the mel rows this
reads row ``k`` from the input at ``mel_hz[k] / alpha``, interpolated linearly in dB between the
neighbouring rows (the edge rows repeat beyond the ends).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpecAugment"]


class SpecAugment(nn.Module):
    """Per-example frequency and time masks on a log-mel batch ``(B, 1, F, T)``.

    Args:
        freq_mask_bins: largest width of one frequency mask, in mel bins (>= 0).
        time_mask_frames: largest width of one time mask, in frames (>= 0).
        n_freq_masks: frequency masks per example.
        n_time_masks: time masks per example.
        p: probability that an example is masked (and warped) at all.
        freq_warp: largest relative frequency warp, in [0, 0.5); 0 (default) turns it off.
        mel_hz: ``(F,)`` centre frequency in Hz of each mel row, increasing
            (``LogMel.mel_hz()``); needed when ``freq_warp > 0``.

    ``forward(spec, generator)`` = ``apply(spec, sample(B, F, T, generator, device))``. The draw is a dict
    of integer tensors ``freq_start, freq_width (B, n_freq_masks)``, ``time_start, time_width
    (B, n_time_masks)`` and, with a warp, float ``warp (B,)`` (alpha; 1 = none), that can be logged
    and replayed.
    """

    def __init__(self, freq_mask_bins: int = 8, time_mask_frames: int = 10, n_freq_masks: int = 2,
                 n_time_masks: int = 2, p: float = 1.0, freq_warp: float = 0.0, mel_hz=None):
        super().__init__()
        if not 0.0 <= freq_warp < 0.5:
            raise ValueError(f"freq_warp must be in [0, 0.5), got {freq_warp!r}")
        self.freq_warp = float(freq_warp)
        self.mel_hz = None
        if mel_hz is not None:
            self.mel_hz = torch.as_tensor(mel_hz, dtype=torch.float64).flatten()
            if self.mel_hz.numel() < 2 or not bool((self.mel_hz.diff() > 0).all()):
                raise ValueError("mel_hz must hold at least 2 increasing frequencies (Hz), one per mel row")
        elif self.freq_warp > 0:
            raise ValueError("freq_warp > 0 needs mel_hz, the centre frequency (Hz) of each mel row "
                             "(LogMel.mel_hz())")
        for name, v in (("freq_mask_bins", freq_mask_bins), ("time_mask_frames", time_mask_frames),
                        ("n_freq_masks", n_freq_masks), ("n_time_masks", n_time_masks)):
            if int(v) != v or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.freq_mask_bins = int(freq_mask_bins)
        self.time_mask_frames = int(time_mask_frames)
        self.n_freq_masks = int(n_freq_masks)
        self.n_time_masks = int(n_time_masks)
        self.p = float(p)

    def extra_repr(self) -> str:
        return (f"freq_mask_bins={self.freq_mask_bins}, time_mask_frames={self.time_mask_frames}, "
                f"n_freq_masks={self.n_freq_masks}, n_time_masks={self.n_time_masks}, p={self.p}, "
                f"freq_warp={self.freq_warp}")

    def to_dict(self) -> dict:
        return dict(freq_mask_bins=self.freq_mask_bins, time_mask_frames=self.time_mask_frames,
                    n_freq_masks=self.n_freq_masks, n_time_masks=self.n_time_masks, p=self.p,
                    freq_warp=self.freq_warp)

    @staticmethod
    def _draw(batch: int, n: int, max_width: int, size: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Widths in 0..min(max_width, size) and starts in 0..size-width, both ``(batch, n)`` int64."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(2, batch, n, generator=generator, device=gen_device, dtype=torch.float64).to(device)
        width = torch.floor(u[0] * (min(max_width, size) + 1)).long()
        start = torch.floor(u[1] * (size - width + 1).double()).long()
        return start, width

    def sample(self, batch: int, n_mels: int, n_frames: int, generator: torch.Generator | None = None,
               device=None) -> dict[str, torch.Tensor]:
        """Draw masks for ``batch`` examples of ``n_mels`` x ``n_frames``; see the class docstring."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        fs, fw = self._draw(batch, self.n_freq_masks, self.freq_mask_bins, n_mels, generator, device)
        ts, tw = self._draw(batch, self.n_time_masks, self.time_mask_frames, n_frames, generator, device)
        on = torch.rand(batch, generator=generator, device=gen_device).to(device) < self.p
        params = {"freq_start": fs, "freq_width": fw * on[:, None], "time_start": ts, "time_width": tw * on[:, None]}
        if self.freq_warp > 0:  # drawn last, so the masks are the same draws as without a warp
            u = torch.rand(batch, generator=generator, device=gen_device).to(device)
            params["warp"] = torch.where(on, 1.0 + self.freq_warp * (2 * u - 1), torch.ones_like(u))
        return params

    def warp(self, spec: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``spec`` ``(B, 1, F, T)`` with each example's frequency axis scaled by ``alpha`` ``(B,)``
        (see the module docstring); ``alpha = 1`` returns the rows unchanged."""
        if self.mel_hz is None or self.mel_hz.numel() != spec.shape[2]:
            raise ValueError(f"warping needs mel_hz with one frequency per mel row ({spec.shape[2]}), "
                             f"got {None if self.mel_hz is None else self.mel_hz.numel()}")
        b, _, f, t = spec.shape
        hz = self.mel_hz.to(spec.device)
        source = (hz[None, :] / alpha.to(spec.device, torch.float64)[:, None]).contiguous()  # (B, F) Hz to read
        upper = torch.searchsorted(hz, source).clamp(1, f - 1)
        lower = upper - 1
        frac = ((source - hz[lower]) / (hz[upper] - hz[lower])).clamp(0.0, 1.0).to(spec.dtype)
        rows = (lower[:, None, :, None].expand(b, 1, f, t), upper[:, None, :, None].expand(b, 1, f, t))
        low, high = spec.gather(2, rows[0]), spec.gather(2, rows[1])
        return torch.lerp(low, high, frac[:, None, :, None])

    @staticmethod
    def _band(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
        """Union of intervals ``[start, start+width)`` per example → bool ``(B, size)``."""
        pos = torch.arange(size, device=start.device)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, n, size)
        return inside.any(dim=1)

    def apply(self, spec: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mask ``spec`` ``(B, 1, F, T)`` with drawn ``params``; returns a new tensor, same shape/dtype/device."""
        if spec.dim() != 4:
            raise ValueError(f"SpecAugment expects (batch, 1, n_mels, frames), got {tuple(spec.shape)}")
        _, _, f, t = spec.shape
        if "warp" in params:
            spec = self.warp(spec, params["warp"])
        freq = self._band(params["freq_start"], params["freq_width"], f)  # (B, F)
        time = self._band(params["time_start"], params["time_width"], t)  # (B, T)
        mask = (freq[:, None, :, None] | time[:, None, None, :])  # (B, 1, F, T)
        fill = spec.mean(dim=(1, 2, 3), keepdim=True).expand_as(spec)
        return torch.where(mask, fill, spec)

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if spec.dim() != 4:
            raise ValueError(f"SpecAugment expects (batch, 1, n_mels, frames), got {tuple(spec.shape)}")
        b, _, f, t = spec.shape
        return self.apply(spec, self.sample(b, f, t, generator=generator, device=spec.device))
