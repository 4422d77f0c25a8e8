"""Interpretation of hidden units and classes: Zeiler & Fergus projections, the views built on them,
and the methods users ask for next to them (Grad-CAM, saliency, activation maximisation, sanity
checks, faithfulness).

Everything here computes and returns data (tensors, arrays, dataclasses); ``audioconv.plots`` draws.
"""
from audioconv.interpret.actmax import actmax_audio, maximize_activation
from audioconv.interpret.cka import linear_cka
from audioconv.interpret.evolve import Evolution, EvolutionGrid, evolve
from audioconv.interpret.explain import METHODS, Explanation, explain
from audioconv.interpret.faithfulness import deletion_insertion, faithfulness
from audioconv.interpret.filters import project_filters
from audioconv.interpret.gradcam import grad_cam, guided_grad_cam
from audioconv.interpret.invariance import InvarianceResult, invariance
from audioconv.interpret.occlusion import occlusion
from audioconv.interpret.projector import Projection, Projector
from audioconv.interpret.receptive_field import receptive_field, receptive_field_size
from audioconv.interpret.saliency import saliency
from audioconv.interpret.sanity import sanity_check, spearman
from audioconv.interpret.sonify import griffin_lim_audio, masked_audio
from audioconv.interpret.targets import Unit
from audioconv.interpret.topk import TopK, top_k
from audioconv.interpret.traced import TracedModel

__all__ = ["Projector", "Projection", "TracedModel", "project_filters", "receptive_field", "receptive_field_size",
           "TopK", "top_k", "Evolution", "EvolutionGrid", "evolve", "linear_cka", "occlusion", "masked_audio",
           "griffin_lim_audio", "grad_cam", "guided_grad_cam", "saliency", "Unit", "explain", "Explanation", "METHODS",
           "maximize_activation", "actmax_audio", "sanity_check", "spearman", "deletion_insertion", "faithfulness", "invariance", "InvarianceResult"]
