"""Factories for the bring-your-own-model tests (``--model _byo_models:NAME``; tests/ is on sys.path)."""
from torch import nn

from audioconv.features import LogMel, LogMelConfig

NOT_CALLABLE = 3


def backbone(n_classes, sample_rate):
    """A backbone on log-mel (B, 1, F, T): two blocks of conv → BN → ReLU → max-pool, then mean → linear."""
    return nn.Sequential(nn.BatchNorm2d(1),
                         nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, n_classes))


class Full(nn.Module):
    """A full model: its own LogMel front end (32 mel bins) and a classify(logmel) method."""

    def __init__(self, n_classes, sample_rate, width=1.0, n_mels=32, frontend_type=LogMel):
        super().__init__()
        self.frontend = frontend_type(LogMelConfig(sample_rate=sample_rate, n_mels=n_mels))
        c = max(1, int(round(8 * width)))
        self.body = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))

    def classify(self, logmel):
        return self.body(logmel)

    def forward(self, waveform):
        return self.classify(self.frontend(waveform))


def full(n_classes, sample_rate, width=1.0):
    return Full(n_classes, sample_rate, width)


def full_at_16k(n_classes, sample_rate):
    return Full(n_classes, 16000)


class NotLogMel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, x):
        return x


def full_other_frontend(n_classes, sample_rate):
    return Full(n_classes, sample_rate, frontend_type=NotLogMel)


def raises(n_classes, sample_rate):
    raise ValueError("boom: no such size")


def wrong_shape(n_classes, sample_rate):
    return backbone(n_classes + 1, sample_rate)


def not_a_module(n_classes, sample_rate):
    return 3


def no_sample_rate(n_classes):
    return backbone(n_classes, 16000)


def fails_forward(n_classes, sample_rate):
    return nn.Sequential(nn.Flatten(), nn.Linear(7, n_classes))


class Namespace:
    @staticmethod
    def create(n_classes, sample_rate):
        return backbone(n_classes, sample_rate)



class _ResBlock(nn.Module):
    """conv → BN → ReLU module (``act``), then a functional residual addition and ReLU (``:add``, ``:relu``)."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x):
        import torch.nn.functional as F

        return F.relu(self.act(self.bn(self.conv(x))) + x)


class ResBackbone(nn.Module):
    """A backbone on log-mel without short layer names: stem, ``layer1``, pooling, ``layer2``, mean → linear."""

    def __init__(self, n_classes, c=6):
        super().__init__()
        self.stem = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, c, 3, padding=1))
        self.layer1, self.layer2 = _ResBlock(c), _ResBlock(c)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        import torch.nn.functional as F

        x = F.max_pool2d(self.layer1(self.stem(x)), 2)
        return self.fc(self.layer2(x).mean((2, 3)))


def resnet(n_classes, sample_rate):
    return ResBackbone(n_classes)


class SigmoidBackbone(nn.Module):
    """conv → ReLU, plus a sigmoid of it (a saturating function: no deconv/guided rule), then mean → linear."""

    def __init__(self, n_classes, c=4):
        super().__init__()
        self.conv, self.act, self.gate = nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 1)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        import torch

        y = self.act(self.conv(x / 40.0))
        y = torch.sigmoid(self.gate(y)) + y
        return self.fc(y.mean((2, 3)))


def sigmoid(n_classes, sample_rate):
    return SigmoidBackbone(n_classes)


class FlatBackbone(nn.Module):
    """No feature maps at all: the mean over time of 16 mel bins, then linear."""

    def __init__(self, n_classes):
        super().__init__()
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc(x.mean(3).flatten(1))


def flat(n_classes, sample_rate):
    return FlatBackbone(n_classes)


def flathead(n_classes, sample_rate):
    """A head over the flattened feature map: it takes only the 40 bands and 1-s clips (at 8 kHz,
    51 frames) it was built for, as a network trained by `audioconv train` with its defaults."""
    return nn.Sequential(nn.Conv2d(1, 2, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 10 * 12, n_classes))
