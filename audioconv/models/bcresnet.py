"""BCResNet: broadcasted residual learning on log-mel spectrograms (after Kim et al., "Broadcasted
Residual Learning for Efficient Keyword Spotting", Interspeech 2021).

A broadcasted residual block keeps a 2-D feature map ``(B, C, F, T)`` but does most of its work in
1-D: a frequency-wise depthwise convolution (kernel 3 × 1) with sub-spectral normalisation looks
along frequency; the result is averaged over frequency to a temporal feature ``(B, C, 1, T)``, which
goes through a temporal depthwise convolution (kernel 1 × 3, dilated), BatchNorm, SiLU (Swish), a
pointwise convolution and channel dropout, and is then broadcast back over frequency and added::

    normal block      y = relu(x + f2(x) + broadcast(f1(mean_F(f2(x)))))
    transition block  x' = relu(bn(conv1x1(x)));   y = relu(f2(x') + broadcast(f1(mean_F(f2(x')))))

A transition block opens each stage: it changes the channel count (and, in stages 2 and 3, halves
the frequency rows with a stride-2 frequency convolution). Sizes (``base = 8 · width`` channels):

=========  ============================  ======  ============  =================
part       operator                      blocks  channels      stride F / dil. T
=========  ============================  ======  ============  =================
stem       BatchNorm(1), conv 5×5, BN,   —       2 · base      2 / —
           ReLU
stage1     BC-ResBlocks                  2       1 · base      1 / 1
stage2     BC-ResBlocks                  2       1.5 · base    2 / 2
stage3     BC-ResBlocks                  4       2 · base      2 / 4
stage4     BC-ResBlocks                  4       2.5 · base    1 / 8
head       depthwise conv 5×5 (no        —       4 · base      —
           padding in F), conv 1×1, BN,
           ReLU, global average, linear
=========  ============================  ======  ============  =================

``width`` 1 has about 9.3k parameters and width 8 about 320k (12 classes, 40 mel bins; the paper
reports 9.2k and 321k). Sub-spectral normalisation uses ``sub_bands`` (default 5) bands where a
block's frequency rows divide by it, else the largest divisor of the rows below it
(:func:`sub_bands_for`: 40 mel bins → 20/10/5 rows → 5 bands; 64 → 32/16/8 rows → 4 bands).

Every operation between modules is an addition, a frequency mean (``nn.AdaptiveAvgPool2d((1, None))``)
or a broadcast; activations, pools and norms are modules. Layer names: the module paths
(``blocks.3.freq_conv``, ``blocks.3.temporal.act`` ...) and the short names ``stem``, ``stage1`` …
``stage4``, ``head`` — the output of the ReLU that ends that part (``stem.act``, the last block's
``act`` in a stage, ``head.act``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from audioconv.models.classifier import check_logmel, make_frontend

__all__ = ["BCResNetConfig", "BCResNet", "BCResBlock", "SubSpectralNorm", "sub_bands_for", "STAGES"]

# (channels as a multiple of base, blocks, frequency stride of the first block, temporal dilation)
STAGES = ((1.0, 2, 1, 1), (1.5, 2, 2, 2), (2.0, 4, 2, 4), (2.5, 4, 1, 8))
STEM_CHANNELS, HEAD_CHANNELS, BASE_CHANNELS = 2.0, 4.0, 8


class SubSpectralNorm(nn.Module):
    """BatchNorm applied to ``sub_bands`` frequency sub-bands separately (Chang et al., 2021).

    The ``F`` rows of a ``(B, C, F, T)`` input are cut into ``sub_bands`` contiguous bands of
    ``F / sub_bands`` rows; channel ``c`` of band ``s`` gets its own statistics (over the batch, the
    band's rows and time), running statistics and scale and shift. It runs as one
    ``nn.BatchNorm2d(C · sub_bands)`` (``bn``) on the input viewed as ``(B, C · S, F / S, T)``, so
    parameter ``c · S + s`` belongs to channel ``c``, band ``s``. In eval mode it is an affine map
    per (channel, band): :meth:`affine`.

    Args:
        channels: ``C``.
        sub_bands: number of bands ``S``; ``F`` must be a multiple of it.
        eps, momentum: as :class:`torch.nn.BatchNorm2d`.
    """

    def __init__(self, channels: int, sub_bands: int = 5, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if int(sub_bands) < 1 or int(channels) < 1:
            raise ValueError(f"SubSpectralNorm needs channels >= 1 and sub_bands >= 1, got {channels}, {sub_bands}")
        self.channels, self.sub_bands = int(channels), int(sub_bands)
        self.bn = nn.BatchNorm2d(self.channels * self.sub_bands, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, T)`` → same shape, each (channel, band) normalised on its own."""
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[2] % self.sub_bands:
            raise ValueError(f"SubSpectralNorm({self.channels} channels, {self.sub_bands} sub-bands) needs (batch, "
                             f"{self.channels}, a multiple of {self.sub_bands} rows, time), got {tuple(x.shape)}")
        b, c, f, t = x.shape
        return self.bn(x.reshape(b, c * self.sub_bands, f // self.sub_bands, t)).reshape(b, c, f, t)

    def affine(self, n_freq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval mode as ``y = scale · x + shift``: ``scale``, ``shift`` of shape ``(C, n_freq)``
        from the running statistics."""
        if n_freq % self.sub_bands:
            raise ValueError(f"n_freq={n_freq} is not a multiple of sub_bands={self.sub_bands}")
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        rows = n_freq // self.sub_bands  # band s = rows s·rows ... (s+1)·rows − 1; parameter c·S + s
        return tuple(v.reshape(self.channels, self.sub_bands, 1).expand(-1, -1, rows).reshape(self.channels, n_freq)
                     for v in (scale, shift))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, sub_bands={self.sub_bands}"


def sub_bands_for(n_freq: int, sub_bands: int) -> int:
    """The bands a block with ``n_freq`` rows uses: the largest divisor of ``n_freq`` not above
    ``sub_bands`` (5 bands for 40 mel bins, 4 for 64, as 20/10/5 and 32/16/8 rows divide)."""
    return max(d for d in range(1, min(int(sub_bands), int(n_freq)) + 1) if n_freq % d == 0)


class BCResBlock(nn.Module):
    """One broadcasted residual block (module docstring), ``(B, C_in, F, T) → (B, C_out, F', T)``.

    Args:
        in_channels, out_channels: channels in and out.
        sub_bands: sub-spectral normalisation bands.
        transition: a transition block (1×1 conv + BN + ReLU first, no identity shortcut); needed
            when the channels or the frequency stride change.
        freq_stride: stride of the frequency convolution (``F' = ceil(F / freq_stride)``).
        dilation: dilation of the temporal convolution, in frames.
        dropout: channel dropout (``nn.Dropout2d``) on the temporal feature.

    Submodules: ``transition`` (``conv``, ``bn``, ``act``; transition blocks only), ``freq_conv``,
    ``freq_norm`` (:class:`SubSpectralNorm`), ``freq_pool`` (mean over frequency), ``temporal``
    (``conv``, ``bn``, ``act`` (SiLU), ``pwconv``, ``dropout``), ``act`` (the ReLU after the sum).
    """

    def __init__(self, in_channels: int, out_channels: int, sub_bands: int = 5, transition: bool = False,
                 freq_stride: int = 1, dilation: int = 1, dropout: float = 0.1):
        super().__init__()
        if not transition and (in_channels != out_channels or freq_stride != 1):
            raise ValueError(f"a block that changes channels ({in_channels} → {out_channels}) or strides "
                             f"({freq_stride}) must be a transition block")
        c = out_channels
        self.transition = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, c, 1, bias=False), bn=nn.BatchNorm2d(c), act=nn.ReLU(),
        )) if transition else None
        self.freq_conv = nn.Conv2d(c, c, (3, 1), stride=(freq_stride, 1), padding=(1, 0), groups=c, bias=False)
        self.freq_norm = SubSpectralNorm(c, sub_bands)
        self.freq_pool = nn.AdaptiveAvgPool2d((1, None))
        self.temporal = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(c, c, (1, 3), padding=(0, dilation), dilation=(1, dilation), groups=c, bias=False),
            bn=nn.BatchNorm2d(c),
            act=nn.SiLU(),
            pwconv=nn.Conv2d(c, c, 1, bias=False),
            dropout=nn.Dropout2d(dropout),
        ))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = None
        if self.transition is not None:
            x = self.transition(x)
        else:
            shortcut = x
        spectral = self.freq_norm(self.freq_conv(x))  # (B, C, F', T)
        out = spectral + self.temporal(self.freq_pool(spectral))  # (B, C, 1, T) broadcast over F'
        if shortcut is not None:
            out = out + shortcut
        return self.act(out)


@dataclass
class BCResNetConfig:
    """Everything needed to rebuild a :class:`BCResNet` (saved in checkpoints)."""

    n_classes: int
    sample_rate: int = 16000
    width: float = 1.0
    sub_bands: int = 5
    dropout: float = 0.1
    frontend: dict = field(default_factory=dict)  # LogMelConfig overrides (sample_rate is taken from above)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BCResNetConfig":
        return cls(**d)


def _channels(width: float, factor: float) -> int:
    return max(1, int(round(BASE_CHANNELS * width * factor)))


class BCResNet(nn.Module):
    """Log-mel BC-ResNet classifier (module docstring).

    Args:
        n_classes: number of output classes (>= 2).
        sample_rate: waveform sample rate in Hz.
        width: channel multiplier τ of BC-ResNet-τ (1 → ~9k parameters, 8 → ~320k).
        sub_bands: sub-spectral normalisation bands (5 in the paper).
        dropout: channel dropout on each block's temporal feature.
        frontend: overrides for :class:`~audioconv.features.LogMelConfig` (``n_mels`` ...).

    ``forward(waveform (B, C, T)) → logits (B, n_classes)`` equals ``classify(frontend(waveform))``;
    ``classify`` takes log-mel ``(B, 1, n_mels, frames)``.
    """

    def __init__(self, n_classes: int, sample_rate: int = 16000, width: float = 1.0, sub_bands: int = 5,
                 dropout: float = 0.1, frontend: dict | None = None):
        super().__init__()
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if not (isinstance(width, (int, float)) and 0 < width < float("inf")):
            raise ValueError(f"width must be a positive number, got {width!r}")
        if int(sub_bands) < 1:
            raise ValueError(f"sub_bands must be >= 1, got {sub_bands}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config = BCResNetConfig(int(n_classes), int(sample_rate), float(width), int(sub_bands), float(dropout),
                                     dict(frontend or {}))
        self.frontend = make_frontend(sample_rate, frontend)
        n_freq = -(-self.frontend.config.n_mels // 2)  # rows after the stem's stride-2 conv
        stem = _channels(width, STEM_CHANNELS)
        self.stem = nn.Sequential(OrderedDict(
            input_norm=nn.BatchNorm2d(1),
            conv=nn.Conv2d(1, stem, 5, stride=(2, 1), padding=2, bias=False),
            bn=nn.BatchNorm2d(stem),
            act=nn.ReLU(),
        ))
        blocks, in_ch, self._stage_ends = [], stem, []
        for factor, n_blocks, stride, dilation in STAGES:
            out_ch = _channels(width, factor)
            for i in range(n_blocks):
                n_freq = (n_freq - 1) // (stride if i == 0 else 1) + 1
                blocks.append(BCResBlock(in_ch, out_ch, sub_bands_for(n_freq, sub_bands), transition=i == 0,
                                         freq_stride=stride if i == 0 else 1, dilation=dilation, dropout=dropout))
                in_ch = out_ch
            self._stage_ends.append(len(blocks) - 1)
        self.blocks = nn.Sequential(*blocks)
        head = _channels(width, HEAD_CHANNELS)
        k_freq = min(5, n_freq)
        self.head = nn.Sequential(OrderedDict(
            dwconv=nn.Conv2d(in_ch, in_ch, (k_freq, 5), padding=(0, 2), groups=in_ch, bias=False),
            pwconv=nn.Conv2d(in_ch, head, 1, bias=False),
            bn=nn.BatchNorm2d(head),
            act=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(head, int(n_classes)),
        ))

    @classmethod
    def from_config(cls, config: BCResNetConfig | dict) -> "BCResNet":
        if isinstance(config, dict):
            config = BCResNetConfig.from_dict(config)
        return cls(config.n_classes, config.sample_rate, config.width, config.sub_bands, config.dropout,
                   config.frontend)

    # ---- layer names ----------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Short layer names: ``["stem", "stage1", ..., "stage4", "head"]``."""
        return ["stem"] + [f"stage{k}" for k in range(1, len(STAGES) + 1)] + ["head"]

    def feature_module(self, layer: str) -> nn.Module:
        """The ReLU module whose output is the feature map of ``layer`` (``"stage2"`` → ``blocks.3.act``)."""
        if layer == "stem":
            return self.stem.act
        if layer == "head":
            return self.head.act
        if layer in self.layer_names:
            return self.blocks[self._stage_ends[int(layer[len("stage"):]) - 1]].act
        raise ValueError(f"unknown layer {layer!r}; valid layers: {', '.join(self.layer_names)} "
                         f"(or a module name such as blocks.3.freq_conv)")

    def n_channels(self, layer: str) -> int:
        """Number of channels (units) in ``layer``'s feature map."""
        self.feature_module(layer)
        if layer == "stem":
            return self.stem.conv.out_channels
        if layer == "head":
            return self.head.pwconv.out_channels
        return _channels(self.config.width, STAGES[int(layer[len("stage"):]) - 1][0])

    # ---- forward ------------------------------------------------------------------------
    def classify(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 1, n_mels, frames)`` dB → logits ``(B, n_classes)``."""
        check_logmel(logmel)
        return self.head(self.blocks(self.stem(logmel)))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, C, T)`` or ``(B, T)`` at ``sample_rate`` Hz → logits ``(B, n_classes)``."""
        return self.classify(self.frontend(waveform))
