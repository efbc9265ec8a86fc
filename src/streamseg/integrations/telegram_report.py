"""What the Telegram reports say: message text (HTML) and plot rendering, as pure functions.

No Lightning here: the callback gathers numbers, these functions turn them into messages, so the wording
can be tested on plain dicts. Metric values are percentages for val/test scores, raw for losses.
"""

from __future__ import annotations

import io
import math
import tempfile
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .telegram_text import escape, tail, truncate

TEST_KEYS = ("acc", "edit", "f1@10", "f1@25", "f1@50")
TEST_HEADERS = ("Acc", "Edit", "F1@10", "F1@25", "F1@50")
# Telegram shows <pre> in a monospace box; ~2,500 characters of traceback leave room in one 4,096 message
# for the header, the exception line (<= 500) and the last metrics.
TRACEBACK_CHARS = 2500
EXCEPTION_CHARS = 500

History = Mapping[int, Mapping[str, float]]  # epoch (1-based) -> metric name -> value


def fmt_duration(seconds: float | None) -> str:
    """`12.3 s`, `4 m 05 s`, `2 h 07 m`, `1 d 03 h`; '-' for None or NaN."""
    if seconds is None or math.isnan(seconds):
        return "-"
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} m {s:02d} s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m:02d} m"
    d, h = divmod(h, 24)
    return f"{d} d {h:02d} h"


def lower_is_better(name: str) -> bool:
    return "loss" in name


def _fmt(name: str, v: float) -> str:
    """Scores are percentages (2 decimals); losses and other raw values keep 4 significant digits."""
    return f"{v:.2f}" if name.startswith(("val/", "test/")) else f"{v:.4g}"


def _metric_order(names: set[str]) -> list[str]:
    """val/<test keys> in the paper's column order first, then other val metrics, then the rest."""
    first = [f"val/{k}" for k in TEST_KEYS if f"val/{k}" in names]
    rest = sorted(n for n in names if n not in first)
    return first + [n for n in rest if n.startswith("val/")] + [n for n in rest if not n.startswith("val/")]


