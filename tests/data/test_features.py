"""FeatureVideoDataset items (sample rate, length cropping) and collate_videos padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamseg.data import IGNORE_INDEX, DataError, FeatureVideoDataset, TASLayout, collate_videos

CLASSES = ["background", "a", "b"]


def write_video(root: Path, name: str, labels: list[int], num_features: int, dim: int = 3) -> np.ndarray:
    """Labels as given; features[d, t] = 100 * d + t (float64 on disk, to test the float32 cast)."""
    (root / "groundTruth").mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    (root / "groundTruth" / f"{name}.txt").write_text("".join(CLASSES[i] + "\n" for i in labels))
    features = 100.0 * np.arange(dim)[:, None] + np.arange(num_features)[None, :]
    np.save(root / "features" / f"{name}.npy", features)
    return features


def test_item_at_sample_rate(tmp_path: Path) -> None:
    labels = [0, 1, 1, 2, 2, 2, 0]
    features = write_video(tmp_path, "v", labels, num_features=7)
    item = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=2)[0]
    assert item["name"] == "v"
    assert item["features"].dtype == torch.float32 and item["features"].shape == (3, 4)  # ceil(7 / 2)
    np.testing.assert_array_equal(item["features"].numpy(), features[:, ::2])
    assert item["labels"].dtype == torch.int64 and item["labels"].tolist() == [0, 1, 2, 0]
    assert item["full_labels"].tolist() == labels
    item["features"][0, 0] = -1.0  # writable: a copy, not the read-only memory map


def test_lengths_within_tolerance_are_cropped_to_the_shorter(tmp_path: Path) -> None:
    write_video(tmp_path, "longer_labels", [1] * 10, num_features=8)
    write_video(tmp_path, "longer_features", [1] * 8, num_features=10)
    dataset = FeatureVideoDataset(TASLayout(tmp_path), ["longer_labels", "longer_features"], length_tolerance=2)
    for item in dataset:
        assert item["features"].shape == (3, 8)
        assert len(item["labels"]) == len(item["full_labels"]) == 8


def test_lengths_beyond_tolerance_raise(tmp_path: Path) -> None:
    write_video(tmp_path, "v", [1] * 10, num_features=7)
    with pytest.raises(DataError, match=r"v\.npy: features have T=7 frames.*has 10"):
        FeatureVideoDataset(TASLayout(tmp_path), ["v"], length_tolerance=2)[0]


def test_sample_rate_must_be_positive(tmp_path: Path) -> None:
    write_video(tmp_path, "v", [1], num_features=1)
    with pytest.raises(ValueError, match="sample_rate"):
        FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=0)


def test_collate_pads_features_labels_and_mask(tmp_path: Path) -> None:
    write_video(tmp_path, "long", [1, 2, 2, 0, 0], num_features=5)
    write_video(tmp_path, "short", [2, 1], num_features=2)
    dataset = FeatureVideoDataset(TASLayout(tmp_path), ["long", "short"])
    batch = collate_videos([dataset[0], dataset[1]])
    assert batch["names"] == ["long", "short"]
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].tolist() == [5, 2]
    assert batch["features"].shape == (2, 3, 5) and batch["features"].dtype == torch.float32
    assert torch.equal(batch["features"][1, :, :2], dataset[1]["features"])
    assert torch.all(batch["features"][1, :, 2:] == 0)
    assert batch["labels"].tolist() == [[1, 2, 2, 0, 0], [2, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["mask"].dtype == torch.float32
    assert batch["mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert [t.tolist() for t in batch["full_labels"]] == [[1, 2, 2, 0, 0], [2, 1]]


def test_collate_works_as_a_dataloader_collate_fn(tmp_path: Path) -> None:
    for name, n in [("a", 4), ("b", 6), ("c", 3)]:
        write_video(tmp_path, name, [1] * n, num_features=n)
    dataset = FeatureVideoDataset(TASLayout(tmp_path), ["a", "b", "c"], sample_rate=2)
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_videos))
    assert [b["lengths"].tolist() for b in batches] == [[2, 3], [2]]
    assert [len(t) for t in batches[0]["full_labels"]] == [4, 6]


def test_max_pooling_takes_each_groups_maximum_and_most_frequent_label(tmp_path: Path) -> None:
    # groups of 3: frames [0, 3), [3, 6), [6, 7); labels 0 1 1 | 2 2 0 | 0 -> 1, 2, 0
    labels = [0, 1, 1, 2, 2, 0, 0]
    write_video(tmp_path, "v", labels, num_features=7)
    np.save(tmp_path / "features" / "v.npy", np.array([[1.0, 5.0, 2.0, 0.0, -3.0, -1.0, 4.0]]))
    item = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=3, pooling="max", test_rates=(2, 7))[0]
    assert item["features"].tolist() == [[5.0, 0.0, 4.0]]  # max of (1, 5, 2), (0, -3, -1), (4)
    assert item["labels"].tolist() == [1, 2, 0]
    assert item["full_labels"].tolist() == labels and item["index"] == 0
    # the same video at the test rates: groups of 2 -> (1, 5) (2, 0) (-3, -1) (4); one group of 7
    assert [f.tolist() for f in item["rate_features"]] == [[[5.0, 2.0, -1.0, 4.0]], [[5.0]]]
    subsampled = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=3)[0]
    assert subsampled["features"].tolist() == [[1.0, 0.0, 4.0]] and "rate_features" not in subsampled


def test_a_tied_group_takes_the_smallest_class_id() -> None:
    from streamseg.data.features import pool_labels

    # (2, 1, 1, 2): 1 and 2 twice each -> 1, as np.unique + argmax in C2F-TCN's dataset.py
    assert pool_labels(np.array([2, 1, 1, 2, 0]), 4, "max").tolist() == [1, 0]
    assert pool_labels(np.array([2, 1, 1, 2, 0]), 4, "subsample").tolist() == [2, 0]
