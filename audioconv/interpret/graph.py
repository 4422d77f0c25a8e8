"""The model's graph from its log-mel input to a layer, traced by running it, and the backward pass over it.

**Tracing.** :func:`trace` runs the model's own forward pass on a real batch under a
:class:`~torch.overrides.TorchFunctionMode` that sees every torch function the model calls
(``F.conv2d`` inside an ``nn.Conv2d``, a functional ``F.relu``, ``a + b``, ``torch.cat``,
``x.view(...)``, ...), and under forward hooks that say which module each call happens in. Each
call on a tensor that depends on the input becomes a :class:`Node` with the backward rule of
:data:`~audioconv.interpret.rules.OPS`; tensors are followed by identity, so residual additions,
concatenations and branches give a graph, not a chain. The forward stops as soon as the layer's
output exists. Calls without a rule become opaque nodes: harmless off the path, a ``ValueError``
naming the operation and its module when the layer depends on them.

Why not ``torch.fx``: symbolic tracing runs ``forward`` on proxies, so a model that looks at its
input (``if x.dim() != 4``, ``x.view(b, c * s, f // s, t)`` with sizes read from the tensor,
``SpectrogramCNN.classify``'s shape check) cannot be traced without changes, and its graph holds
Python-level ``call_module`` nodes whose backward rules would still need the functional ops inside.
Running the model (like ``torch.jit.trace``, but on every batch) sees the real shapes and the real
control flow, and sees exactly the functional calls whose backward rules are defined.

**Names.** Every operation gets a name: ``<module>:<op>`` for the ``n``-th call of ``op`` inside the
module called ``<module>`` in ``model.named_modules()`` (``layer1.0:add``, ``features.act2:relu``;
``:relu`` or plain ``relu`` for a call in the model's own ``forward``), with ``#n`` for the n-th call
of the same op in the same module (``layer1.0:relu#2``). A module's output is named by the module
(``layer1.0.relu2``), with ``#n`` when the module is called several times (``layer1.0.relu#2``).

**Backward.** :func:`backward` walks the nodes from the layer down to the input, each rule mapping
the ``B × K`` signals on its output to its inputs; where a tensor feeds several operations (the
input of a residual block) the signals of all its consumers are summed.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from audioconv.interpret.rules import NO_SIGNAL, OPS, SUPPORTED, Call, Mode, Opaque, Rule, Unsupported, op_name
from audioconv.interpret.signal import FULL, POINTWISE, Signal, merge

__all__ = ["Node", "Graph", "Census", "OUTPUT", "as_4d", "trace", "census", "capture", "backward", "input_boxes",
           "whole_input_axes", "unit_cells"]

#: The key :func:`trace` takes for the model's own output (a classifier's logits ``(B, n_classes)``).
OUTPUT = "<output>"


class _Stop(BaseException):
    """Raised to end the forward pass once every wanted layer has been seen (a BaseException, so a
    model's ``except Exception`` cannot swallow it)."""


@dataclass
class Node:
    """One operation of the traced graph (node 0 is the input)."""

    index: int
    name: str  # "<module>:<op>#n"
    rule: Rule | None
    inputs: list[int]  # node of each live input, in the rule's order
    shape: tuple
    where: str  # the module the call happens in ("" = the model's own forward)
    saved: object = None


@dataclass
class Graph:
    """The operations from the log-mel input (node 0) to a layer (node ``output``), traced on a batch.

    Attributes:
        layer: the layer name as asked.
        nodes: the nodes in the order they ran.
        output: index of the node whose output is the layer's feature map.
        feature_map: that output, ``(B, C, H, W)`` (or ``(B, C)`` / ``(B, C, L)``).
        aliases: ``{name: node}`` for every module call and operation seen (``"layer1.0.relu2#1"``).
    """

    layer: str
    nodes: list[Node]
    output: int
    feature_map: torch.Tensor
    aliases: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Channels (units) of the layer's feature map."""
        return int(self.feature_map.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.nodes[0].shape[-2:])

    def feature_size(self) -> tuple[int, int]:
        """``(H, W)`` of the layer's feature map (``(1, 1)`` for ``(B, C)``, ``(1, L)`` for ``(B, C, L)``)."""
        s = self.feature_map.shape
        return (1, 1) if len(s) == 2 else (1, int(s[2])) if len(s) == 3 else (int(s[2]), int(s[3]))

    def on_path(self) -> list[Node]:
        """The nodes the layer's output depends on (ancestors of ``output``), in running order."""
        keep = {self.output}
        for node in reversed(self.nodes[: self.output + 1]):
            if node.index in keep:
                keep.update(node.inputs)
        return [n for n in self.nodes if n.index in keep]

    def check(self) -> None:
        """``ValueError`` naming the first operation on the path without a backward rule."""
        for node in self.on_path():
            if isinstance(node.rule, Opaque):
                where = f"module {node.where!r}" if node.where else "the model's own forward"
                raise ValueError(f"{node.rule.reason} — operation {node.name!r} in {where} is on the path to "
                                 f"layer {self.layer!r}; supported: {SUPPORTED}")

    def is_chain(self) -> bool:
        """Whether the path is a plain chain (each operation feeds the next one only)."""
        path = self.on_path()
        return all(len(n.inputs) == 1 and n.inputs[0] == p.index for p, n in zip(path, path[1:]))

    def window(self, f, t, size=(1, 1)):
        """Input window ``(f0, size_f, t0, size_t)`` read by the layer window at ``(f, t)`` (unclipped).

        ``f``, ``t``: ints or long tensors of one shape; sizes are ints or tensors of that shape.
        Along an axis the model reduces (a mean over frequency, a global pool) the window is the
        whole input axis.
        """
        (f0, f1), (t0, t1) = input_boxes(self, f, t, size)
        return f0, f1 - f0, t0, t1 - t0


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------
def _floats(out):
    """The floating-point tensors of a call's result (a tensor, or a tuple/list of them)."""
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _label(func) -> str:
    """How an error message names a torch function (``F.gelu``, ``torch.cat``, ``Tensor.__mul__``)."""
    name = getattr(func, "__name__", None) or repr(func)
    mod = getattr(func, "__module__", None) or ""
    if mod.startswith("torch.nn.functional") or mod == "torch._C._nn":
        return f"F.{name}"
    qual = getattr(func, "__qualname__", "")
    if "Tensor" in qual or (mod is None or not mod):
        return f"Tensor.{name}"
    return f"torch.{name}"


_IN_PLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                     "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"}


