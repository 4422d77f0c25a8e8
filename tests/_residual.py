"""Residual and branching CNNs on log-mel ``(B, 1, F, T)`` for the projector's graph tests, and an
independent autograd reference for the deconv / guided / gradient rules on any graph (ReLU,
LeakyReLU, tanh, and the SiLU/GELU rule of ``audioconv.interpret.rules``).

* :func:`resnet_cnn` — ResNet basic blocks (identity and strided 1×1-conv shortcuts, ``out += identity``).
* :func:`densenet_cnn` — DenseNet-style concatenation, a 1×1 transition conv and 2×2 average pooling.
* :func:`bcresnet_cnn` — BC-ResNet blocks: frequency-wise depthwise conv, sub-spectral normalisation
  (BatchNorm over sub-bands via a reshape), mean over frequency, a dilated temporal depthwise conv
  and the broadcast of the ``(B, C, 1, T)`` branch back over frequency.
* :func:`functional_resnet` — the same ideas written with ``F.relu`` / ``F.max_pool2d`` /
  ``F.avg_pool2d`` / ``torch.tanh`` / ``F.leaky_relu`` and in-place ReLU (Captum cannot hook these).

All are float64, in eval mode, with random BatchNorm statistics. Every nonlinearity used as a
projected layer is an ``nn.ReLU`` module, so Captum's ``NeuronDeconvolution`` can hook it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.3)
    return model


def _finish(model: nn.Module, seed: int) -> nn.Module:
    return randomise_batchnorm(model.double(), seed).eval()


# ---- ResNet -----------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = self.shortcut(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        out += identity
        return self.relu2(out)


class ResNet(nn.Module):
    def __init__(self, widths=(6, 6, 8), n_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.block1 = BasicBlock(widths[0], widths[1])
        self.block2 = BasicBlock(widths[1], widths[2], stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(widths[2], n_classes))

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))


def resnet_cnn(seed: int = 0, widths=(6, 6, 8)) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(ResNet(widths), seed)


# ---- DenseNet-style concatenation ------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1)
        self.bn = nn.BatchNorm2d(growth)
        self.relu = nn.ReLU()

    def forward(self, x):
        return torch.cat([x, self.relu(self.bn(self.conv(x)))], dim=1)


class DenseNet(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.dense1 = DenseLayer(4, 3)
        self.transition = nn.Sequential(nn.Conv2d(7, 5, 1), nn.BatchNorm2d(5), nn.ReLU(), nn.AvgPool2d(2))
        self.dense2 = DenseLayer(5, 4)
        self.out_relu = nn.ReLU()
        self.head = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(9, n_classes))

    def forward(self, x):
        return self.head(self.out_relu(self.dense2(self.transition(self.dense1(self.stem(x))))))


def densenet_cnn(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(DenseNet(), seed)


# ---- BC-ResNet ----------------------------------------------------------------------------------------
class SubSpectralNorm(nn.Module):
    """BatchNorm over ``sub_bands`` frequency sub-bands: (B, C, F, T) → (B, C·S, F/S, T) → BN → back."""

    def __init__(self, channels: int, sub_bands: int):
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x):
        b, c, f, t = x.size()
        x = self.bn(x.view(b, c * self.sub_bands, f // self.sub_bands, t))
        return x.view(b, c, f, t)


class BCBlock(nn.Module):
    """Broadcasted residual block: x + f2(x) + broadcast(f1(mean_F(f2(x)))) (identity when c_in == c_out)."""

    def __init__(self, c_in: int, c_out: int, dilation: int = 1, sub_bands: int = 2):
        super().__init__()
        self.transition = c_in != c_out
        if self.transition:
            self.pre = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        self.freq_conv = nn.Conv2d(c_out, c_out, (3, 1), padding=(1, 0), groups=c_out, bias=False)
        self.ssn = SubSpectralNorm(c_out, sub_bands)
        self.temp_conv = nn.Conv2d(c_out, c_out, (1, 3), padding=(0, dilation), dilation=(1, dilation),
                                   groups=c_out, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu_t = nn.ReLU()
        self.point = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.drop = nn.Dropout2d(0.1)
        self.relu = nn.ReLU()

    def forward(self, x):
        if self.transition:
            x = self.pre(x)
        aux = self.ssn(self.freq_conv(x))
        y = aux.mean(2, keepdim=True)  # (B, C, 1, T)
        y = self.drop(self.point(self.relu_t(self.bn(self.temp_conv(y)))))
        out = aux + y if self.transition else x + aux + y  # broadcast over frequency
        return self.relu(out)


class BCResNet(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 5, stride=(2, 1), padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.block1 = BCBlock(6, 6)
        self.block2 = BCBlock(6, 8, dilation=2)
        self.block3 = BCBlock(8, 8, dilation=2)
        self.head = nn.Sequential(nn.Conv2d(8, n_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.block3(self.block2(self.block1(self.stem(x)))))


def bcresnet_cnn(seed: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(BCResNet(), seed)


# ---- functional ops ------------------------------------------------------------------------------------
class FunctionalNet(nn.Module):
    """F.relu / F.leaky_relu / torch.tanh / F.max_pool2d / F.avg_pool2d, an in-place ReLU, a residual
    addition with a channel-broadcast term and a scaled skip, a 'same'-padded conv with an even kernel."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, (2, 4), padding="same")
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.gate = nn.Conv2d(6, 1, 1)
        self.fc = nn.Linear(6, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        y = F.leaky_relu(self.conv2(x), 0.1)
        y = self.conv3(y) + self.gate(x) * 0.5  # (B, 1, F, T) broadcast over channels
        x = F.relu_(y + 2.0 * x)  # in place
        x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False, padding=1)
        x = torch.tanh(x) - x / 3
        return self.fc(x.mean((2, 3)))


