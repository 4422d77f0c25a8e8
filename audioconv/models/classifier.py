"""A log-mel classifier built around any backbone: the package's LogMel front end + a module that
maps log-mel ``(B, 1, F, T)`` to logits ``(B, n_classes)``.

:class:`LogMelClassifier` is how a bring-your-own backbone (``--model package.module:factory``
returning a module that takes log-mel) gets the same front end, the same ``classify`` /
``forward`` pair and the same augmentation as the built-in models. Module tree::

    frontend   LogMel          waveform (B, C, T) → (B, 1, n_mels, frames) dB
    backbone   the user's module                 log-mel → logits (B, n_classes)

Its layers are addressed by module name (``backbone.conv1``); when the backbone has short layer
names of its own (``layer_names`` / ``feature_module`` / ``n_channels``), they are passed through.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from audioconv.features import LogMel, LogMelConfig

__all__ = ["ClassifierConfig", "LogMelClassifier", "check_logmel", "make_frontend"]


def check_logmel(logmel: torch.Tensor, where: str = "classify") -> None:
    """Raise ``ValueError`` unless ``logmel`` is a 4-D ``(batch, 1, n_mels, frames)`` tensor."""
    if logmel.dim() != 4 or logmel.shape[1] != 1:
        raise ValueError(f"{where} expects log-mel (batch, 1, n_mels, frames), got {tuple(logmel.shape)}")


def make_frontend(sample_rate: int, overrides: dict | None = None) -> LogMel:
    """The package's :class:`~audioconv.features.LogMel` at ``sample_rate`` Hz with ``overrides`` of
    :class:`~audioconv.features.LogMelConfig` (``n_mels``, ``hop_length`` ...)."""
    return LogMel(LogMelConfig(**{**(overrides or {}), "sample_rate": int(sample_rate)}))


@dataclass
class ClassifierConfig:
    """What a :class:`LogMelClassifier` records besides its backbone (saved in checkpoints)."""

    n_classes: int
    sample_rate: int = 16000
    frontend: dict = field(default_factory=dict)  # LogMelConfig overrides (sample_rate from above)

    def to_dict(self) -> dict:
        return asdict(self)


class LogMelClassifier(nn.Module):
    """Log-mel front end + a backbone taking log-mel.

    Args:
        backbone: an ``nn.Module`` mapping log-mel ``(B, 1, n_mels, frames)`` dB to logits ``(B, n_classes)``.
        n_classes: number of outputs of ``backbone``.
        sample_rate: waveform sample rate in Hz.
        frontend: overrides for :class:`~audioconv.features.LogMelConfig`.

    ``forward(waveform (B, C, T)) → logits (B, n_classes)`` equals ``classify(frontend(waveform))``.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, sample_rate: int = 16000, frontend: dict | None = None):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        self.config = ClassifierConfig(int(n_classes), int(sample_rate), dict(frontend or {}))
        self.frontend = make_frontend(sample_rate, frontend)
        self.backbone = backbone

    @property
    def layer_names(self) -> list[str]:
        """The backbone's short layer names, if it has any (else ``[]``: address layers by module name)."""
        return list(getattr(self.backbone, "layer_names", []) or [])

    def feature_module(self, layer: str) -> nn.Module:
        """The module whose output is ``layer``'s feature map (the backbone's short names only)."""
        if layer not in self.layer_names or not hasattr(self.backbone, "feature_module"):
            raise ValueError(f"unknown layer {layer!r}; this backbone's short layer names: "
                             f"{', '.join(self.layer_names) or 'none (use module names such as backbone.0)'}")
        return self.backbone.feature_module(layer)

    def n_channels(self, layer: str) -> int:
        """Channels of ``layer``'s feature map (the backbone's short names only)."""
        self.feature_module(layer)
        return int(self.backbone.n_channels(layer))

    def classify(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 1, n_mels, frames)`` dB → logits ``(B, n_classes)``."""
        check_logmel(logmel)
        return self.backbone(logmel)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, C, T)`` or ``(B, T)`` at ``sample_rate`` Hz → logits ``(B, n_classes)``."""
        return self.classify(self.frontend(waveform))
