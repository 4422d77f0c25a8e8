"""Base class, composition and parameter plumbing for batched, per-example random augmentations.

Every augmentation works in two steps:

1. ``sample(batch, generator, device)`` draws the parameters of each example — a (possibly nested)
   dict of tensors whose first dimension is ``batch``; ``params["apply"]`` is the per-example coin
   flip (``True`` with probability ``p``).
2. ``apply(x, params, lengths=None)`` replays them on a waveform batch, deterministically.

Calling the augmentation does both. Randomness comes only from the ``torch.Generator`` passed in
(``None`` uses torch's global CPU generator), so a seed reproduces a batch exactly and DataLoader
workers, which torch seeds differently, do not repeat each other. Draws happen on the
generator's device and are then moved to the data's device, so a CPU generator can drive a
CUDA batch.

Waveforms may be ``(time,)``, ``(channels, time)`` or ``(batch, channels, time)`` floating-point
tensors on any device; the output has the input's shape, dtype and device. All channels of one
example share its parameters.

Non-finite samples pass through, example by example: an example holding NaN or inf comes out
non-finite (an FFT filter spreads one NaN over its whole clip), and no other example is touched —
``BatchMix`` never takes a non-finite partner, ``Codec`` leaves such an example as it was. Nothing
is checked here (it would cost a pass over every batch); the trainer stops on a non-finite loss,
naming the step, before a weight moves.

Lengths: a transform that moves where each example's real samples end (``TimeStretch``,
``SpeedPerturb``) says so in ``output_lengths(params, lengths, time)`` (a subclass overrides
``_output_lengths``); chains pass the updated lengths to their later steps, and return them from
their own ``output_lengths``. ``call_with_lengths`` draws, applies and returns both.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Iterable, Sequence

import torch

from .dsp import replace_tails
from .params import Params, check_params, params_select, params_to, restrict
from .validation import as_batch, check_generator, check_lengths, check_probability

__all__ = ["Augmentation", "Compose", "OneOf", "Params", "as_batch", "keep_padding", "real_lengths", "uniform",
           "log_uniform", "CHAIN_IN_PLACE"]

# Chains write the rows of each step after the first into memory they own (see ``Augmentation``);
# ``False`` turns that off, for the ablation in ``benchmarks/augment_bench.py --ablation``.
CHAIN_IN_PLACE = True


# ----------------------------------------------------------------------------------- random draws
def uniform(lo: float, hi: float, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """float32 draws, evenly spread in ``[lo, hi)``."""
    return torch.rand(shape, generator=generator, device=device) * (hi - lo) + lo


def log_uniform(lo: float, hi: float, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """float32 draws, evenly spread in ``log`` between ``lo`` and ``hi`` (both > 0)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).float()


def real_lengths(params: Params, lengths: torch.Tensor | None, time: int) -> torch.Tensor:
    """``lengths``, or ``(B,)`` int64 ``time`` (on the device of ``params["apply"]``) when ``None``."""
    if lengths is not None:
        return lengths
    return torch.full(params["apply"].shape, time, dtype=torch.long, device=params["apply"].device)