def _may_write_in_place(func, args, kwargs) -> bool:
    """Whether a torch call may write into its first argument (or ``out=``): ``x.relu_()``, ``x += y``,
    ``x[i] = v``, ``F.relu(x, inplace=True)`` (any ``True`` argument after the first counts: copying
    once too often costs a copy, missing one would corrupt a captured map)."""
    name = getattr(func, "__name__", "")
    if name in _IN_PLACE_DUNDERS or kwargs.get("out") is not None:
        return True
    if name.endswith("_") and not name.endswith("__"):
        return True
    return kwargs.get("inplace") is True or any(a is True for a in args[1:])


class _Tracer(TorchFunctionMode):
    """Records the calls made on signals while the model runs (see the module docstring)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, mode: Mode | None, record: bool, wanted: set,
                 stop: bool = True):
        super().__init__()
        self.mode, self.record, self.wanted, self.stop = mode, record, set(wanted), stop
        self.output = None  # what the entry function returned (when it ran to the end)
        self.batch = int(x.shape[0])
        self.module_names = {m: n for n, m in reversed(list(model.named_modules()))}
        self.nodes: list[Node] = [Node(0, "input", None, [], tuple(x.shape), "")]
        # id(tensor) → (weak reference, node): a freed tensor's id may be reused by a new one, which
        # the weak reference tells apart (holding every tensor instead would keep the whole forward's
        # memory alive)
        self.live: dict[int, tuple] = {id(x): (weakref.ref(x), 0)}
        self.stack: list[str] = []
        self.counts: dict[str, int] = {}
        self.aliases: dict[str, int] = {}
        self.found: dict[str, int] = {}
        self.uncopied: dict[str, torch.Tensor] = {}  # captured outputs not yet copied (see _snapshot)
        self.calls: dict[str, int] = {}  # module name -> calls so far

    # ---- bookkeeping ------------------------------------------------------------------------
    def is_live(self, t) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        entry = self.live.get(id(t))
        return entry is not None and entry[0]() is t

    def node_of(self, t) -> int:
        return self.live[id(t)][1]

    def _name(self, key: str) -> str:
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        return f"{key}#{n}"

    def _add(self, name, rule, inputs, out_tensors, where, saved=None) -> int:
        shape = tuple(out_tensors[0].shape) if out_tensors else ()
        node = Node(len(self.nodes), name, rule, inputs, shape, where, saved)
        self.nodes.append(node)
        for t in out_tensors:
            self.live[id(t)] = (weakref.ref(t), node.index)
        self.aliases[name] = node.index
        if name in self.wanted and out_tensors:
            self._found(name, node.index, out_tensors[0])
        return node.index

    def _found(self, key: str, index: int, t: torch.Tensor):
        # with several layers wanted, a later in-place call could overwrite an earlier one's output:
        # it is copied just before such a call touches its memory (see _snapshot); a capture for
        # autograd keeps the tensor itself (a clone is not on the way to the output)
        self.found[key] = (index, t)
        if len(self.wanted) > 1 and self.stop:
            self.uncopied[key] = t

    def _snapshot(self, func, args, kwargs) -> None:
        """Before a call that may write in place: copy the captured outputs whose memory it may write."""
        if not _may_write_in_place(func, args, kwargs):
            return
        targets = [a for a in (*args[:1], kwargs.get("out")) if isinstance(a, torch.Tensor)]
        ptrs = {a.untyped_storage().data_ptr() for a in targets}
        for key, t in list(self.uncopied.items()):
            if t.untyped_storage().data_ptr() in ptrs:
                self.found[key] = (self.found[key][0], t.clone())
                del self.uncopied[key]

    def _maybe_stop(self):
        if self.stop and self.wanted and self.wanted <= set(self.found):
            raise _Stop

    # ---- the mode -----------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.uncopied:
            self._snapshot(func, args, kwargs)
        call = Call(func, args, kwargs, self.is_live)
        live = [t for t in call.tensors() if self.is_live(t)]
        if not live or func in NO_SIGNAL:
            return func(*args, **kwargs)
        where = self.stack[-1] if self.stack else ""
        entry = OPS.get(func)
        op = entry[0] if entry is not None else op_name(func)
        rule, inputs, saved = None, live, None
        if self.record:
            if entry is None:
                rule = Opaque(op, f"{_label(func)} has no projection rule")
            else:
                try:
                    rule, inputs = entry[1](call, self.mode)
                except Unsupported as e:
                    rule, inputs = Opaque(op, f"{_label(func)}: {e}"), live
                except (IndexError, TypeError, ValueError, RuntimeError) as e:  # arguments the rule cannot read
                    rule, inputs = Opaque(op, f"{_label(func)} with these arguments has no projection rule ({e})"), live
        if rule is not None and not isinstance(rule, Opaque):
            out, saved = rule.run(call, self.mode)
        else:
            out = func(*args, **kwargs)
        outs = _floats(out)
        mutated = self._mutated(func, args, out, rule)
        if rule is not None and outs and (outs[0].dim() == 0 or outs[0].shape[0] != self.batch) \
                and not isinstance(rule, Opaque):
            rule = Opaque(op, f"{_label(func)} changes the batch dimension (shape {tuple(outs[0].shape)})")
        if outs or mutated:  # (a call that makes no signal, such as x.shape, gets no name)
            index = self._add(self._name(f"{where}:{op}"), rule, [self.node_of(t) for t in inputs if self.is_live(t)],
                              outs + mutated, where, saved)
            self._maybe_stop()
            if not self.stop and isinstance(out, torch.Tensor) and any(f[0] == index for f in self.found.values()):
                out = out.clone()  # a captured output: a later in-place call (F.relu_) must not overwrite it
                self.live[id(out)] = (weakref.ref(out), index)
        return out

    def _mutated(self, func, args, out, rule):
        """Live tensors an in-place call without a rule wrote into (they now hold an unknown signal)."""
        fname = getattr(func, "__name__", "")
        inplace = fname == "__setitem__" or (fname.endswith("_") and not fname.endswith("__"))
        if not inplace or not args or not self.is_live(args[0]):
            return []
        target = args[0]
        extra = [target._base] if target._base is not None and self.is_live(target._base) else []
        if isinstance(rule, Opaque) or rule is None or target._base is not None:
            return ([target] if out is not target else []) + extra
        return []

    # ---- module hooks -----------------------------------------------------------------------
    def pre_hook(self, module, args):
        self.stack.append(self.module_names.get(module, ""))

    def post_hook(self, module, args, out):
        name = self.stack.pop()
        if not name:
            return
        n = self.calls.get(name, 0) + 1
        self.calls[name] = n
        key = f"{name}#{n}"
        if isinstance(out, torch.Tensor) and self.is_live(out):
            self.aliases[key] = self.node_of(out)
            if key in self.wanted:
                self._found(key, self.node_of(out), out)
                self._maybe_stop()


def _run(model: nn.Module, entry, x: torch.Tensor, mode, record: bool, wanted, grad: bool = False) -> _Tracer:
    """Run ``entry(x)`` under a tracer (hooks removed in ``finally``); without ``grad``: no autograd, and
    the pass stops once ``wanted`` are seen. ``tracer.output``: entry's output (``None`` when stopped)."""
    tracer = _Tracer(model, x, mode, record, wanted, stop=not grad)
    handles = []
    try:
        for m in tracer.module_names:
            handles.append(m.register_forward_pre_hook(tracer.pre_hook))
            handles.append(m.register_forward_hook(tracer.post_hook))
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()), tracer:
            try:
                tracer.output = entry(x)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return tracer


