"""Grad-CAM and guided Grad-CAM on log-mel spectrograms (Selvaraju et al., ICCV 2017).

For a layer with feature maps ``A_k`` ``(B, C, F', T')`` and a target score ``y`` (a class logit
or a unit's activation, :mod:`audioconv.interpret.targets`):

* weights ``α_k = mean_{f,t} ∂y/∂A_k(f, t)`` (the gradient, globally average-pooled);
* Grad-CAM ``L = relu(Σ_k α_k · A_k)`` ``(B, F', T')`` — at the layer's resolution; with
  ``upsample=True`` interpolated to the input's ``(F, T)`` (``"nearest"``, as Captum's
  ``LayerAttribution.interpolate``, or ``"bilinear"``);
* guided Grad-CAM = guided backprop of ``y`` (:func:`~audioconv.interpret.saliency.saliency`,
  ``mode="guided"``) × Grad-CAM upsampled to ``(F, T)``.

The numbers equal Captum's ``LayerGradCam(..., relu_attributions=True)`` and ``GuidedGradCam`` in
float64 (``relu=False`` gives the signed map, Captum's default). Plain autograd: one forward with a
hook on the layer (removed in ``finally``) and one backward, so any differentiable model works —
residual graphs and functional calls included. On a spectrogram, Grad-CAM at a deep layer is coarse
(a conv4 cell of the built-in CNN spans 8 mel bins × 8 frames); guided Grad-CAM restores the
fine time–frequency detail inside the regions Grad-CAM marks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from audioconv.interpret.saliency import input_saliency
from audioconv.interpret.targets import Unit, forward_scores
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["grad_cam", "guided_grad_cam", "layer_grad_cam", "upsample_map"]

INTERPOLATIONS = ("nearest", "bilinear")


def upsample_map(maps: torch.Tensor, size: tuple[int, int], interpolation: str = "nearest") -> torch.Tensor:
    """``(B, F', T')`` → ``(B, F, T)`` by ``F.interpolate`` (``"nearest"`` or ``"bilinear"``, ``align_corners=False``)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    kwargs = {"align_corners": False} if interpolation == "bilinear" else {}
    return F.interpolate(maps[:, None], size=tuple(int(s) for s in size), mode=interpolation, **kwargs)[:, 0]


def layer_grad_cam(traced: TracedModel, logmel: torch.Tensor, layer: str, target=None,
                   relu: bool = True) -> torch.Tensor:
    """Grad-CAM ``(B, F', T')`` of log-mel ``(B, 1, F, T)`` already on ``traced.device`` (stays there)."""
    x = logmel.detach().clone().requires_grad_(True)  # so the graph exists even for frozen weights
    with eval_mode(traced.model), torch.enable_grad():
        scores, outs, _ = forward_scores(traced, x, target, layers=[layer])
        acts = outs[layer]
        if acts.dim() != 4:
            raise ValueError(f"Grad-CAM needs a layer with feature maps (B, C, H, W); layer {layer!r} gives "
                             f"{tuple(acts.shape)}")
        (grads,) = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
    if grads is None:
        where = f"unit {target.channel} of layer {target.layer!r}" if isinstance(target, Unit) else "the target"
        raise ValueError(f"{where} does not depend on layer {layer!r}: choose a Grad-CAM layer below the target")
    weights = grads.mean(dim=(2, 3), keepdim=True)  # α_k  (B, C, 1, 1)
    cam = (weights * acts.detach()).sum(dim=1)  # (B, F', T')
    return F.relu(cam) if relu else cam


def grad_cam(model: torch.nn.Module, inputs, layer: str, target=None, *, upsample: bool = False,
             interpolation: str = "nearest", relu: bool = True, input_kind: str = "auto",
             device: str | torch.device | None = None) -> torch.Tensor:
    """Grad-CAM of a class (or unit) at ``layer``.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or any differentiable
            ``nn.Module`` on log-mel ``(B, 1, F, T)``; eval mode during the call (flags restored).
        inputs: waveforms ``(B, C, T)`` / ``(B, T)`` (models with a LogMel front end) or log-mel
            ``(B, 1, F, T)`` / ``(B, F, T)``.
        layer: ``"conv4"`` or a module name (``"layer2.1"``) whose output is ``(B, C, F', T')``;
            usually the last convolutional layer.
        target: class index, ``(B,)`` indices, ``None`` (predicted class) or a
            :class:`~audioconv.interpret.targets.Unit` above ``layer``.
        upsample: return the map at the input's ``(F, T)`` instead of the layer's ``(F', T')``.
        interpolation: ``"nearest"`` (Captum's default) or ``"bilinear"``, for ``upsample``.
        relu: keep only the positive part (the original Grad-CAM; Captum ``relu_attributions=True``).
        input_kind: ``"auto"``, ``"logmel"`` or ``"waveform"``.
        device: where to compute (default CUDA if available); the model is never moved.

    Returns:
        ``(B, F', T')`` (or ``(B, F, T)`` with ``upsample``) on the CPU, model dtype; row 0 is the
        lowest frequency. Units: score × activation (arbitrary).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    traced = TracedModel(model, device)
    x = traced.to_logmel(inputs, input_kind)
    cam = layer_grad_cam(traced, x, layer, target, relu)
    return (upsample_map(cam, x.shape[-2:], interpolation) if upsample else cam).cpu()


def guided_grad_cam(model: torch.nn.Module, inputs, layer: str, target=None, *, interpolation: str = "nearest",
                    input_kind: str = "auto", device: str | torch.device | None = None) -> torch.Tensor:
    """Guided Grad-CAM ``(B, F, T)``: guided backprop of the target × Grad-CAM (ReLU'd) upsampled to ``(F, T)``.

    Arguments as :func:`grad_cam`. Guided backprop needs a rule for every nonlinearity of the model
    (ReLU, LeakyReLU, Tanh; see :mod:`audioconv.interpret.saliency`); others raise ``ValueError``.
    Equals Captum's ``GuidedGradCam(model, layer).attribute(x, target)`` (nearest interpolation).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    traced = TracedModel(model, device)
    x = traced.to_logmel(inputs, input_kind)
    cam = upsample_map(layer_grad_cam(traced, x, layer, target, relu=True), x.shape[-2:], interpolation)
    return (input_saliency(traced, x, target, "guided") * cam).cpu()
