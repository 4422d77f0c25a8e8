"""The traced graph: layer names (modules, calls of a shared module, functional operations), refusals of
operations without a rule (one test each, naming the operation and its module), receptive fields of
residual graphs against the closed form, and a model left as it was."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audioconv.interpret import Projector, receptive_field, receptive_field_size
from _residual import bcresnet_cnn, reference_maps, resnet_cnn


def _x(shape=(2, 1, 12, 14), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ---- names ----------------------------------------------------------------------------------------
class SharedReLU(nn.Module):
    """torchvision's habit: one ReLU module called twice; plus a functional ReLU in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        y = self.relu(self.conv2(y) + y)
        return F.relu(y - 0.1)


def test_a_module_called_twice_is_named_by_its_call():
    model = SharedReLU().double().eval()
    x = _x()
    p = Projector(model, "deconv", device="cpu")
    with pytest.raises(ValueError, match=r"'relu' is ambiguous: the module is called 2 times.*relu#1, relu#2"):
        p.project(x, "relu", progress=False)
    with pytest.raises(ValueError, match=r"call number must be 1\.\.2"):
        p.project(x, "relu#3", progress=False)
    second = p.project(x, "relu#2", [0, 1], "map", progress=False)
    for k in range(2):
        seed = (lambda y, k=k: torch.zeros_like(y).index_copy(1, torch.tensor([k]), y[:, k:k + 1]))
        captured = []

        class Second(nn.Module):  # the reference needs a module whose output is the second call
            def forward(self, t):
                return t

        ref_model = SharedReLU().double().eval()
        ref_model.load_state_dict(model.state_dict())
        probe = Second()
        ref_model.relu.register_forward_hook(lambda m, i, o: captured.append(o) or (probe(o) if len(captured) == 2 else o))
        ref = reference_maps(ref_model, x, probe, "deconv", seed)
        assert _rel(second.maps[:, k], ref) <= 1e-9
    # the F.relu in the model's own forward is ":relu" (plain "relu" names the module here) ...
    top = p.feature_maps(x, ":relu")
    with torch.no_grad():
        assert torch.equal(top, model(x))

    class Outer(nn.Module):  # ... and plain "relu" where no module has that name
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, t):
            return F.relu(self.inner(t) - 0.2)

    outer = Outer()
    with torch.no_grad():
        assert torch.equal(Projector(outer, device="cpu").feature_maps(x, "relu"), outer(x))
        assert torch.equal(Projector(outer, device="cpu").feature_maps(x, "inner:relu"), model(x))


def test_operation_names_address_the_same_tensors_as_module_names():
    model = resnet_cnn()
    x = _x((2, 1, 16, 22), 1)
    p = Projector(model, "guided", device="cpu")
    by_module = p.project(x, "block1.relu2", [0, 3], progress=False)
    by_op = p.project(x, "block1.relu2:relu", [0, 3], progress=False)  # the F.relu inside nn.ReLU
    assert torch.equal(by_module.maps, by_op.maps)
    captured = {}
    model.block1.relu2.register_forward_pre_hook(lambda m, a: captured.setdefault("sum", a[0].clone()))
    with torch.no_grad():
        model(x)
    model.block1.relu2._forward_pre_hooks.clear()
    assert torch.equal(p.feature_maps(x, "block1:add"), captured["sum"])  # `out += identity` in block1's forward
    names = p.traced.census(x).ops
    assert "block1:add" in names and "block2.shortcut.0:conv" in names


def test_unknown_layer_lists_the_module_names():
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'; valid layers: stem, stem.0"):
        Projector(resnet_cnn(), device="cpu").project(_x((1, 1, 16, 22)), "layer9", progress=False)
    with pytest.raises(ValueError, match=r"'block1:mul'.*not called.*block1:add"):
        Projector(resnet_cnn(), device="cpu").project(_x((1, 1, 16, 22)), "block1:mul", progress=False)


# ---- refusals, one by one -------------------------------------------------------------------------
class Wrap(nn.Module):
    """conv → block(op) → ReLU module 'out' (the projected layer)."""

    def __init__(self, op, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.block = op
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.block(self.conv(x)))


class Fn(nn.Module):
    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, v in modules.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _conv(c=4):
    return nn.Conv2d(c, c, 3, padding=1)