def trace(model: nn.Module, entry, x: torch.Tensor, layer: str, key: str, mode: Mode | None = None) -> Graph:
    """Trace the model's graph from ``x`` (log-mel ``(B, 1, F, T)``) to the layer named ``key``.

    Args:
        model: the model (its modules name the operations).
        entry: the function taking log-mel (``model`` or ``model.classify``).
        x: the batch; the records (switches, forward signs) are this batch's.
        layer: the layer name as the user gave it (for messages).
        key: its canonical name (``"features.act2#1"``, ``"layer1.0:add#1"``; see :class:`Census`), or
            :data:`OUTPUT` for the tensor ``entry`` returns (a classifier's logits): the whole forward
            pass runs and the graph ends at the operation that made the output.
        mode: the backward rules to record for (``None``: structure only).

    Raises:
        ValueError: the layer is not reached, does not depend on the input, or depends on an
            operation without a rule (naming it and its module).
    """
    tracer = _run(model, entry, x, mode, True, set() if key == OUTPUT else {key})
    if key == OUTPUT:
        result = tracer.output
        if not isinstance(result, torch.Tensor) or not tracer.is_live(result):
            raise ValueError(f"{layer}: the model's forward pass returns "
                             f"{type(result).__name__ if not isinstance(result, torch.Tensor) else 'a tensor'} "
                             "that is not a traced signal of its input (a tensor of logits (B, n_classes) is needed)")
        out, fm = tracer.node_of(result), result
    elif key not in tracer.found:
        raise ValueError(f"layer {layer!r} was not reached by the model's forward pass (or its output does not "
                         "depend on the input)")
    else:
        out, fm = tracer.found[key]
    nodes = tracer.nodes[: out + 1]
    graph = Graph(layer, nodes, out, fm.detach(), dict(tracer.aliases))
    graph.check()
    if fm.dim() not in (2, 3, 4):
        raise ValueError(f"layer {layer!r} has output shape {tuple(fm.shape)}; the projector needs a feature map "
                         "(B, C, H, W), (B, C, L) or (B, C)")
    return graph


