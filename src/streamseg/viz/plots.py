"""PNG plots of segmentation results: colour bars, confusion matrix, per-class scores.

matplotlib is imported inside each function (it is slow to import and optional for library users)
and drawn on an explicit Agg canvas, never through pyplot: no global backend state, no display
needed, safe from a background thread (e.g. a Telegram callback).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

BG_COLOUR = (0.85, 0.85, 0.85, 1.0)  # light grey: background reads as "nothing happening"


def class_colours(num_classes: int, bg_ids: Sequence[int] = ()) -> np.ndarray:
    """(K, 4) RGBA colours: tab20 up to 20 classes, evenly spaced hues beyond; background grey."""
    from matplotlib import colormaps

    if num_classes <= 20:
        colours = np.array(colormaps["tab20"].colors[:num_classes], dtype=float)
        colours = np.concatenate((colours, np.ones((num_classes, 1))), axis=1)
    else:
        colours = colormaps["turbo"](np.linspace(0.05, 0.95, num_classes))
    for b in bg_ids:
        colours[b] = BG_COLOUR
    return colours


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def plot_segmentation(
    path: str | os.PathLike,
    gt: np.ndarray,
    preds: np.ndarray | Mapping[str, np.ndarray],
    class_names: Sequence[str],
    bg_ids: Sequence[int] = (),
    title: str | None = None,
    fps: float | None = None,
) -> None:
    """Colour bars of the ground truth ``gt`` (T,) int above one or more predictions (T,) int.

    ``preds`` is one array (labelled "prediction") or a mapping row title -> array; longer
    predictions are cut to T. The x axis is in frames, or seconds when ``fps`` is given.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = len(class_names)
    rows = {"ground truth": np.asarray(gt)}
    if isinstance(preds, Mapping):
        rows.update({name: np.asarray(p)[: len(gt)] for name, p in preds.items()})
    else:
        rows["prediction"] = np.asarray(preds)[: len(gt)]
    colours = class_colours(k, bg_ids)
    cmap = ListedColormap(colours)
    length = len(gt)
    extent_end = length / fps if fps else length
    fig = _new_figure(12, 0.55 * len(rows) + 1.2)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, labels) in zip(axes, rows.items()):
        ax.imshow(
            labels[None, :],
            aspect="auto",
            cmap=cmap,
            vmin=-0.5,
            vmax=k - 0.5,
            interpolation="nearest",
            extent=(0, extent_end, 0, 1),
        )
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("time (s)" if fps else "frame")
    present = sorted(set(np.unique(np.concatenate(list(rows.values()))).tolist()))
    handles = [Patch(color=colours[c], label=class_names[c]) for c in present if 0 <= c < k]
    # Beside the bars, one column per 12 classes, so it never covers the time axis.
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               ncol=1 + (len(handles) - 1) // 12, frameon=False)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion_matrix(
    path: str | os.PathLike,
    cm: np.ndarray,
    class_names: Sequence[str],
    normalize: bool = True,
    title: str | None = None,
) -> None:
    """Confusion matrix ``cm`` (K, K), rows = ground truth; ``normalize`` divides each row by its sum
    (so the diagonal is per-class frame accuracy; rows with no frames stay 0)."""
    m = np.asarray(cm, dtype=float)
    if normalize:
        sums = m.sum(axis=1, keepdims=True)
        m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    k = m.shape[0]
    side = max(4.0, 0.4 * k + 2)
    fig = _new_figure(side + 1, side)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 25:  # cell text stays legible up to about 25 classes
        for i in range(k):
            for j in range(k):
                if m[i, j] > 0:
                    text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.6 * m.max() else "black")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    _save(fig, path)


def plot_per_class(
    path: str | os.PathLike,
    per_class: Mapping[str, Mapping[str, float | None]],
    keys: Sequence[str] = ("frame_acc", "f1@50"),
    title: str | None = None,
) -> None:
    """Grouped bars of per-class scores (percent), e.g. ``SegmentationMetrics.compute()["per_class"]``;
    ``None`` values (class absent, or background for F1) are drawn as empty slots."""
    names = list(per_class)
    x = np.arange(len(names))
    width = 0.8 / max(len(keys), 1)
    fig = _new_figure(max(6.0, 0.45 * len(names) + 2), 4)
    ax = fig.subplots()
    for i, key in enumerate(keys):
        values = [per_class[n].get(key) for n in names]
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, heights, width, label=key)
    ax.set_xticks(x, names, rotation=90, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or "per-class scores")
    _save(fig, path)