def keep_padding(y: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``y`` ``(B, C, T)`` — new memory that may be overwritten — with each example's padding
    (samples ``lengths[b]`` on) taken from ``x`` (``dsp.replace_tails``: in place on the CPU);
    ``y`` itself when ``lengths`` is None."""
    return y if lengths is None else replace_tails(y, lengths, x)


# ----------------------------------------------------------------------------------- base class
class Augmentation:
    """Base class: per-example coin flip, shape and parameter checks, row selection, padding.

    A subclass sets ``param_keys`` (the keys ``apply`` requires), implements
    ``_draw(batch, generator, device) -> Params`` (its own per-example parameters, drawn on
    ``device`` with ``generator``) and ONE of:

    * ``_transform(x, params, lengths) -> y``: the transform of the selected examples only —
      ``x`` ``(N, C, T)`` holds the examples whose coin flip came up (float32 or float64),
      ``params`` and ``lengths`` (``(N,)`` or ``None``) hold their rows; ``y`` ``(N, C, T)`` is new
      memory, never a view of ``x`` (which may be the caller's tensor: it must not be written).
      The base class gathers those rows, restores each example's padding (the samples from
      ``lengths[n]`` on) and writes the results at their rows of a copy of the batch (inside a
      chain, of the chain's own memory); the other examples keep their values.
    * ``_scale(params) -> (B,)``: for a pure gain, the factor of each example if applied. It
      runs as one multiplication of the whole batch (no rows gathered).

    Only steps that are not per-example override ``_apply_batch`` instead: the composites
    (``Compose``, ``OneOf``) and ``BatchMix``, which reads other examples of the batch.

    ``apply`` returns new memory (or ``x`` itself when nothing changed). Inside a chain, once a
    step has returned new memory, the steps after it write their selected rows into that memory
    instead of into a copy of the batch (without that the default chain took 7-20 % longer on
    the CPU: ``benchmarks/augment_bench.py --ablation``); the caller's tensor is never written,
    and nothing is written in place under autograd.

    Args:
        p (float): probability, per example, that the augmentation is applied. Default 0.5.
    """

    param_keys: tuple[str, ...] = ()

    def __init__(self, p: float = 0.5):
        self.p = check_probability("p", p)

    # -- drawing ---------------------------------------------------------------------------
    def sample(self, batch: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Params:
        """Draw parameters for ``batch`` examples.

        Args:
            batch (int): number of examples.
            generator (torch.Generator or None): source of randomness; draws happen on its device.
            device: where to put the returned tensors (default: the generator's device).

        Returns:
            dict of tensors with first dimension ``batch``; ``"apply"`` is ``(batch,)`` bool.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"batch must be a non-negative int, got {batch!r}")
        gdev = check_generator(generator)
        params: Params = {"apply": torch.rand(batch, generator=generator, device=gdev) < self.p}
        params.update(self._draw(batch, generator, gdev))
        self._resolve(params)
        return params_to(params, device)

    def _draw(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Params:
        return {}

    def _resolve(self, params: Params) -> None:
        """Hook for composites: fold their own decisions into the children's ``apply`` flags."""

    # -- applying --------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Apply drawn ``params`` to ``x``.

        Args:
            x (Tensor): ``(time,)``, ``(channels, time)`` or ``(batch, channels, time)``, float.
            params (dict): from ``sample`` with the same batch size (a 1-D/2-D ``x`` is a batch of 1).
            lengths (Tensor or None): ``(batch,)`` ints, the number of real (unpadded) samples of
                each example. Level measurements use only those samples and padding stays as it was.

        Returns:
            Tensor with the shape, dtype and device of ``x``, in new memory (``x`` is never
            written). When no example is changed ``x`` itself may be returned.

        Raises:
            ValueError: ``x`` is not a waveform batch, or ``params``/``lengths`` do not fit it.
        """
        return self._apply(x, params, lengths, inplace=False)

    def _apply(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None, inplace: bool) -> torch.Tensor:
        """``apply``; with ``inplace`` (a chain passes it for memory it owns, never the caller's)
        the selected rows may be written into ``x`` itself. Returns ``x`` (unchanged, or changed in
        place) or new memory."""
        xb, shape = as_batch(x)
        batch, _, time = xb.shape
        self._check_params(params, batch)
        lengths = check_lengths(lengths, batch, time, xb.device)
        y = self._apply_batch(xb, params_to(params, xb.device), lengths, inplace and not xb.requires_grad)
        return x if y is xb else y.reshape(shape)

    def _check_params(self, params: Params, batch: int) -> None:
        """``ValueError`` unless ``params`` has this transform's keys, each with ``batch`` rows (a
        chain's keys hold its steps' params, which this does not look into: ``_check_all_params``)."""
        name = type(self).__name__
        check_params(params, batch, name)
        missing = [k for k in self.param_keys if k not in params]
        if missing:
            raise ValueError(f"params for {name} lack {missing}; draw them with {name}.sample()")

    def _check_all_params(self, params: Params, batch: int) -> None:
        """``_check_params``, and in a chain also every step's, so that a bad nested entry is named
        before any step runs (``output_lengths``). ``apply`` checks one level: each step checks its
        own params when it runs."""
        self._check_params(params, batch)

    def _apply_batch(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None,
                     inplace: bool) -> torch.Tensor:
        """``params`` applied to the checked batch ``x`` ``(B, C, T)`` (any float dtype; params and
        ``lengths`` on its device): ``_scale`` as one multiplication, else ``_transform`` on the
        selected rows, written back into ``x`` itself with ``inplace`` (float32/64 only). Returns
        ``x`` itself when no example is selected."""
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        mask = params["apply"].to(torch.bool)
        factor = self._scale(params)
        if factor is not None:  # out of place: in place saved nothing measurable here
            one = torch.ones((), dtype=work.dtype, device=work.device)
            y = keep_padding(work * torch.where(mask, factor.to(work.dtype), one)[:, None, None], work, lengths)
            return y.to(x.dtype)
        index = mask.nonzero().squeeze(1)
        if index.numel() == 0:
            return x
        if index.numel() == x.shape[0]:
            return keep_padding(self._transform(work, params, lengths), work, lengths).to(x.dtype)
        rows, part = work.index_select(0, index), None if lengths is None else lengths[index]  # whole-row
        # copies: work[index] goes element by element, several times slower on the CPU
        y = keep_padding(self._transform(rows, params_select(params, index), part), rows, part).to(work.dtype)
        return (work.index_copy_(0, index, y) if inplace else work.index_copy(0, index, y)).to(x.dtype)

    def _transform(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None) -> torch.Tensor:
        """The selected examples ``x`` ``(N, C, T)`` transformed by their ``params`` (see the class doc)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _transform or _scale")

    def _scale(self, params: Params) -> torch.Tensor | None:
        """``(B,)`` factor of each example if applied, for a pure gain; ``None`` (the default) for
        a transform that implements ``_transform``."""
        return None

    def output_lengths(self, params: Params, lengths: Any, time: int) -> torch.Tensor | None:
        """Where each example's real samples end after ``apply(x, params, lengths)``.

        Args:
            params (dict): as given to ``apply``.
            lengths (Tensor, sequence of ints or None): ``(B,)`` real samples per example before, as
                ``apply`` takes them (``None``: all ``time``).
            time (int): samples per example (the last dimension of ``x``).

        Returns:
            ``(B,)`` int64 on the device of ``lengths`` (else of ``params``), or ``None`` when
            ``lengths`` is ``None`` and no step moves them — all transforms but ``TimeStretch``
            and ``SpeedPerturb`` (and chains holding one) return the lengths they were given.

        Raises:
            ValueError: ``params``, ``lengths`` or ``time`` do not fit each other.
        """
        apply = params.get("apply") if isinstance(params, dict) else None
        if not isinstance(apply, torch.Tensor) or apply.dim() != 1:
            name = type(self).__name__
            raise ValueError(f"params for {name} must be a dict from {name}.sample() with a (batch,) 'apply' entry")
        if isinstance(time, bool) or not isinstance(time, int) or time < 1:
            raise ValueError(f"time must be a positive int (samples per example), got {time!r}")
        self._check_all_params(params, apply.shape[0])
        device = lengths.device if isinstance(lengths, torch.Tensor) else apply.device
        return self._output_lengths(params, check_lengths(lengths, apply.shape[0], time, device), time)

    def _output_lengths(self, params: Params, lengths: torch.Tensor | None, time: int) -> torch.Tensor | None:
        """``output_lengths`` for checked arguments (``lengths`` ``(B,)`` int64 or ``None``); a transform
        that moves where the real samples end overrides this (the default: they stay)."""
        return lengths

    def describe(self, params: Params, index: int) -> str:
        """The values drawn for example ``index`` in words (``"SNR 12.3 dB"``), for titles and logs;
        ``""`` when there is nothing to say beyond the transform's name."""
        return ""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Draw parameters for ``x``'s batch with ``generator`` and apply them (see ``apply``)."""
        return self.apply(x, self._sample_for(x, generator), lengths)

    def call_with_lengths(self, x: torch.Tensor, generator: torch.Generator | None = None,
                          lengths: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(self(x, generator, lengths), output_lengths(...))``: the same draw as calling it, and
        where each example's real samples end afterwards (``None`` when ``lengths`` is ``None``
        and no step moves them). ``ManifestDataset`` calls this to report an item's length."""
        params = self._sample_for(x, generator)
        return self.apply(x, params, lengths), self.output_lengths(params, lengths, as_batch(x)[0].shape[-1])

    def _sample_for(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        xb, _ = as_batch(x)
        return self.sample(xb.shape[0], generator, xb.device)

    # -- description -----------------------------------------------------------------------
    def to_config(self) -> dict:
        """Constructor arguments as a JSON-ready dict with ``"type"`` (``sample_rate`` left out).

        Raises ``ValueError`` if an argument (e.g. in-memory tensors) cannot be written as JSON.
        """
        cfg: dict = {"type": type(self).__name__}
        for name in inspect.signature(type(self).__init__).parameters:
            if name in ("self", "sample_rate"):
                continue
            cfg[name] = _jsonable(getattr(self, name), f"{type(self).__name__}.{name}")
        return cfg

    def __repr__(self) -> str:
        try:
            cfg = self.to_config()
        except ValueError:
            return f"{type(self).__name__}(p={self.p})"
        cfg.pop("type")
        if getattr(self, "sample_rate", None) is not None:
            cfg = {"sample_rate": self.sample_rate, **cfg}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, Augmentation):
        return value.to_config()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "__fspath__"):
        return str(value)
    raise ValueError(f"{where} holds a {type(value).__name__}, which cannot be saved to JSON "
                     "(pass file paths instead of tensors to save this chain)")


# ----------------------------------------------------------------------------------- composites
def _step_lengths(t: "Augmentation", params: Params, lengths: torch.Tensor | None, time: int):
    """A chain step's ``output_lengths`` without re-checking what the chain checked, unless the
    step's class overrides the public ``output_lengths`` itself (the hook before ``_output_lengths``)."""
    if type(t).output_lengths is not Augmentation.output_lengths:
        return t.output_lengths(params, lengths, time)
    return t._output_lengths(params, lengths, time)


class _Composite(Augmentation):
    def __init__(self, transforms: Iterable[Augmentation], p: float):
        super().__init__(p)
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not isinstance(t, Augmentation):
                raise ValueError(f"transforms[{i}] must be an Augmentation, got {type(t).__name__}")
        self._keys = [f"{i}.{type(t).__name__}" for i, t in enumerate(self.transforms)]
        self.param_keys = tuple(self._keys)

    def named_transforms(self) -> list[tuple[str, Augmentation]]:
        """``(key, transform)`` pairs: each transform with the key of its params in this chain's."""
        return list(zip(self._keys, self.transforms))

    def _draw(self, batch, generator, device):
        return {key: t.sample(batch, generator, device) for key, t in zip(self._keys, self.transforms)}

    def _resolve(self, params):
        for key in self._keys:
            restrict(params[key], params["apply"])

    def _apply_batch(self, x, params, lengths, inplace):
        """The steps in order. Once a step has returned new memory, that memory is the chain's own
        and the steps after it write their rows into it (``inplace``); the caller's is never written.
        A step that moves the examples' ends (``output_lengths``) hands the new lengths on."""
        time = x.shape[-1]
        for key, t in zip(self._keys, self.transforms):  # each step checks its own params first
            if type(t).apply is not Augmentation.apply:  # a subclass's own apply(): check, call it, and
                t._check_all_params(params[key], x.shape[0])
                x, inplace = t.apply(x, params[key], lengths), False  # never write into what it returns
            else:
                y = t._apply(x, params[key], lengths, inplace)
                inplace = CHAIN_IN_PLACE and (inplace or y is not x)  # a step returns x itself or memory of its own
                x = y
            lengths = _step_lengths(t, params[key], lengths, time)  # from the lengths the step read
        return x

    def _check_all_params(self, params, batch):
        self._check_params(params, batch)
        for key, t in zip(self._keys, self.transforms):
            t._check_all_params(params[key], batch)

    def _output_lengths(self, params, lengths, time):
        """The lengths after every step in turn (see ``Augmentation.output_lengths``)."""
        for key, t in zip(self._keys, self.transforms):
            lengths = _step_lengths(t, params[key], lengths, time)
        return lengths

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Augmentation:
        return self.transforms[i]

    def __repr__(self) -> str:
        inner = "".join(f"\n  {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n], p={self.p})"


class Compose(_Composite):
    """Apply ``transforms`` in order; each keeps its own per-example ``p``.

    Args:
        transforms (list of Augmentation): the chain.
        p (float): probability, per example, that the chain runs at all. Default 1.0.

    Params: ``{"apply": (B,), "0.Name": params of transforms[0], ...}``; a child's ``apply`` flag
    already includes this chain's own coin flip.
    """

    def __init__(self, transforms: Iterable[Augmentation], p: float = 1.0):
        super().__init__(transforms, p)


class OneOf(_Composite):
    """Apply exactly one of ``transforms`` to each example, chosen per example.

    The chosen transform still applies its own ``p``.

    Args:
        transforms (list of Augmentation): the candidates (at least one).
        p (float): probability, per example, of choosing one at all. Default 1.0.
        weights (list of float or None): relative choice weights (default: equal).

    Params: ``{"apply": (B,), "choice": (B,) int64, "0.Name": ..., ...}``.
    """

    def __init__(self, transforms: Iterable[Augmentation], p: float = 1.0,
                 weights: Sequence[float] | None = None):
        super().__init__(transforms, p)
        if not self.transforms:
            raise ValueError("transforms must hold at least one Augmentation for OneOf")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(self.transforms) or any(not math.isfinite(w) or w < 0 for w in weights) \
                    or sum(weights) <= 0:
                raise ValueError(f"weights must be {len(self.transforms)} non-negative numbers with a "
                                 f"positive sum, got {weights}")
        self.weights = weights

    def _draw(self, batch, generator, device):
        w = torch.tensor(self.weights or [1.0] * len(self.transforms), dtype=torch.float64)
        edges = (w.cumsum(0) / w.sum())[:-1].to(device)
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        return {"choice": torch.bucketize(u, edges, right=True), **super()._draw(batch, generator, device)}

    def _resolve(self, params):
        super()._resolve(params)
        for i, key in enumerate(self._keys):
            restrict(params[key], params["choice"] == i)
