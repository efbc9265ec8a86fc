"""The offline fast path (docs/benchmarks.md, "Offline training"): features preloaded in RAM or on the
training device give the same run as reading them per step; the throughput of every epoch is
measured and written to metrics.json; `train.compile` trains through torch.compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamseg.config import ConfigError
from streamseg.data import collate_videos
from streamseg.engine.datamodule import FeatureDataModule

from ..conftest import TINY, streamseg


def _train(root: Path, data: Path, *extra: str) -> dict:
    out = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(root), "-o", f"data.root={data}",
                    *TINY, "-o", "train.deterministic=true", *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    run = root / "synth" / "mstcn_quick" / "version_0"
    return json.loads((run / "metrics.json").read_text()), torch.load(run / "checkpoints" / "last.ckpt",
                                                                     weights_only=True)["state_dict"]


@pytest.mark.parametrize("preload", ["memory", "device"])
def test_preloaded_features_train_exactly_like_per_step_reads(tmp_path, synth_root, preload):
    base, base_weights = _train(tmp_path / "a", synth_root)
    fast, fast_weights = _train(tmp_path / "b", synth_root, "-o", f"data.preload={preload}")
    for key in ("acc", "edit", "f1@50"):
        assert fast[key] == base[key]
    for name, tensor in base_weights.items():
        assert torch.equal(tensor, fast_weights[name]), name
    tp = fast["train_throughput"]
    assert tp["epochs"] == 2 and tp["frames_per_s"] > 0 and tp["epoch_seconds"] > 0


def test_throughput_counts_every_valid_training_frame(tmp_path, synth_root):
    metrics, _ = _train(tmp_path, synth_root, "-o", "train.epochs=1")
    csv = (tmp_path / "synth" / "mstcn_quick" / "version_0" / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/frames_per_s" in csv.splitlines()[0]
    names = (synth_root / "splits" / "train.split1.bundle").read_text().split()
    val = set((synth_root / "splits" / "val.split1.bundle").read_text().split()) if \
        (synth_root / "splits" / "val.split1.bundle").is_file() else set()
    frames = sum(len((synth_root / "groundTruth" / n).read_text().split()) for n in names if n not in val)
    tp = metrics["train_throughput"]
    assert tp["frames_per_s"] * tp["epoch_seconds"] == pytest.approx(frames, rel=1e-6)
    # the start-up phases' wall clocks, in the order they happen (tools/bench_gpu.py offline reads them)
    clock = metrics["startup_clock"]
    phases = ["train_and_test", "data_checked", "built", "fit", "first_batch", "fit_end"]
    assert sorted(clock) == sorted(phases)
    assert [clock[k] for k in phases] == sorted(clock[k] for k in phases)


def test_a_preloaded_split_is_read_whole_when_its_loader_is_made(synth_root):
    """`_CachedItems.fill`: every video of the split is cached, by name, as the plain dataset reads it."""
    dm = FeatureDataModule(str(synth_root), 1, preload="memory", batch_size=2)
    loader = dm.train_dataloader()
    names = dm.names["train"]
    assert sorted(dm._cache) == sorted(names) and len(names) > 2
    plain = loader.dataset.ds
    for index in (0, len(names) - 1):
        item = dm._cache[names[index]]
        assert item["index"] == index and item["name"] == names[index]
        assert torch.equal(item["features"], plain[index]["features"])
        assert torch.equal(item["labels"], plain[index]["labels"])
    assert loader.dataset[1] is dm._cache[names[1]]  # served from the cache, not read again


def test_device_preload_with_workers_is_refused_before_training():
    with pytest.raises(ConfigError, match="num_workers=0"):
        FeatureDataModule("unused", 1, num_workers=2, preload="device")
    with pytest.raises(ConfigError, match="data.preload"):
        FeatureDataModule("unused", 1, preload="gpu")


def test_single_video_batches_are_not_copied():
    item = {"name": "v", "features": torch.randn(4, 10), "labels": torch.zeros(10, dtype=torch.long),
            "full_labels": torch.zeros(10, dtype=torch.long)}
    batch = collate_videos([item])
    assert batch["features"].data_ptr() == item["features"].data_ptr()
    assert batch["mask"].shape == (1, 10) and bool(batch["mask"].all())


@pytest.mark.slow
def test_compiled_training_runs_and_scores(tmp_path, synth_root):
    metrics, _ = _train(tmp_path, synth_root, "-o", "train.compile=true", "-o", "train.epochs=1")
    assert 0.0 <= metrics["acc"] <= 100.0
