"""Whole-video items on pre-extracted features, and their padded batches (the offline TAS setting)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from streamseg.data.errors import DataError
from streamseg.data.layout import DEFAULT_LENGTH_TOLERANCE, TASLayout

IGNORE_INDEX = -100
"""Label of padded frames; `torch.nn.functional.cross_entropy`'s default ``ignore_index``."""


class FeatureVideoDataset(Dataset):
    """One video per item, features and labels of a `TASLayout`.

    Item::

        {"name": str,
         "features": float32 (D, T') = features[:, ::sample_rate],
         "labels": int64 (T') = labels[::sample_rate],
         "full_labels": int64 (T) at the original frame rate (what predictions are scored against)}

    with T' = ceil(T / sample_rate). When the feature and label files differ in length by at most
    ``length_tolerance`` frames, both are cropped to the shorter, T = min(T_features, T_labels): the
    frames at the end are dropped. The official MS-TCN loader does the same implicitly (it builds the
    label array with length min(T_features, T_labels)). A larger difference raises `DataError`.

    Args:
        layout: the dataset.
        names: the videos, e.g. ``layout.split_names("train", 1)``.
        sample_rate: keep every ``sample_rate``-th frame (MS-TCN uses 2 on 50Salads: 30 -> 15 fps).
        length_tolerance: largest accepted ``abs(T_features - T_labels)`` in frames.
    """

    def __init__(self, layout: TASLayout, names: Sequence[str], sample_rate: int = 1,
                 length_tolerance: int = DEFAULT_LENGTH_TOLERANCE) -> None:
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
        self.layout = layout
        self.names = list(names)
        self.sample_rate = sample_rate
        self.length_tolerance = length_tolerance

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
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
        labels = labels[:num_frames]
        # np.array copies: the memory map is read-only and must not stay open under the tensor.
        sampled = np.array(features[:, :num_frames:self.sample_rate], dtype=np.float32, order="C")
        return {
            "name": name,
            "features": torch.from_numpy(sampled),
            "labels": torch.from_numpy(labels[::self.sample_rate].copy()),
            "full_labels": torch.from_numpy(labels),
        }


def collate_videos(items: Sequence[dict]) -> dict:
    """Pad items of `FeatureVideoDataset` to the longest one (T = max T').

    Returns::

        {"features": float32 (B, D, T), zeros after each video's end,
         "labels": int64 (B, T), IGNORE_INDEX (-100) after each video's end,
         "mask": float32 (B, T), 1 on real frames and 0 on padding,
         "lengths": int64 (B,) real frames T' per video,
         "names": list[str] (B),
         "full_labels": list of int64 (T_b,) tensors at the original frame rate}
    """
    if not items:
        raise ValueError("collate_videos needs at least one item")
    lengths = torch.tensor([item["features"].shape[1] for item in items], dtype=torch.long)
    batch, dim, longest = len(items), items[0]["features"].shape[0], int(lengths.max())
    device = items[0]["features"].device  # preloaded on the GPU: batch there too
    if batch == 1:  # nothing to pad: no copy (a preloaded video is used in place)
        item = items[0]
        return {"features": item["features"][None], "labels": item["labels"][None],
                "mask": torch.ones(1, longest, dtype=torch.float32, device=device), "lengths": lengths,
                "names": [item["name"]], "full_labels": [item["full_labels"]]}
    features = torch.zeros(batch, dim, longest, dtype=torch.float32, device=device)
    labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.float32, device=device)
    for b, item in enumerate(items):
        n = int(lengths[b])
        features[b, :, :n] = item["features"]
        labels[b, :n] = item["labels"]
        mask[b, :n] = 1.0
    return {
        "features": features,
        "labels": labels,
        "mask": mask,
        "lengths": lengths,
        "names": [item["name"] for item in items],
        "full_labels": [item["full_labels"] for item in items],
    }
