"""Whole-video items on pre-extracted features, and their padded batches (the offline TAS setting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from streamseg.data.errors import DataError
from streamseg.data.layout import DEFAULT_LENGTH_TOLERANCE, TASLayout

IGNORE_INDEX = -100
"""Label of padded frames; `torch.nn.functional.cross_entropy`'s default ``ignore_index``."""

Pooling = Literal["subsample", "max"]
"""How ``sample_rate`` frames become one: ``"subsample"`` keeps the first of each group (MS-TCN's
``[::sample_rate]``); ``"max"`` takes each feature's maximum over the group and the group's most frequent
label, ties going to the smallest class id (C2F-TCN's ``dataset.py``/``testtime_dataset.py``: ``np.max``
over the group, ``np.unique`` + ``argmax`` of the counts). Groups start at frame 0; the last one may be
shorter."""


def pool_features(features: np.ndarray, rate: int, pooling: Pooling = "subsample") -> np.ndarray:
    """(D, T) -> (D, ceil(T / rate)) float32, one column per group of ``rate`` frames (see `Pooling`)."""
    if rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {rate}")
    if pooling == "subsample" or rate == 1:
        return np.array(features[:, ::rate], dtype=np.float32, order="C")
    if pooling != "max":
        raise ValueError(f"pooling must be 'subsample' or 'max', got {pooling!r}")
    dim, length = features.shape
    groups = -(-length // rate)
    padded = np.full((dim, groups * rate), -np.inf, dtype=np.float32)  # -inf never wins a max
    padded[:, :length] = features
    return np.ascontiguousarray(padded.reshape(dim, groups, rate).max(axis=2))


def pool_labels(labels: np.ndarray, rate: int, pooling: Pooling = "subsample") -> np.ndarray:
    """(T,) int64 -> (ceil(T / rate),): the first label of each group, or its most frequent one (``"max"``)."""
    if pooling == "subsample" or rate == 1:
        return labels[::rate].copy()
    out = np.empty(-(-len(labels) // rate), dtype=np.int64)
    for g, start in enumerate(range(0, len(labels), rate)):
        out[g] = np.bincount(labels[start:start + rate]).argmax()  # argmax: the first (smallest) of ties
    return out


class FeatureVideoDataset(Dataset):
    """One video per item, features and labels of a `TASLayout`.

    Item::

        {"name": str,
         "index": int, the video's position in ``names`` (its split's order),
         "features": float32 (D, T') = features[:, ::sample_rate] (or pooled, see ``pooling``),
         "labels": int64 (T') = labels[::sample_rate] (or each group's most frequent label),
         "full_labels": int64 (T) at the original frame rate (what predictions are scored against),
         "rate_features": [float32 (D, ceil(T / r)) for r in test_rates] (only with ``test_rates``),
         "offset_features": [float32 (D, ceil((T - o) / sample_rate)) = features[:, o::sample_rate]
                             for o in range(sample_rate)] (only with ``test_offsets``)}

    with T' = ceil(T / sample_rate). When the feature and label files differ in length by at most
    ``length_tolerance`` frames, both are cropped to the shorter, T = min(T_features, T_labels): the
    frames at the end are dropped. The official MS-TCN loader does the same implicitly (it builds the
    label array with length min(T_features, T_labels)). A larger difference raises `DataError`.

    Args:
        layout: the dataset.
        names: the videos, e.g. ``layout.split_names("train", 1)``.
        sample_rate: keep every ``sample_rate``-th frame (MS-TCN uses 2 on 50Salads: 30 -> 15 fps).
        length_tolerance: largest accepted ``abs(T_features - T_labels)`` in frames.
        pooling: how a group of ``sample_rate`` frames becomes one (`Pooling`).
        test_rates: also give the features pooled at each of these rates (test-time augmentation over
            sample rates, C2F-TCN's ``testtime_dataset.py``); empty: none.
        test_offsets: also give the features subsampled at each of the ``sample_rate`` offsets (DiffAct's
            test-time mean over offsets, `streamseg.engine.evaluation.Evaluation.add_offsets`).
    """

    def __init__(self, layout: TASLayout, names: Sequence[str], sample_rate: int = 1,
                 length_tolerance: int = DEFAULT_LENGTH_TOLERANCE, pooling: Pooling = "subsample",
                 test_rates: Sequence[int] = (), test_offsets: bool = False) -> None:
        if sample_rate < 1 or any(r < 1 for r in test_rates):
            raise ValueError(f"sample_rate and test_rates must be >= 1, got {sample_rate} and {tuple(test_rates)}")
        if pooling not in ("subsample", "max"):
            raise ValueError(f"pooling must be 'subsample' or 'max', got {pooling!r}")
        self.layout = layout
        self.names = list(names)
        self.sample_rate = sample_rate
        self.length_tolerance = length_tolerance
        self.pooling = pooling
        self.test_rates = tuple(test_rates)
        if test_offsets and pooling != "subsample":
            raise ValueError(f"test_offsets subsamples the features: pooling must be 'subsample', got {pooling!r}")
        self.test_offsets = test_offsets

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        features, labels = self.load(index)
        return self.make_item(index, features, labels)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Video ``index``'s features (D, T), memory-mapped, and labels (T,), cut to the same length T."""
        name = self.names[index]
        features = self.layout.load_features(name)  # memory-mapped (D, T_features)
        labels = self.layout.load_labels(name)
        num_frames = min(features.shape[1], len(labels))
        if abs(features.shape[1] - len(labels)) > self.length_tolerance:
            raise DataError(
                self.layout.features_path(name),
                f"features have T={features.shape[1]} frames, {self.layout.labels_path(name)} has {len(labels)} "
                f"(|difference| > tolerance {self.length_tolerance})",
            )
        return features[:, :num_frames], labels[:num_frames]

    def make_item(self, index: int, features: np.ndarray, labels: np.ndarray, start: int = 0, end: int | None = None,
                  rate: int | None = None) -> dict:
        """The item of video ``index`` from its `load`-ed arrays; ``start``, ``end``, ``rate``: pool only frames
        [start, end) in groups of ``rate`` (default: the whole video at ``sample_rate``; the zoom augmentation,
        `streamseg.data.zoom`). ``full_labels`` are always the whole video's."""
        rate = self.sample_rate if rate is None else rate
        span = slice(start, end)
        # pool_features copies: the memory map is read-only and must not stay open under the tensor.
        item = {
            "name": self.names[index],
            "index": index,
            "features": torch.from_numpy(pool_features(features[:, span], rate, self.pooling)),
            "labels": torch.from_numpy(pool_labels(labels[span], rate, self.pooling)),
            "full_labels": torch.from_numpy(labels),
        }
        if self.test_rates:
            item["rate_features"] = [torch.from_numpy(pool_features(features, r, self.pooling))
                                     for r in self.test_rates]
        if self.test_offsets:
            item["offset_features"] = [torch.from_numpy(pool_features(features[:, o:], self.sample_rate))
                                       for o in range(self.sample_rate)]
        return item


def collate_videos(items: Sequence[dict], length_multiple: int = 1) -> dict:
    """Pad items of `FeatureVideoDataset` to the longest one, T = max T' rounded up to a multiple of
    ``length_multiple`` (length buckets: few distinct T for static compiled graphs, `train.length_bucket`).

    Returns::

        {"features": float32 (B, D, T), zeros after each video's end,
         "labels": int64 (B, T), IGNORE_INDEX (-100) after each video's end,
         "mask": float32 (B, T), 1 on real frames and 0 on padding,
         "lengths": int64 (B,) real frames T' per video,
         "names": list[str] (B), "indices": list[int] (B) the items' "index",
         "full_labels": list of int64 (T_b,) tensors at the original frame rate,
         "rate_features", "offset_features": list (B) of the items' lists, when the items have them}
    """
    if not items:
        raise ValueError("collate_videos needs at least one item")
    if length_multiple < 1:
        raise ValueError(f"length_multiple must be >= 1, got {length_multiple}")
    lengths = torch.tensor([item["features"].shape[1] for item in items], dtype=torch.long)
    batch, dim = len(items), items[0]["features"].shape[0]
    longest = -(-int(lengths.max()) // length_multiple) * length_multiple
    device = items[0]["features"].device  # preloaded on the GPU: batch there too
    if batch == 1 and longest == int(lengths[0]):  # nothing to pad: no copy (a preloaded video is used in place)
        item = items[0]
        out = {"features": item["features"][None], "labels": item["labels"][None],
               "mask": torch.ones(1, longest, dtype=torch.float32, device=device), "lengths": lengths,
               "names": [item["name"]], "full_labels": [item["full_labels"]], "indices": [item.get("index", 0)]}
        for key in ("rate_features", "offset_features"):
            if key in item:
                out[key] = [item[key]]
        return out
    features = torch.zeros(batch, dim, longest, dtype=torch.float32, device=device)
    labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.float32, device=device)
    for b, item in enumerate(items):
        n = int(lengths[b])
        features[b, :, :n] = item["features"]
        labels[b, :n] = item["labels"]
        mask[b, :n] = 1.0
    out = {
        "features": features,
        "labels": labels,
        "mask": mask,
        "lengths": lengths,
        "names": [item["name"] for item in items],
        "full_labels": [item["full_labels"] for item in items],
        "indices": [item.get("index", 0) for item in items],
    }
    for key in ("rate_features", "offset_features"):
        if key in items[0]:
            out[key] = [item[key] for item in items]
    return out