def functional_resnet(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(FunctionalNet(), seed)


# ---- an independent autograd reference -------------------------------------------------------------
class _Rectified(torch.autograd.Function):
    """Forward: ReLU / LeakyReLU. Backward: the mode's rule written out (deconv: rectify the signal;
    guided: rectify and gate by the forward sign; gradient: autograd's own)."""

    @staticmethod
    def forward(ctx, x, slope, mode):
        ctx.save_for_backward(x)
        ctx.slope, ctx.mode = slope, mode
        return F.leaky_relu(x, slope) if slope else F.relu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        a = ctx.slope
        rect = torch.where(g > 0, g, a * g)
        deriv = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, a))
        return {"deconv": rect, "guided": rect * deriv, "gradient": g * deriv}[ctx.mode], None, None


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mode):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        ctx.mode = mode
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return (g if ctx.mode == "deconv" else g * (1 - y * y)), None


class _Smooth(torch.autograd.Function):
    """A smooth ReLU relative f (SiLU, GELU): deconv rectifies the signal, guided also multiplies by
    f'(x), gradient is autograd's g·f'(x) (f' from autograd on a copy)."""

    @staticmethod
    def forward(ctx, x, fn, mode):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (deriv,) = torch.autograd.grad(fn(xr).sum(), xr)
        ctx.save_for_backward(deriv)
        ctx.mode = mode
        return fn(x)

    @staticmethod
    def backward(ctx, g):
        (deriv,) = ctx.saved_tensors
        return {"deconv": F.relu(g), "guided": F.relu(g) * deriv, "gradient": g * deriv}[ctx.mode], None, None


_SMOOTH = {F.silu: F.silu, F.gelu: F.gelu}
_RELU = {F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu_}
_LEAKY = {F.leaky_relu, F.leaky_relu_}
_TANH = {torch.tanh, torch.Tensor.tanh, F.tanh}


class _SwapActivations(TorchFunctionMode):
    """Replaces every ReLU / LeakyReLU / tanh call (module or functional, in place or not) by the
    reference rule above, out of place."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU:
            return _Rectified.apply(args[0], 0.0, self.mode)
        if func in _LEAKY:
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
            return _Rectified.apply(args[0], float(slope), self.mode)
        if func in _TANH:
            return _Tanh.apply(args[0], self.mode)
        if func in _SMOOTH:
            return _Smooth.apply(args[0], _SMOOTH[func], self.mode)
        return func(*args, **kwargs)


def reference_maps(model: nn.Module, x: torch.Tensor, module: nn.Module, mode: str, seed_fn, entry=None) -> torch.Tensor:
    """``∂⟨seed, layer output⟩/∂x`` through ``entry`` (default ``model``) with the reference rules: ``(B, F, T)``.

    ``module``'s output is the layer (captured by a forward hook that hands a copy on, so later
    in-place operations cannot change it); ``seed_fn(output) → seed`` of the same shape.
    """
    captured = {}

    def hook(_m, _i, out):
        captured.setdefault("y", out)
        return out.clone()

    handle = module.register_forward_hook(hook)
    try:
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad(), _SwapActivations(mode):
            (entry or model)(xr)
        y = captured["y"]
        (grad,) = torch.autograd.grad(y, xr, seed_fn(y.detach()))
    finally:
        handle.remove()
    return grad[:, 0]
