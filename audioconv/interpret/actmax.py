"""Activation maximisation: the log-mel input a unit (or class) responds to most, found without data.

Regularised gradient ascent in log-mel space (Erhan et al. 2009; Simonyan et al. 2014; with the
jitter of Mordvintsev et al. 2015). Starting from a flat log-mel ``x₀`` (plus a little seeded
noise), each step maximises

    J(x) = score(roll(x, δ)) / c − λ_s · S(x) − λ_2 · L2(x)

* ``score``: the unit's activation or the class logit (:mod:`audioconv.interpret.targets`);
* ``c``: the root-mean-square over cells of ``∂score/∂x`` at the start (no jitter), fixed for the
  run, so that the score's pull on a cell starts at about 1 per dB whatever the unit's scale, and
  the weights ``λ`` mean the same for every unit and model;
* ``roll(x, δ)``: **jitter** — the input shifted circularly by a random ``δ = (δf, δt)`` cells,
  ``|δf| ≤ jitter[0]``, ``|δt| ≤ jitter[1]``, new at every step, so the result cannot rely on one
  exact alignment with the pooling grid;
* **smoothness prior** ``S(x) = ½ Σ (x[f+1,t] − x[f,t])² + ½ Σ (x[f,t+1] − x[f,t])²`` (dB²,
  :func:`smoothness_penalty`): its pull on a cell is ``λ_s · Σ_neighbours (x[cell] − x[neighbour])``,
  so with ``λ_s = 0.05`` a cell 5 dB above its four neighbours is pulled back as hard as the score pushes;
* ``L2(x) = ½ Σ (x − x₀)²`` (dB², :func:`l2_penalty`, ``x₀`` the flat start level): stay near the start.

Steps are Adam updates of ``lr_db`` dB; after each, ``x`` is clipped to ``bounds_db``. Where the
input lives is a property of the training data, not of the front end (dB re full-scale power:
the demo's clips span about −51 … +38 dB), so the start level and the bounds come from, in order:
the arguments; a ``reference`` batch of real inputs (its mean; its min and max); the running
statistics of a ``BatchNorm2d`` that normalises the input first (the built-in model's
``input_norm``: mean, and mean ± 3 std); else 0 dB and no bounds. Randomness (start noise, jitter)
comes from one ``torch.Generator`` seeded with ``seed``: the same seed gives the same result on the
same device.

:func:`actmax_audio` makes the result audible: the log-mel is inverted by the front end
(:meth:`~audioconv.features.LogMel.db_to_waveform`: mel → linear magnitude by non-negative least
squares, phase by Griffin-Lim). This answers "what does this unit want to hear?" without any input
clip — unlike a projection, which is always conditioned on one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from audioconv.features import LogMel
from audioconv.interpret.targets import describe_target, forward_scores
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["ActMaxResult", "maximize_activation", "smoothness_penalty", "l2_penalty", "actmax_audio"]


def smoothness_penalty(x: torch.Tensor) -> torch.Tensor:
    """``½ Σ (x[f+1,t] − x[f,t])² + ½ Σ (x[f,t+1] − x[f,t])²`` over the last two dims ``(..., F, T)`` → ``(...)`` (dB²).

    Its gradient at a cell is ``Σ_neighbours (x[cell] − x[neighbour])`` (the negative discrete
    Laplacian, 4 neighbours inside, fewer at the border).
    """
    return 0.5 * (x.diff(dim=-2).square().sum(dim=(-2, -1)) + x.diff(dim=-1).square().sum(dim=(-2, -1)))


def l2_penalty(x: torch.Tensor, x0) -> torch.Tensor:
    """``½ Σ (x − x₀)²`` over the last two dims ``(..., F, T)`` → ``(...)`` (dB²); gradient ``x − x₀``."""
    return 0.5 * (x - x0).square().sum(dim=(-2, -1))


@dataclass
class ActMaxResult:
    """An input optimised for one target (CPU tensors).

    Attributes:
        logmel: ``(F, T)`` the optimised log-mel (dB for a SpectrogramCNN).
        start: ``(F, T)`` where the ascent began.
        target: the target's description (``"conv3 unit 5 (max)"``, ``"class 2"``).
        score, score_start: the target's score (no jitter) at the end and at the start.
        history: per step ``"score"`` (with that step's jitter), ``"smoothness"``, ``"l2"``, ``"objective"``.
        settings: the arguments used (steps, lr_db, jitter, smoothness, l2, bounds_db, seed).
        hz: ``(F,)`` mel-bin centres in Hz, seconds: ``(T,)`` frame centres in s (``None`` without a front end).
    """

    logmel: torch.Tensor
    start: torch.Tensor
    target: str
    score: float
    score_start: float
    history: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    hz: np.ndarray | None = None
    seconds: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (no arrays but the score history)."""
        return {"target": self.target, "score": self.score, "score_start": self.score_start,
                "size": list(self.logmel.shape), "settings": dict(self.settings),
                "score_history": [float(v) for v in self.history.get("score", [])]}


def _input_statistics(traced: TracedModel, size: tuple[int, int]):
    """(mean, std) in dB from the running statistics of a 1-channel BatchNorm2d that the log-mel input
    enters first (the built-in model's ``input_norm``), or ``None``."""
    x = torch.zeros(1, 1, *size, dtype=traced.dtype, device=traced.device)
    found = []

    def hook(module, args):
        if args and args[0] is x and not found:
            found.append(module)

    bns = [m for m in traced.model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.num_features == 1
           and m.running_mean is not None]
    handles = [m.register_forward_pre_hook(hook) for m in bns]
    try:
        with torch.no_grad(), eval_mode(traced.model):
            traced.entry(x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        return None
    bn = found[0]
    return float(bn.running_mean[0]), float(bn.running_var[0].clamp_min(0).sqrt())


def _defaults(traced: TracedModel, size, start_db, bounds_db, reference):
    """(F, T), start level (dB), bounds (lo, hi) or None (module docstring: where they come from)."""
    if size is None:
        size = traced.default_size
        if size is None:
            raise ValueError("size=(n_mels, frames) is needed for a model without a LogMel front end")
    F_, T_ = (int(v) for v in size)
    if F_ < 1 or T_ < 1:
        raise ValueError(f"size must be two positive ints (n_mels, frames), got {size!r}")
    level, bounds = 0.0, None
    if reference is not None:
        ref = traced.to_logmel(reference).double()
        level, bounds = float(ref.mean()), (float(ref.min()), float(ref.max()))
    else:
        stats = _input_statistics(traced, (F_, T_))
        if stats is not None:
            level, bounds = stats[0], (stats[0] - 3 * stats[1], stats[0] + 3 * stats[1])
    level = float(start_db) if start_db is not None else level
    bounds = bounds_db if bounds_db is not None else bounds
    if bounds is not None:
        lo, hi = (float(v) for v in bounds)
        if not lo < hi:
            raise ValueError(f"bounds_db must be (low, high) with low < high, got {bounds!r}")
        bounds = (lo, hi)
    return (F_, T_), level, bounds


def _check(steps, lr_db, jitter, smoothness, l2):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not lr_db > 0:
        raise ValueError(f"lr_db must be > 0, got {lr_db!r}")
    if smoothness < 0 or l2 < 0:
        raise ValueError(f"smoothness and l2 must be >= 0, got {smoothness!r}, {l2!r}")
    try:
        jf, jt = (int(v) for v in jitter)
        if jf < 0 or jt < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"jitter must be a pair (freq_bins, frames) of ints >= 0, got {jitter!r}") from None
    return jf, jt


def maximize_activation(model: torch.nn.Module, target, *, size=None, steps: int = 200, lr_db: float = 1.0,
                        jitter=(1, 4), smoothness: float = 0.05, l2: float = 0.0, start_db: float | None = None,
                        noise_db: float = 3.0, bounds_db=None, reference=None, seed: int = 0,
                        device: str | torch.device | None = None, progress: bool = True) -> ActMaxResult:
    """Regularised gradient ascent on a log-mel input for one unit or class (module docstring).

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or any differentiable
            ``nn.Module`` on log-mel ``(1, 1, F, T)``; eval mode during the call (flags restored).
        target: a :class:`~audioconv.interpret.targets.Unit` (``"max"`` by default: the unit's
            strongest cell, or ``"mean"`` over its map, or one cell) or a class index (its logit).
        size: ``(n_mels, frames)``; default the model's (1 s of frames) for a built-in model.
        steps: Adam steps; lr_db: step size in dB.
        jitter: ``(freq_bins, frames)`` largest random circular shift per step (``(0, 0)``: none).
        smoothness: ``λ_s``, weight of :func:`smoothness_penalty`; l2: ``λ_2``, of :func:`l2_penalty`.
        start_db: the flat start level in dB (default: see the module docstring).
        noise_db: std of the seeded Gaussian noise added to the start.
        bounds_db: ``(low, high)`` dB clip after each step (default: see the module docstring).
        reference: real inputs (waveforms or log-mel, as the projector takes them) whose mean
            is the start level and whose min / max are the bounds, unless those are given.
        seed: seeds the start noise and the jitter.
        device: where to compute; progress: a tqdm bar over the steps.

    Returns:
        :class:`ActMaxResult`.
    """
    if isinstance(target, (list, tuple)) or target is None:
        raise ValueError(f"target must be one Unit or one class index, got {target!r}")
    jf, jt = _check(steps, lr_db, jitter, smoothness, l2)
    traced = TracedModel(model, device)
    (F_, T_), level, bounds = _defaults(traced, size, start_db, bounds_db, reference)
    g = torch.Generator().manual_seed(int(seed))
    start = (level + float(noise_db) * torch.randn(1, 1, F_, T_, generator=g, dtype=torch.float64)).to(traced.dtype)
    start = start.to(traced.device) if bounds is None else start.clamp(*bounds).to(traced.device)
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=float(lr_db))
    history = {"score": [], "smoothness": [], "l2": [], "objective": []}
    with eval_mode(traced.model):
        score_start, scale = _score_and_scale(traced, start, target)
        for _ in tqdm(range(steps), desc="activation maximisation", disable=not progress):
            shift = (int(torch.randint(-jf, jf + 1, (), generator=g)), int(torch.randint(-jt, jt + 1, (), generator=g)))
            opt.zero_grad()
            with torch.enable_grad():
                score = forward_scores(traced, torch.roll(x, shift, dims=(-2, -1)), target)[0][0]
                s, r = smoothness_penalty(x[0, 0]), l2_penalty(x[0, 0], level)
                objective = score / scale - smoothness * s - l2 * r
                (-objective).backward()
            opt.step()
            if bounds is not None:
                with torch.no_grad():
                    x.clamp_(*bounds)
            for key, v in (("score", score), ("smoothness", s), ("l2", r), ("objective", objective)):
                history[key].append(float(v.detach()))
        final = x.detach()
        score_end = _score(traced, final, target)
    hz, seconds = traced.axes(F_, T_)
    settings = {"steps": steps, "lr_db": float(lr_db), "jitter": [jf, jt], "smoothness": float(smoothness),
                "l2": float(l2), "start_db": level, "noise_db": float(noise_db),
                "bounds_db": None if bounds is None else list(bounds), "seed": int(seed)}
    return ActMaxResult(logmel=final[0, 0].cpu(), start=start[0, 0].detach().cpu(), target=describe_target(target),
                        score=score_end, score_start=score_start, history=history, settings=settings,
                        hz=hz, seconds=seconds)


