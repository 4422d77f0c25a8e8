"""Every figure the package draws: spectrograms with s/Hz axes, projections, grids, curves."""
from audioconv.plots.render import (plot_convergence, plot_evolution_grid, plot_occlusion, plot_projection,
                                    plot_topk_grid, show_spectrogram)

__all__ = ["show_spectrogram", "plot_projection", "plot_topk_grid", "plot_evolution_grid", "plot_convergence",
           "plot_occlusion"]
