"""Segment-as-detection scores in the style of SVTAS: proposal AUC and ActivityNet mAP.

Predicted non-background segments become scored detections; the score of a segment ``[s, e)`` of
class c is ``mean(scores[c, s:e])`` of the per-frame class scores (SVTAS averages raw logits over
``s:e+1``, one frame past the segment; pass softmax probabilities if scores must be comparable across
videos, as mAP ranks detections of all videos together).

**AUC** (SVTAS ``TAProposalMetric``): per video, proposals (class-agnostic predicted segments) are
sorted by score (stable: ties keep temporal order); for AN = 1..``max_proposals`` the top-AN
proposals are matched greedily to GT segments exactly as in F1 (best hull-IoU, one-to-one) and
recall = TP / #GT at each threshold of ``ar_tious``; AR(AN) = mean recall over thresholds. AUC = mean
of AR over AN and over videos, in percent; ``ar@1/5/15`` likewise at one AN.
Fixed SVTAS bugs: a video with exactly AN proposals, or none, got AR = 0 whatever it predicted; here
it is scored like any other (none -> recall 0). Videos without GT segments have no recall and are
left out of the mean (SVTAS gave them 1 or 0).

**mAP** (ActivityNet ``compute_average_precision_detection``): per non-background class, detections
of all videos sorted by score; each is a TP at tIoU threshold t if some unmatched GT segment of its
class in its video has tIoU >= t (highest tIoU first; tIoU = clipped intersection / true union);
AP = VOC-2011 interpolated area under precision-recall. Thresholds 0.5:0.05:0.95.
Fixed SVTAS bug: classes with no GT segment in the evaluated videos are **excluded** from the mean
(SVTAS counted them as AP 0, dragging mAP down by the fraction of absent classes); they are listed in
``absent_classes``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from streamseg.metrics.segments import SegmentArrays, check_pair, segment_arrays
from streamseg.metrics.tas import best_matches, match_segments

# 0.50, 0.55, ..., 0.95: ten thresholds (ActivityNet); rounded so keys read map@55, not map@55.00001.
MAP_TIOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
AR_TIOUS: tuple[float, ...] = (0.10, 0.25, 0.50)  # SVTAS paper; SVTAS main uses linspace(0.1, 0.5, 4)
AR_AT: tuple[int, ...] = (1, 5, 15)


def segment_scores(seg: SegmentArrays, scores: np.ndarray) -> np.ndarray:
    """Mean of ``scores`` (K, T) over each segment's own class and frames ``[start, end)``: (N,)."""
    if len(seg) == 0:
        return np.zeros(0, dtype=np.float64)
    csum = np.concatenate((np.zeros((scores.shape[0], 1)), np.cumsum(scores, axis=1)), axis=1)
    total = csum[seg.labels, seg.ends] - csum[seg.labels, seg.starts]
    return total / (seg.ends - seg.starts)


def average_recall_curve(
    props: SegmentArrays, conf: np.ndarray, gt: SegmentArrays, tious: Sequence[float], max_proposals: int
) -> np.ndarray:
    """AR(AN) for AN = 1..max_proposals of one video with at least one GT segment: (max_proposals,).

    Greedy matching processes proposals in score order and never revisits a decision, so the TP
    count of the top-AN proposals is the running sum of TP flags of one pass.
    """
    order = np.argsort(-conf, kind="stable")[:max_proposals]
    zeros = np.zeros(order.shape[0], dtype=np.int64)
    # Class-agnostic: every proposal and GT segment gets label 0.
    p = SegmentArrays(zeros, props.starts[order], props.ends[order])
    g = SegmentArrays(np.zeros(len(gt), dtype=np.int64), gt.starts, gt.ends)
    best_iou, best_idx = best_matches(p, g)
    recall = np.zeros((len(tious), max_proposals))
    for i, tau in enumerate(tious):
        tp, _ = match_segments(best_iou, best_idx, len(g), tau)
        hits = np.cumsum(tp)
        # Past the last proposal the count stays (SVTAS pads with copies of the last one: all FP).
        hits = np.concatenate((hits, np.full(max_proposals - hits.shape[0], hits[-1] if hits.size else 0)))
        recall[i] = hits / len(g)
    return recall.mean(axis=0)


