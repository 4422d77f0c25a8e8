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

# Methods next to the deconvnet: Grad-CAM, saliency of a class, activation maximisation, sanity checks, faithfulness.
from audioconv.interpret.actmax import actmax_audio, maximize_activation  # noqa: E402
from audioconv.interpret.explain import METHODS, Explanation, explain  # noqa: E402
from audioconv.interpret.faithfulness import deletion_insertion, faithfulness  # noqa: E402
from audioconv.interpret.gradcam import grad_cam, guided_grad_cam  # noqa: E402
from audioconv.interpret.saliency import saliency  # noqa: E402
from audioconv.interpret.sanity import sanity_check, spearman  # noqa: E402
from audioconv.interpret.targets import Unit  # noqa: E402

__all__ += ["grad_cam", "guided_grad_cam", "saliency", "Unit", "explain", "Explanation", "METHODS",
            "maximize_activation", "actmax_audio", "sanity_check", "spearman", "deletion_insertion", "faithfulness"]
