"""Backward rules of the projector, one per module type, and the path from the input to a layer.

The projector does not hook the model. It finds the chain of modules from the input to the chosen
layer (:func:`trace_path`), runs that chain forward itself (recording what the backward pass needs:
max-pool switches, forward signs), and then runs its own backward pass, one :class:`Step` at a time,
on a :class:`Signal` that holds ``B × K`` backward signals at once (B inputs, K units).

Backward rules (``g`` is the signal arriving from above, ``x`` the module's forward input):

============  =====================================  ============================  ====================
module        ``deconv`` (Zeiler & Fergus)           ``guided``                    ``gradient``
============  =====================================  ============================  ====================
Conv2d        transposed convolution (same filters)  same                          same
BatchNorm2d   ``g · γ/√(σ²+ε)`` (eval: affine map)   same                          same
MaxPool2d     unpool with the switches               same                          same
ReLU          ``relu(g)``                            ``relu(g) · [x > 0]``         ``g · [x > 0]``
LeakyReLU(a)  ``leaky_a(g)``                         ``leaky_a(g) · leaky_a'(x)``  ``g · leaky_a'(x)``
Tanh          ``g`` (nothing to rectify, see below)  ``g · (1 − tanh²x)``          ``g · (1 − tanh²x)``
Dropout, Id.  ``g`` (eval)                           same                          same
============  =====================================  ============================  ====================

* **Max-pool switches.** Unpooling sends each value back to the cell that won the max in the forward
  pass. With overlapping windows (kernel > stride) one cell can win several windows; it then
  receives the *sum* of their values — exactly what autograd's max-pool backward does, so the
  ``gradient`` mode stays the true gradient and Captum agrees for any pooling.
* **LeakyReLU.** The deconvnet passes the reconstruction through the network's own nonlinearity;
  ``leaky_a`` is positively homogeneous, so this is the direct analogue of ``relu(g)``. Guided
  backprop = that rule followed by the forward derivative, as for ReLU.
* **Can the deconvnet work with tanh?** Not in Zeiler & Fergus's sense. Their rectification step
  passes the reconstruction through ReLU, which (a) keeps it in the range of valid feature maps
  (non-negative) and (b) is positively homogeneous, ``relu(a·g) = a·relu(g)`` for ``a ≥ 0``, so a
  projection scales with its activation. tanh's range has both signs, so there is nothing to
  rectify, and ``tanh(a·g) ≠ a·tanh(g)``, so applying tanh to the backward signal would make the
  picture depend on an arbitrary scale. Applying tanh's derivative instead would just be the
  gradient. We therefore pass the signal through tanh unchanged: a tanh network's deconvnet is its
  linear path (transposed filters, BatchNorm scales) routed by the pooling switches, which are then
  its only dependence on the input. ``guided`` = that rule followed by the forward derivative, which
  for tanh equals ``gradient``. (Captum has no rule for tanh or LeakyReLU and silently gives the
  plain gradient there; ours are explicit.)
* **The seed** (the chosen activation, all others zero) enters through the layer's own module, so
  when the layer is an activation its rule applies first. For ReLU that changes nothing
  (activations are ≥ 0); for a negative LeakyReLU activation in ``deconv``/``guided`` mode the
  seed is scaled by the slope, so there ``map ≠ activation × (map of a unit seed)``.
* **BatchNorm2d** must have running statistics (eval mode is an affine map); one that normalises by
  batch statistics is refused.
* Anything else on the path — ``F.relu`` and other functional calls between modules, GELU, ELU,
  Sigmoid, average pooling, padding modes other than zeros — raises ``ValueError`` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["MODES", "SUPPORTED_MODULES", "AxisGeometry", "Step", "Signal", "Path", "make_step",
           "resolve_layer", "trace_path"]

MODES = ("deconv", "guided", "gradient")
SUPPORTED_MODULES = ("Conv2d (padding_mode='zeros'), BatchNorm2d (with running statistics), ReLU, "
                     "LeakyReLU, Tanh, MaxPool2d, Dropout, Dropout2d, Identity")


@dataclass(frozen=True)
class AxisGeometry:
    """How one module maps positions along one axis (frequency or time).

    Output cell ``o`` reads input cells ``o·stride − pad … o·stride − pad + extent − 1``.
    """

    extent: int  # (kernel − 1) · dilation + 1
    stride: int
    pad: int  # cells of padding before the first input cell

    def back(self, start, size: int):
        """Window ``[start, start + size)`` of output cells → the input window it reads (start, size)."""
        return start * self.stride - self.pad, (size - 1) * self.stride + self.extent


POINTWISE = AxisGeometry(1, 1, 0)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ---------------------------------------------------------------------------------------------
# the backward signal
# ---------------------------------------------------------------------------------------------
class Signal:
    """``B × K`` backward signals on a window of one tensor of the path.

    Attributes:
        g: ``(B, K, C, h, w)`` the signals; ``C`` is 1 while ``chan`` is set.
        chan: ``(B, K)`` long, the one channel each unit's signal lives in (before the first
            convolution is undone), or ``None`` when ``g`` spans all channels.
        start: ``(f0, t0)`` top-left cell of the window in the tensor's coordinates; python ints
            when all units share the window (``shared``), else two ``(B, K)`` long tensors (one
            window per unit: the receptive-field crop).
        shared: whether the window is shared (a whole-map computation) or per unit.

    Shared windows are kept inside the tensor (:meth:`fit` trims them); per-unit windows have a
    fixed size and may hang over the border, where :meth:`fit` zeroes them, so a crop gives the
    same numbers as the full computation. Invariant: ``g`` is zero on cells outside the tensor,
    and every rule keeps a zero zero.
    """

    def __init__(self, g: torch.Tensor, chan: torch.Tensor | None, start, shared: bool):
        self.g, self.chan, self.start, self.shared = g, chan, start, shared

    def _grid(self, h: int, w: int):
        f0, t0 = self.start
        rows = f0.unsqueeze(-1) + torch.arange(h, device=f0.device)  # (B, K, h)
        cols = t0.unsqueeze(-1) + torch.arange(w, device=t0.device)  # (B, K, w)
        return rows, cols

    def take(self, saved: torch.Tensor) -> torch.Tensor:
        """A forward tensor ``(B, C, H, W)`` seen through this window → ``(B, K or 1, C', h, w)``.

        Cells of a per-unit window that hang over the border read the nearest border cell: the
        signal is zero there (:meth:`fit`), and every rule maps a zero signal to zero.
        """
        h, w = self.g.shape[-2:]
        B = saved.shape[0]
        bi = torch.arange(B, device=saved.device)
        if self.shared:
            f0, t0 = self.start
            s = saved[..., f0:f0 + h, t0:t0 + w]
            if self.chan is not None:
                return s[bi[:, None], self.chan].unsqueeze(2)  # (B, K, 1, h, w)
            return s.unsqueeze(1)  # (B, 1, C, h, w)
        H, W = saved.shape[-2:]
        rows, cols = self._grid(h, w)
        r = rows.clamp(0, H - 1).unsqueeze(-1)  # (B, K, h, 1)
        c = cols.clamp(0, W - 1).unsqueeze(-2)  # (B, K, 1, w)
        if self.chan is not None:
            return saved[bi.view(B, 1, 1, 1), self.chan[:, :, None, None], r, c].unsqueeze(2)
        return saved[bi.view(B, 1, 1, 1), :, r, c].permute(0, 1, 4, 2, 3)  # (B, K, C, h, w)

    def fit(self, H: int, W: int) -> None:
        """Confine the window to a ``H × W`` tensor: trim a shared one, zero a per-unit one outside."""
        h, w = self.g.shape[-2:]
        f0, t0 = self.start
        if self.shared:
            a, b = max(f0, 0), min(f0 + h, H)
            c, d = max(t0, 0), min(t0 + w, W)
            self.g = self.g[..., a - f0:b - f0, c - t0:d - t0]
            self.start = (a, c)
            return
        rows, cols = self._grid(h, w)
        mask = ((rows >= 0) & (rows < H)).unsqueeze(-1) & ((cols >= 0) & (cols < W)).unsqueeze(-2)
        self.g = self.g * mask.unsqueeze(2).to(self.g.dtype)

    def place(self, H: int, W: int) -> torch.Tensor:
        """The (single-channel) signals pasted into the full ``H × W`` plane → ``(B, K, H, W)``."""
        g = self.g[:, :, 0]
        B, K, h, w = g.shape
        if self.shared:
            out = g.new_zeros(B, K, H, W)
            f0, t0 = self.start
            out[..., f0:f0 + h, t0:t0 + w] = g
            return out
        self.fit(H, W)
        g = self.g[:, :, 0]
        rows, cols = self._grid(h, w)
        idx = rows.clamp(0, H - 1).unsqueeze(-1) * W + cols.clamp(0, W - 1).unsqueeze(-2)
        out = g.new_zeros(B, K, H * W)
        out.scatter_add_(-1, idx.reshape(B, K, h * w), g.reshape(B, K, h * w))
        return out.view(B, K, H, W)

    def move(self, geometry: tuple[AxisGeometry, AxisGeometry], g: torch.Tensor) -> None:
        """Replace ``g`` by the signal on the module's input window."""
        (gf, gt), (f0, t0) = geometry, self.start
        self.start = (gf.back(f0, 1)[0], gt.back(t0, 1)[0])
        self.g = g


# ---------------------------------------------------------------------------------------------
# steps: one module each
# ---------------------------------------------------------------------------------------------
class Step:
    """One module of the path: its forward (recording what backward needs) and backward rule."""

    geometry: tuple[AxisGeometry, AxisGeometry] = (POINTWISE, POINTWISE)

    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module

    @property
    def pointwise(self) -> bool:
        return self.geometry == (POINTWISE, POINTWISE)

    def forward(self, x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x (B, C, H, W)`` → (output, what :meth:`backward` needs for ``mode`` or ``None``)."""
        return self.module(x), None

    def backward(self, sig: Signal, saved: torch.Tensor | None, mode: str) -> None:
        """Update ``sig`` in place from this module's output to its input."""

    def linear_backward(self, g: torch.Tensor, unpool: str) -> torch.Tensor:
        """Backward of the module's linear part (for filter projection), ``(N, C, h, w)`` → input window."""
        return g

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class IdentityStep(Step):
    """Dropout (eval) and Identity: the signal passes unchanged."""

    def forward(self, x, mode):
        return x, None


class ConvStep(Step):
    """Conv2d: backward is the transposed convolution with the same filters (bias plays no part)."""

    def __init__(self, name, module: nn.Conv2d):
        super().__init__(name, module)
        if module.padding_mode != "zeros":
            raise ValueError(f"module {name!r} (Conv2d) has padding_mode={module.padding_mode!r}; "
                             "the projector supports zero padding only")
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        if module.padding == "same":
            pad = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
        elif module.padding == "valid":
            pad = (0, 0)
        else:
            pad = _pair(module.padding)
        self.stride, self.dilation = s, d
        self.geometry = tuple(AxisGeometry((k[i] - 1) * d[i] + 1, s[i], pad[i]) for i in range(2))

    def _transpose(self, g: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        return F.conv_transpose2d(g, weight, None, self.stride, 0, 0, groups, self.dilation)

    def backward(self, sig, saved, mode):
        weight, groups = self.module.weight, self.module.groups
        B, K, C, h, w = sig.g.shape
        if sig.chan is not None and groups == 1:  # one channel per unit: a grouped transposed conv
            n = B * K
            out = self._transpose(sig.g.reshape(1, n, h, w), weight[sig.chan.reshape(-1)], n)
            sig.chan = None
        else:
            g = sig.g
            if sig.chan is not None:  # grouped conv: spread the unit's channel back to one-hot
                g = g.new_zeros(B, K, weight.shape[0], h, w)
                g.scatter_(2, sig.chan[:, :, None, None, None].expand(B, K, 1, h, w), sig.g)
                sig.chan = None
            out = self._transpose(g.reshape(B * K, -1, h, w), weight, groups)
        sig.move(self.geometry, out.view(B, K, -1, *out.shape[-2:]))

    def linear_backward(self, g, unpool):
        return self._transpose(g, self.module.weight, self.module.groups)


class BatchNormStep(Step):
    """BatchNorm2d in eval mode, ``y = γ (x − μ)/√(σ² + ε) + β``: backward multiplies by ``γ/√(σ²+ε)``."""

    def __init__(self, name, module: nn.BatchNorm2d):
        super().__init__(name, module)
        if module.running_var is None or module.running_mean is None:
            raise ValueError(f"module {name!r} (BatchNorm2d) has no running statistics "
                             "(track_running_stats=False): even in eval mode it normalises by batch "
                             "statistics, which is not a per-example map the projector can undo")

    def scale(self) -> torch.Tensor:
        m = self.module
        s = torch.rsqrt(m.running_var + m.eps)
        return s * m.weight if m.weight is not None else s

    def backward(self, sig, saved, mode):
        s = self.scale().to(sig.g.dtype)
        if sig.chan is not None:
            sig.g = sig.g * s[sig.chan][:, :, None, None, None]
        else:
            sig.g = sig.g * s.view(1, 1, -1, 1, 1)

    def linear_backward(self, g, unpool):
        return g * self.scale().to(g.dtype).view(1, -1, 1, 1)


class ActivationStep(Step):
    """ReLU, LeakyReLU and Tanh with the rules in the module docstring."""

    def __init__(self, name, module):
        super().__init__(name, module)
        self.slope = float(module.negative_slope) if isinstance(module, nn.LeakyReLU) else 0.0
        self.kind = "tanh" if isinstance(module, nn.Tanh) else "relu"

    def forward(self, x, mode):
        if self.kind == "tanh":
            y = torch.tanh(x)
            return y, (None if mode == "deconv" else 1 - y * y)  # tanh'(x)
        y = F.leaky_relu(x, self.slope) if self.slope else F.relu(x)
        return y, (None if mode == "deconv" else x > 0)

    def _rectify(self, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "tanh":
            return g
        return F.leaky_relu(g, self.slope) if self.slope else F.relu(g)

    def backward(self, sig, saved, mode):
        g = sig.g if mode == "gradient" else self._rectify(sig.g)
        if mode == "deconv":
            sig.g = g
            return
        gate = sig.take(saved)
        if self.kind == "tanh":
            sig.g = g * gate
        elif self.slope:
            sig.g = torch.where(gate, g, g * self.slope)
        else:
            sig.g = g * gate.to(g.dtype)


class MaxPoolStep(Step):
    """MaxPool2d: forward records the switches (argmax indices); backward sends values back to them."""

    def __init__(self, name, module: nn.MaxPool2d):
        super().__init__(name, module)
        k, s = _pair(module.kernel_size), _pair(module.stride if module.stride is not None else module.kernel_size)
        p, d = _pair(module.padding), _pair(module.dilation)
        self.kernel, self.stride, self.padding, self.dilation = k, s, p, d
        self.geometry = tuple(AxisGeometry((k[i] - 1) * d[i] + 1, s[i], p[i]) for i in range(2))

    def forward(self, x, mode):
        m = self.module
        y, idx = F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation,
                              ceil_mode=m.ceil_mode, return_indices=True)
        return y, (idx, x.shape[-1])  # switches: flat index into the input's H·W plane, and W

    def backward(self, sig, saved, mode):
        idx_saved, W_in = saved
        idx = sig.take(idx_saved)  # (B, K|1, C', h, w); off-map cells hold junk but g is 0 there
        (gf, gt) = self.geometry
        B, K, C, h, w = sig.g.shape
        f0, t0 = sig.start
        a_f, a_t = gf.back(f0, 1)[0], gt.back(t0, 1)[0]  # the input window's top-left cell
        S_f, S_t = gf.back(0, h)[1], gt.back(0, w)[1]
        if not sig.shared:
            a_f, a_t = a_f[:, :, None, None, None], a_t[:, :, None, None, None]
        local = ((idx // W_in - a_f) * S_t + (idx % W_in - a_t)).clamp_(0, S_f * S_t - 1)
        local = local.expand(B, K, C, h, w).reshape(B, K, C, h * w)
        out = sig.g.new_zeros(B, K, C, S_f * S_t).scatter_add_(-1, local, sig.g.reshape(B, K, C, h * w))
        sig.move(self.geometry, out.view(B, K, C, S_f, S_t))

    def linear_backward(self, g, unpool):
        kh, kw = self.kernel
        C = g.shape[1]
        kernel = g.new_zeros(C, 1, kh, kw)
        if unpool == "center":
            kernel[:, :, (kh - 1) // 2, (kw - 1) // 2] = 1
        else:  # spread
            kernel.fill_(1.0 / (kh * kw))
        return F.conv_transpose2d(g, kernel, None, self.stride, 0, 0, C, self.dilation)


def make_step(name: str, module: nn.Module) -> Step:
    """The :class:`Step` for a module on the path; ``ValueError`` naming it if it has no rule."""
    for base in (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d):
        if isinstance(module, base) and type(module).forward is not base.forward:
            raise ValueError(f"module {name!r} ({type(module).__name__}) overrides {base.__name__}.forward; "
                             f"the projector cannot know its backward rule (supported: {SUPPORTED_MODULES})")
    if isinstance(module, nn.Conv2d):
        return ConvStep(name, module)
    if isinstance(module, nn.BatchNorm2d):
        return BatchNormStep(name, module)
    if type(module) in (nn.ReLU, nn.LeakyReLU, nn.Tanh):
        return ActivationStep(name, module)
    if isinstance(module, nn.MaxPool2d):
        return MaxPoolStep(name, module)
    if type(module) in (nn.Dropout, nn.Dropout2d, nn.Identity):
        return IdentityStep(name, module)
    raise ValueError(f"module {name!r} ({type(module).__name__}) on the path has no projection rule; "
                     f"supported modules: {SUPPORTED_MODULES}")


# ---------------------------------------------------------------------------------------------
# the path from the input to a layer
# ---------------------------------------------------------------------------------------------
class Path:
    """The chain of :class:`Step` s from the model's input ``(B, 1, F, T)`` to a layer's feature map.

    This is the package's one way to run a model up to a layer: :meth:`forward` for the projector
    (recording what its backward pass needs), :meth:`outputs` for everything else (top-k scans,
    activations for CKA, unit choice). ``channels`` is the feature map's channel count (set by
    :func:`trace_path`).
    """

    def __init__(self, layer: str, steps: list[Step], channels: int | None = None):
        self.layer, self.steps, self.channels = layer, steps, channels

    def forward(self, x: torch.Tensor, mode: str = "gradient"):
        """Run the chain → (feature map ``(B, C, H, W)``, per step: (saved, input ``(H, W)``))."""
        records = []
        for step in self.steps:
            hw = tuple(x.shape[-2:])
            x, saved = step.forward(x, mode)
            records.append((saved, hw))
        return x, records

    def outputs(self, x: torch.Tensor, after=None) -> dict[int, torch.Tensor]:
        """Run the chain with the model's own modules, recording nothing.

        Args:
            x: log-mel ``(B, 1, F, T)``.
            after: step counts ``n``; default ``[len(steps)]`` (the layer's feature map).

        Returns:
            ``{n: output of the first n steps}``, e.g. ``{len(steps): (B, C, H, W)}``.
        """
        wanted = set(after) if after is not None else {len(self.steps)}
        bad = [n for n in wanted if not 0 <= int(n) <= len(self.steps)]
        if bad:
            raise ValueError(f"after must hold step counts in 0..{len(self.steps)}, got {sorted(bad)}")
        found = {0: x} if 0 in wanted else {}
        for n, step in enumerate(self.steps, start=1):
            x = step.module(x)
            if n in wanted:
                found[n] = x
        return found

    def extends(self, other: "Path") -> bool:
        """Whether ``other``'s steps are the first steps of this path (same modules, same order)."""
        n = len(other.steps)
        return n <= len(self.steps) and all(a.module is b.module for a, b in zip(self.steps[:n], other.steps))

    def window(self, f, t, size=(1, 1)):
        """Input window ``(f0, size_f, t0, size_t)`` read by the layer window at ``(f, t)`` (unclipped)."""
        sf, st = size
        for step in reversed(self.steps):
            gf, gt = step.geometry
            f, sf = gf.back(f, sf)
            t, st = gt.back(t, st)
        return f, sf, t, st


def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """Layer name → (name, module whose output is the feature map).

    Accepts the package's names (``"conv2"`` for :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`) or any
    name from ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    package = list(getattr(model, "layer_names", []) or [])
    if isinstance(layer, str):
        if layer in package and hasattr(model, "feature_module"):
            return layer, model.feature_module(layer)
        if layer and layer in modules:
            return layer, modules[layer]
    names = [n for n in modules if n]
    shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
    valid = (f"{', '.join(package)} (or a module name: {shown})" if package else shown)
    raise ValueError(f"unknown layer {layer!r}; valid layers: {valid}")


class _Stop(Exception):
    pass


_NONLINEAR = ("relu", "relu_", "leaky_relu", "leaky_relu_", "gelu", "elu", "selu", "celu", "silu",
              "mish", "sigmoid", "tanh", "softplus", "hardtanh", "relu6", "hardswish", "hardsigmoid",
              "softmax", "log_softmax", "max_pool2d", "avg_pool2d", "dropout", "threshold")


def trace_path(model: nn.Module, layer: str, run, x: torch.Tensor) -> Path:
    """Find the chain of modules that ``run(x)`` sends ``x`` through up to ``layer``'s output.

    ``run`` is the model's entry point for inputs in log-mel space (``model`` itself, or
    ``SpectrogramCNN.classify``); ``x`` a small example batch ``(b, 1, F, T)``. Forward hooks
    (removed in ``finally``) record each leaf module's input and output, and a torch-function mode
    records functional calls made outside leaf modules. Raises ``ValueError`` naming the module
    when the path is not a plain chain of supported modules (a functional ``F.relu`` between
    modules, an unsupported activation ...). The forward stops at the layer.
    """
    name, target = resolve_layer(model, layer)
    calls, functional, target_out = _record_calls(model, layer, name, target, run, x)

    def seen(lo: int, hi: int) -> str:
        found = [f"{f} in {w!r}" for i, f, w in functional if lo <= i <= hi]
        return "; ".join(dict.fromkeys(found)) or "no visible call"

    nonlin = [(f, w) for i, f, w in functional if f.lower().rstrip("_") in _NONLINEAR or f in _NONLINEAR]
    prev_out, prev_name = x, "the input"
    for i, (cname, mod, inp, out) in enumerate(calls):
        if inp is not prev_out:
            if nonlin:
                f, w = nonlin[0]
                raise ValueError(f"functional call {f}() in module {w!r} is on the path to layer {layer!r}: "
                                 "the projector needs every nonlinearity and pooling as a module "
                                 f"(e.g. nn.ReLU instead of F.relu) to apply its backward rule")
            raise ValueError(f"cannot follow the path to layer {layer!r}: the input of module {cname!r} is "
                             f"not the output of {prev_name} (in between: {seen(i, i)}); the projector "
                             "follows a plain chain of modules")
        prev_out, prev_name = out, repr(cname)
    steps = [make_step(cname, mod) for cname, mod, _, _ in calls]
    if not steps or calls[-1][3] is not target_out:
        raise ValueError(f"cannot follow the path to layer {layer!r}: its output is not the output of "
                         f"the last module called before it (seen: {seen(0, len(calls))})")
    path = Path(layer, steps)
    with torch.no_grad():
        mine, _ = path.forward(x)
        theirs = calls[-1][3]
    path.channels = int(mine.shape[1])
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
        where = "; ".join(f"{f} in {w!r}" for f, w in nonlin) or seen(0, len(calls))
        raise ValueError(f"the path to layer {layer!r} does something besides its modules (seen: {where}); "
                         "use modules for every operation on the path (e.g. nn.ReLU instead of F.relu)")
    return path


def _record_calls(model: nn.Module, layer: str, name: str, target: nn.Module, run, x: torch.Tensor):
    """Run ``run(x)`` up to ``target`` → (atomic module calls ``[(name, module, input, output)]``,
    functional calls outside them ``[(calls so far, function, enclosing module)]``, target output)."""
    module_names = {m: n for n, m in model.named_modules()}
    # Atomic modules: leaves, and supported modules even with children (e.g. parametrized weights).
    atomic_types = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU, nn.LeakyReLU, nn.Tanh)
    leaves = {m for m in module_names if next(m.children(), None) is None or isinstance(m, atomic_types)}
    depth = [0]  # how many atomic modules are running
    calls: list[tuple[str, nn.Module, object, object]] = []
    functional: list[tuple[int, str, str]] = []
    stack: list[nn.Module] = []
    target_out: list = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if depth[0] == 0 and isinstance(out, torch.Tensor):
                fname = getattr(func, "__name__", repr(func))
                where = module_names[stack[-1]] if stack else "(top level)"
                functional.append((len(calls), fname, where or type(model).__name__))
            return out

    def pre_hook(mod, args):
        stack.append(mod)
        depth[0] += mod in leaves

    def post_hook(mod, args, out):
        stack.pop()
        depth[0] -= mod in leaves
        if mod in leaves and depth[0] == 0:
            calls.append((module_names[mod], mod, args[0] if args else None, out))
        if mod is target:
            target_out.append(out)
            raise _Stop

    handles = []
    try:
        for m in module_names:
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(post_hook))
        with torch.no_grad(), Recorder():
            try:
                run(x)
            except _Stop:
                pass
            else:
                raise ValueError(f"layer {layer!r} ({name}) was not reached by the model's forward pass")
    finally:
        for h in handles:
            h.remove()
    return calls, functional, target_out[0]
