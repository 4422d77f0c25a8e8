"""Backward rules of the projector, one per operation, and the table that maps torch functions to them.

The graph tracer (:mod:`audioconv.interpret.graph`) sees every torch function a model calls on a
tensor that depends on its input, and builds one :class:`Rule` per call from :data:`OPS`. A rule runs
the call (recording what its backward needs: max-pool switches, forward signs) and, in the
backward pass, maps the ``B × K`` backward signals on its output (:class:`~audioconv.interpret.signal.Signal`)
to signals on each of its inputs.

Backward rules (``g`` is the signal arriving from above, ``x`` the operation's forward input):

==========================  ====================================  ===========================  ===================
operation                   ``deconv`` (Zeiler & Fergus)          ``guided``                   ``gradient``
==========================  ====================================  ===========================  ===================
conv1d/2d (any groups)      transposed convolution, same filters  same                         same
batch_norm (running stats)  ``g · γ/√(σ²+ε)`` (an affine map)     same                         same
max_pool (1d/2d, adaptive)  unpool with the switches              same                         same
avg_pool, adaptive_avg,     their (linear) transpose              same                         same
pad (zeros), interpolate
ReLU                        ``relu(g)``                           ``relu(g) · [x > 0]``        ``g · [x > 0]``
LeakyReLU(a)                ``leaky_a(g)``                        ``leaky_a(g) · leaky_a'(x)`` ``g · leaky_a'(x)``
tanh                        ``g`` (nothing to rectify)            ``g · (1 − tanh²x)``         ``g · (1 − tanh²x)``
SiLU, GELU, Mish, ELU,      ``relu(g)`` (as ReLU; our choice)     ``relu(g) · f'(x)``          ``g · f'(x)``
softplus, hardswish, relu6
sigmoid, hardtanh, …        refused                               refused                      ``g · f'(x)``
add, sub, cat, stack        the signal to every branch/slice      same                         same
mul/div by a constant       ``g · c`` (``g / c``)                 same                         same
view, reshape, permute,     the inverse rearrangement             same                         same
indexing, expand, mean, sum
dropout (eval), identity    ``g``                                 same                         same
linear                      ``g · W``                             same                         same
==========================  ====================================  ===========================  ===================

* **Max-pool switches.** Unpooling sends each value back to the cell that won the max in the forward
  pass. With overlapping windows one cell can win several windows and receives the *sum* of their
  values — exactly autograd's max-pool backward, so ``gradient`` stays the true gradient.
* **Residual additions** send the signal unchanged down both branches; where branches meet again
  (a tensor used twice) their signals add up. Broadcasting (a ``(B, C, 1, T)`` tensor added to a
  ``(B, C, F, T)`` one) sums the signal over the broadcast axis.
* **LeakyReLU / tanh**: see ``docs/projection.md`` ("Can the deconvnet work with tanh?").
* **Smooth and clipped relatives of ReLU** (SiLU, GELU, Mish, ELU, softplus, Hardswish, ReLU6 —
  BC-ResNet's temporal branch uses SiLU): Zeiler & Fergus define the rectification for ReLU only.
  We rectify the backward signal as for ReLU (``relu(g)``, positively homogeneous, so a projection
  still scales with its activation) and guided backprop gates it by the activation's own derivative
  ``f'(x)`` (as for LeakyReLU and tanh). This is our definition; Captum has none and silently
  returns the plain gradient there. **Saturating** activations (sigmoid, hardtanh, …) have no such
  rectification: ``gradient`` mode supports them, ``deconv``/``guided`` refuse them.
* The ``linear`` mode (input-free filter projection, :func:`~audioconv.interpret.filters.project_filters`)
  keeps only the linear part: activations pass the signal unchanged, max-pools unpool to a fixed
  cell of their window (``center``) or spread evenly over it (``spread``).
* Refused, with a ``ValueError`` naming the operation and the module it sits in, when on the path to
  the layer: anything not in :data:`OPS` (a product of two signals such as a gate or attention,
  softmax, normalisation by statistics of the example or the batch, padding modes other than
  zeros, in-place writes into a signal, operations that mix the batch dimension, …).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from audioconv.interpret.signal import FULL, POINTWISE, AxisGeometry, Signal

__all__ = ["MODES", "Mode", "Rule", "Unsupported", "Call", "OPS", "SUPPORTED", "op_name", "resolve_layer"]

MODES = ("deconv", "guided", "gradient")
SUPPORTED = ("conv1d/conv2d (zero padding, any groups), batch_norm with running statistics, relu, leaky_relu, "
             "tanh, max_pool1d/2d, adaptive_max_pool, avg_pool1d/2d, adaptive_avg_pool, dropout (eval), "
             "add/sub (residual, broadcast), mul/div by a constant, cat, stack, view/reshape/flatten/squeeze/"
             "unsqueeze, permute/transpose, basic indexing, expand, mean/sum over non-batch dims, pad (zeros), "
             "interpolate, linear, identity, silu, gelu, mish, elu, softplus, hardswish, relu6; in gradient mode "
             "also sigmoid, hardsigmoid, hardtanh, logsigmoid")


@dataclass(frozen=True)
class Mode:
    """Which backward rules to run.

    Attributes:
        rule: ``"deconv"``, ``"guided"``, ``"gradient"`` or ``"linear"`` (input-free filters).
        unpool: for ``"linear"``: ``"center"`` (a max-pool's value goes to one fixed cell of its
            window) or ``"spread"`` (evenly over the window).
        batchnorm: for ``"linear"``: include BatchNorm scales.
    """

    rule: str
    unpool: str = "center"
    batchnorm: bool = True


class Unsupported(ValueError):
    """An operation (or a variant of one) without a projection rule; the message says why."""


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _norm_dim(d: int, n: int) -> int:
    return int(d) + n if int(d) < 0 else int(d)


# ---------------------------------------------------------------------------------------------
# a call seen by the tracer
# ---------------------------------------------------------------------------------------------
class Call:
    """One torch function call: the function, its arguments, and which tensors are live (depend on the input)."""

    def __init__(self, func, args, kwargs, is_live):
        self.func, self.args, self.kwargs, self.is_live = func, tuple(args), dict(kwargs or {}), is_live

    def bind(self, names, defaults=None) -> SimpleNamespace:
        """Arguments by name: positional ones in the order of ``names``, then keywords, then ``defaults``."""
        out = dict(defaults or {})
        out.update(zip(names, self.args))
        out.update({k: v for k, v in self.kwargs.items() if k in names})
        missing = [n for n in names if n not in out]
        if missing:
            raise Unsupported(f"call without argument {missing[0]!r}")
        return SimpleNamespace(**out)

    def tensors(self):
        """Every tensor argument (also inside lists and tuples)."""
        for a in list(self.args) + list(self.kwargs.values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(t, torch.Tensor):
                    yield t

    def only(self, *inputs) -> list:
        """``inputs`` (which must be live), refusing the call when any other argument is live too."""
        keep = {id(t) for t in inputs}
        other = [t for t in self.tensors() if id(t) not in keep and self.is_live(t)]
        if other:
            raise Unsupported("more than one of its arguments depends on the input (e.g. weights computed "
                              "from the signal, a gate, attention); there is no projection rule for that")
        return list(inputs)


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------
class Rule:
    """One operation of the graph: its forward (recording what backward needs) and its backward rule.

    ``windowed``: the backward accepts signals on windows of 4-D tensors (else it gets the whole
    tensor). ``geometry(i)``: how input ``i``'s window follows from the output's, per spatial axis.
    """

    name = "op"
    windowed = False

    def geometry(self, i: int):
        return (POINTWISE, POINTWISE) if self.windowed else (FULL, FULL)

    def run(self, call: Call, mode: Mode | None):
        """Run the call → (its output, what :meth:`backward` needs or ``None``)."""
        return call.func(*call.args, **call.kwargs), None

    def backward(self, sig: Signal, saved, mode: Mode) -> list:
        """Signals on the inputs (one per live input, in order) from the signal on the output."""
        raise NotImplementedError


class Identity(Rule):
    """dropout in eval mode, contiguous, clone, dtype casts: the signal passes unchanged."""

    windowed = True

    def __init__(self, name, in_dtype):
        self.name, self.in_dtype = name, in_dtype

    def backward(self, sig, saved, mode):
        return [Signal(sig.g.to(self.in_dtype), sig.chan, sig.start)]


class Conv(Rule):
    """conv1d/conv2d: backward is the transposed convolution with the same filters (bias plays no part)."""

    name = "conv"

    def __init__(self, weight, stride, dilation, groups, pad_before, in_shape):
        self.weight, self.groups, self.in_shape = weight, int(groups), tuple(in_shape)
        self.dims = weight.dim() - 2
        k = weight.shape[2:]
        self.stride, self.dilation, self.pad = stride, dilation, pad_before
        self.geom = tuple(AxisGeometry((k[i] - 1) * dilation[i] + 1, stride[i], pad_before[i]) for i in range(self.dims))
        self.windowed = self.dims == 2

    def geometry(self, i):
        return self.geom if self.dims == 2 else (FULL, FULL)

    def backward(self, sig, saved, mode):
        if self.dims == 1:
            return [self._backward_1d(sig)]
        w, groups = self.weight.to(sig.g.dtype), self.groups
        B, K, C, h, ww = sig.g.shape
        per_group_in = w.shape[1]
        if sig.chan is not None and (groups == 1 or per_group_in == 1):  # one channel per unit
            n = B * K
            out = F.conv_transpose2d(sig.g.reshape(1, n, h, ww), w[sig.chan.reshape(-1)], None, self.stride, 0, 0, n,
                                     self.dilation)
            chan = None if groups == 1 else sig.chan // (w.shape[0] // groups)  # depthwise: the group's input
        else:
            g = sig.dense(w.shape[0]).g
            out = F.conv_transpose2d(g.reshape(B * K, -1, h, ww), w, None, self.stride, 0, 0, groups, self.dilation)
            chan = None
        out = Signal(out.view(B, K, -1, *out.shape[-2:]), chan, sig.start)
        out.move(self.geom, out.g)
        return [out]

    def _backward_1d(self, sig):
        B, K = sig.g.shape[:2]
        g = sig.g.reshape(B * K, *sig.g.shape[2:])
        out = F.conv_transpose1d(g, self.weight.to(g.dtype), None, self.stride, 0, 0, self.groups, self.dilation)
        L, p = self.in_shape[-1], self.pad[0]  # out covers input cells [-p, -p + len)
        full = out.new_zeros(out.shape[0], out.shape[1], L)
        a, b = max(p, 0), min(p + L, out.shape[-1])
        full[..., a - p:b - p] = out[..., a:b]
        return Signal(full.view(B, K, *full.shape[1:]))


class BatchNorm(Rule):
    """batch_norm with running statistics, ``y = γ (x − μ)/√(σ² + ε) + β``: backward multiplies by ``γ/√(σ²+ε)``."""

    name = "batch_norm"
    windowed = True

    def __init__(self, running_var, weight, eps):
        s = torch.rsqrt(running_var + eps)
        self.scale = s * weight if weight is not None else s

    def backward(self, sig, saved, mode):
        if mode.rule == "linear" and not mode.batchnorm:
            return [sig]
        s = self.scale.to(sig.g.dtype)
        if sig.chan is not None:
            return [Signal(sig.g * s[sig.chan][:, :, None, None, None], sig.chan, sig.start)]
        shape = [1, 1, -1] + [1] * (sig.g.dim() - 3)
        return [Signal(sig.g * s.view(shape), sig.chan, sig.start)]


class Activation(Rule):
    """relu, leaky_relu and tanh with the rules of the module docstring; smooth ones in gradient mode."""

    windowed = True

    def __init__(self, name, slope=0.0, fn=None):
        self.name, self.slope, self.fn = name, float(slope), fn

    @property
    def relu_like(self) -> bool:
        return self.name in ("relu", "leaky_relu") or self.name in _RELU_LIKE

    def run(self, call, mode):
        x = call.args[0]
        saved = None
        if mode is not None and mode.rule in ("guided", "gradient"):
            if self.name in ("relu", "leaky_relu"):
                saved = x > 0
            elif self.name == "tanh":
                t = torch.tanh(x)
                saved = 1 - t * t
            else:  # a smooth activation: its derivative, elementwise
                with torch.enable_grad():
                    xr = x.detach().requires_grad_(True)
                    (saved,) = torch.autograd.grad(self.fn(xr).sum(), xr)
        return call.func(*call.args, **call.kwargs), saved

    def _rectify(self, g):
        if not self.relu_like:  # tanh: nothing to rectify
            return g
        return F.leaky_relu(g, self.slope) if self.slope else F.relu(g)

    def backward(self, sig, saved, mode):
        if mode.rule == "linear":
            return [sig]
        g = sig.g if mode.rule == "gradient" else self._rectify(sig.g)
        if mode.rule != "deconv":
            gate = sig.take(saved)
            if self.name == "relu":
                g = g * gate.to(g.dtype)
            elif self.name == "leaky_relu":
                g = torch.where(gate, g, g * self.slope)
            else:
                g = g * gate.to(g.dtype)
        return [Signal(g, sig.chan, sig.start)]


class MaxPool(Rule):
    """max_pool: forward records the switches (argmax indices); backward sends values back to them.

    2-D pools work on windows; 1-D and adaptive pools on the whole tensor.
    """

    name = "max_pool"

    def __init__(self, kernel, stride, padding, dilation, ceil_mode, in_shape, adaptive=False):
        self.in_shape, self.adaptive = tuple(in_shape), adaptive
        self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode = kernel, stride, padding, dilation, ceil_mode
        self.windowed = len(self.in_shape) == 4 and not adaptive
        if self.windowed:
            self.geom = tuple(AxisGeometry((kernel[i] - 1) * dilation[i] + 1, stride[i], padding[i]) for i in range(2))

    def geometry(self, i):
        return self.geom if self.windowed else (FULL, FULL)

    def run(self, call, mode):
        x = call.args[0]
        wants_indices = bool(call.kwargs.get("return_indices", False)) or (
            len(call.args) > 6 and bool(call.args[6]))
        if self.adaptive:
            fn = F.adaptive_max_pool2d if x.dim() == 4 else F.adaptive_max_pool1d
            out, idx = fn(x, self.kernel, return_indices=True)
        else:
            fn = F.max_pool2d if len(self.kernel) == 2 else F.max_pool1d
            out, idx = fn(x, self.kernel, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode,
                          return_indices=True)
        saved = {"idx": idx} if self.windowed else idx  # (offsets inside each window: made when needed)
        return ((out, idx) if wants_indices else out), saved

    def _code(self, saved, S_t: int):
        """``di · S_t + dj`` for each switch at (row ``di``, column ``dj``) inside its own pooling window,
        ``(B, C, H', W')`` (cached per window width ``S_t``)."""
        key = ("code", S_t)
        if key not in saved:
            idx = saved["idx"]
            Ho, Wo = idx.shape[-2:]
            W_in = self.in_shape[3]
            top = (torch.arange(Ho, device=idx.device) * self.stride[0] - self.padding[0]).view(Ho, 1)
            left = (torch.arange(Wo, device=idx.device) * self.stride[1] - self.padding[1]).view(1, Wo)
            rows = idx // W_in
            saved[key] = (rows - top) * S_t + (idx - rows * W_in - left)
        return saved[key]

    def backward(self, sig, saved, mode):
        if mode.rule == "linear":
            return [self._linear(sig, mode.unpool)]
        if not self.windowed:
            B, K = sig.g.shape[:2]
            g = sig.g.reshape(B, K, self.in_shape[1], -1)
            idx = saved.reshape(B, 1, self.in_shape[1], -1).expand_as(g)
            out = g.new_zeros(B, K, self.in_shape[1], int(torch.tensor(self.in_shape[2:]).prod()))
            return [Signal(out.scatter_add_(-1, idx, g).view(B, K, *self.in_shape[1:]))]
        gf, gt = self.geom
        B, K, C, h, w = sig.g.shape
        S_f, S_t = gf.back(0, h)[1], gt.back(0, w)[1]
        if B * K * C * h * w < saved["idx"].numel():  # small windows: split the few switches they read
            idx = sig.take(saved["idx"])  # (B, K|1, C', h, w) flat index into the input's H·W plane
            W_in = self.in_shape[3]
            a_f, a_t = (geo.back(s, 1)[0] for geo, s in zip(self.geom, sig.start))  # the window's top-left cell
            a_f, a_t = (a if isinstance(a, int) else a[:, :, None, None, None] for a in (a_f, a_t))
            local = ((idx // W_in - a_f) * S_t + (idx % W_in - a_t)).clamp_(0, S_f * S_t - 1)
        else:  # switch of window cell (i, j): input window cell (i·s_f + di, j·s_t + dj)
            code = sig.take(self._code(saved, S_t))  # (B, K|1, C', h, w)
            base = (torch.arange(h, device=code.device) * (gf.stride * S_t)).view(h, 1) + \
                (torch.arange(w, device=code.device) * gt.stride).view(1, w)
            local = (code + base).clamp_(0, S_f * S_t - 1)
        local = local.expand(B, K, C, h, w).reshape(B, K, C, h * w)
        out = sig.g.new_zeros(B, K, C, S_f * S_t).scatter_add_(-1, local, sig.g.reshape(B, K, C, h * w))
        res = Signal(out.view(B, K, C, S_f, S_t), sig.chan, sig.start)
        res.move(self.geom, res.g)
        return [res]

    def _linear(self, sig, unpool):
        """No switches without an input: unpool to a fixed cell of each window, or spread evenly."""
        if not self.windowed:
            raise Unsupported("filter projection through a 1-D or adaptive max-pool is not defined")
        kh, kw = self.kernel
        B, K, C, h, w = sig.g.shape
        kernel = sig.g.new_zeros(1, 1, kh, kw)
        if unpool == "center":
            kernel[..., (kh - 1) // 2, (kw - 1) // 2] = 1
        else:
            kernel.fill_(1.0 / (kh * kw))
        out = F.conv_transpose2d(sig.g.reshape(B * K * C, 1, h, w), kernel, None, self.stride, 0, 0, 1, self.dilation)
        res = Signal(out.view(B, K, C, *out.shape[-2:]), sig.chan, sig.start)
        res.move(self.geom, res.g)
        return res


class AvgPool(Rule):
    """avg_pool2d: backward spreads each value, divided by its window's divisor, evenly over the window."""

    name = "avg_pool"
    windowed = True

    def __init__(self, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, x):
        self.kernel, self.stride = kernel, stride
        self.in_shape = tuple(x.shape)
        self.geom = tuple(AxisGeometry(kernel[i], stride[i], padding[i]) for i in range(2))
        ones = x.new_ones(1, 1, *x.shape[2:])
        args = (kernel, stride, padding, ceil_mode, count_include_pad)
        mean = F.avg_pool2d(ones, *args, divisor_override)  # (#cells inside) / divisor
        cells = F.avg_pool2d(ones, *args, 1)  # #cells inside the input
        self.weight = mean / cells  # (1, 1, H', W'): 1 / divisor of each window

    def geometry(self, i):
        return self.geom

    def backward(self, sig, saved, mode):
        B, K, C, h, w = sig.g.shape
        Cx = self.in_shape[1]
        wmap = sig.take(self.weight.to(sig.g.dtype).expand(B, Cx, *self.weight.shape[2:]))
        g = (sig.g * wmap).reshape(B * K * C, 1, h, w)
        ones = g.new_ones(1, 1, *self.kernel)
        out = F.conv_transpose2d(g, ones, None, self.stride)
        res = Signal(out.view(B, K, C, *out.shape[-2:]), sig.chan, sig.start)
        res.move(self.geom, res.g)
        return [res]


