"""Another example of the same batch as interference: speech-like babble without a noise corpus."""
from __future__ import annotations

import torch

from .base import Augmentation, keep_padding, uniform
from .dsp import add_at_snr
from .validation import check_range

__all__ = ["BatchMix"]


class BatchMix(Augmentation):
    """Add another example of the batch, at a drawn signal-to-interference ratio, as interference.

    The example keeps its own label: the model learns to follow the louder source, as with
    babble or a second talker in the room. Per example the partner is another row of the batch
    (never itself, never one holding NaN or inf: such a partner adds nothing), circularly shifted in time by a drawn fraction of the clip, and scaled so
    that the ratio of the example's mean power to the added partner's is ``snr_db`` (over the
    example's real samples when ``lengths`` is given; padding gets nothing). A silent partner
    adds nothing. The partner is read from the batch as it is when this step runs (after the
    steps before it in a chain), and a batch of one is left unchanged.

    Args:
        snr_db (float or (min, max)): signal-to-interference ratios in dB. Default (5, 20).
        p (float): per-example probability. Default 0.5.

    Params: ``snr_db``, ``partner_pos`` (which other row, in [0, 1)), ``shift`` (time shift as a
    fraction of the clip, in [0, 1)), each ``(B,)``.
    """

    param_keys = ("snr_db", "partner_pos", "shift")

    def __init__(self, snr_db=(5.0, 20.0), p: float = 0.5):
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db, unit="dB")

    def _draw(self, batch, generator, device):
        return {"snr_db": uniform(*self.snr_db, (batch,), generator, device),
                "partner_pos": torch.rand(batch, generator=generator, device=device),
                "shift": torch.rand(batch, generator=generator, device=device)}

    @staticmethod
    def partners(params) -> torch.Tensor:
        """``(B,)`` int64: the row each example takes its interference from (never its own)."""
        batch = params["partner_pos"].shape[0]
        step = 1 + (params["partner_pos"].double() * (batch - 1)).long().clamp(max=max(batch - 2, 0))
        return (torch.arange(batch, device=step.device) + step) % max(batch, 1)

    def _apply_batch(self, x, params, lengths, inplace):
        """Not per-example (it reads other rows), so it works on the whole batch, out of place: every
        row gets its partner at a gain that is 0 where ``params["apply"]`` is false."""
        batch, channels, time = x.shape
        if batch < 2:
            return x
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        shift = (params["shift"].double() * time).long()  # (B,)
        t = (torch.arange(time, device=x.device) + shift[:, None]) % time  # (B, T)
        partner = self.partners(params)
        other = work[partner[:, None, None], torch.arange(channels, device=x.device)[None, :, None],
                     t[:, None, :]]  # (B, C, T): the partners, shifted
        finite = torch.isfinite(other).flatten(1).all(1)  # a non-finite partner would spread to its example
        other = torch.where(finite[:, None, None], other, torch.zeros((), dtype=other.dtype, device=other.device))
        y = add_at_snr(work, other, params["snr_db"], lengths, apply=params["apply"], into_other=True)
        return keep_padding(y, work, lengths).to(x.dtype)

    def describe(self, params, index):
        return f"SIR {float(params['snr_db'][index]):.1f} dB"
