"""Evaluation of temporal action segmentation: pure numpy, no torch, no Lightning.

* :mod:`.segments`: segments from frame labels, input checks, sample-rate :func:`upsample`;
* :mod:`.tas`: Acc, Edit, F1@tau with the exact MS-TCN ``eval.py`` protocol (:class:`SegmentationMetrics`);
* :mod:`.online`: onset delay of streaming predictions;
* :mod:`.detection`: SVTAS-style proposal AUC and ActivityNet mAP;
* :mod:`.io`: ground-truth, MS-TCN results and mapping files.

Definitions and degenerate cases: docs/metrics.md.
"""

from streamseg.metrics.detection import DetectionMetrics
from streamseg.metrics.online import OnsetDelay, onset_delays
from streamseg.metrics.segments import Segment, SegmentArrays, segment_arrays, segments, upsample, upsample_centred
from streamseg.metrics.tas import (
    DEFAULT_TAUS,
    PROTOCOLS,
    SegmentationMetrics,
    compute_metrics,
    edit_distance,
    edit_score,
    f1_counts,
    f1_from_counts,
    mean_over_splits,
)

__all__ = [
    "DEFAULT_TAUS",
    "PROTOCOLS",
    "DetectionMetrics",
    "OnsetDelay",
    "Segment",
    "SegmentArrays",
    "SegmentationMetrics",
    "compute_metrics",
    "edit_distance",
    "edit_score",
    "f1_counts",
    "f1_from_counts",
    "mean_over_splits",
    "onset_delays",
    "segment_arrays",
    "segments",
    "upsample",
    "upsample_centred",
]
