"""Occlusion maps against a brute-force loop and against a model whose answer is known in closed form."""
import numpy as np
import pytest
import torch
from torch import nn

from audioconv.models.spectrogram_cnn import SpectrogramCNN
from audioconv.interpret.occlusion import occlusion, patch_starts


def _tiny_model():
    torch.manual_seed(0)
    m = SpectrogramCNN(3, sample_rate=8000, channels=(4, 8), dropout=0.0,
                       frontend=dict(n_mels=16, n_fft=256, win_length=200, hop_length=80))
    return m.double().eval()


def _brute_force(model, x, target, patch, stride):
    """One occluded copy at a time, by explicit slicing."""
    _, f, t = x.shape
    out = np.zeros((len(range(0, f - patch[0] + 1, stride[0])), len(range(0, t - patch[1] + 1, stride[1]))))
    for i, f0 in enumerate(range(0, f - patch[0] + 1, stride[0])):
        for j, t0 in enumerate(range(0, t - patch[1] + 1, stride[1])):
            y = x.clone()
            y[:, f0:f0 + patch[0], t0:t0 + patch[1]] = x.mean()
            with torch.no_grad():
                out[i, j] = torch.softmax(model.classify(y[None]), -1)[0, target].item()
    return out


def test_matches_brute_force_loop():
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 16, 21, generator=g, dtype=torch.float64) * 10 - 30
    targets = [0, 2, 1]
    probs = occlusion(model, x, targets, patch=(4, 5), stride=(3, 4), batch_size=7, device="cpu")
    assert probs.shape == (3, 5, 5)
    for b in range(3):
        ref = _brute_force(model, x[b], targets[b], (4, 5), (3, 4))
        np.testing.assert_allclose(probs[b].numpy(), ref, rtol=1e-5, atol=1e-7)


class _RegionModel(nn.Module):
    """logit0 = sum of x over rows 2:4, frames 6:9; logit1 = 0 → p0 = sigmoid(sum)."""

    def forward(self, x):
        s = x[:, 0, 2:4, 6:9].sum(dim=(1, 2))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_closed_form_region_model():
    x = torch.zeros(1, 1, 8, 12)
    x[0, 0, 2:4, 6:9] = 1.0  # region sum 6; mean of x = 6 / 96
    probs = occlusion(_RegionModel(), x, 0, patch=(2, 3), stride=(1, 1), device="cpu")
    mean = 6.0 / 96.0
    for i, f0 in enumerate(patch_starts(8, 2, 1)):
        for j, t0 in enumerate(patch_starts(12, 3, 1)):
            rows = set(range(f0, f0 + 2)) & {2, 3}
            cols = set(range(t0, t0 + 3)) & {6, 7, 8}
            hidden = len(rows) * len(cols)
            expected = 1 / (1 + np.exp(-((6 - hidden) + hidden * mean)))
            assert probs[0, i, j].item() == pytest.approx(expected, rel=1e-6)


def test_bad_arguments():
    model = _tiny_model()
    x = torch.zeros(1, 1, 16, 21, dtype=torch.float64)
    with pytest.raises(ValueError, match="patch"):
        occlusion(model, x, 0, patch=(0, 3))
    with pytest.raises(ValueError, match="does not fit"):
        occlusion(model, x, 0, patch=(17, 3))
    with pytest.raises(ValueError, match="target"):
        occlusion(model, x, [0, 1], patch=(4, 4))
    with pytest.raises(ValueError, match="0..2"):
        occlusion(model, x, 5, patch=(4, 4), device="cpu")
    with pytest.raises(ValueError, match="log-mel"):
        occlusion(model, torch.zeros(16, 21), 0, patch=(4, 4))
