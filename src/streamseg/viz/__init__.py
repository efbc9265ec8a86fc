"""Plots of segmentation results (matplotlib, imported lazily; Agg canvas; PNG files)."""

from streamseg.viz.plots import class_colours, plot_confusion_matrix, plot_per_class, plot_segmentation

__all__ = ["class_colours", "plot_confusion_matrix", "plot_per_class", "plot_segmentation"]
