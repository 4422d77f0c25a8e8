"""SpectrogramCNN: log-mel front end + blocks of conv 3×3 → BatchNorm → activation → max-pool 2×2.

Layer names the projector addresses: ``conv1`` … ``convN``. The *feature map* of layer ``convK`` is
the output of its activation module ``model.features.actK`` (after conv, BatchNorm and the
nonlinearity, before pooling): ``(B, channels[K-1], F_K, T_K)``.

Module tree (all activations are modules, never functional calls, so backward rules can be attached)::

    frontend   LogMel                         waveform (B, C, T) → (B, 1, n_mels, frames) dB
    features   Sequential(input_norm, conv1, bn1, act1, pool1, conv2, bn2, act2, pool2, ...)
    head       Sequential(gap, flatten, dropout, fc)            → logits (B, n_classes)
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from audioconv.features import LogMel, LogMelConfig

__all__ = ["ModelConfig", "SpectrogramCNN", "ACTIVATIONS"]

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "tanh": lambda: nn.Tanh(),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`SpectrogramCNN` (saved in checkpoints)."""

    n_classes: int
    sample_rate: int = 16000
    channels: tuple[int, ...] = (32, 64, 128, 128)
    activation: str = "relu"
    dropout: float = 0.2
    frontend: dict = field(default_factory=dict)  # LogMelConfig overrides (sample_rate is taken from above)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["channels"] = tuple(d.get("channels", cls.channels))
        return cls(**d)


class SpectrogramCNN(nn.Module):
    """Log-mel CNN classifier.

    Args:
        n_classes: number of output classes (>= 2).
        sample_rate: waveform sample rate in Hz.
        channels: output channels of each conv block; one block per entry.
        activation: ``"relu"``, ``"leaky_relu"`` or ``"tanh"`` (a module after each BatchNorm).
        dropout: dropout probability before the linear head.
        frontend: overrides for :class:`~audioconv.features.LogMelConfig` (``n_mels``, ``hop_length`` ...).

    ``forward(waveform (B, C, T)) → logits (B, n_classes)`` equals
    ``classify(frontend(waveform))``; ``classify`` takes log-mel ``(B, 1, n_mels, frames)``.
    """

    def __init__(self, n_classes: int, sample_rate: int = 16000, channels=(32, 64, 128, 128),
                 activation: str = "relu", dropout: float = 0.2, frontend: dict | None = None):
        super().__init__()
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) <= 0:
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config = ModelConfig(int(n_classes), int(sample_rate), channels, activation, float(dropout),
                                  dict(frontend or {}))
        self.frontend = LogMel(LogMelConfig(**{**(frontend or {}), "sample_rate": int(sample_rate)}))

        layers: OrderedDict[str, nn.Module] = OrderedDict(input_norm=nn.BatchNorm2d(1))
        in_ch = 1
        for k, out_ch in enumerate(channels, start=1):
            layers[f"conv{k}"] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
            layers[f"bn{k}"] = nn.BatchNorm2d(out_ch)
            layers[f"act{k}"] = ACTIVATIONS[activation]()
            layers[f"pool{k}"] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
            in_ch = out_ch
        self.features = nn.Sequential(layers)
        self.head = nn.Sequential(OrderedDict(
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            dropout=nn.Dropout(dropout),
            fc=nn.Linear(in_ch, int(n_classes)),
        ))

    # ---- construction helpers -------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> "SpectrogramCNN":
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        return cls(config.n_classes, config.sample_rate, config.channels, config.activation,
                   config.dropout, config.frontend)

    @property
    def layer_names(self) -> list[str]:
        """Addressable layers, ``["conv1", ..., "convN"]``."""
        return [f"conv{k}" for k in range(1, len(self.config.channels) + 1)]

    def feature_module(self, layer: str) -> nn.Module:
        """The activation module whose output is the feature map of ``layer`` (e.g. ``"conv2"``)."""
        if layer not in self.layer_names:
            raise ValueError(f"unknown layer {layer!r}; valid layers: {', '.join(self.layer_names)}")
        return getattr(self.features, "act" + layer[len("conv"):])

    def n_channels(self, layer: str) -> int:
        """Number of channels (units) in ``layer``'s feature map."""
        self.feature_module(layer)
        return self.config.channels[int(layer[len("conv"):]) - 1]

    # ---- forward ------------------------------------------------------------------------
    def classify(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 1, n_mels, frames)`` dB → logits ``(B, n_classes)``."""
        if logmel.dim() != 4 or logmel.shape[1] != 1:
            raise ValueError(f"classify expects log-mel (batch, 1, n_mels, frames), got {tuple(logmel.shape)}")
        return self.head(self.features(logmel))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, C, T)`` or ``(B, T)`` at ``sample_rate`` Hz → logits ``(B, n_classes)``."""
        return self.classify(self.frontend(waveform))