def _score(traced: TracedModel, x: torch.Tensor, target) -> float:
    with torch.no_grad():
        return float(forward_scores(traced, x, target)[0][0])


def _score_and_scale(traced: TracedModel, x: torch.Tensor, target) -> tuple[float, float]:
    """(score at ``x``, RMS over cells of its gradient there); ValueError when that gradient is zero."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = forward_scores(traced, x, target)[0][0]
        (grad,) = torch.autograd.grad(score, x, allow_unused=True)
    rms = 0.0 if grad is None else float(grad.double().square().mean().sqrt())
    if not rms > 0:
        raise ValueError(f"{describe_target(target)} has a zero gradient at the start (it is inactive there); "
                         "try another start_db or a larger noise_db")
    return float(score.detach()), rms


def actmax_audio(result: ActMaxResult, frontend: LogMel, n_iter: int = 32, peak: float = 0.5) -> torch.Tensor:
    """The optimised log-mel as sound: ``(n_samples,)`` float32 at the front end's rate, peak ``peak``.

    ``n_samples = (frames − 1) · hop_length`` (the clip length whose log-mel has ``frames`` frames).
    Inverted by :meth:`~audioconv.features.LogMel.db_to_waveform` (Griffin-Lim, ``n_iter`` iterations).
    """
    db = torch.as_tensor(result.logmel).detach().float().cpu()
    if db.dim() != 2 or db.shape[0] != frontend.config.n_mels:
        raise ValueError(f"the result's log-mel is {tuple(db.shape)}; this front end needs ({frontend.config.n_mels}, frames)")
    n_samples = max(1, (db.shape[1] - 1) * frontend.config.hop_length)
    wav = frontend.db_to_waveform(db, n_samples, n_iter=int(n_iter)).float()
    top = wav.abs().max()
    return wav * (float(peak) / top) if float(top) > 0 else wav