class LinearVJP(Rule):
    """An operation that is linear in its one live input and acts on each example alone (adaptive average
    pooling, 1-D average pooling, padding, interpolation): its transpose is autograd's, on the whole tensor."""

    def __init__(self, name, fn, in_shape):
        self.name, self.fn, self.in_shape = name, fn, tuple(in_shape)

    def backward(self, sig, saved, mode):
        B, K = sig.g.shape[:2]
        with torch.enable_grad():
            z = sig.g.new_zeros(B * K, *self.in_shape[1:], requires_grad=True)
            y = self.fn(z)
            (grad,) = torch.autograd.grad(y, z, sig.g.reshape(B * K, *y.shape[1:]))
        return [Signal(grad.view(B, K, *self.in_shape[1:]))]


class Pad(Rule):
    """F.pad with zeros on the last two axes of a 4-D tensor: the window moves, the values stay."""

    name = "pad"
    windowed = True

    def __init__(self, pad, in_shape):
        p = list(pad) + [0] * (4 - len(pad))  # (t_left, t_right, f_top, f_bottom)
        self.geom = (AxisGeometry(1, 1, int(p[2])), AxisGeometry(1, 1, int(p[0])))
        self.in_shape = tuple(in_shape)

    def geometry(self, i):
        return self.geom

    def backward(self, sig, saved, mode):
        out = Signal(sig.g, sig.chan, sig.start)
        out.move(self.geom, sig.g)
        return [out]


