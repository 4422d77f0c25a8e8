"""Sanity checks for explanations: model-parameter randomisation (Adebayo et al., NeurIPS 2018).

An explanation that explains the *model* must change when the model's weights are destroyed. The
cascading test re-initialises the weighted layers one at a time from the top (the output layer)
down, keeping earlier re-initialisations, and after each step compares every method's map of the
randomised model with its map of the trained model by **Spearman rank correlation** (per example;
of the signed maps and of their absolute values). A method whose maps still correlate highly after
the top layers are random is showing the input (edges, loud cells, max-pool switches), not what the
model learned. ``cascade=False`` re-initialises each layer alone instead (the *independent* test).

Details:

* Re-initialised layers are the modules with a weight matrix or kernel (``Conv*d``, ``ConvTranspose*d``,
  ``Linear``), in reverse order of their first call in a forward pass. Each is drawn as PyTorch
  initialises it (``kaiming_uniform_(a=√5)`` weights, ``U(±1/√fan_in)`` biases) from a
  ``torch.Generator`` seeded with ``mix_seed(seed, step)`` — the global RNG is not touched.
  Normalisation layers keep their trained statistics and affine parameters.
* The class explained is fixed on the trained model (``None`` → its predicted class) and kept for
  every randomised copy; the trained model itself is never modified (copies are).
* ``spearman_input`` correlates each map (absolute) with the input log-mel itself: a method whose
  maps follow the input's energy scores high there whatever the weights are.
* Spearman ρ is Pearson's correlation of the ranks (ties get their average rank, as
  ``scipy.stats.spearmanr``). A map that is constant (e.g. an all-zero Grad-CAM) has no ranking:
  ρ is ``nan`` there, counted in ``n_undefined`` and left out of the means.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.interpret.explain import METHODS, check_methods, default_gradcam_layer, explain_logmel, resolve_target
from audioconv.interpret.targets import Unit, describe_target
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode, mix_seed

__all__ = ["SanityResult", "sanity_check", "spearman", "randomisable_layers", "reinitialise"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..M`` along the last dim of ``(N, M)``; ties get their average rank (float64)."""
    s, _ = torch.sort(x, dim=-1)
    lo = torch.searchsorted(s, x, right=False)  # cells strictly below
    hi = torch.searchsorted(s, x, right=True)  # cells at or below
    return (lo + hi + 1).to(torch.float64) / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows, ``(N, ...)`` × ``(N, ...)`` → ``(N,)`` float64.

    Everything after the first dimension is flattened. ``nan`` where a row is constant.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"spearman needs two (N, ...) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra = _average_ranks(a.reshape(a.shape[0], -1).double())
    rb = _average_ranks(b.reshape(b.shape[0], -1).double())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    den = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    num = (ra * rb).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def randomisable_layers(model: nn.Module, logmel: torch.Tensor, entry=None) -> list[str]:
    """Names of the weighted modules a forward on ``logmel`` calls, **top first** (reverse call order).

    ``entry``: the function taking log-mel (default ``model``).
    """
    names = {m: n for n, m in model.named_modules() if isinstance(m, _WEIGHTED)}
    order: list[str] = []

    def seen(module, args, out):
        if names[module] not in order:
            order.append(names[module])

    handles = [m.register_forward_hook(seen) for m in names]
    try:
        with torch.no_grad(), eval_mode(model):
            (entry or model)(logmel[:1])
    finally:
        for h in handles:
            h.remove()
    return order[::-1]


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Draw ``module``'s weight and bias as PyTorch's default initialisation does, from ``generator``."""
    w = module.weight
    fan_in = w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    # kaiming_uniform_(a=√5) is U(±√(6/((1+a²)·fan_in))) = U(±1/√fan_in)
    w.copy_((torch.rand(w.shape, generator=generator, dtype=torch.float64) * 2 - 1).to(w) * bound)
    if getattr(module, "bias", None) is not None:
        b = module.bias
        b.copy_((torch.rand(b.shape, generator=generator, dtype=torch.float64) * 2 - 1).to(b) * bound)


@dataclass
class SanityResult:
    """Rank correlations between explanations of the trained and the randomised model.

    Attributes:
        methods: method names. steps: ``["none", layer, ...]`` — what is random after each step
            (cumulatively from the top for ``cascade``; that layer alone otherwise).
        spearman: ``{method: (S, B)}`` ρ of the signed maps (row 0, nothing randomised, is 1).
        spearman_abs: ``{method: (S, B)}`` ρ of the absolute maps.
        spearman_input: ``{method: (S, B)}`` ρ between the input log-mel and the absolute map of the
            model after each step: how much a map just follows the input's energy.
        example_maps: ``{method: (S, F, T)}`` the maps of example ``example`` after each step.
        spectrogram: ``(F, T)`` that example's log-mel; hz / seconds: its axes (or ``None``).
        target: description; classes: ``(B,)`` class indices (``None`` for a unit target).
        gradcam_layer, cascade, seed, example: the settings used.
    """

    methods: list
    steps: list
    spearman: dict
    spearman_abs: dict
    spearman_input: dict
    example_maps: dict
    spectrogram: np.ndarray
    target: str
    classes: np.ndarray | None = None
    gradcam_layer: str | None = None
    cascade: bool = True
    seed: int = 0
    example: int = 0
    hz: np.ndarray | None = None
    seconds: np.ndarray | None = None
    n_examples: int = field(default=0)

    def summary(self, absolute: bool = True, table: dict | None = None) -> dict:
        """``{method: {"mean": [S], "std": [S], "n_undefined": [S]}}`` over examples (``None`` where undefined)
        of ``spearman_abs`` (``absolute``), ``spearman`` or the ``table`` given."""
        table = table if table is not None else (self.spearman_abs if absolute else self.spearman)
        out = {}
        for m in self.methods:
            r = np.asarray(table[m], dtype=np.float64)
            ok = np.isfinite(r)
            n_ok = ok.sum(axis=1)
            mean = [float(np.mean(row[k])) if n else None for row, k, n in zip(r, ok, n_ok)]
            std = [float(np.std(row[k])) if n else None for row, k, n in zip(r, ok, n_ok)]
            out[m] = {"mean": mean, "std": std, "n_undefined": [int(v) for v in (~ok).sum(axis=1)]}
        return out

    def to_dict(self) -> dict:
        """JSON-ready: settings, the steps, summaries (absolute and signed) and per-example ρ."""
        def rows(table):
            return {m: [[None if not np.isfinite(v) else float(v) for v in row] for row in table[m]] for m in self.methods}
        return {"methods": list(self.methods), "steps": list(self.steps), "cascade": self.cascade,
                "seed": self.seed, "target": self.target, "gradcam_layer": self.gradcam_layer,
                "n_examples": self.n_examples,
                "classes": None if self.classes is None else [int(c) for c in self.classes],
                "spearman_abs": self.summary(True), "spearman": self.summary(False),
                "spearman_input": self.summary(table=self.spearman_input),
                "per_example": {"spearman_abs": rows(self.spearman_abs), "spearman": rows(self.spearman),
                                "spearman_input": rows(self.spearman_input)}}


def sanity_check(model: nn.Module, inputs, methods=METHODS, target=None, *, gradcam_layer: str | None = None,
                 layers=None, cascade: bool = True, seed: int = 0, example: int = 0, input_kind: str = "auto",
                 device: str | torch.device | None = None, progress: bool = True) -> SanityResult:
    """Cascading (or independent) model-parameter randomisation test of explanation methods.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or any differentiable
            ``nn.Module`` on log-mel; never modified (the test works on copies).
        inputs: waveforms (models with a LogMel front end) or log-mel ``(B, 1, F, T)``.
        methods: names from :data:`~audioconv.interpret.explain.METHODS`.
        target: class index, ``(B,)`` indices, ``None`` (the trained model's predicted class) or a
            :class:`~audioconv.interpret.targets.Unit`.
        gradcam_layer: the Grad-CAM layer (default: the model's last feature map,
            :func:`~audioconv.interpret.explain.default_gradcam_layer`).
        layers: module names to re-initialise, in this order (default: every weighted module, top first).
        cascade: keep earlier re-initialisations (``True``) or re-initialise each layer alone.
        seed: seeds the re-initialisation (``mix_seed(seed, step)``).
        example: which input's maps to keep for the figure.
        input_kind, device, progress: as elsewhere (a tqdm bar over the steps).

    Returns:
        :class:`SanityResult`.
    """
    methods = check_methods(methods)
    traced = TracedModel(model, device)
    x = traced.to_logmel(inputs, input_kind)
    if not 0 <= int(example) < x.shape[0]:
        raise ValueError(f"example must be in 0..{x.shape[0] - 1}, got {example}")
    resolved = resolve_target(traced, x, target)
    needs_cam = any(m in ("grad_cam", "guided_grad_cam") for m in methods)
    cam_layer = (gradcam_layer or default_gradcam_layer(traced, resolved, x)) if needs_cam else None
    order = _layer_order(traced, x, layers)

    reference = explain_logmel(traced, x, methods, resolved, cam_layer)
    steps = ["none", *order]
    rho = {m: np.zeros((len(steps), x.shape[0])) for m in methods}
    rho_abs = {m: np.zeros((len(steps), x.shape[0])) for m in methods}
    rho_input = {m: np.zeros((len(steps), x.shape[0])) for m in methods}
    maps = {m: [] for m in methods}
    work = copy.deepcopy(traced.model)
    bar = tqdm(list(enumerate(steps)), desc="sanity", disable=not progress)
    for i, name in bar:
        if i > 0:
            if not cascade:
                work = copy.deepcopy(traced.model)
            reinitialise(dict(work.named_modules())[name], torch.Generator().manual_seed(mix_seed(seed, i)))
        current = explain_logmel(TracedModel(work, traced.device), x, methods, resolved, cam_layer)
        for m in methods:
            rho[m][i] = spearman(reference[m], current[m]).cpu().numpy()
            rho_abs[m][i] = spearman(reference[m].abs(), current[m].abs()).cpu().numpy()
            rho_input[m][i] = spearman(x[:, 0], current[m].abs()).cpu().numpy()
            maps[m].append(current[m][example].detach().cpu().numpy())
    hz, seconds = traced.axes(*x.shape[-2:])
    return SanityResult(methods=methods, steps=steps, spearman=rho, spearman_abs=rho_abs, spearman_input=rho_input,
                        example_maps={m: np.stack(v) for m, v in maps.items()},
                        spectrogram=x[example, 0].detach().cpu().numpy(),
                        target=describe_target(target),
                        classes=None if isinstance(resolved, Unit) else resolved.cpu().numpy(),
                        gradcam_layer=cam_layer, cascade=bool(cascade), seed=int(seed), example=int(example),
                        hz=hz, seconds=seconds, n_examples=int(x.shape[0]))


def _layer_order(traced: TracedModel, logmel: torch.Tensor, layers) -> list[str]:
    """The modules to re-initialise: ``layers`` validated, or every weighted module top first."""
    found = randomisable_layers(traced.model, logmel, traced.entry)
    if layers is None:
        if not found:
            raise ValueError("the model has no Conv/Linear layer to re-initialise")
        return found
    layers = [layers] if isinstance(layers, str) else list(layers)
    modules = dict(traced.model.named_modules())
    names = {m: n for n, m in reversed(list(modules.items()))}
    out = []
    for name in layers:
        try:  # the names every interpretation function takes (a backbone's own ones included)
            module = traced.module(name, logmel)[0]
        except ValueError:
            module = None
        if module is None or not isinstance(module, _WEIGHTED):
            raise ValueError(f"cannot re-initialise {name!r}: layers must name Conv/Linear modules the model "
                             f"uses; valid: {', '.join(found)}")
        out.append(names[module])
    return out
