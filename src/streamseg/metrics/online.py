"""Onset delay: how late a streaming model recognises each action after it starts.

For every ground-truth (GT) non-background segment ``[s, e)`` of label c, the delay is ``t - s`` for
the first frame ``t`` in ``[s, e)`` where the prediction is c. A segment never labelled c inside
itself is *missed*: it is counted apart and does not enter the mean or median (a late detection
after the segment ended is not a recognition of it).

Evaluate the *committed* per-frame predictions of a streaming run (what was emitted at each frame),
not predictions revised later, or the delay measures nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from streamseg.metrics.segments import check_pair, segment_arrays


def onset_delays(
    pred: np.ndarray, gt: np.ndarray, bg_ids: Sequence[int] = (), name: str = "video"
) -> tuple[np.ndarray, int]:
    """Delays in frames of one video's GT segments that were hit, and the number missed.

    ``pred`` (T' >= T,) int (truncated to T), ``gt`` (T,) int. Returns ``(delays (H,) int64, missed)``
    with H + missed = number of non-background GT segments, delays in GT segment order.
    """
    p, g = check_pair(pred, gt, None, name)
    segs = segment_arrays(g, bg_ids)
    # Inside a GT segment gt[t] == c, so "prediction is c" is "prediction is correct".
    correct = np.flatnonzero(p == g)
    first = np.searchsorted(correct, segs.starts, side="left")
    onset = np.append(correct, g.shape[0])[first]  # T where no correct frame follows the start
    hit = onset < segs.ends
    return (onset - segs.starts)[hit].astype(np.int64), int((~hit).sum())


class OnsetDelay:
    """Accumulates onset delays over videos.

    Args:
        bg_ids: class ids whose GT segments are not scored.
        fps: frames per second of the GT labels; when given, ``compute()`` adds the delays in seconds.
    """

    def __init__(self, bg_ids: Sequence[int] = (), fps: float | None = None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.bg_ids = tuple(int(b) for b in bg_ids)
        self.fps = fps
        self.reset()

    def reset(self) -> None:
        self._delays: list[np.ndarray] = []
        self._missed = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "video") -> None:
        """Add one video (see :func:`onset_delays`)."""
        delays, missed = onset_delays(pred, gt, self.bg_ids, name)
        self._delays.append(delays)
        self._missed += missed

    def delays(self) -> np.ndarray:
        """All delays in frames so far, (H,) int64."""
        return np.concatenate(self._delays) if self._delays else np.zeros(0, dtype=np.int64)

    def compute(self) -> dict:
        """``num_segments``, ``num_hit``, ``num_missed``, ``mean_frames``, ``median_frames`` and, with
        ``fps``, ``mean_s``, ``median_s``. Means and medians are ``None`` when no segment was hit.
        """
        d = self.delays()
        hit = int(d.shape[0])
        out: dict = {
            "num_segments": hit + self._missed,
            "num_hit": hit,
            "num_missed": self._missed,
            "mean_frames": float(d.mean()) if hit else None,
            "median_frames": float(np.median(d)) if hit else None,
        }
        if self.fps is not None:
            out["mean_s"] = out["mean_frames"] / self.fps if hit else None
            out["median_s"] = out["median_frames"] / self.fps if hit else None
        return out