def as_4d(a: torch.Tensor) -> torch.Tensor:
    """A feature map as ``(B, C, H, W)``: ``(B, C)`` → ``(B, C, 1, 1)``, ``(B, C, L)`` → ``(B, C, 1, L)``
    (a view; the sizes :meth:`Graph.feature_size` gives)."""
    return a[:, :, None, None] if a.dim() == 2 else a[:, :, None, :] if a.dim() == 3 else a


def feature_maps(model: nn.Module, entry, x: torch.Tensor, keys: dict) -> dict:
    """``{name: output}`` of the layers ``keys`` (``{name: canonical key}``), in one forward pass that
    stops once all are seen."""
    tracer = _run(model, entry, x, None, False, set(keys.values()))
    missing = [n for n, k in keys.items() if k not in tracer.found]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not reached by the model's forward pass")
    return {n: tracer.found[k][1] for n, k in keys.items()}


def capture(model: nn.Module, entry, x: torch.Tensor, keys: dict) -> tuple:
    """``(entry(x), {name: output})``: the whole forward pass with autograd (when enabled), and the
    outputs of the layers ``keys`` (``{name: canonical key}``, operations included) as tensors of its
    autograd graph, so that a gradient can be taken with respect to them (Grad-CAM at ``layer1:add``)."""
    tracer = _run(model, entry, x, None, False, set(keys.values()), grad=True)
    missing = [n for n, k in keys.items() if k not in tracer.found]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not reached by the model's forward pass")
    return tracer.output, {n: tracer.found[k][1] for n, k in keys.items()}


