"""Every figure the package draws: spectrograms with s/Hz axes, projections, grids, curves."""
from audioconv.plots.curves import plot_convergence, plot_metrics
from audioconv.plots.grids import plot_evolution_grid, plot_topk_grid
from audioconv.plots.occlusion import plot_occlusion
from audioconv.plots.projection import plot_projection
from audioconv.plots.spectrogram import show_spectrogram

__all__ = ["show_spectrogram", "plot_projection", "plot_topk_grid", "plot_evolution_grid", "plot_convergence",
           "plot_metrics", "plot_occlusion"]