def _broadcast_geometry(in_shape, out_shape):
    return tuple(FULL if in_shape[a] == 1 and out_shape[a] > 1 else POINTWISE for a in (2, 3))


def _reduce_to(sig: Signal, in_shape, out_shape) -> Signal:
    """A signal on a broadcast result → the signal on the operand of ``in_shape`` (sum over broadcast axes)."""
    if not sig.spatial:
        g = sig.g
        for d, (a, b) in enumerate(zip(in_shape, out_shape)):
            if a == 1 and b > 1:
                g = g.sum(d + 1, keepdim=True)
        return Signal(g)
    g, chan, start = sig.g, sig.chan, list(sig.start)
    if in_shape[1] == 1 and out_shape[1] > 1:
        g = g if chan is not None else g.sum(2, keepdim=True)
        chan = None
    for axis in (0, 1):
        if in_shape[2 + axis] == 1 and out_shape[2 + axis] > 1:
            g = g.sum(3 + axis, keepdim=True)
            start[axis] = 0
    return Signal(g, chan, start)


class Sum(Rule):
    """add, sub, neg, expand: each live operand gets ``coefficient × g``, summed over its broadcast axes."""

    windowed = True

    def __init__(self, name, coefficients, in_shapes, out_shape):
        self.name, self.coefficients = name, coefficients
        self.in_shapes, self.out_shape = [tuple(s) for s in in_shapes], tuple(out_shape)
        self.windowed = all(len(s) == 4 for s in self.in_shapes) and len(self.out_shape) == 4

    def geometry(self, i):
        return _broadcast_geometry(self.in_shapes[i], self.out_shape) if self.windowed else (FULL, FULL)

    def backward(self, sig, saved, mode):
        out = []
        for c, shape in zip(self.coefficients, self.in_shapes):
            s = sig if c == 1 else Signal(sig.g * c, sig.chan, sig.start)
            out.append(_reduce_to(s, shape, self.out_shape))
        return out


