"""Frame-label sequences and the segments (maximal equal-label runs) they contain.

A segment is ``(label, start, end)`` in frames with ``end`` **exclusive**, so the last segment of a
sequence of length T ends at T (the MS-TCN ``eval.py`` convention; see docs/metrics.md for the
end-index variant of MS-TCN++/ASFormer and why it is not used here).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Segment(NamedTuple):
    """One maximal run of equal labels: frames ``[start, end)``."""

    label: int
    start: int
    end: int


class SegmentArrays(NamedTuple):
    """Segments of one sequence as parallel int64 arrays of shape (N,), in temporal order."""

    labels: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def segment_arrays(labels: np.ndarray, bg_ids: Sequence[int] = ()) -> SegmentArrays:
    """Maximal equal-label runs of ``labels`` (T,) int, runs labelled in ``bg_ids`` dropped.

    Background runs are removed *after* the runs are found, so ``a bg a`` gives two ``a`` segments
    (MS-TCN semantics), never one merged segment.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (T,), got shape {y.shape}")
    if y.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return SegmentArrays(empty, empty.copy(), empty.copy())
    # A run starts at 0 and wherever the label changes; it ends where the next one starts, or at T.
    change = np.flatnonzero(y[1:] != y[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    ends = np.concatenate((change, [y.shape[0]])).astype(np.int64)
    seg_labels = y[starts].astype(np.int64)
    if len(bg_ids) > 0:
        keep = ~np.isin(seg_labels, np.asarray(list(bg_ids), dtype=np.int64))
        starts, ends, seg_labels = starts[keep], ends[keep], seg_labels[keep]
    return SegmentArrays(seg_labels, starts, ends)


def segments(labels: np.ndarray, bg_ids: Sequence[int] = ()) -> list[Segment]:
    """The segments of ``labels`` (T,) int as a list of :class:`Segment`, background runs dropped."""
    arr = segment_arrays(labels, bg_ids)
    return [Segment(int(c), int(s), int(e)) for c, s, e in zip(arr.labels, arr.starts, arr.ends)]


def as_label_array(labels: object, what: str) -> np.ndarray:
    """``labels`` as a 1-D int64 array; ``what`` names it in errors (e.g. "prediction of 'S1_C1'")."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D label sequence (T,), got shape {y.shape}")
    if y.shape[0] > 0 and y.dtype.kind not in "iub":
        raise ValueError(f"{what}: expected integer class ids, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def check_pair(
    pred: object, gt: object, num_classes: int | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one video's prediction and ground truth; return them as int64 arrays of equal length.

    Rules (docs/metrics.md, "Degenerate inputs"):
    * an empty ground truth is malformed: ``ValueError``;
    * a prediction longer than the ground truth is truncated to T (after sample-rate upsampling a
      prediction may run up to ``sample_rate - 1`` frames long; MS-TCN's Acc ignores those frames);
    * a shorter prediction is an error naming the video (use :func:`upsample` first);
    * every id must lie in ``[0, num_classes)`` when ``num_classes`` is given.
    """
    p = as_label_array(pred, f"prediction of {name!r}")
    g = as_label_array(gt, f"ground truth of {name!r}")
    if g.shape[0] == 0:
        raise ValueError(f"ground truth of {name!r} is empty: a video needs at least one frame")
    if p.shape[0] < g.shape[0]:
        raise ValueError(
            f"prediction of {name!r} has {p.shape[0]} frames but its ground truth has {g.shape[0]}; "
            "upsample it to the original frame rate first (streamseg.metrics.upsample)"
        )
    p = p[: g.shape[0]]
    if num_classes is not None:
        for arr, what in ((p, "prediction"), (g, "ground truth")):
            bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
            if bad.size:
                t = int(bad[0])
                raise ValueError(
                    f"{what} of {name!r}: frame {t} has class id {int(arr[t])}, "
                    f"expected 0..{num_classes - 1} ({bad.size} such frames)"
                )
    return p, g


def upsample(pred: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
    """Bring a prediction made at ``1/sample_rate`` of the frame rate back to ``length`` frames.

    Each label is repeated ``sample_rate`` times (MS-TCN protocol), then the result is truncated to
    ``length`` or, when short (the video's last frames were never sampled), padded with its last label.
    ``pred`` (T',) int -> (length,) int64.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    p = as_label_array(pred, "prediction to upsample")
    if length == 0:
        return np.zeros(0, dtype=np.int64)
    if p.shape[0] == 0:
        raise ValueError(f"cannot upsample an empty prediction to {length} frames")
    out = np.repeat(p, sample_rate)[:length]
    if out.shape[0] < length:
        out = np.concatenate((out, np.full(length - out.shape[0], out[-1], dtype=np.int64)))
    return out


def upsample_centred(pred: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
    """Bring back to ``length`` frames a prediction whose column t covers frames t*r .. t*r + r - 1 (r =
    ``sample_rate``; the mean over the r subsampling offsets, DiffAct's test): column t is placed at frame
    t*r + r // 2 and every frame takes the nearest placed column, the earlier one on a tie (scipy's
    ``interp1d(kind='nearest')``); frames before the first / after the last take the first / last column.
    Finspire13/DiffAct ``dataset.py`` ``restore_full_sequence`` with ``left_offset = r // 2``.
    ``pred`` (T',) int -> (length,) int64.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    p = as_label_array(pred, "prediction to upsample")
    if length > 0 and p.shape[0] == 0:
        raise ValueError(f"cannot upsample an empty prediction to {length} frames")
    frames = np.arange(length, dtype=np.int64)
    # nearest column, ties to the earlier: ceil((2 (f - r // 2) - r) / (2 r))
    column = -((sample_rate - 2 * (frames - sample_rate // 2)) // (2 * sample_rate))
    return p[np.clip(column, 0, max(p.shape[0] - 1, 0))] if length else np.zeros(0, dtype=np.int64)
