"""Several explanation methods of one target, on the same inputs: the common input of the sanity
checks and the faithfulness curves.

Methods (``METHODS``), all maps ``(B, F, T)`` on the log-mel plane:

* ``"gradient"``, ``"guided"``, ``"deconv"`` — for a **class** target the derivative of its logit
  under that backward rule (:func:`~audioconv.interpret.saliency.saliency`); for a **unit** target
  (``Unit(layer, channel, "max" or (f, t))``) the
  :class:`~audioconv.interpret.projector.Projector`'s projection (activation × the same derivative);
* ``"grad_cam"`` — Grad-CAM at ``gradcam_layer``, upsampled bilinearly to ``(F, T)`` (smooth, so
  that cells can be ranked);
* ``"guided_grad_cam"`` — guided backprop × Grad-CAM (nearest upsampling, as Captum).

A class target ``None`` (the predicted class) is resolved once, on the model given, so that every
method — and every randomised copy in :func:`~audioconv.interpret.sanity.sanity_check` — explains
the same class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audioconv.interpret.gradcam import layer_grad_cam, upsample_map
from audioconv.interpret.projector import Projector
from audioconv.interpret.saliency import input_saliency
from audioconv.interpret.targets import Unit, class_indices
from audioconv.interpret.traced import TracedModel

__all__ = ["METHODS", "Explanation", "explain", "explain_logmel", "resolve_target", "default_gradcam_layer"]

METHODS = ("gradient", "guided", "deconv", "grad_cam", "guided_grad_cam")
_RULE_MODES = ("gradient", "guided", "deconv")


@dataclass
class Explanation:
    """Maps of several methods for one target (CPU tensors).

    Attributes:
        spectrograms: ``(B, F, T)`` the inputs in log-mel space (dB for a SpectrogramCNN).
        maps: ``{method: (B, F, T)}`` signed maps (Grad-CAM ones non-negative).
        target: the :class:`~audioconv.interpret.targets.Unit`, or ``(B,)`` long class indices.
        gradcam_layer: the layer Grad-CAM used (``None`` without a Grad-CAM method).
        hz: ``(F,)`` mel-bin centres in Hz, or ``None``; seconds: ``(T,)`` frame centres in s, or ``None``.
    """

    spectrograms: torch.Tensor
    maps: dict
    target: object
    gradcam_layer: str | None = None
    hz: np.ndarray | None = None
    seconds: np.ndarray | None = None


def check_methods(methods) -> list[str]:
    """Validated list of method names (ValueError naming the unknown one)."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError(f"methods is empty; choose from {', '.join(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; valid methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def default_gradcam_layer(traced: TracedModel, target, example: torch.Tensor | None = None) -> str:
    """The default Grad-CAM layer: for a class, the built-in model's last layer, else the last layer
    with feature maps ``(B, C, F', T')`` in the forward pass (:meth:`TracedModel.last_feature_map`); for
    a unit, the short-named layer below the unit's, else the last feature map before the unit's layer.

    ``ValueError`` naming ``gradcam_layer`` when there is none (the command line says ``--gradcam-layer``)."""
    names = list(getattr(traced.model, "layer_names", []) or [])
    try:
        if isinstance(target, Unit):
            if target.layer in names and names.index(target.layer) > 0:
                return names[names.index(target.layer) - 1]
            return traced.last_feature_map(before=target.layer, example=example)
        return names[-1] if names else traced.last_feature_map(example=example)
    except ValueError as e:
        raise ValueError(f"Grad-CAM needs gradcam_layer, a layer with feature maps below the target: {e}") from None


@torch.no_grad()
def resolve_target(traced: TracedModel, logmel: torch.Tensor, target):
    """A :class:`Unit` unchanged; a class target → ``(B,)`` long indices (``None`` → predicted) on the device."""
    if isinstance(target, Unit):
        return target
    logits = traced.logits(logmel)  # eval mode, CPU
    return class_indices(target, logits).to(logmel.device)


def explain_logmel(traced: TracedModel, logmel: torch.Tensor, methods, target, gradcam_layer: str | None = None,
                   projector: Projector | None = None) -> dict[str, torch.Tensor]:
    """``{method: (B, F, T)}`` on ``traced.device`` for log-mel ``(B, 1, F, T)`` there.

    ``target``: a :class:`Unit` or ``(B,)`` class indices (see :func:`resolve_target`).
    ``projector``: reuse one for unit targets (it must run ``traced.model``).
    """
    out = {}
    size = logmel.shape[-2:]
    cams = {}
    for method in check_methods(methods):
        if method in _RULE_MODES:
            unit_projection = isinstance(target, Unit) and target.position != "mean"
            out[method] = (_projection(traced, logmel, target, method, projector) if unit_projection
                           else input_saliency(traced, logmel, target, method))
            continue
        layer = gradcam_layer or default_gradcam_layer(traced, target, logmel)
        if layer not in cams:
            cams[layer] = layer_grad_cam(traced, logmel, layer, target, relu=True)
        if method == "grad_cam":
            out[method] = upsample_map(cams[layer], size, "bilinear")
        else:
            out[method] = input_saliency(traced, logmel, target, "guided") * upsample_map(cams[layer], size, "nearest")
    return out


def _projection(traced: TracedModel, logmel: torch.Tensor, unit: Unit, mode: str, projector) -> torch.Tensor:
    """The projector's map ``(B, F, T)`` of one unit (activation × derivative), on the device."""
    if projector is None or projector.mode != mode or projector.traced.model is not traced.model:
        projector = Projector(traced.model, mode, device=traced.device)
    proj = projector.project(logmel, unit.layer, [unit.channel], unit.position, progress=False, input_kind="logmel")
    return proj.maps[:, 0].to(logmel.device)


def explain(model: torch.nn.Module, inputs, methods=METHODS, target=None, *, gradcam_layer: str | None = None,
            input_kind: str = "auto", device: str | torch.device | None = None) -> Explanation:
    """Maps of ``methods`` (see the module docstring) for one target.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or any differentiable
            ``nn.Module`` on log-mel ``(B, 1, F, T)``.
        inputs: waveforms (models with a LogMel front end) or log-mel, as the projector takes them.
        methods: names from ``METHODS``.
        target: class index, ``(B,)`` indices, ``None`` (predicted class) or a
            :class:`~audioconv.interpret.targets.Unit`.
        gradcam_layer: the Grad-CAM layer, any name :class:`TracedModel` takes (default
            :func:`default_gradcam_layer`: the last feature map of the model, or below a unit's layer).
        input_kind: ``"auto"``, ``"logmel"`` or ``"waveform"``; device: where to compute.

    Returns:
        :class:`Explanation` (CPU).
    """
    methods = check_methods(methods)
    traced = TracedModel(model, device)
    x = traced.to_logmel(inputs, input_kind)
    resolved = resolve_target(traced, x, target)
    needs_cam = any(m in ("grad_cam", "guided_grad_cam") for m in methods)
    layer = (gradcam_layer or default_gradcam_layer(traced, resolved, x)) if needs_cam else None
    maps = explain_logmel(traced, x, methods, resolved, layer)
    hz, seconds = traced.axes(*x.shape[-2:])
    return Explanation(spectrograms=x[:, 0].detach().cpu(), maps={k: v.detach().cpu() for k, v in maps.items()},
                       target=resolved if isinstance(resolved, Unit) else resolved.cpu(), gradcam_layer=layer,
                       hz=hz, seconds=seconds)