class Scale(Rule):
    """mul/div of one live operand by a constant (a number or a tensor that does not depend on the input)."""

    def __init__(self, name, factor, in_shape, out_shape, divide):
        self.name, self.in_shape, self.out_shape, self.divide = name, tuple(in_shape), tuple(out_shape), divide
        self.factor = factor
        self.windowed = len(self.in_shape) == 4 and len(self.out_shape) == 4

    def geometry(self, i):
        return _broadcast_geometry(self.in_shape, self.out_shape) if self.windowed else (FULL, FULL)

    def backward(self, sig, saved, mode):
        f = self.factor
        if isinstance(f, torch.Tensor):
            f = sig.take(f.to(sig.g.dtype).expand(self.out_shape))
        g = sig.g / f if self.divide else sig.g * f
        return [_reduce_to(Signal(g, sig.chan, sig.start), self.in_shape, self.out_shape)]


class Cat(Rule):
    """cat: each live input gets its slice of the signal (channel concatenation works on windows)."""

    name = "cat"

    def __init__(self, dim, sizes, live, out_ndim):
        self.dim, self.sizes, self.live = dim, sizes, live
        self.windowed = out_ndim == 4 and dim == 1

    def backward(self, sig, saved, mode):
        if self.windowed:
            sig = sig.dense(sum(self.sizes))
        parts = torch.split(sig.g, self.sizes, dim=self.dim + 1)
        return [Signal(p, None, sig.start) for p, keep in zip(parts, self.live) if keep]


