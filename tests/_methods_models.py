"""Small float64 CNNs for the tests of Grad-CAM, saliency, sanity checks and faithfulness: a chain,
residual graphs (module ReLUs, functional ReLUs, a BC-ResNet-style broadcast block) and a linear
log-mel classifier whose true attribution is known."""
import torch
import torch.nn.functional as F
from torch import nn


def _randomise_bn(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_mean.dtype) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g, dtype=m.bias.dtype) * 0.6 - 0.1)


class ResNetish(nn.Module):
    """stem conv-BN-ReLU → max-pool → basic residual block (module ReLUs) → conv-ReLU → GAP → linear."""

    def __init__(self, n_classes: int = 3, width: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv_a = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(width)
        self.relu_a = nn.ReLU()
        self.conv_b = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(width)
        self.relu_out = nn.ReLU()
        self.top = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu_top = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        y = self.bn_b(self.conv_b(self.relu_a(self.bn_a(self.conv_a(x)))))
        x = self.relu_out(x + y)
        x = self.relu_top(self.top(x))
        return self.fc(self.gap(x).flatten(1))


class FunctionalResNetish(ResNetish):
    """The same network written with functional calls: ``F.relu``, ``torch.relu``, in-place ``relu_``."""

    def forward(self, x):
        s = self.stem
        x = self.pool(F.relu(s[1](s[0](x))))
        y = self.bn_b(self.conv_b(torch.relu(self.bn_a(self.conv_a(x)))))
        x = (x + y).relu_()
        x = F.relu(self.top(x), inplace=True)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BCBlockNet(nn.Module):
    """A BC-ResNet-style broadcast residual block: frequency-wise depthwise conv (3×1) → BN, a branch
    averaged over frequency → temporal depthwise conv (1×3) → BN → ReLU → pointwise conv, broadcast
    back over frequency and added to both the frequency branch and the block input."""

    def __init__(self, n_classes: int = 3, width: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.stem_relu = nn.ReLU()
        self.freq_dw = nn.Conv2d(width, width, (3, 1), padding=(1, 0), groups=width, bias=False)
        self.freq_bn = nn.BatchNorm2d(width)
        self.time_dw = nn.Conv2d(width, width, (1, 3), padding=(0, 1), groups=width, bias=False)
        self.time_bn = nn.BatchNorm2d(width)
        self.time_relu = nn.ReLU()
        self.pw = nn.Conv2d(width, width, 1)
        self.out_relu = nn.ReLU()
        self.pool = nn.MaxPool2d((2, 2))
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x):
        x = self.stem_relu(self.stem(x))
        f = self.freq_bn(self.freq_dw(x))
        t = f.mean(dim=2, keepdim=True)  # (B, C, 1, T)
        t = self.pw(self.time_relu(self.time_bn(self.time_dw(t))))
        x = self.out_relu(x + f + t)  # broadcast over frequency
        return self.fc(self.pool(x).mean(dim=(2, 3)))


def make(kind: str, seed: int = 0, n_classes: int = 3) -> nn.Module:
    """``"resnet"``, ``"functional"`` (same weights as ``"resnet"`` for the same seed) or ``"bcblock"``;
    float64, eval mode, BatchNorm statistics and affine parameters drawn so units are active."""
    torch.manual_seed(seed)
    cls = {"resnet": ResNetish, "functional": FunctionalResNetish, "bcblock": BCBlockNet}[kind]
    m = cls(n_classes).double()
    _randomise_bn(m, torch.Generator().manual_seed(seed + 1))
    return m.eval()


class LinearLogMel(nn.Module):
    """``logits = [Σ w·x + b, 0]`` on log-mel ``(B, 1, F, T)``: p(class 0) = sigmoid(Σ w·x + b).

    Its exact attribution of the class-0 logit with a zero baseline is ``w·x``."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.tensor(float(bias), dtype=weight.dtype))

    def forward(self, x):
        s = (x[:, 0] * self.weight).sum(dim=(1, 2)) + self.bias
        return torch.stack([s, torch.zeros_like(s)], dim=1)
