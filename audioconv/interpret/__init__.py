"""Interpretation of hidden units: Zeiler & Fergus projections and the views built on them.

Everything here computes and returns data (tensors, arrays, dataclasses); ``audioconv.plots`` draws.
"""
from audioconv.interpret.cka import linear_cka
from audioconv.interpret.evolve import EvolutionGrid, evolve
from audioconv.interpret.filters import project_filters
from audioconv.interpret.occlusion import occlusion
from audioconv.interpret.projector import Projection, Projector
from audioconv.interpret.receptive_field import receptive_field, receptive_field_size
from audioconv.interpret.sonify import griffin_lim_audio, masked_audio
from audioconv.interpret.topk import TopK, top_k

__all__ = ["Projector", "Projection", "project_filters", "receptive_field", "receptive_field_size", "TopK", "top_k",
           "EvolutionGrid", "evolve", "linear_cka", "occlusion", "masked_audio", "griffin_lim_audio"]
