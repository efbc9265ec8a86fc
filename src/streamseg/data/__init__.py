"""Datasets in the standard TAS layout: reading, checking, the synthetic dataset, feature datasets.

Imports torch, numpy and (lazily) PyAV; never Lightning, `streamseg.models` or `streamseg.metrics`.
"""

from streamseg.data.check import Problem, check_dataset, format_problems
from streamseg.data.errors import DataError
from streamseg.data.features import IGNORE_INDEX, FeatureVideoDataset, collate_videos
from streamseg.data.layout import (
    DEFAULT_LENGTH_TOLERANCE,
    TASLayout,
    read_labels,
    read_mapping,
    read_split,
)
from streamseg.data.synth import SynthSpec

__all__ = [
    "DEFAULT_LENGTH_TOLERANCE",
    "IGNORE_INDEX",
    "DataError",
    "FeatureVideoDataset",
    "Problem",
    "SynthSpec",
    "TASLayout",
    "check_dataset",
    "collate_videos",
    "format_problems",
    "read_labels",
    "read_mapping",
    "read_split",
]
