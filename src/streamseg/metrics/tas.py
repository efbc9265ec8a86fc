"""Temporal action segmentation scores with the exact MS-TCN ``eval.py`` protocol.

* **Acc** (MoF): correct frames / frames, pooled over every frame of every video, background included.
* **Edit**: ``(1 - Levenshtein(P, Y) / max(|P|, |Y|)) * 100`` on the label sequences of the
  non-background segments, per video; the dataset score is the unweighted mean over videos.
* **F1@tau**: each predicted segment, in temporal order, takes the ground-truth (GT) segment of
  highest IoU (label must match; union = hull ``max(ends) - min(starts)``; ties -> first); IoU >= tau
  and that GT segment still unmatched -> TP, else FP (greedy). FN = GT segments never matched.
  TP/FP/FN are summed over all videos and F1 is computed once.

All scores are percentages. Degenerate cases (docs/metrics.md) never give NaN: a video whose GT and
prediction both have no non-background segment has Edit 100; a dataset with TP = FP = FN = 0 has F1 100.

``protocol="asformer"`` reproduces the ``eval.py`` of MS-TCN++, ASFormer, DiffAct and ASRF: the segment
that runs to the end of a sequence ends at T - 1 instead of T (their ``get_labels_start_end_time`` appends
the last frame's index), in the prediction and the ground truth alike; that shrinks the final segment's
IoU, and a final segment of one frame becomes empty, never matched (FP in the prediction, FN in the GT).
Acc and Edit are unchanged. ``"mstcn"`` (default) is MS-TCN's and C2F-TCN's ``eval.py``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from streamseg.metrics.segments import SegmentArrays, check_pair, segment_arrays

DEFAULT_TAUS: tuple[float, ...] = (0.10, 0.25, 0.50)
PROTOCOLS: tuple[str, ...] = ("mstcn", "asformer")


def f1_key(tau: float) -> str:
    """Result key of F1 at ``tau``: 0.1 -> ``"f1@10"``."""
    return f"f1@{tau * 100:g}"


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (unit insert/delete/substitute costs) between two label sequences.

    Row-by-row dynamic programme, each row vectorised: with substitutions and deletions taken from
    the previous row into ``tmp``, insertions make ``row[j] = min_k<=j (tmp[k] + j - k)``, which is
    ``j + cummin(tmp - arange)``. O(|a|·|b|) work, O(min(|a|, |b|)) Python steps.
    """
    x = np.asarray(a, dtype=np.int64)
    y = np.asarray(b, dtype=np.int64)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return int(max(x.shape[0], y.shape[0]))
    if x.shape[0] > y.shape[0]:  # symmetric: loop over the shorter one (often the GT)
        x, y = y, x
    cols = np.arange(y.shape[0] + 1, dtype=np.int64)
    row = cols.copy()
    for i in range(1, x.shape[0] + 1):
        tmp = np.empty_like(row)
        tmp[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (y != x[i - 1]), out=tmp[1:])
        row = np.minimum.accumulate(tmp - cols) + cols
    return int(row[-1])


def edit_from_segments(p: SegmentArrays, g: SegmentArrays) -> float:
    """Edit score (percent) of one video from its background-free segments.

    Both empty -> 100.0 (nothing to segment and nothing predicted); MS-TCN's script gives 0/0 = NaN.
    """
    n = max(len(p), len(g))
    if n == 0:
        return 100.0
    return (1.0 - edit_distance(p.labels, g.labels) / n) * 100.0


def edit_score(pred: np.ndarray, gt: np.ndarray, bg_ids: Sequence[int] = ()) -> float:
    """Edit score (percent) of one video: ``pred``, ``gt`` (T,) int of equal length."""
    return edit_from_segments(segment_arrays(pred, bg_ids), segment_arrays(gt, bg_ids))