class Stack(Rule):
    name = "stack"

    def __init__(self, dim, live):
        self.dim, self.live = dim, live

    def backward(self, sig, saved, mode):
        return [Signal(sig.g.select(self.dim + 1, i)) for i, keep in enumerate(self.live) if keep]


class Reshape(Rule):
    """view, reshape, flatten, unflatten, squeeze, unsqueeze: the signal is reshaped back.

    A 4-D → 4-D reshape that keeps the last (time) axis, such as sub-spectral normalisation's
    ``(B, C, F, T) → (B, C·S, F/S, T)``, keeps time windows (frequency and channels are taken whole).
    """

    def __init__(self, name, in_shape, out_shape):
        self.name, self.in_shape, self.out_shape = name, tuple(in_shape), tuple(out_shape)
        self.windowed = len(self.in_shape) == 4 and len(self.out_shape) == 4 and self.in_shape[3] == self.out_shape[3]

    def geometry(self, i):
        return (FULL, POINTWISE) if self.windowed else (FULL, FULL)

    def backward(self, sig, saved, mode):
        B, K = sig.g.shape[:2]
        if not self.windowed:
            return [Signal(sig.g.reshape(B, K, *self.in_shape[1:]))]
        sig = sig.dense(self.out_shape[1])
        sig.fit(*self.out_shape[2:])
        whole_f = sig.repositioned([0, sig.start[1]], (self.out_shape[2], sig.g.shape[-1]))
        g = whole_f.g.reshape(B, K, self.in_shape[1], self.in_shape[2], whole_f.g.shape[-1])
        return [Signal(g, None, [0, sig.start[1]])]


class Permute(Rule):
    """permute, transpose: the signal is permuted back."""

    def __init__(self, name, perm):
        self.name = name
        inv = [0] * len(perm)
        for i, p in enumerate(perm):
            inv[p] = i
        self.back = [0, 1] + [d + 1 for d in inv[1:]]

    def backward(self, sig, saved, mode):
        return [Signal(sig.g.permute(*self.back))]


class GetItem(Rule):
    """Basic indexing (ints, slices, None, ...): the signal is written back into zeros at the indexed cells."""

    name = "getitem"

    def __init__(self, index, in_shape):
        self.index, self.in_shape = index, tuple(in_shape)

    def backward(self, sig, saved, mode):
        B, K = sig.g.shape[:2]
        z = sig.g.new_zeros(B, K, *self.in_shape[1:])
        z[(slice(None), slice(None)) + self.index[1:]] = sig.g
        return [Signal(z)]


class Reduce(Rule):
    """mean / sum over non-batch dims: the signal is spread back evenly (mean: divided by the count)."""

    def __init__(self, name, dims, keepdim, in_shape):
        self.name, self.dims, self.keepdim, self.in_shape = name, sorted(dims), keepdim, tuple(in_shape)
        count = 1
        for d in self.dims:
            count *= self.in_shape[d]
        self.factor = 1.0 / count if name == "mean" else 1.0
        self.windowed = len(self.in_shape) == 4 and keepdim and set(self.dims) <= {2, 3}

    def geometry(self, i):
        if not self.windowed:
            return (FULL, FULL)
        return tuple(FULL if a in self.dims else POINTWISE for a in (2, 3))

    def backward(self, sig, saved, mode):
        g = sig.g
        if not self.keepdim:
            for d in self.dims:
                g = g.unsqueeze(d + 1)
        if self.windowed:
            h = self.in_shape[2] if 2 in self.dims else g.shape[3]
            w = self.in_shape[3] if 3 in self.dims else g.shape[4]
            start = [0 if 2 + a in self.dims else s for a, s in enumerate(sig.start)]
            return [Signal(g.expand(*g.shape[:3], h, w) * self.factor, sig.chan, start)]
        return [Signal(g.expand(*g.shape[:2], *self.in_shape[1:]) * self.factor)]


class Linear(Rule):
    """linear (on the last axis): backward multiplies by the weight matrix."""

    name = "linear"

    def __init__(self, weight):
        self.weight = weight

    def backward(self, sig, saved, mode):
        return [Signal(sig.g @ self.weight.to(sig.g.dtype))]


class Opaque(Rule):
    """A call without a projection rule: fine off the path, an error (naming it) on the path."""

    def __init__(self, name, reason):
        self.name, self.reason = name, reason

    def backward(self, sig, saved, mode):
        raise Unsupported(self.reason)


