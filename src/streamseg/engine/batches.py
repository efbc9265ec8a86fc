"""The two kinds of batch a DataModule feeds, declared once by the DataModule and read by everyone.

Each DataModule class states its kind as the class attribute ``batch_kind`` and copies it into the
`DatasetInfo` it reports (``info.batch_kind``), so the recipes, the module, the runner and the tools
read the one decision instead of re-deriving it from the params:

* `BatchKind.VIDEOS` (`FeatureDataModule`): whole videos per item, padded into a batch:
  ``features`` (B, D, T) at the sample rate, ``labels`` (B, T) with -100 padding, ``mask`` (B, T),
  ``lengths`` (B,), ``full_labels`` (B, L) at the original frame rate, ``names``, ``indices``
  (optional ``rate_features``: test-time augmentation over sample rates). Automatic optimisation, one
  optimiser step per batch of videos.
* `BatchKind.STREAMS` (`VideoStreamDataModule`): one chunk of each of B parallel stream slots:
  ``x`` (B, C, T, H, W), ``labels`` (B, T), ``mask`` (B, T), ``reset`` / ``last`` (B,) bool, ``names``
  (None for an empty slot), ``index``, ``start``, ``full_length``, ``step`` (`streamseg.data.streams`).
  The state is carried from step to step (manual optimisation, truncated back-propagation).
  A streams DataModule also provides `StreamLabels.full_labels`: a chunk carries labels at the sample
  rate only, and a video is scored against its labels at the original frame rate once its last chunk
  has arrived.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

import numpy as np


class BatchKind(str, enum.Enum):
    VIDEOS = "videos"
    STREAMS = "streams"


@runtime_checkable
class StreamLabels(Protocol):
    """What a `BatchKind.STREAMS` DataModule provides besides its loaders (`VideoStreamDataModule`)."""

    def full_labels(self, name: str) -> np.ndarray:
        """Ground truth (L,) int64 of video ``name`` at the original frame rate (the evaluation target)."""
        ...
