"""A tiny SpectrogramCNN at 8 kHz for viz tests: non-trivial eval-mode statistics, so that units
are active and projections are not all zero."""
import torch

from audioconv.models.spectrogram_cnn import SpectrogramCNN

SR = 8000
FRONTEND = dict(n_mels=16, n_fft=256, win_length=200, hop_length=80)


def tiny_cnn(seed: int = 0) -> SpectrogramCNN:
    """Two classes, channels (4, 8), no dropout; BatchNorm biases in [0, 0.5); the input norm
    centred for log-mel values around -40 dB. Returned in eval mode."""
    torch.manual_seed(seed)
    m = SpectrogramCNN(2, sample_rate=SR, channels=(4, 8), dropout=0.0, frontend=FRONTEND)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.bias.uniform_(0.0, 0.5)
        m.features.input_norm.running_mean.fill_(-40.0)
        m.features.input_norm.running_var.fill_(400.0)
    return m.eval()


def tiny_sequential_cnn(seed: int = 0) -> torch.nn.Sequential:
    """A plain ``nn.Sequential`` CNN on log-mel ``(B, 1, F, T)`` (no front end, no layer names) in float64:
    conv → BatchNorm → ReLU → max-pool → conv → ReLU → global average → linear. Returned in eval mode."""
    from torch import nn

    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),  # 0-3
                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),  # 4-5
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        bn = m[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.bias.uniform_(-0.2, 0.8)
    return m.double().eval()


class Classify(torch.nn.Module):
    """``model.classify`` (log-mel in, logits out) as a module, so Captum can run and hook it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.classify(x)
