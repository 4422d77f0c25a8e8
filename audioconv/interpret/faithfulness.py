"""Faithfulness of explanations: deletion and insertion curves (Petsiuk, Das & Saenko, BMVC 2018).

Rank the time–frequency cells (or patches of ``patch = (freq_bins, frames)`` cells) of a log-mel
input by an attribution map, most important first. Then

* **deletion**: replace the first ``n`` patches by the fill value and record the probability of the
  explained class, for ``n = 0 … N`` in ``steps`` equal steps. A faithful map makes it fall fast:
  a **low** area under the curve (AUC);
* **insertion**: start from an all-fill input and put the first ``n`` patches back. A faithful map
  makes it rise fast: a **high** AUC.

The x axis is the fraction ``n / N`` of patches handled (``0 … 1``), so AUCs (trapezoid rule) lie in
``[0, 1]``. Two baselines come with every run: a **random order** (``n_random`` seeded permutations),
which a method must beat, and the **input** order (the loudest cells first: the log-mel itself used
as the map), which tells how much of a method's score a map that merely copies the input's energy
would get.

Details: a patch's score is the mean attribution over its cells (border patches may be partial;
patches tile the plane from cell ``(0, 0)``). Ties keep the lower patch index first (row-major:
lowest frequency, then earliest frame). The fill is each example's mean log-mel value (``"mean"``,
the occlusion baseline of :func:`~audioconv.interpret.occlusion.occlusion`), its minimum
(``"min"``: the dB floor, i.e. silence after the front end's ``top_db``) or a constant in dB. The
class is fixed before anything is removed (``None`` → the predicted class on the intact input).
Probabilities are softmax outputs of the model's logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.interpret.explain import METHODS, check_methods, default_gradcam_layer, explain_logmel, resolve_target
from audioconv.interpret.targets import Unit
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode, mix_seed

__all__ = ["Curves", "FaithfulnessResult", "auc", "patch_ranks", "deletion_insertion", "faithfulness"]


def auc(curves, fractions) -> np.ndarray:
    """Area under ``curves`` ``(..., S+1)`` over ``fractions`` ``(S+1,)`` by the trapezoid rule → ``(...)``."""
    y = np.asarray(curves, dtype=np.float64)
    x = np.asarray(fractions, dtype=np.float64)
    if x.ndim != 1 or y.shape[-1] != x.shape[0]:
        raise ValueError(f"curves {y.shape} and fractions {x.shape} do not match")
    return ((y[..., 1:] + y[..., :-1]) * 0.5 * np.diff(x)).sum(axis=-1)


@dataclass
class Curves:
    """Deletion and insertion curves of B examples: ``(B, S+1)`` probabilities at ``fractions`` ``(S+1,)``."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        """``(B,)`` area under each deletion curve (lower is more faithful)."""
        return auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> np.ndarray:
        """``(B,)`` area under each insertion curve (higher is more faithful)."""
        return auc(self.insertion, self.fractions)


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        a, b = value
        if isinstance(a, bool) or isinstance(b, bool) or int(a) != a or int(b) != b or int(a) < 1 or int(b) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive int or a pair (freq_bins, frames) of positive ints, got {value!r}") from None
    return int(a), int(b)


def patch_ranks(attributions: torch.Tensor, patch=(1, 1), generator: torch.Generator | None = None) -> torch.Tensor:
    """Rank of each cell's patch, ``(B, F, T)`` → ``(B, F, T)`` long (0 = removed first).

    Patches are ordered by mean attribution, descending, ties to the lower patch index; with a
    ``generator`` the order is a uniformly random permutation instead (the attributions only give the shape).
    """
    pf, pt = _pair(patch, "patch")
    B, F_, T_ = attributions.shape
    nf, nt = -(-F_ // pf), -(-T_ // pt)
    if generator is None:
        a = attributions.double()
        padded = a.new_zeros(B, nf * pf, nt * pt)
        count = a.new_zeros(nf * pf, nt * pt)
        padded[:, :F_, :T_], count[:F_, :T_] = a, 1.0
        sums = padded.view(B, nf, pf, nt, pt).sum(dim=(2, 4))
        score = (sums / count.view(nf, pf, nt, pt).sum(dim=(1, 3))).flatten(1)  # (B, N)
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
    else:
        order = torch.argsort(torch.rand(B, nf * nt, generator=generator, dtype=torch.float64), dim=1).to(attributions.device)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(nf * nt, device=order.device).expand(B, -1))
    cells = ranks.view(B, nf, nt).repeat_interleave(pf, dim=1).repeat_interleave(pt, dim=2)
    return cells[:, :F_, :T_]


def _fill_values(x: torch.Tensor, fill) -> torch.Tensor:
    """``(B,)`` fill value in dB per example for log-mel ``(B, 1, F, T)``."""
    if isinstance(fill, str):
        if fill == "mean":
            return x.mean(dim=(1, 2, 3))
        if fill == "min":
            return x.amin(dim=(1, 2, 3))
        raise ValueError(f"fill must be 'mean', 'min' or a number in dB, got {fill!r}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not np.isfinite(fill):
        raise ValueError(f"fill must be 'mean', 'min' or a finite number in dB, got {fill!r}")
    return torch.full((x.shape[0],), float(fill), dtype=x.dtype, device=x.device)


def _curves(traced: TracedModel, x: torch.Tensor, ranks: torch.Tensor, classes: torch.Tensor, fill: torch.Tensor,
            counts: torch.Tensor, batch_size: int, progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion probabilities ``(B, S+1)`` for patch ``ranks`` ``(B, F, T)`` and patch ``counts`` ``(S+1,)``."""
    B, S1 = x.shape[0], counts.numel()
    jobs = torch.cartesian_prod(torch.arange(B), torch.arange(S1))  # (B*(S+1), 2) example, step
    out = {"deletion": torch.empty(B * S1, dtype=torch.float64), "insertion": torch.empty(B * S1, dtype=torch.float64)}
    with eval_mode(traced.model), torch.no_grad():
        for lo in tqdm(range(0, jobs.shape[0], batch_size), desc=desc, disable=not progress):
            b, k = (v.to(x.device) for v in jobs[lo:lo + batch_size].unbind(1))
            handled = (ranks[b] < counts.to(x.device)[k].view(-1, 1, 1)).unsqueeze(1)  # (n, 1, F, T)
            f = fill[b].view(-1, 1, 1, 1)
            for kind, inp in (("deletion", torch.where(handled, f, x[b])), ("insertion", torch.where(handled, x[b], f))):
                p = torch.softmax(traced.entry(inp).double(), dim=-1).gather(1, classes[b][:, None])[:, 0]
                out[kind][lo:lo + b.numel()] = p.cpu()
    return out["deletion"].view(B, S1).numpy(), out["insertion"].view(B, S1).numpy()