REFUSED = {
    "sigmoid (deconv)": ("deconv", nn.Sigmoid(), r"torch\.sigmoid: sigmoid has no deconv rule"),
    "hardtanh (guided)": ("guided", nn.Hardtanh(), r"F\.hardtanh: hardtanh has no guided rule"),
    "gate x·sigmoid(x)": ("gradient", Fn(lambda m, x: x * torch.sigmoid(x)), r"Tensor\.mul: mul of two signals"),
    "softmax": ("deconv", nn.Softmax(dim=1), r"F\.softmax has no projection rule"),
    "layer_norm": ("deconv", nn.LayerNorm(14), r"F\.layer_norm has no projection rule"),
    "group_norm": ("gradient", nn.GroupNorm(2, 4), r"F\.group_norm has no projection rule"),
    "instance_norm": ("deconv", nn.InstanceNorm2d(4), r"F\.instance_norm has no projection rule"),
    "batch statistics": ("deconv", nn.BatchNorm2d(4, track_running_stats=False), r"statistics of the batch"),
    "batch_norm training=True": ("deconv", Fn(lambda m, x: F.batch_norm(x, m.bn.running_mean, m.bn.running_var,
                                                                       training=True), bn=nn.BatchNorm2d(4)),
                                 r"statistics of the batch"),
    "pad reflect": ("deconv", Fn(lambda m, x: F.pad(x, (1, 1, 1, 1), mode="reflect")[..., 1:-1, 1:-1]),
                    r"F\.pad: pad with mode='reflect'"),
    "conv padding_mode=circular": ("deconv", nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
                                   r"F\.pad: pad with mode='circular'"),
    "advanced indexing": ("deconv", Fn(lambda m, x: x[:, [0, 1, 2, 3]]), r"advanced indexing"),
    "mean over the batch": ("gradient", Fn(lambda m, x: x - x.mean(0, keepdim=True)), r"over the batch dimension"),
    "view across the batch": ("deconv", Fn(lambda m, x: x.reshape(-1, *x.shape[2:]).view(x.shape)),
                              r"changes the batch dimension"),
    "cat along the batch": ("deconv", Fn(lambda m, x: torch.cat([x, x], 0)[: x.shape[0]]), r"cat along the batch"),
    "dropout training=True": ("deconv", Fn(lambda m, x: F.dropout(x, 0.5, training=True)), r"dropout in training mode"),
    "write into a signal": ("deconv", Fn(lambda m, x: x.__setitem__((slice(None), 0), 0.0) or x),
                            r"Tensor\.__setitem__ has no projection rule"),
    "division by a signal": ("deconv", Fn(lambda m, x: x / (m.c(x) + 10.0), c=_conv()), r"division by a signal"),
    "torch.max": ("deconv", Fn(lambda m, x: x - torch.max(x, dim=1, keepdim=True)[0]), r"torch\.max has no projection"),
    "clamp": ("deconv", Fn(lambda m, x: x.clamp(min=0.1)), r"Tensor\.clamp has no projection rule"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_operation_without_a_rule_is_refused_naming_it_and_its_module(case):
    mode, op, message = REFUSED[case]
    model = Wrap(op).double().eval()
    with pytest.raises(ValueError, match=message) as err:
        Projector(model, mode, device="cpu").project(_x(), "out", progress=False)
    assert "in module 'block'" in str(err.value) and "on the path to layer 'out'" in str(err.value)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_saturating_and_smooth_activations_have_a_gradient_rule():
    """gradient mode: sigmoid, SiLU and GELU are supported (the true gradient)."""
    model = Wrap(nn.Sequential(nn.SiLU(), _conv(), nn.GELU(), _conv(), nn.Sigmoid())).double().eval()
    x = _x()
    proj = Projector(model, "gradient", device="cpu").project(x, "out", [0, 2], (3, 4), progress=False)
    for k, c in enumerate([0, 2]):
        xr = x.clone().requires_grad_(True)
        y = model(xr)[:, c, 3, 4]
        (g,) = torch.autograd.grad(y.sum(), xr)
        assert _rel(proj.maps[:, k], g[:, 0] * y.detach()[:, None, None]) <= 1e-9


def test_an_unsupported_operation_off_the_path_is_harmless():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.out = nn.ReLU()

        def forward(self, x):
            aux = F.gelu(x).amax()  # an unsupported branch the layer does not depend on
            return self.out(self.conv(x)) + 0 * aux

    model = Aux().double().eval()
    proj = Projector(model, "deconv", device="cpu").project(_x(), "out", [0], progress=False)
    assert proj.maps.abs().sum() > 0


def test_a_layer_that_does_not_depend_on_the_input_is_refused():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.ones(1, 2, 3, 3))
            self.out = nn.ReLU()

        def forward(self, x):
            return x.mean() * 0 + self.out(self.bias)

    with pytest.raises(ValueError, match="not reached.*does not depend on the input"):
        Projector(Const().double(), device="cpu").project(_x(), "out", progress=False)


# ---- receptive fields of graphs --------------------------------------------------------------------
def test_receptive_field_of_a_residual_block_is_its_longest_branch():
    """stem 3×3 conv (pad 1) → 2×2 pool → block (3×3, 3×3 | identity): r = 3 + 1 + 2·2 + 2·2 = 12, start
    2·(p − 2) − 1 = 2p − 5. block2 adds a stride-2 3×3 and a 3×3 (| a strided 1×1): r = 12 + 2·2 + 2·4 = 24,
    start 4p − 11."""
    model = resnet_cnn()
    assert receptive_field_size(model, "block1.relu2", (16, 22)) == (12, 12)
    assert receptive_field_size(model, "block2.relu2", (16, 22)) == (24, 24)
    assert receptive_field(model, "block1.relu2", 3, 5, input_size=(16, 22)) == (1, 13, 5, 17)
    assert receptive_field(model, "block2.relu2", 2, 3, input_size=(16, 22)) == (0, 16, 1, 22)  # clipped


def test_reduced_axes_are_seen_whole():
    """BC-ResNet: the mean over frequency lets every position see every mel bin; in time the stem (5) and
    the temporal conv (3) give 7 frames."""
    model = bcresnet_cnn()
    assert receptive_field_size(model, "block1.relu", (16, 20)) == (16, 7)
    assert receptive_field(model, "block1.relu", 2, 6, input_size=(16, 20)) == (0, 16, 3, 10)


@pytest.mark.parametrize("mode", ["deconv", "gradient"])
def test_residual_maps_are_zero_outside_their_receptive_field(mode):
    model = resnet_cnn()
    x = _x((2, 1, 16, 22), 4)
    proj = Projector(model, mode, device="cpu").project(x, "block2.relu2", None, "max", progress=False)
    inside = 0
    for b in range(2):
        for k in range(proj.maps.shape[1]):
            f0, f1, t0, t1 = proj.receptive_fields[b, k].tolist()
            m = proj.maps[b, k].clone()
            inside += int(m[f0:f1, t0:t1].abs().sum() > 0)
            m[f0:f1, t0:t1] = 0
            assert m.abs().max() == 0
    assert inside >= proj.maps.shape[1]


def test_model_is_left_as_it_was():
    model = resnet_cnn()
    model.train()
    x = _x((2, 1, 16, 22), 5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("deconv", "guided", "gradient"):
        Projector(model, mode, device="cpu").project(x, "block2.relu2", [0, 1], progress=False)
    with pytest.raises(ValueError):
        Projector(model, device="cpu").project(x, "block1:relu#7", progress=False)
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class _InPlace(nn.Module):
    """Each captured output is later written in place: relu_, +=, F.relu(inplace=True), item assignment."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        a = self.conv1(x)
        a.relu_()
        b = self.conv2(a)
        b += a
        b = F.relu(b, inplace=True)
        b[:, 0] = 0.0
        return self.head(b.mean(dim=(2, 3)))


def test_several_captured_maps_survive_later_in_place_calls():
    """Feature maps of several layers in one pass equal the values each layer had when it ran, even
    when the model later writes them in place (references: forward hooks that copy at once)."""
    torch.manual_seed(0)
    model, x = _InPlace().double().eval(), _x((2, 1, 6, 7))
    copied = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: copied.__setitem__(n, o.detach().clone()))
             for n, m in model.named_modules() if n in ("conv1", "conv2")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    got = Projector(model, mode="gradient").traced.feature_maps(x, ["conv1", "conv2", "head"])
    assert torch.equal(got["conv1"], copied["conv1"]) and torch.equal(got["conv2"], copied["conv2"])