# ---------------------------------------------------------------------------------------------
# the table: torch function → (op name, factory)
# ---------------------------------------------------------------------------------------------
def _conv(call, mode):
    a = call.bind(("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                  dict(bias=None, stride=1, padding=0, dilation=1, groups=1))
    inputs = call.only(a.input)
    n = a.weight.dim() - 2
    as_n = (lambda v: (int(v),) * n if isinstance(v, int) else tuple(int(u) for u in v))
    k, stride, dilation = a.weight.shape[2:], as_n(a.stride), as_n(a.dilation)
    if a.padding == "same":
        pad = tuple(dilation[i] * (k[i] - 1) // 2 for i in range(n))
    elif a.padding == "valid":
        pad = (0,) * n
    else:
        pad = as_n(a.padding)
    return Conv(a.weight.detach(), stride, dilation, a.groups, pad, a.input.shape), inputs


def _batch_norm(call, mode):
    a = call.bind(("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                  dict(weight=None, bias=None, training=False, momentum=0.1, eps=1e-5))
    if a.training or a.running_var is None or a.running_mean is None:
        raise Unsupported("batch_norm normalises by the statistics of the batch (training mode or "
                          "track_running_stats=False), which is not a per-example map the projector can undo")
    inputs = call.only(a.input)
    return BatchNorm(a.running_var.detach(), None if a.weight is None else a.weight.detach(), float(a.eps)), inputs


# smooth or clipped relatives of ReLU (deconv rectifies like ReLU; guided gates by f'(x)) and
# saturating activations (gradient mode only)
_RELU_LIKE = {"silu": F.silu, "gelu": F.gelu, "mish": F.mish, "elu": F.elu, "selu": F.selu, "celu": F.celu,
              "softplus": F.softplus, "hardswish": F.hardswish, "relu6": F.relu6}
_SATURATING = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid, "hardtanh": F.hardtanh,
               "logsigmoid": F.logsigmoid}
_SMOOTH = {**_RELU_LIKE, **_SATURATING}


def _activation(name):
    def build(call, mode):
        x = call.args[0]
        inputs = call.only(x)
        if name in ("relu", "tanh"):
            return Activation(name), inputs
        if name == "leaky_relu":
            slope = call.bind(("input", "negative_slope"), dict(negative_slope=0.01)).negative_slope
            return Activation(name, slope), inputs
        if name in _SATURATING and mode is not None and mode.rule in ("deconv", "guided"):
            raise Unsupported(f"{name} has no {mode.rule} rule: Zeiler & Fergus rectify the backward signal "
                              "like the network's ReLU-type activations, and a saturating one has no such "
                              "rectification; use mode='gradient' for this model")
        fn = _SMOOTH[name]
        extra = dict(call.kwargs)
        extra.pop("inplace", None)
        rest = call.args[1:]
        return Activation(name, fn=lambda t: fn(t, *rest, **extra)), inputs
    return build


def _max_pool(dims, adaptive=False):
    def build(call, mode):
        if adaptive:
            a = call.bind(("input", "output_size"), {})
            x = a.input
            size = a.output_size
            return MaxPool(size, None, None, None, None, x.shape, adaptive=True), call.only(x)
        a = call.bind(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                      dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False))
        tup = _pair if dims == 2 else (lambda v: (int(v),) if isinstance(v, int) else (int(v[0]),))
        k = tup(a.kernel_size)
        s = tup(a.stride) if a.stride not in (None, []) and a.stride != () else k
        return MaxPool(k, s, tup(a.padding), tup(a.dilation), bool(a.ceil_mode), a.input.shape), call.only(a.input)
    return build


def _avg_pool2d(call, mode):
    a = call.bind(("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
                  dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None))
    if a.input.dim() != 4:
        return _linear_vjp("avg_pool")(call, mode)
    k = _pair(a.kernel_size)
    s = _pair(a.stride) if a.stride not in (None, []) and a.stride != () else k
    return AvgPool(k, s, _pair(a.padding), bool(a.ceil_mode), bool(a.count_include_pad), a.divisor_override,
                   a.input.detach()), call.only(a.input)


def _linear_vjp(name):
    def build(call, mode):
        x = call.args[0]
        inputs = call.only(x)
        rest, kw = call.args[1:], dict(call.kwargs)
        return LinearVJP(name, lambda z: call.func(z, *rest, **kw), x.shape), inputs
    return build


def _adaptive_avg_pool(call, mode):
    """A mean over the axes it collapses to 1 when it keeps every other axis (``(1, None)``: the mean over
    frequency of BC-ResNet, ``1``: global average pooling); any other size: its linear transpose."""
    a = call.bind(("input", "output_size"), {})
    x, size = a.input, a.output_size
    n = x.dim() - 2
    size = (size,) * n if isinstance(size, int) else tuple(size)
    axes = [2 + i for i in range(n)]
    kept = [s is None or int(s) == x.shape[ax] for s, ax in zip(size, axes)]
    collapsed = [s is not None and int(s) == 1 for s in size]
    if all(k or c for k, c in zip(kept, collapsed)):
        dims = [ax for ax, k, c in zip(axes, kept, collapsed) if c and not k]
        if not dims:
            return Identity("adaptive_avg_pool", x.dtype), call.only(x)
        return Reduce("mean", dims, True, x.shape), call.only(x)
    return _linear_vjp("adaptive_avg_pool")(call, mode)


def _pad(call, mode):
    a = call.bind(("input", "pad", "mode", "value"), dict(mode="constant", value=None))
    if a.mode != "constant":
        raise Unsupported(f"pad with mode={a.mode!r} (only zero/constant padding has a projection rule)")
    if a.input.dim() == 4 and len(a.pad) <= 4:
        return Pad(a.pad, a.input.shape), call.only(a.input)
    return _linear_vjp("pad")(call, mode)


def _interpolate(call, mode):
    a = call.bind(("input", "size", "scale_factor", "mode"), dict(size=None, scale_factor=None, mode="nearest"))
    if a.mode not in ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area"):
        raise Unsupported(f"interpolate with mode={a.mode!r}")
    return _linear_vjp("interpolate")(call, mode)


def _dropout(call, mode):
    a = call.bind(("input", "p", "training", "inplace"), dict(p=0.5, training=True, inplace=False))
    if a.training:
        raise Unsupported("dropout in training mode (the projector runs the model in eval mode; this call "
                          "passes training=True explicitly)")
    return Identity("dropout", a.input.dtype), call.only(a.input)


def _identity(name):
    def build(call, mode):
        x = call.args[0]
        return Identity(name, x.dtype), call.only(x)
    return build


def _shape_of(v):
    return tuple(v.shape) if isinstance(v, torch.Tensor) else ()


def _sum(name):
    def build(call, mode):
        x, y = (call.args + (None,))[:2]
        if y is None:
            y = call.kwargs.get("other")
        alpha = call.kwargs.get("alpha", 1)
        out_shape = torch.broadcast_shapes(_shape_of(x), _shape_of(y))
        if name == "rsub":  # y - x
            terms = [(x, -alpha), (y, 1)]
        elif name == "sub":
            terms = [(x, 1), (y, -alpha)]
        else:
            terms = [(x, 1), (y, alpha)]
        live = [(t, c) for t, c in terms if isinstance(t, torch.Tensor) and call.is_live(t)]
        for t, _ in live:
            if t.dim() != len(out_shape) or t.shape[0] != out_shape[0]:
                raise Unsupported(f"{name} broadcasts a signal of shape {tuple(t.shape)} to {tuple(out_shape)} "
                                  "across the batch dimension")
        return Sum("add" if name != "sub" and name != "rsub" else "sub", [c for _, c in live],
                   [t.shape for t, _ in live], out_shape), [t for t, _ in live]
    return build


def _neg(call, mode):
    x = call.args[0]
    return Sum("neg", [-1], [x.shape], x.shape), call.only(x)


def _expand(call, mode):
    x = call.args[0]
    if call.func is torch.Tensor.expand_as:
        size = tuple(call.args[1].shape)
    else:
        size = call.args[1:] if len(call.args) > 2 or not isinstance(call.args[1], (tuple, list, torch.Size)) \
            else tuple(call.args[1])
        size = tuple(x.shape[i - (len(size) - x.dim())] if int(s) == -1 else int(s) for i, s in enumerate(size))
    if len(size) != x.dim() or size[0] != x.shape[0]:
        raise Unsupported(f"expand from {tuple(x.shape)} to {size} adds or changes the batch dimension")
    return Sum("expand", [1], [x.shape], size), call.only(x)


def _scale(name):
    def build(call, mode):
        x, y = (call.args + (None,))[:2]
        if y is None:
            y = call.kwargs.get("other")
        if call.kwargs.get("rounding_mode") is not None:
            raise Unsupported(f"div with rounding_mode={call.kwargs['rounding_mode']!r}")
        lx = isinstance(x, torch.Tensor) and call.is_live(x)
        ly = isinstance(y, torch.Tensor) and call.is_live(y)
        if name == "div" and ly:
            raise Unsupported("division by a signal has no projection rule")
        if lx and ly:
            raise Unsupported(f"{name} of two signals (a product such as a gate or attention) has no projection rule")
        live, const = (x, y) if lx else (y, x)
        out_shape = torch.broadcast_shapes(_shape_of(x), _shape_of(y))
        if live.dim() != len(out_shape) or live.shape[0] != out_shape[0]:
            raise Unsupported(f"{name} broadcasts a signal across the batch dimension")
        factor = const.detach() if isinstance(const, torch.Tensor) else float(const)
        return Scale(name, factor, live.shape, out_shape, name == "div"), [live]
    return build


def _cat(call, mode):
    a = call.bind(("tensors", "dim"), dict(dim=0))
    ts = list(a.tensors)
    ref = next(t for t in ts if call.is_live(t))
    d = _norm_dim(a.dim, ref.dim())
    if d == 0:
        raise Unsupported("cat along the batch dimension mixes examples")
    live = [call.is_live(t) for t in ts]
    return Cat(d, [int(t.shape[d]) for t in ts], live, ref.dim()), [t for t, k in zip(ts, live) if k]


def _stack(call, mode):
    a = call.bind(("tensors", "dim"), dict(dim=0))
    ts = list(a.tensors)
    d = _norm_dim(a.dim, ts[0].dim() + 1)
    if d == 0:
        raise Unsupported("stack along the batch dimension mixes examples")
    live = [call.is_live(t) for t in ts]
    return Stack(d, live), [t for t, k in zip(ts, live) if k]


def _reshape(name):
    def build(call, mode):
        x = call.args[0]
        out = call.func(*call.args, **call.kwargs)  # cheap: a view or a copy of the shape only
        if out.dim() == 0 or x.dim() == 0 or out.shape[0] != x.shape[0]:
            raise Unsupported(f"{name} from {tuple(x.shape)} to {tuple(out.shape)} changes the batch dimension")
        return Reshape(name, x.shape, out.shape), call.only(x)
    return build


def _permute(name):
    def build(call, mode):
        x = call.args[0]
        n = x.dim()
        if name == "permute":
            dims = call.args[1:] if len(call.args) > 2 or isinstance(call.args[1], int) else call.args[1]
            dims = call.kwargs.get("dims", dims)
            perm = [_norm_dim(d, n) for d in dims]
        else:
            a = call.bind(("input", "dim0", "dim1"), {})
            d0, d1 = _norm_dim(a.dim0, n), _norm_dim(a.dim1, n)
            perm = list(range(n))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        if perm[0] != 0:
            raise Unsupported(f"{name} moves the batch dimension")
        return Permute(name, perm), call.only(x)
    return build


def _getitem(call, mode):
    x, index = call.args[0], call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (torch.Tensor, list, bool)) for i in index):
        raise Unsupported("indexing with tensors, lists or booleans (advanced indexing)")
    if any(i is Ellipsis for i in index):
        k = index.index(Ellipsis)
        n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (slice(None),) * (x.dim() - n_real) + index[k + 1:]
    if not index or not (isinstance(index[0], slice) and index[0] == slice(None)):
        raise Unsupported(f"indexing {index!r} selects along the batch dimension")
    return GetItem(index, x.shape), call.only(x)


def _reduce(name):
    def build(call, mode):
        x = call.args[0]
        a = call.bind(("input", "dim", "keepdim"), dict(dim=None, keepdim=False))
        if a.dim is None or (isinstance(a.dim, (tuple, list)) and len(a.dim) == 0):
            raise Unsupported(f"{name} over every dimension mixes the examples of the batch")
        if call.kwargs.get("dtype") is not None:
            raise Unsupported(f"{name} with dtype=")
        dims = [a.dim] if isinstance(a.dim, int) else list(a.dim)
        dims = [_norm_dim(d, x.dim()) for d in dims]
        if 0 in dims:
            raise Unsupported(f"{name} over the batch dimension mixes examples")
        return Reduce(name, dims, bool(a.keepdim), x.shape), call.only(x)
    return build


def _linear(call, mode):
    a = call.bind(("input", "weight", "bias"), dict(bias=None))
    return Linear(a.weight.detach()), call.only(a.input)


def _fns(*names, owner=None):
    """The functions ``names`` of torch, torch.nn.functional and torch.Tensor that exist."""
    found = []
    for n in names:
        for mod in ((owner,) if owner is not None else (torch, F, torch.Tensor, torch._C._nn)):
            f = getattr(mod, n, None)
            if f is not None and callable(f):
                found.append(f)
    return found


def _table():
    spec = [
        (("conv1d", "conv2d"), "conv", _conv, (torch, F)),
        (("batch_norm",), "batch_norm", _batch_norm, (torch, F)),
        (("relu", "relu_"), "relu", _activation("relu"), None),
        (("leaky_relu", "leaky_relu_"), "leaky_relu", _activation("leaky_relu"), None),
        (("tanh", "tanh_"), "tanh", _activation("tanh"), None),
        (("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"), "max_pool", _max_pool(2), (F,)),
        (("max_pool1d", "_max_pool1d", "max_pool1d_with_indices"), "max_pool", _max_pool(1), (F,)),
        (("adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
          "adaptive_max_pool1d", "_adaptive_max_pool1d", "adaptive_max_pool1d_with_indices"),
         "adaptive_max_pool", _max_pool(2, adaptive=True), (F,)),
        (("avg_pool2d",), "avg_pool", _avg_pool2d, (F, torch._C._nn)),
        (("avg_pool1d",), "avg_pool", _linear_vjp("avg_pool"), (torch, F)),
        (("adaptive_avg_pool2d", "adaptive_avg_pool1d"), "adaptive_avg_pool", _adaptive_avg_pool,
         (torch, F, torch._C._nn)),
        (("pad",), "pad", _pad, (F, torch._C._nn)),
        (("interpolate", "upsample"), "interpolate", _interpolate, (F,)),
        (("dropout", "dropout2d", "dropout1d", "alpha_dropout", "feature_alpha_dropout"), "dropout", _dropout, (F,)),
        (("contiguous", "clone", "float", "double", "to", "type_as", "half", "bfloat16"), "identity",
         None, (torch.Tensor,)),
        (("add", "add_", "__add__", "__radd__", "__iadd__"), "add", _sum("add"), (torch, torch.Tensor)),
        (("sub", "sub_", "__sub__", "__isub__", "subtract"), "sub", _sum("sub"), (torch, torch.Tensor)),
        (("__rsub__", "rsub"), "sub", _sum("rsub"), (torch, torch.Tensor)),
        (("neg", "neg_", "__neg__", "negative"), "neg", _neg, (torch, torch.Tensor)),
        (("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"), "mul", _scale("mul"), (torch, torch.Tensor)),
        (("div", "div_", "__truediv__", "__itruediv__", "divide", "true_divide"), "div", _scale("div"),
         (torch, torch.Tensor)),
        (("expand", "expand_as", "broadcast_to"), "expand", _expand, (torch, torch.Tensor)),
        (("cat", "concat", "concatenate"), "cat", _cat, (torch,)),
        (("stack",), "stack", _stack, (torch,)),
        (("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"), "reshape",
         None, (torch, torch.Tensor)),
        (("permute",), "permute", _permute("permute"), (torch, torch.Tensor)),
        (("transpose", "swapaxes", "swapdims"), "transpose", _permute("transpose"), (torch, torch.Tensor)),
        (("__getitem__",), "getitem", _getitem, (torch.Tensor,)),
        (("mean",), "mean", _reduce("mean"), (torch, torch.Tensor)),
        (("sum",), "sum", _reduce("sum"), (torch, torch.Tensor)),
        (("linear",), "linear", _linear, (F, torch._C._nn)),
    ]
    table = {}
    for names, op, factory, owners in spec:
        for n in names:
            build = factory
            if factory is None:
                build = _identity(n) if op == "identity" else _reshape(n)
            for mod in owners or (torch, F, torch.Tensor):
                f = getattr(mod, n, None)
                if f is not None and callable(f):
                    table.setdefault(f, (op if op not in ("identity", "reshape") else n.strip("_"), build))
    for n, fn in _SMOOTH.items():
        for f in _fns(n, n + "_"):
            table.setdefault(f, (n, _activation(n)))
    return table


OPS = _table()

# functions that never make a signal (queries, constants, detach): the tracer lets them pass
NO_SIGNAL = {f for n in ("detach", "size", "dim", "numel", "stride", "is_contiguous", "data_ptr", "element_size",
                         "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "__len__",
                         "__bool__", "__format__", "__repr__", "argmax", "argmin", "eq", "ne", "gt", "lt", "ge", "le",
                         "__eq__", "__ne__", "__gt__", "__lt__", "__ge__", "__le__", "isnan", "isfinite", "any",
                         "all", "nonzero", "item", "tolist", "numpy", "cpu", "cuda", "new_zeros", "new_ones",
                         "new_empty", "new_full", "new_tensor", "requires_grad_", "type", "get_device")
             for f in _fns(n)}


def op_name(func) -> str:
    """The short name of a torch function, as used in layer names (``relu``, ``add``, ``conv``, ``gelu``)."""
    hit = OPS.get(func)
    if hit is not None:
        return hit[0]
    name = getattr(func, "__name__", None) or type(func).__name__
    return name.strip("_") or "op"


# ---------------------------------------------------------------------------------------------
# layer names
# ---------------------------------------------------------------------------------------------
def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module | None]:
    """Layer name → (name, module whose output is the feature map, or ``None`` for an operation).

    Accepts the package's names (``"conv2"`` for :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`),
    any name from ``model.named_modules()`` (``layer1.0.relu2``), a module name with a call number
    for a module called several times (``layer1.0.relu#2``) and the name of a functional operation
    (``layer1.0:add``, checked when the model is traced; see ``docs/projection.md``).
    """
    modules = dict(model.named_modules())
    package = list(getattr(model, "layer_names", []) or [])
    if isinstance(layer, str) and layer:
        if layer in package and hasattr(model, "feature_module"):
            return layer, model.feature_module(layer)
        base = layer.rsplit("#", 1)[0] if "#" in layer else layer
        if base in modules and base:
            return layer, modules[base]
        if ":" in layer or (base not in modules and "#" in layer):
            return layer, None
    names = [n for n in modules if n and n != "frontend" and not n.startswith("frontend.")]  # not on the log-mel path
    shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
    valid = (f"{', '.join(package)} (or a module name: {shown})" if package else shown)
    raise ValueError(f"unknown layer {layer!r}; valid layers: {valid}")
