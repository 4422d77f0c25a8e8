"""Polarity (phase) inversion."""
from __future__ import annotations

import torch

from .base import Augmentation

__all__ = ["PolarityInversion"]


class PolarityInversion(Augmentation):
    """Multiply the waveform by -1 (exactly), per example with probability ``p``.

    A magnitude front end — |STFT|, power or log-mel spectrogram, MFCC — cannot see this: the
    short-time spectrum of ``-x`` is ``-X``, whose magnitude is that of ``X``. It only changes
    what a model that reads the waveform (or the phase) sees, so it is an augmentation for
    waveform models and a no-op, apart from its cost, for log-mel CNNs.

    Args:
        p (float): per-example probability. Default 0.5.

    Params: only ``apply``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def _scale(self, params):
        return torch.full(params["apply"].shape, -1.0, device=params["apply"].device)