def best_matches(p: SegmentArrays, g: SegmentArrays) -> tuple[np.ndarray, np.ndarray]:
    """For each predicted segment, its best IoU over GT segments and the first GT index reaching it.

    Returns ``(iou (P,) float64, index (P,) int64)``. Only same-label GT segments that overlap the
    predicted one can give IoU > 0; where none does, IoU is 0 and the index is -1 (MS-TCN's argmax
    would then pick some segment with IoU <= 0, which can never pass a threshold tau > 0).
    GT segments are sorted and disjoint, so the ones overlapping ``[s, e)`` are the contiguous range
    ``[#ends <= s, #starts < e)``: building only those pairs keeps the work O(P + G).
    """
    n_pred = len(p)
    best_iou = np.zeros(n_pred, dtype=np.float64)
    best_idx = np.full(n_pred, -1, dtype=np.int64)
    if n_pred == 0 or len(g) == 0:
        return best_iou, best_idx
    lo = np.searchsorted(g.ends, p.starts, side="right")
    hi = np.searchsorted(g.starts, p.ends, side="left")
    counts = np.maximum(hi - lo, 0)  # an empty segment ("asformer" protocol) overlaps nothing
    n_pairs = int(counts.sum())
    if n_pairs == 0:
        return best_iou, best_idx
    pi = np.repeat(np.arange(n_pred), counts)
    group_start = np.cumsum(counts) - counts
    gi = np.arange(n_pairs) - np.repeat(group_start, counts) + np.repeat(lo, counts)
    inter = np.minimum(p.ends[pi], g.ends[gi]) - np.maximum(p.starts[pi], g.starts[gi])
    hull = np.maximum(p.ends[pi], g.ends[gi]) - np.minimum(p.starts[pi], g.starts[gi])
    # Same arithmetic as MS-TCN (int intersection, one float division), so ties break identically.
    iou = (1.0 * inter / hull) * (p.labels[pi] == g.labels[gi])
    has = counts > 0
    best_iou[has] = np.maximum.reduceat(iou, group_start[has])
    at_max = iou == best_iou[pi]
    first_pred, first_pos = np.unique(pi[at_max], return_index=True)
    best_idx[first_pred] = gi[at_max][first_pos]
    best_idx[best_iou <= 0] = -1
    return best_iou, best_idx


def match_segments(
    best_iou: np.ndarray, best_idx: np.ndarray, num_gt: int, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching at ``tau`` from :func:`best_matches`; returns ``(tp (P,) bool, matched (G,) bool)``.

    A predicted segment whose best IoU reaches tau is TP only if no earlier one took the same GT
    segment: so TP are the first occurrences, in temporal order, of each chosen GT index.
    """
    check_tau(tau)
    qualifies = np.flatnonzero(best_iou >= tau)
    chosen = best_idx[qualifies]
    _, first = np.unique(chosen, return_index=True)
    tp = np.zeros(best_iou.shape[0], dtype=bool)
    tp[qualifies[first]] = True
    matched = np.zeros(num_gt, dtype=bool)
    matched[chosen] = True
    return tp, matched


def check_tau(tau: float) -> None:
    # tau = 0 would let a different-label segment (IoU 0) count as TP in MS-TCN's code: refuse it.
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"IoU threshold tau must be in (0, 1], got {tau}")


def f1_counts(
    pred: np.ndarray, gt: np.ndarray, tau: float, bg_ids: Sequence[int] = ()
) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` of one video at IoU threshold ``tau``; ``pred``, ``gt`` (T,) int, equal length."""
    p = segment_arrays(pred, bg_ids)
    g = segment_arrays(gt, bg_ids)
    best_iou, best_idx = best_matches(p, g)
    tp, matched = match_segments(best_iou, best_idx, len(g), tau)
    n_tp = int(tp.sum())
    return n_tp, len(p) - n_tp, len(g) - int(matched.sum())


def f1_from_counts(tp: float, fp: float, fn: float, empty: float | None = 100.0) -> float | None:
    """F1 in percent; TP+FP = 0 or TP+FN = 0 gives precision/recall 0 (MS-TCN's nan_to_num).

    ``TP = FP = FN = 0`` (no segment anywhere) returns ``empty`` (100 for dataset scores; MS-TCN gives 0).
    """
    if tp == 0 and fp == 0 and fn == 0:
        return empty
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall) * 100.0


