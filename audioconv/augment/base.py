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
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Iterable, Sequence

import torch

from .params import Params, check_params, params_select, params_to, restrict
from .validation import as_batch, check_generator, check_lengths, check_probability

__all__ = ["Augmentation", "Compose", "OneOf", "Params", "as_batch", "uniform", "log_uniform"]


# ----------------------------------------------------------------------------------- random draws
def uniform(lo: float, hi: float, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """float32 draws, evenly spread in ``[lo, hi)``."""
    return torch.rand(shape, generator=generator, device=device) * (hi - lo) + lo


def log_uniform(lo: float, hi: float, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """float32 draws, evenly spread in ``log`` between ``lo`` and ``hi`` (both > 0)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).float()


# ----------------------------------------------------------------------------------- base class
class Augmentation:
    """Base class: per-example coin flip, shape handling and row selection.

    A subclass sets ``param_keys``, implements ``_draw(batch, generator, device) -> Params``
    (its own per-example parameters, drawn on ``device`` with ``generator``) and
    ``_transform(x, params, lengths) -> y`` on a ``(N, C, T)`` batch holding only the selected
    examples (``y`` in new memory). A transform that only scales each example instead implements
    ``_scale(params) -> (B,)`` (the factor of an applied example); it runs as one multiplication
    of the whole batch. One that is cheaper to run on every row than to gather the selected ones
    sets ``whole_batch = True``; its ``_transform`` then gets the whole batch and must leave the
    rows whose ``params["apply"]`` is false unchanged. One that can stream the selected rows
    straight into the output, or work in place, overrides ``_transform_rows`` instead.

    Inside a ``Compose``/``OneOf``, every step after the first that wrote new memory may work in
    place on that memory (a batch is a few MB, and each pass over it costs as much as the
    arithmetic); the caller's tensor is never written.

    Args:
        p (float): probability, per example, that the augmentation is applied. Default 0.5.
    """

    param_keys: tuple[str, ...] = ()
    whole_batch: bool = False

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
            Tensor with the shape, dtype and device of ``x``. When no example is selected ``x``
            itself is returned.
        """
        return self._apply(x, params, lengths, inplace=False)

    def _apply(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None, inplace: bool) -> torch.Tensor:
        """``apply``; with ``inplace`` the result may be written into ``x``'s memory. Composites pass
        it for the intermediate results they own, never for the caller's tensor; it is ignored
        under autograd. With ``lengths`` the padded examples are kept aside to restore their
        padding."""
        xb, shape = as_batch(x)
        batch, _, time = xb.shape
        name = type(self).__name__
        check_params(params, batch, name)
        missing = [k for k in self.param_keys if k not in params]
        if missing:
            raise ValueError(f"params for {name} lack {missing}; draw them with {name}.sample()")
        lengths = check_lengths(lengths, batch, time, xb.device)
        params = params_to(params, xb.device)
        mask = params["apply"].to(torch.bool)
        work = xb if xb.dtype in (torch.float32, torch.float64) else xb.float()
        inplace = (inplace or work is not xb) and not work.requires_grad
        padded = None
        if lengths is not None and inplace:  # keep the padded examples' padding to put back
            short = (lengths < time).nonzero().squeeze(1)
            padded = (short, work[short]) if short.numel() else None
        if type(self)._scale is not Augmentation._scale:
            factor = torch.where(mask, self._scale(params).to(work.dtype), torch.ones((), dtype=work.dtype,
                                                                                       device=work.device))
            y = work.mul_(factor[:, None, None]) if inplace else work * factor[:, None, None]
        elif self.whole_batch:
            y = self._transform_rows(work, None, params, lengths, inplace)
        else:
            index = mask.nonzero().squeeze(1)
            if index.numel() == 0:
                return x
            if index.numel() < batch:
                params = params_select(params, index)
            y = self._transform_rows(work, index, params, None if lengths is None else lengths[index], inplace)
        if lengths is not None and not inplace:
            real = torch.arange(time, device=xb.device) < lengths[:, None]
            y = torch.where(real[:, None, :], y, work)
        elif lengths is not None and padded is not None:
            short, before = padded
            real = torch.arange(time, device=xb.device) < lengths[short, None]
            y[short] = torch.where(real[:, None, :], y[short], before)
        return y.to(xb.dtype).reshape(shape)

    def _transform(self, x: torch.Tensor, params: Params, lengths: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _transform_rows(self, x: torch.Tensor, index: torch.Tensor | None, params: Params,
                        lengths: torch.Tensor | None, inplace: bool) -> torch.Tensor:
        """The batch ``x`` ``(B, C, T)`` with its rows ``index`` ``(N,)`` transformed (``None``: a
        ``whole_batch`` transform, all rows, full ``params``); ``params`` and ``lengths`` hold only
        those rows. With ``inplace`` the result may be written into ``x``. By default the rows
        are gathered and passed to ``_transform`` (which returns new memory, never a view of its
        input); the FFT filters override this to stream the rows through ``fft_convolve``."""
        if index is None or index.numel() == x.shape[0]:
            return self._transform(x, params, lengths)
        rows = self._transform(x[index], params, lengths).to(x.dtype)
        return x.index_copy_(0, index, rows) if inplace else x.index_copy(0, index, rows)

    @staticmethod
    def _rows_out(x: torch.Tensor, index: torch.Tensor,
                  inplace: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(rows, out)`` for ``fft_convolve`` to write the rows ``index`` of ``x`` into ``x`` itself
        (``inplace``) or a copy of it; ``rows`` is ``None`` when it is every row, and ``out`` is
        ``None`` when a new tensor would be overwritten whole anyway."""
        every = index.numel() == x.shape[0]
        if inplace:
            return (None if every else index), x
        return (None, None) if every else (index, x.clone())

    def _scale(self, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Draw parameters for ``x``'s batch with ``generator`` and apply them (see ``apply``)."""
        xb, _ = as_batch(x)
        return self.apply(x, self.sample(xb.shape[0], generator, xb.device), lengths)

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
def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class _Composite(Augmentation):
    def __init__(self, transforms: Iterable[Augmentation], p: float):
        super().__init__(p)
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not isinstance(t, Augmentation):
                raise ValueError(f"transforms[{i}] must be an Augmentation, got {type(t).__name__}")
        self._keys = [f"{i}.{type(t).__name__}" for i, t in enumerate(self.transforms)]

    def _draw(self, batch, generator, device):
        return {key: t.sample(batch, generator, device) for key, t in zip(self._keys, self.transforms)}

    def _resolve(self, params):
        for key in self._keys:
            restrict(params[key], params["apply"])

    def _apply(self, x, params, lengths, inplace):
        xb, _ = as_batch(x)
        check_params(params, xb.shape[0], type(self).__name__)
        missing = [k for k in self._keys if k not in params]
        if missing:
            raise ValueError(f"params for {type(self).__name__} lack {missing}; "
                             f"draw them with the same chain's sample()")
        caller = None if inplace else x  # whose memory must not be written
        for key, t in zip(self._keys, self.transforms):
            if type(t).apply is not Augmentation.apply:  # a subclass with its own apply(): call that,
                x = caller = t.apply(x, params[key], lengths)  # and never write into what it returns
                continue
            y = t._apply(x, params[key], lengths, inplace=caller is None)
            if caller is not None and not _same_memory(y, caller):
                caller = None  # y is this chain's own: the next steps may work in place
            x = y
        return x

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
