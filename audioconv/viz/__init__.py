"""Zeiler & Fergus projections of hidden units, dataset-level views and rendering.

Core (projector): :class:`Projector`, :class:`Projection`, :func:`project_filters`,
:func:`receptive_field`, :func:`receptive_field_size`.
"""
# ---- projector core (owned by the projector helper) ----
from audioconv.viz.filters import project_filters
from audioconv.viz.projector import Projection, Projector
from audioconv.viz.receptive_field import receptive_field, receptive_field_size

__all__ = ["Projector", "Projection", "project_filters", "receptive_field", "receptive_field_size"]

# ---- dataset-level views, rendering, sound (owned by the top-k/render helper): append below ----
from audioconv.viz.cka import linear_cka
from audioconv.viz.evolve import EvolutionGrid, evolve
from audioconv.viz.occlusion import occlusion
from audioconv.viz.render import (plot_convergence, plot_evolution_grid, plot_occlusion, plot_projection,
                                  plot_topk_grid)
from audioconv.viz.sonify import griffin_lim_audio, masked_audio
from audioconv.viz.topk import TopK, top_k

__all__ += ["TopK", "top_k", "EvolutionGrid", "evolve", "linear_cka", "occlusion", "plot_projection",
            "plot_topk_grid", "plot_evolution_grid", "plot_convergence", "plot_occlusion", "masked_audio",
            "griffin_lim_audio"]