class SegmentationMetrics:
    """Accumulates TAS scores over the videos of one split.

    Args:
        num_classes: K; every label must lie in ``[0, K)``.
        bg_ids: class ids whose runs are dropped before Edit and F1 (Acc still counts their frames).
        class_names: K names for ``per_class``; default ``"0".."K-1"``.
        taus: IoU thresholds of the F1 scores (each in (0, 1]); keys ``f1@<100*tau>``.
        protocol: "mstcn" (MS-TCN's eval.py) or "asformer" (the final segment ends one frame early; see the
            module docstring).
    """

    def __init__(
        self,
        num_classes: int,
        bg_ids: Sequence[int] = (),
        class_names: Sequence[str] | None = None,
        taus: Sequence[float] = DEFAULT_TAUS,
        protocol: str = "mstcn",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.bg_ids = tuple(int(b) for b in bg_ids)
        for b in self.bg_ids:
            if not 0 <= b < num_classes:
                raise ValueError(f"background id {b} is outside 0..{num_classes - 1}")
        if class_names is None:
            class_names = [str(k) for k in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names, expected {num_classes}")
        self.class_names = list(class_names)
        for tau in taus:
            check_tau(tau)
        self.taus = tuple(float(t) for t in taus)
        self.reset()

    def reset(self) -> None:
        k, n_tau = self.num_classes, len(self.taus)
        self._cm = np.zeros((k, k), dtype=np.int64)
        # Per class and threshold: TP/FP counted on predicted segments, FN on GT segments.
        self._tp = np.zeros((n_tau, k), dtype=np.int64)
        self._fp = np.zeros((n_tau, k), dtype=np.int64)
        self._fn = np.zeros((n_tau, k), dtype=np.int64)
        self._gt_segments = np.zeros(k, dtype=np.int64)
        self._videos: list[dict] = []
        self._names: set[str] = set()

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str | None = None) -> None:
        """Add one video: ``pred``, ``gt`` (T,) int class ids at the original frame rate.

        A longer prediction is truncated to T; a shorter one, an empty GT, an id outside ``[0, K)`` or
        a name seen before raise ``ValueError`` naming the video.
        """
        if name is None:
            name = f"video{len(self._videos)}"
        if name in self._names:
            raise ValueError(f"video {name!r} was already added: each video must be scored once")
        p, g = check_pair(pred, gt, self.num_classes, name)
        k = self.num_classes
        cm = np.bincount(g * k + p, minlength=k * k).reshape(k, k)
        ps = segment_arrays(p, self.bg_ids)
        gs = segment_arrays(g, self.bg_ids)
        if self.protocol == "asformer":
            ps, gs = _end_one_early(ps, g.shape[0]), _end_one_early(gs, g.shape[0])
        best_iou, best_idx = best_matches(ps, gs)
        counts = np.zeros((len(self.taus), 3), dtype=np.int64)
        for i, tau in enumerate(self.taus):
            tp, matched = match_segments(best_iou, best_idx, len(gs), tau)
            self._tp[i] += np.bincount(ps.labels[tp], minlength=k)
            self._fp[i] += np.bincount(ps.labels[~tp], minlength=k)
            self._fn[i] += np.bincount(gs.labels[~matched], minlength=k)
            counts[i] = (tp.sum(), len(ps) - tp.sum(), len(gs) - matched.sum())
        self._cm += cm
        self._gt_segments += np.bincount(gs.labels, minlength=k)
        self._names.add(name)
        self._videos.append(
            {
                "name": name,
                "num_frames": int(g.shape[0]),
                "correct": int(np.trace(cm)),
                "edit": edit_from_segments(ps, gs),
                "counts": counts,
            }
        )

    @property
    def num_videos(self) -> int:
        return len(self._videos)

    def confusion_matrix(self) -> np.ndarray:
        """(K, K) int64 frame counts; rows = ground truth, columns = prediction."""
        return self._cm.copy()

    def _tau_index(self, tau: float) -> int:
        for i, t in enumerate(self.taus):
            if math.isclose(t, tau, abs_tol=1e-12):
                return i
        raise KeyError(f"tau {tau} was not accumulated; thresholds: {list(self.taus)}")

    def f1_counts(self, tau: float) -> tuple[int, int, int]:
        """Pooled ``(TP, FP, FN)`` over all videos so far at ``tau`` (one of ``self.taus``)."""
        i = self._tau_index(tau)
        return int(self._tp[i].sum()), int(self._fp[i].sum()), int(self._fn[i].sum())

    def compute(self) -> dict:
        """Dataset scores (percent): ``acc``, ``edit``, ``f1@..``, plus ``num_videos``, ``num_frames``
        and ``per_class`` (name -> ``frame_acc``, ``num_frames``, ``num_segments``, ``f1@..``, ``background``;
        ``None`` where a class has no frames / no segments on either side, or is background).
        """
        if not self._videos:
            raise ValueError("no videos were added: nothing to score")
        total = int(self._cm.sum())
        out: dict = {
            "acc": 100.0 * float(np.trace(self._cm)) / total,
            "edit": float(np.mean([v["edit"] for v in self._videos])),
        }
        for i, tau in enumerate(self.taus):
            out[f1_key(tau)] = f1_from_counts(*self.f1_counts(tau))
        out["num_videos"] = len(self._videos)
        out["num_frames"] = total
        out["per_class"] = self._per_class()
        return out

    def _per_class(self) -> dict:
        per_class = {}
        gt_frames = self._cm.sum(axis=1)
        for c, name in enumerate(self.class_names):
            is_bg = c in self.bg_ids
            entry: dict = {
                "frame_acc": 100.0 * self._cm[c, c] / gt_frames[c] if gt_frames[c] else None,
                "num_frames": int(gt_frames[c]),
                "num_segments": None if is_bg else int(self._gt_segments[c]),
            }
            for i, tau in enumerate(self.taus):
                counts = (self._tp[i, c], self._fp[i, c], self._fn[i, c])
                entry[f1_key(tau)] = None if is_bg else f1_from_counts(*counts, empty=None)
            entry["background"] = is_bg
            per_class[name] = entry
        return per_class

    def per_video(self) -> list[dict]:
        """One dict per video, in update order: ``name``, ``num_frames``, ``acc``, ``edit``, ``f1@..``."""
        rows = []
        for v in self._videos:
            row = {
                "name": v["name"],
                "num_frames": v["num_frames"],
                "acc": 100.0 * v["correct"] / v["num_frames"],
                "edit": v["edit"],
            }
            for i, tau in enumerate(self.taus):
                row[f1_key(tau)] = f1_from_counts(*v["counts"][i])
            rows.append(row)
        return rows


def _end_one_early(seg: SegmentArrays, length: int) -> SegmentArrays:
    """The "asformer" protocol: a segment ending at ``length`` ends at ``length - 1``."""
    return SegmentArrays(seg.labels, seg.starts, np.where(seg.ends == length, length - 1, seg.ends))


def compute_metrics(
    videos: Iterable[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    bg_ids: Sequence[int] = (),
    class_names: Sequence[str] | None = None,
    protocol: str = "mstcn",
) -> dict:
    """Score ``(pred, gt)`` pairs of (T,) int arrays with :class:`SegmentationMetrics`; returns ``compute()``."""
    m = SegmentationMetrics(num_classes, bg_ids, class_names, protocol=protocol)
    for pred, gt in videos:
        m.update(pred, gt)
    return m.compute()


_SUMMED_KEYS = ("num_videos", "num_frames")


def mean_over_splits(results: Sequence[dict]) -> dict:
    """Arithmetic mean over splits of the ``compute()`` dicts of each split (ASFormer's protocol).

    Every numeric top-level key present in all splits is averaged (``num_videos``/``num_frames`` are
    summed); ``std`` holds the population standard deviation (ddof=0) of the averaged keys;
    ``per_class`` values are averaged over the splits where they are not ``None``.
    """
    if not results:
        raise ValueError("mean_over_splits needs at least one split result")
    out: dict = {}
    std: dict = {}
    for key, value in results[0].items():
        if not _is_number(value) or not all(_is_number(r.get(key)) for r in results):
            continue
        vals = np.array([float(r[key]) for r in results])
        if key in _SUMMED_KEYS:
            out[key] = int(vals.sum())
        else:
            out[key] = float(vals.mean())
            std[key] = float(vals.std())
    out["num_splits"] = len(results)
    out["std"] = std
    if all("per_class" in r for r in results):
        out["per_class"] = _mean_per_class([r["per_class"] for r in results])
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _mean_per_class(tables: Sequence[dict]) -> dict:
    merged: dict = {}
    for table in tables:
        for name, entry in table.items():
            slot = merged.setdefault(name, {})
            for key, value in entry.items():
                slot.setdefault(key, []).append(value)
    out: dict = {}
    for name, entry in merged.items():
        out[name] = {}
        for key, values in entry.items():
            if key == "background":
                out[name][key] = bool(values[0])
                continue
            present = [float(v) for v in values if v is not None]
            if key in ("num_frames", "num_segments"):
                out[name][key] = int(sum(present)) if present else None
            else:
                out[name][key] = float(np.mean(present)) if present else None
    return out