def tiou(start: int, end: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """ActivityNet tIoU of ``[start, end)`` against segments ``[starts, ends)``: clipped overlap / union."""
    inter = np.clip(np.minimum(end, ends) - np.maximum(start, starts), 0, None)
    union = (end - start) + (ends - starts) - inter
    return inter / union


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-2011 AP: area under the precision envelope (max precision at any higher recall)."""
    mprec = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[step] - mrec[step - 1]) * mprec[step]))


def average_precision(
    dets: list[tuple[float, int, int, int]], gts: dict[int, SegmentArrays], tious: Sequence[float]
) -> np.ndarray:
    """AP at each threshold for one class. ``dets``: (score, video, start, end); ``gts``: video -> GT
    segments of the class (at least one segment overall). Returns (len(tious),)."""
    num_gt = sum(len(g) for g in gts.values())
    ap = np.zeros(len(tious))
    if not dets:
        return ap
    order = np.argsort(-np.array([d[0] for d in dets]), kind="stable")
    thresholds = np.asarray(tious, dtype=np.float64)[:, None]
    rows = np.arange(len(tious))
    min_threshold = float(thresholds.min())
    tp = np.zeros((len(tious), len(dets)))
    taken = {v: np.zeros((len(tious), len(g)), dtype=bool) for v, g in gts.items()}
    for rank, k in enumerate(order):
        _, video, start, end = dets[k]
        g = gts.get(video)
        if g is None or len(g) == 0:
            continue
        overlap = tiou(start, end, g.starts, g.ends)
        if overlap.max() < min_threshold:  # an FP at every threshold (most spurious fragments)
            continue
        by_overlap = np.argsort(-overlap, kind="stable")
        # (thresholds, GT in decreasing tIoU): the first free GT segment at or above each threshold.
        free = (overlap[by_overlap] >= thresholds) & ~taken[video][:, by_overlap]
        hit = free.any(axis=1)
        first = by_overlap[free.argmax(axis=1)]
        taken[video][rows[hit], first[hit]] = True
        tp[hit, rank] = 1.0
    tp_cum = np.cumsum(tp, axis=1)
    precision = tp_cum / np.arange(1, len(dets) + 1)
    for t in range(len(tious)):
        ap[t] = interpolated_ap(precision[t], tp_cum[t] / num_gt)
    return ap


class DetectionMetrics:
    """Accumulates SVTAS-style AUC and mAP over videos (module docstring gives the definitions).

    Args:
        num_classes: K.
        bg_ids: class ids that are neither proposals, detections nor GT.
        class_names: K names for ``ap_per_class``; default ``"0".."K-1"``.
        ar_tious: thresholds averaged in AR; max_proposals: largest AN (SVTAS: 100).
        map_tious: tIoU thresholds of mAP.
    """

    def __init__(
        self,
        num_classes: int,
        bg_ids: Sequence[int] = (),
        class_names: Sequence[str] | None = None,
        ar_tious: Sequence[float] = AR_TIOUS,
        max_proposals: int = 100,
        map_tious: Sequence[float] = MAP_TIOUS,
    ) -> None:
        if max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
        self.num_classes = int(num_classes)
        self.bg_ids = tuple(int(b) for b in bg_ids)
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names, expected {num_classes}")
        self.ar_tious = tuple(float(t) for t in ar_tious)
        self.max_proposals = int(max_proposals)
        self.map_tious = tuple(float(t) for t in map_tious)
        for name, values in (("ar_tious", self.ar_tious), ("map_tious", self.map_tious)):
            if not values or not all(0.0 < t <= 1.0 for t in values):
                raise ValueError(f"{name} must be a non-empty list of thresholds in (0, 1], got {values}")
        self.reset()

    def reset(self) -> None:
        self._ar_curves: list[np.ndarray] = []
        self._dets: dict[int, list[tuple[float, int, int, int]]] = {}
        self._gts: dict[int, dict[int, SegmentArrays]] = {}
        self._num_videos = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, scores: np.ndarray, name: str | None = None) -> None:
        """Add one video: ``pred`` (T' >= T,) int, ``gt`` (T,) int, ``scores`` (K, T' >= T) float."""
        name = name if name is not None else f"video{self._num_videos}"
        p, g = check_pair(pred, gt, self.num_classes, name)
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != self.num_classes or s.shape[1] < g.shape[0]:
            raise ValueError(
                f"scores of {name!r}: expected shape ({self.num_classes}, >= {g.shape[0]}), got {s.shape}"
            )
        s = s[:, : g.shape[0]]
        video = self._num_videos
        self._num_videos += 1
        ps = segment_arrays(p, self.bg_ids)
        gs = segment_arrays(g, self.bg_ids)
        conf = segment_scores(ps, s)
        if len(gs) > 0:
            self._ar_curves.append(average_recall_curve(ps, conf, gs, self.ar_tious, self.max_proposals))
        for c, st, en, sc in zip(ps.labels, ps.starts, ps.ends, conf):
            self._dets.setdefault(int(c), []).append((float(sc), video, int(st), int(en)))
        for c in np.unique(gs.labels):
            keep = gs.labels == c
            self._gts.setdefault(int(c), {})[video] = SegmentArrays(gs.labels[keep], gs.starts[keep], gs.ends[keep])

    def compute(self) -> dict:
        """``auc``, ``ar@1/5/15`` (where <= max_proposals), ``map`` and ``map@<100 t>`` (percent),
        ``ap_per_class`` (name -> AP averaged over thresholds, or ``None`` if absent), ``absent_classes``,
        ``num_videos_with_gt``. Scores are ``None`` when no video has a GT segment.
        """
        out: dict = {}
        if self._ar_curves:
            curves = np.stack(self._ar_curves) * 100.0  # (videos, max_proposals)
            out["auc"] = float(curves.mean())
            for an in AR_AT:
                if an <= self.max_proposals:
                    out[f"ar@{an}"] = float(curves[:, an - 1].mean())
        else:
            out["auc"] = None
        present = sorted(self._gts)
        ap = {c: average_precision(self._dets.get(c, []), self._gts[c], self.map_tious) for c in present}
        for t, thr in enumerate(self.map_tious):
            out[f"map@{thr * 100:g}"] = float(np.mean([ap[c][t] for c in present]) * 100) if present else None
        out["map"] = float(np.mean([ap[c].mean() for c in present]) * 100) if present else None
        out["ap_per_class"] = {
            name: (float(ap[c].mean() * 100) if c in ap else None)
            for c, name in enumerate(self.class_names)
            if c not in self.bg_ids
        }
        out["absent_classes"] = [
            name for c, name in enumerate(self.class_names) if c not in self.bg_ids and c not in ap
        ]
        out["num_videos_with_gt"] = len(self._ar_curves)
        return out
