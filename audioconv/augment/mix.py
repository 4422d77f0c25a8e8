"""Another example of the same batch as interference: speech-like babble without a noise corpus."""
from __future__ import annotations

import torch

from .base import Augmentation, keep_padding, uniform
from .dsp import add_at_snr, finite_rows
from .validation import check_range

__all__ = ["BatchMix"]


class BatchMix(Augmentation):
    """Add other examples of the batch, at a drawn signal-to-interference ratio, as interference.

    The example keeps its own label: the model learns to follow the louder source, as with
    babble or a second talker in the room. Per example each of ``talkers`` partners is another
    row of the batch (never itself, never one holding NaN or inf: such a partner adds nothing),
    circularly shifted in time by its own drawn fraction of the clip and, with ``reverse``,
    played backwards (speech-like, but no word of it is heard: babble that does not hold
    another class). The partners are summed and the sum is scaled so that the ratio of the
    example's mean power to the added sum's is ``snr_db`` (over the example's real samples when
    ``lengths`` is given; padding gets nothing). A silent sum adds nothing. The partners are
    read from the batch as it is when this step runs (after the steps before it in a chain),
    and a batch of one is left unchanged.

    Args:
        snr_db (float or (min, max)): signal-to-interference ratios in dB. Default (5, 20).
        talkers (int): partners summed per example, >= 1. Default 1 (a second talker); 3 or
            more make babble.
        reverse (bool): play the partners backwards. Default False.
        p (float): per-example probability. Default 0.5.

    Params: ``snr_db`` ``(B,)``; ``partner_pos`` (which other row, in [0, 1)) and ``shift`` (time
    shift as a fraction of the clip, in [0, 1)), ``(B,)`` with one talker, ``(B, talkers)``
    with more.
    """

    param_keys = ("snr_db", "partner_pos", "shift")

    def __init__(self, snr_db=(5.0, 20.0), talkers: int = 1, reverse: bool = False, p: float = 0.5):
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db, unit="dB")
        if isinstance(talkers, bool) or not isinstance(talkers, int) or talkers < 1:
            raise ValueError(f"talkers must be a whole number >= 1, got {talkers!r}")
        if not isinstance(reverse, bool):
            raise ValueError(f"reverse must be True or False, got {reverse!r}")
        self.talkers, self.reverse = talkers, reverse

    def _resolve(self, params):
        """A batch of one has no partner: nothing is drawn for it (``apply`` false), so that
        descriptions and replays do not name a mix that did not happen."""
        if params["apply"].shape[0] < 2:
            params["apply"] = torch.zeros_like(params["apply"])

    def _draw(self, batch, generator, device):
        shape = (batch,) if self.talkers == 1 else (batch, self.talkers)
        return {"snr_db": uniform(*self.snr_db, (batch,), generator, device),
                "partner_pos": torch.rand(shape, generator=generator, device=device),
                "shift": torch.rand(shape, generator=generator, device=device)}

    @staticmethod
    def partners(params) -> torch.Tensor:
        """int64, the shape of ``params["partner_pos"]`` (``(B,)`` or ``(B, talkers)``): the row
        each example takes each of its partners from (never its own)."""
        position = params["partner_pos"]
        batch = position.shape[0]
        step = 1 + (position.double() * (batch - 1)).long().clamp(max=max(batch - 2, 0))
        rows = torch.arange(batch, device=step.device).reshape((batch,) + (1,) * (position.dim() - 1))
        return (rows + step) % max(batch, 1)

    def _apply_batch(self, x, params, lengths, inplace):
        """Not per-example (it reads other rows), so it works on the whole batch: the selected rows
        get their partners, read from ``x`` as it is (with ``inplace``, float32/64 only, the mixed
        rows are then written back into ``x``)."""
        batch, channels, time = x.shape
        if batch < 2:
            return x
        if params["partner_pos"].shape != params["shift"].shape:
            raise ValueError(f"BatchMix params: partner_pos {tuple(params['partner_pos'].shape)} and shift "
                             f"{tuple(params['shift'].shape)} must have one shape, (B,) or (B, talkers)")
        index = params["apply"].to(torch.bool).nonzero().squeeze(1)
        if index.numel() == 0:
            return x
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        partners = self.partners(params).reshape(batch, -1).index_select(0, index)  # (N, K)
        shifts = params["shift"].reshape(batch, -1).index_select(0, index)
        y = add_at_snr(work, self._interference(work, partners, shifts), params["snr_db"], lengths, into_other=True,
                       rows=index)
        if lengths is not None:
            y = keep_padding(y, work.index_select(0, index), lengths.index_select(0, index))
        return (work.index_copy_(0, index, y) if inplace else work.index_copy(0, index, y)).to(x.dtype)

    def _interference(self, x: torch.Tensor, partners: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``(N, C, T)``: for each of the N selected examples the sum over its K partners
        (``partners``, ``shift`` ``(N, K)``) of row ``partners[n, k]`` of ``x`` ``(B, C, T)`` at
        ``out[t] = row[(t + s) % T]``, ``s = floor(shift[n, k] * T)`` (with ``reverse``:
        ``row[T - 1 - (t + s) % T]``). A row holding NaN or inf adds nothing (it would spread to
        its example). Each partner is a window of the row written twice over: whole-row copies
        (advanced indexing per sample took 4-7x as long on the CPU)."""
        time = x.shape[-1]
        source = x.flip(-1) if self.reverse else x
        windows = torch.cat([source, source], dim=-1).unfold(-1, time, 1)  # (B, C, T + 1, T): a view
        starts = (shift.double() * time).long() % time  # a shift edited to outside [0, 1) wraps around
        channels = torch.arange(x.shape[1], device=x.device)[None, :]
        finite = finite_rows(x)
        finite = None if bool(finite.all()) else finite
        other = None
        for partner, start in zip(partners.unbind(1), starts.unbind(1)):
            one = windows[partner[:, None], channels, start[:, None]]  # (N, C, T)
            if finite is not None:
                one = torch.where(finite[partner][:, None, None], one, torch.zeros((), dtype=one.dtype,
                                                                                   device=one.device))
            other = one if other is None else other.add_(one)
        return other

    def describe(self, params, index):
        talkers = "" if self.talkers == 1 else f", {self.talkers} talkers"
        return f"SIR {float(params['snr_db'][index]):.1f} dB{talkers}{', reversed' if self.reverse else ''}"