def _setup(traced: TracedModel, inputs, target, steps: int, patch, fill, batch_size: int, input_kind: str):
    """Validated (log-mel, classes, fill values, patch counts ``(S+1,)``, fractions ``(S+1,)``, patch)."""
    if isinstance(target, Unit):
        raise ValueError("deletion/insertion curves measure a class probability: target must be a class (or None), "
                         "not a Unit")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    pf, pt = _pair(patch, "patch")
    x = traced.to_logmel(inputs, input_kind)
    F_, T_ = x.shape[-2:]
    if pf > F_ or pt > T_:
        raise ValueError(f"patch ({pf}, {pt}) is larger than the input's {F_} x {T_} cells")
    classes = resolve_target(traced, x, target)
    n_patches = -(-F_ // pf) * -(-T_ // pt)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_patches / steps).long()
    return x, classes, _fill_values(x, fill), counts, (counts.double() / n_patches).numpy(), (pf, pt)


def deletion_insertion(model: nn.Module, inputs, attributions, target=None, *, steps: int = 32, patch=(1, 1),
                       fill="mean", batch_size: int = 64, input_kind: str = "auto",
                       device: str | torch.device | None = None, progress: bool = False) -> Curves:
    """Deletion and insertion curves of one attribution map per input.

    Args:
        model: a log-mel classifier (SpectrogramCNN or any module mapping ``(N, 1, F, T)`` to logits).
        inputs: waveforms (models with a LogMel front end) or log-mel ``(B, 1, F, T)`` / ``(B, F, T)``.
        attributions: ``(B, F, T)`` maps on the log-mel plane (higher = more important).
        target: class index, ``(B,)`` indices or ``None`` (the predicted class).
        steps: points after the start (the curves have ``steps + 1``).
        patch: ``(freq_bins, frames)`` cells removed together.
        fill: ``"mean"``, ``"min"`` or a value in dB (module docstring).
        batch_size: inputs per forward pass; input_kind, device, progress: as elsewhere.

    Returns:
        :class:`Curves` (``deletion_auc`` / ``insertion_auc`` per example).
    """
    traced = TracedModel(model, device)
    x, classes, fill_db, counts, fractions, patch = _setup(traced, inputs, target, steps, patch, fill, batch_size,
                                                           input_kind)
    a = torch.as_tensor(attributions)
    if a.dim() == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if tuple(a.shape) != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"attributions must be (B, F, T) = {(x.shape[0], *x.shape[-2:])}, got {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("attributions hold NaN or infinite values")
    ranks = patch_ranks(a.to(x.device), patch)
    deletion, insertion = _curves(traced, x, ranks, classes, fill_db, counts, batch_size, progress, "deletion/insertion")
    return Curves(fractions, deletion, insertion)


@dataclass
class FaithfulnessResult:
    """Deletion/insertion curves per method and for random orders.

    Attributes:
        curves: ``{method: Curves}`` plus ``"random"`` (curves averaged over ``n_random`` orders) and
            ``"input"`` (the loudest cells first).
        classes: ``(B,)`` the class explained per example. The rest: settings.
    """

    curves: dict
    classes: np.ndarray
    methods: list
    steps: int
    patch: tuple
    fill: object
    n_random: int
    seed: int
    gradcam_layer: str | None = None
    example_maps: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """``{name: {"deletion_auc": mean, "deletion_auc_std", "insertion_auc", "insertion_auc_std"}}``."""
        out = {}
        for name, c in self.curves.items():
            d, i = c.deletion_auc, c.insertion_auc
            out[name] = {"deletion_auc": float(d.mean()), "deletion_auc_std": float(d.std()),
                         "insertion_auc": float(i.mean()), "insertion_auc_std": float(i.std())}
        return out

    def to_dict(self) -> dict:
        """JSON-ready: settings, summary, mean curves and per-example AUCs."""
        first = next(iter(self.curves.values()))
        return {"methods": list(self.methods), "steps": self.steps, "patch": list(self.patch), "fill": self.fill,
                "n_random": self.n_random, "seed": self.seed, "gradcam_layer": self.gradcam_layer,
                "classes": [int(c) for c in self.classes], "fractions": [float(v) for v in first.fractions],
                "summary": self.summary(),
                "mean_curves": {n: {"deletion": c.deletion.mean(0).tolist(), "insertion": c.insertion.mean(0).tolist()}
                                for n, c in self.curves.items()},
                "per_example_auc": {n: {"deletion": c.deletion_auc.tolist(), "insertion": c.insertion_auc.tolist()}
                                    for n, c in self.curves.items()}}


def faithfulness(model: nn.Module, inputs, methods=METHODS, target=None, *, gradcam_layer: str | None = None,
                 n_random: int = 3, seed: int = 0, steps: int = 32, patch=(1, 1), fill="mean", batch_size: int = 64,
                 input_kind: str = "auto", device: str | torch.device | None = None,
                 progress: bool = True) -> FaithfulnessResult:
    """Deletion and insertion curves of each method's maps (:mod:`~audioconv.interpret.explain`) and of random orders.

    Arguments as :func:`deletion_insertion`, plus ``methods``, ``gradcam_layer`` (default: the
    model's last feature map, :func:`~audioconv.interpret.explain.default_gradcam_layer`), ``n_random`` random orders (``>= 1``) seeded by ``seed``.
    The maps are ranked by their signed values (most positive evidence for the class first).
    """
    methods = check_methods(methods)
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 1:
        raise ValueError(f"n_random must be a positive int, got {n_random!r}")
    traced = TracedModel(model, device)
    x, classes, fill_db, counts, fractions, patch = _setup(traced, inputs, target, steps, patch, fill, batch_size,
                                                           input_kind)
    needs_cam = any(m in ("grad_cam", "guided_grad_cam") for m in methods)
    cam_layer = (gradcam_layer or default_gradcam_layer(traced, classes, x)) if needs_cam else None
    maps = explain_logmel(traced, x, methods, classes, cam_layer)
    curves = {}
    for m in methods:
        ranks = patch_ranks(maps[m], patch)
        curves[m] = Curves(fractions, *_curves(traced, x, ranks, classes, fill_db, counts, batch_size, progress, m))
    runs = []
    for r in range(int(n_random)):
        ranks = patch_ranks(x[:, 0], patch, torch.Generator().manual_seed(mix_seed(seed, r)))
        runs.append(_curves(traced, x, ranks, classes, fill_db, counts, batch_size, progress, f"random {r + 1}"))
    curves["random"] = Curves(fractions, np.mean([d for d, _ in runs], axis=0), np.mean([i for _, i in runs], axis=0))
    ranks = patch_ranks(x[:, 0], patch)  # the loudest cells first: what a map that copies the input would do
    curves["input"] = Curves(fractions, *_curves(traced, x, ranks, classes, fill_db, counts, batch_size, progress, "input"))
    return FaithfulnessResult(curves=curves, classes=classes.cpu().numpy(), methods=methods, steps=int(steps),
                              patch=patch, fill=fill, n_random=int(n_random), seed=int(seed), gradcam_layer=cam_layer,
                              example_maps={m: v[0].detach().cpu().numpy() for m, v in maps.items()})
