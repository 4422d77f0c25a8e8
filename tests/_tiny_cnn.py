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