def metrics_table(history: History) -> str:
    """A monospace table: per metric, the best value (and its epoch) and the last one (and its epoch)."""
    names = {n for row in history.values() for n in row}
    if not names:
        return "no metrics logged yet"
    rows = [("metric", "best (epoch)", "last (epoch)")]
    for name in _metric_order(names):
        seen = [(e, row[name]) for e, row in sorted(history.items()) if name in row and not math.isnan(row[name])]
        if not seen:
            continue
        pick = min if lower_is_better(name) else max
        best_e, best_v = pick(seen, key=lambda ev: ev[1])
        last_e, last_v = seen[-1]
        rows.append((name, f"{_fmt(name, best_v)} ({best_e})", f"{_fmt(name, last_v)} ({last_e})"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "<pre>" + escape("\n".join(lines)) + "</pre>"


def results_table(results: Mapping[str, Any]) -> str:
    cells = [(h, f"{float(results[k]):.2f}") for h, k in zip(TEST_HEADERS, TEST_KEYS) if k in results]
    if not cells:
        return "no test results"
    widths = [max(len(h), len(v)) for h, v in cells]
    head = "  ".join(h.rjust(w) for (h, _), w in zip(cells, widths))
    vals = "  ".join(v.rjust(w) for (_, v), w in zip(cells, widths))
    return "<pre>" + escape(f"{head}\n{vals}") + "</pre>"


def start_message(run: str, host: str, resumed_epoch: int | None, max_epochs: int | None, world_size: int,
                  summary: Mapping[str, Any]) -> str:
    """`summary`: short `key: value` lines about the config (overrides first)."""
    how = f"resumed after epoch {resumed_epoch}" if resumed_epoch else "fresh start"
    lines = [f"<b>started</b> {escape(run)} on {escape(host)}",
             f"{how}; {max_epochs if max_epochs and max_epochs > 0 else '?'} epochs; {world_size} process(es)"]
    if summary:
        lines.append("<pre>" + escape("\n".join(f"{k}: {v}" for k, v in summary.items())) + "</pre>")
    return "\n".join(lines)


def epoch_message(run: str, host: str, epoch: int, max_epochs: int | None, history: History,
                  epoch_seconds: Sequence[float]) -> str:
    """`epoch` is 1-based and finished; ETA = epochs left x mean epoch time (validation included)."""
    per_epoch = float(np.mean(epoch_seconds)) if epoch_seconds else None
    left = (max_epochs - epoch) if max_epochs and max_epochs > 0 else None
    eta = per_epoch * left if per_epoch is not None and left is not None else None
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return "\n".join([
        f"<b>epoch {epoch}{total}</b> {escape(run)} on {escape(host)}",
        metrics_table(history),
        f"{fmt_duration(per_epoch)} per epoch, ETA {fmt_duration(eta)}",
    ])


def crash_message(run: str, host: str, exc: BaseException, epoch: int | None, elapsed: float | None,
                  last: Mapping[str, float]) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = f" in epoch {epoch}" if epoch is not None else ""
    head = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
    lines = [
        f"<b>{head}</b> {escape(run)} on {escape(host)}{where} after {fmt_duration(elapsed)}",
        f"<b>{escape(type(exc).__name__)}</b>: {escape(truncate(str(exc), EXCEPTION_CHARS))}",
        "<pre>" + escape(tail(tb, TRACEBACK_CHARS)) + "</pre>",
    ]
    if last:
        lines.append("last metrics: " + escape(", ".join(f"{k} {_fmt(k, v)}" for k, v in last.items())))
    return "\n".join(lines)


def end_message(run: str, host: str, results: Mapping[str, Any] | None, checkpoint: str | None,
                best: str | None, elapsed: float | None, epoch_seconds: Sequence[float], trained: bool) -> str:
    """`trained`: False for an evaluation-only run (`streamseg test`)."""
    head = "finished" if trained else "evaluated"
    lines = [f"<b>{head}</b> {escape(run)} on {escape(host)}"]
    n = (results or {}).get("num_videos", len((results or {}).get("videos", [])))
    lines.append(f"test, {n} videos, checkpoint {escape(checkpoint or '-')}:")
    lines.append(results_table(results or {}))
    if best:
        lines.append(f"best checkpoint: {escape(best)}")
    per = f" ({fmt_duration(float(np.mean(epoch_seconds)))} per epoch)" if epoch_seconds else ""
    lines.append(f"total time {fmt_duration(elapsed)}{per}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# plots, rendered in the sender's thread (these run inside the functions handed to notifier.photo)


def _figure_png(fig: Any, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def render_curves(history: History, title: str) -> bytes | None:
    """Training curves as PNG bytes: validation scores (%) on the left, losses on the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = _metric_order({n for row in history.values() for n in row})
    if not names:
        return None
    losses = [n for n in names if lower_is_better(n)]
    scores = [n for n in names if n not in losses]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    panels = [(scores, "score"), (losses, "loss")]
    panels = [p for p in panels if p[0]]
    for i, (group, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name in group:
            pts = [(e, row[name]) for e, row in sorted(history.items()) if name in row]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _figure_png(fig)


def render_segmentation(name: str, pred: np.ndarray, gt: np.ndarray, class_names: Sequence[str],
                        bg_ids: Sequence[int], fps: float | None, title: str) -> bytes:
    """Ground truth above prediction, as PNG bytes (streamseg.viz draws it; it writes files, hence the
    temporary folder)."""
    from ..viz import plots

    with tempfile.TemporaryDirectory(prefix="streamseg-tg-") as tmp:
        path = Path(tmp) / "seg.png"
        plots.plot_segmentation(path, gt, pred, class_names, bg_ids, title=title, fps=fps)
        return path.read_bytes()


PREVIEW_TILE = 128  # pixels: the longer side of each chunk's tile (small frames are scaled up, nearest)
PREVIEW_TEXT = 14  # pixels of the label row under each tile
PREVIEW_FRAME_MS = 250  # 4 sampled frames per second: slow enough to read the labels


def render_input_preview(frames: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                         bg_ids: Sequence[int] = (), names: Sequence[str] = ()) -> bytes:
    """An animated GIF of training chunks as the model sees them: ``frames uint8 (N, T, H, W, 3)`` (N chunks
    of T sampled frames, after augmentation), ``labels (N, T)`` class ids (< 0: padding). The N chunks play
    side by side, frame t of every chunk at once; under each, a bar in the class colour with the label name
    (``pad`` for padding) and the chunk's video name (``names``)."""
    from PIL import Image, ImageDraw

    from ..viz.plots import class_colours

    n, t, h, w, _ = frames.shape
    scale = max(1, PREVIEW_TILE // max(h, w))
    th, tw = h * scale, w * scale
    colours = (class_colours(len(class_names), list(bg_ids))[:, :3] * 255).round().astype(np.uint8)
    gif = []
    for step in range(t):
        canvas = np.zeros((th + 2 * PREVIEW_TEXT, n * (tw + 4), 3), np.uint8)
        for i in range(n):
            x0 = i * (tw + 4)
            canvas[:th, x0 : x0 + tw] = frames[i, step].repeat(scale, 0).repeat(scale, 1)
            label = int(labels[i, step])
            if label >= 0:
                canvas[th : th + PREVIEW_TEXT, x0 : x0 + tw] = colours[label]
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        for i in range(n):
            x0, label = i * (tw + 4), int(labels[i, step])
            draw.text((x0 + 2, th + 1), class_names[label] if label >= 0 else "pad", fill=(255, 255, 255))
            caption = f"{names[i]} t={step}" if i < len(names) else f"t={step}"
            draw.text((x0 + 2, th + PREVIEW_TEXT + 1), caption[: tw // 6], fill=(200, 200, 200))
        gif.append(image.convert("P", palette=Image.Palette.ADAPTIVE))
    buf = io.BytesIO()
    gif[0].save(buf, format="GIF", save_all=True, append_images=gif[1:], duration=PREVIEW_FRAME_MS, loop=0)
    return buf.getvalue()