@dataclass
class Census:
    """What one full forward pass calls: module calls and operation names (for resolving layer names).

    ``calls``: ``{module name: calls}``; ``ops``: ``{"<module>:<op>": calls}``; ``spatial``:
    canonical keys whose output is a 4-D feature map; ``order``: ``{canonical key: (node, output shape)}``
    in the order the forward pass made them (node = the index of the operation that made the output).
    """

    calls: dict
    ops: dict
    spatial: set
    order: dict = field(default_factory=dict)

    def key(self, layer: str, module_name: str | None) -> str:
        """Canonical key of a layer name (``"layer1.0.relu" → "layer1.0.relu#1"``); ``ValueError`` if
        it is ambiguous (a module or op called several times without ``#n``) or never reached."""
        base, n = (layer.rsplit("#", 1) + [""])[:2] if "#" in layer else (layer, "")
        if module_name is not None:
            base = module_name
            count = self.calls.get(base, 0)
            kind = "module"
        else:
            if ":" not in base and f":{base}" in self.ops:
                base = f":{base}"
            count = self.ops.get(base, 0)
            kind = "operation"
        if count == 0:
            raise ValueError(f"layer {layer!r}: the {kind} is not called on the input's way through the model "
                             f"(operations seen: {', '.join(list(self.ops)[:30])})")
        if not n:
            if count > 1:
                names = ", ".join(f"{base}#{i}" for i in range(1, count + 1))
                raise ValueError(f"layer {layer!r} is ambiguous: the {kind} is called {count} times; name one call: "
                                 f"{names}")
            n = "1"
        if not n.isdigit() or not 1 <= int(n) <= count:
            raise ValueError(f"layer {layer!r}: call number must be 1..{count}")
        return f"{base}#{int(n)}"


def census(model: nn.Module, entry, x: torch.Tensor) -> Census:
    """Run the whole forward pass once and count module calls and operations (see :class:`Census`)."""
    tracer = _run(model, entry, x, None, False, set())
    ops: dict = {}
    for key in tracer.counts:
        ops[key] = tracer.counts[key]
    spatial = {k for k, i in tracer.aliases.items() if len(tracer.nodes[i].shape) == 4}
    order = {k: (i, tracer.nodes[i].shape) for k, i in tracer.aliases.items()}
    return Census(dict(tracer.calls), ops, spatial, order)


# ---------------------------------------------------------------------------------------------
# the backward pass
# ---------------------------------------------------------------------------------------------
def backward(graph: Graph, seed: Signal, mode: Mode, bounded: bool = True) -> Signal:
    """Run the rules from the layer's output (signal ``seed``) down to the input → the input's signal.

    ``bounded=False`` keeps windows that hang over a tensor's border as they are (an unbounded
    plane, for input-free filters) instead of zeroing the cells outside.
    """
    pending: dict[int, list[Signal]] = {graph.output: [seed]}
    nodes = graph.nodes
    for node in reversed(nodes[1: graph.output + 1]):
        sigs = pending.pop(node.index, None)
        if sigs is None:
            continue
        sig = merge(sigs, node.shape)
        if sig.spatial and not node.rule.windowed:
            sig = sig.whole(node.shape)
        for i, (producer, s) in enumerate(zip(node.inputs, node.rule.backward(sig, node.saved, mode))):
            if s is None:
                continue
            shape = nodes[producer].shape
            if len(shape) == 4 and not s.spatial:
                s = Signal(s.g, None, [0, 0])
            moved = not node.rule.windowed or node.rule.geometry(i) != (POINTWISE, POINTWISE)
            if s.spatial and bounded:
                if moved:
                    s.fit(shape[2], shape[3])
                else:  # a pointwise rule keeps a confined window confined
                    s.fitted = (shape[2], shape[3])
            pending.setdefault(producer, []).append(s)
    return merge(pending[0], nodes[0].shape)


