"""C2F-TCN's training augmentation: a video re-pooled with another group size (temporal zoom), optionally
cropped first.

The official training sample (dipika-singhania/C2F-TCN ``dataset.py``, ``AugmentDataset.getitem``, built by
``train.py`` with ``zoom_crop=(0.5, 2)`` and the default ``smallest_cut=1.0``) is a window of
``max_frames_per_video x chunk_size`` original frames pooled in groups of ``chunk_size`` (max of the
features, most frequent label). For half of the samples (a fair coin) it is instead:

* cropped to ``[int(L * a), int(L * (a + l)))`` of its L frames, a ~ U(0, 1 - cut), l ~ U(cut, 1 - a)
  (cut = ``smallest_cut``; 1.0, the official run's value, keeps the whole window);
* pooled in groups of ``int(exp(u))`` frames, u ~ U(log g_min, log g_max): log-uniform between
  g_min = max(int(chunk_size / 2), ceil(L / max_frames_per_video)) (the zoomed window must still fit
  ``max_frames_per_video`` frames) and g_max = int(chunk_size / 0.5), i.e. a zoom of 0.5x to 2x.

`draw_zoom` makes that draw with the same formulas (own code; the random stream is numpy's ``Generator``,
not the official global ``np.random``); `ZoomAugmented` applies it to the training items of a
`FeatureVideoDataset`, one draw per (seed, epoch, video), so a resumed run draws what an uninterrupted
one would. One difference: the official code draws per window and a video longer than one window is
several samples; here a video is one item (C2F-TCN cuts it into windows inside the model) with one draw,
g_min computed for a full window (L = min(T, window x sample_rate)). The two agree on every video that fits
one window (GTEA, 50Salads and Breakfast videos up to 2,400 / 19,200 / 12,000 frames).

`OffsetAugmented` is DiffAct's training augmentation (Finspire13/DiffAct ``dataset.py``: each training item
is one of the ``sample_rate`` subsamplings ``features[:, o::sample_rate]`` of its video, o drawn uniformly
with python's ``random.randint`` per item): here o is drawn from numpy's ``Generator`` per (seed, epoch,
video), the same keys as the zoom, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from streamseg.data.features import FeatureVideoDataset

__all__ = ["Zoom", "ZoomAugmented", "OffsetAugmented", "EpochKeys", "draw_zoom"]


@dataclass(frozen=True)
class Zoom:
    """Pool original frames [start, end) in groups of ``rate``."""

    start: int
    end: int
    rate: int


def draw_zoom(rng: np.random.Generator, length: int, rate: int, window: int | None = None,
              zoom: tuple[float, float] = (0.5, 2.0), crop: float = 1.0) -> Zoom:
    """C2F-TCN's augmentation draw (module docstring) for a video of ``length`` original frames usually pooled
    in groups of ``rate``: with probability 1/2 ``Zoom(0, length, rate)`` (unchanged), else a crop of at least
    ``crop`` of the video pooled in groups of a log-uniform size between rate / zoom[1] and rate / zoom[0]
    (each truncated to an int, at least 1, and at least what keeps a window of ``window`` pooled frames
    enough for ``min(length, window x rate)`` frames; ``window`` None: no window). The draws, in order:
    ``integers(0, 2)`` (0: augment), ``uniform`` x 3 (crop start, crop length, log group size)."""
    if rng.integers(0, 2) != 0:
        return Zoom(0, length, rate)
    start = rng.uniform(0.0, 1.0 - crop)
    span = rng.uniform(crop, 1.0 - start)
    # the finest group that still fits one window (official: ceil(L / max_frames_per_video))
    fits = 1 if window is None else math.ceil(min(length, window * rate) / window)
    coarsest = max(int(rate / zoom[0]), 1)
    finest = max(int(rate / zoom[1]), fits, 1)
    u = rng.uniform(math.log(finest), math.log(coarsest)) if finest < coarsest else math.log(finest)
    group = max(int(math.exp(u)), 1)
    return Zoom(int(length * start), int(length * (start + span)), group)


class EpochKeys(Sampler):
    """Wraps an epoch-aware order sampler (``set_epoch``, ``epoch``): yields ``(index, epoch)`` keys, the
    item keys of `ZoomAugmented`. ``set_epoch`` reaches the wrapped sampler (Lightning calls it)."""

    def __init__(self, order: Sampler) -> None:
        self.order = order

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.order.epoch
        return ((i, epoch) for i in self.order)

    def __len__(self) -> int:
        return len(self.order)


class ZoomAugmented(Dataset):
    """Training items of ``ds`` under C2F-TCN's zoom augmentation (`draw_zoom`): item ``(index, epoch)`` is
    video ``index`` with the draw of ``numpy.random.default_rng([seed, epoch, index])``, pooled with
    ``ds.pooling``. Reads the video's files on every item (memory-mapped)."""

    def __init__(self, ds: FeatureVideoDataset, seed: int, window: int | None = None,
                 zoom: tuple[float, float] = (0.5, 2.0), crop: float = 1.0) -> None:
        check_zoom(zoom, crop, window)
        self.ds, self.seed, self.window, self.zoom, self.crop = ds, seed, window, tuple(zoom), crop

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, epoch = key
        features, labels = self.ds.load(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        z = draw_zoom(rng, len(labels), self.ds.sample_rate, self.window, self.zoom, self.crop)
        return self.ds.make_item(index, features, labels, z.start, z.end, z.rate)


class OffsetAugmented(Dataset):
    """Training items of ``ds`` (pooling ``subsample``) under DiffAct's offset augmentation (module docstring):
    item ``(index, epoch)`` is video ``index`` subsampled from offset ``numpy.random.default_rng([seed, epoch,
    index]).integers(0, ds.sample_rate)``. Reads the video's files on every item (memory-mapped)."""

    def __init__(self, ds: FeatureVideoDataset, seed: int) -> None:
        if ds.pooling != "subsample":
            raise ValueError(f"OffsetAugmented subsamples the features: pooling must be 'subsample', got {ds.pooling!r}")
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:
        return len(self.ds)

    def offset(self, index: int, epoch: int) -> int:
        """The offset video ``index`` starts from in ``epoch``."""
        return int(np.random.default_rng([self.seed, epoch, index]).integers(0, self.ds.sample_rate))

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, epoch = key
        features, labels = self.ds.load(index)
        return self.ds.make_item(index, features, labels, start=min(self.offset(index, epoch), len(labels) - 1))


def check_zoom(zoom: tuple[float, ...], crop: float, window: int | None) -> None:
    """ValueError naming the `data.zoom_*` key that is out of range."""
    if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
        raise ValueError(f"data.zoom_range must be two factors 0 < low <= high (official 0.5,2), got {tuple(zoom)}")
    if not 0 < crop <= 1:
        raise ValueError(f"data.zoom_crop must be in (0, 1] (the smallest kept share; official 1.0), got {crop}")
    if window is not None and window < 1:
        raise ValueError(f"data.zoom_window must be >= 1 pooled frames or None, got {window}")