def _boxes(graph: Graph, f, t, size=(1, 1)) -> dict:
    """``{node: ((f0, f1), (t0, t1))}`` for every 4-D tensor on the path: the cells the layer window at
    ``(f, t)`` (ints or long tensors) depends on, unclipped; ``None`` for "the whole tensor".

    An axis the model reduces (a mean, a global pool) is marked whole; a whole axis absorbs every
    window united with it and stays whole down to the input.
    """
    nodes = graph.nodes
    top = [(f, f + size[0], False), (t, t + size[1], False)] if len(nodes[graph.output].shape) == 4 else None
    pending: dict[int, list] = {graph.output: [top]}
    found = {}
    for node in reversed(nodes[: graph.output + 1]):
        boxes = pending.pop(node.index, None)
        if boxes is None:
            continue
        box = found[node.index] = _union_boxes(boxes, node.shape)
        for i, producer in enumerate(node.inputs):
            shape = nodes[producer].shape
            if len(shape) != 4:
                pending.setdefault(producer, []).append(None)
                continue
            geo = node.rule.geometry(i) if box is not None and node.rule.windowed else (FULL, FULL)
            whole = [(0, 1, True), (0, 1, True)] if box is None else box
            pending.setdefault(producer, []).append(
                [_back_box(g, lo, hi, full, n) for g, (lo, hi, full), n in zip(geo, whole, shape[2:])])
    return found


def input_boxes(graph: Graph, f, t, size=(1, 1)):
    """Per position ``(f, t)`` of the layer, the input cells it reads: ``((f0, f1), (t0, t1))`` half-open,
    unclipped (an axis the model reduces reads the whole input axis), as long tensors."""
    f, t = torch.as_tensor(f, dtype=torch.long), torch.as_tensor(t, dtype=torch.long)
    box = _boxes(graph, f, t, size)[0]
    if box is None:
        F_, T_ = graph.nodes[0].shape[-2:]
        z = torch.zeros_like(f)
        return (z, z + F_), (z, z + T_)
    return tuple((torch.as_tensor(lo) + torch.zeros_like(f), torch.as_tensor(hi) + torch.zeros_like(f))
                 for lo, hi, _ in box)


def whole_input_axes(graph: Graph) -> tuple[bool, bool]:
    """Whether the layer sees the whole input along frequency and along time (an axis the model reduces)."""
    box = _boxes(graph, 0, 0)[0]
    return (True, True) if box is None else (bool(box[0][2]), bool(box[1][2]))


def _back_box(geo, lo, hi, full: bool, n_in: int):
    if geo == FULL or full:
        z = lo * 0
        return z, z + n_in, True
    return lo * geo.stride - geo.pad, (hi - 1) * geo.stride - geo.pad + geo.extent, False


def _extreme(a, b, fn, tensor_fn):
    if isinstance(a, int) and isinstance(b, int):
        return fn(a, b)
    return tensor_fn(torch.as_tensor(a), torch.as_tensor(b))


def _union_boxes(boxes, shape):
    """The union of per-axis ``(lo, hi, whole)`` boxes on a tensor of ``shape``; ``None`` if any is ``None``."""
    if any(b is None for b in boxes):
        return None
    out = []
    for axis in (0, 1):
        if any(b[axis][2] for b in boxes):
            lo = boxes[0][axis][0] * 0
            out.append((lo, lo + int(shape[2 + axis]), True))
            continue
        lo, hi, _ = boxes[0][axis]
        for b in boxes[1:]:
            lo, hi = _extreme(lo, b[axis][0], min, torch.minimum), _extreme(hi, b[axis][1], max, torch.maximum)
        out.append((lo, hi, False))
    return out


def unit_cells(graph: Graph, crop: bool) -> int:
    """Cells of the largest backward tensor of one unit on the path (channels × window, or × the whole
    tensor), to choose between a receptive-field crop and the whole plane and to size chunks of units."""
    boxes = _boxes(graph, *(int(v) // 2 for v in graph.feature_size())) if crop else {}
    biggest = 1
    for node in graph.on_path():
        n = 1
        for v in node.shape[1:]:
            n *= int(v)
        box = boxes.get(node.index)
        if box is not None:
            (f0, f1, _), (t0, t1, _) = box
            H, W = node.shape[2:]
            n = int(node.shape[1]) * max(0, min(int(f1), H) - max(int(f0), 0)) * max(0, min(int(t1), W) - max(int(t0), 0))
        biggest = max(biggest, n)
    return biggest
