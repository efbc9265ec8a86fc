"""LightningDataModule over raw video streams: chunk batches from `streamseg.data.streams`.

Each batch is one chunk of `chunk_size` sampled frames from each of `batch_size` stream slots; a slot
that finishes a video takes the next one (its `reset` flag tells the module to reset that slot's state).
Videos are sharded across DDP ranks by the batcher itself (every rank plans the same epoch), so
Lightning's DistributedSampler is not involved and evaluation scores every video exactly once.

Frames travel as uint8 from the decode workers to the device (4x fewer bytes through the workers'
shared memory and the host -> device copy than float32, which bounded GPU training throughput) and are
normalised there by `on_after_batch_transfer`. Code that iterates the loaders itself calls that hook.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from ..config import ConfigError, TrainParams
from ..data import TASLayout
from ..data.augment import video_augment_factory
from ..data.streams import StreamBatcher, StreamLoader, StreamVideo, normalize_frames
from ..data.video import VideoFileSource
from .datamodule import DatasetInfo, TASDatasetParams, dataset_info, split_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VideoStreamDataModule(pl.LightningDataModule):
    def __init__(
        self,
        root: str,
        split: int,
        *,
        chunk_size: int,
        frame_size: Sequence[int] = (224, 224),
        name: str = "dataset",
        sample_rate: int = 1,
        bg_classes: Sequence[str] = (),
        fps: float = 15.0,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.0,
        select_on: str = "val",
        augment: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        prepare: Callable[[], object] | None = None,
    ):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"video streams need train.chunk_size >= 1 (sampled frames per chunk), got {chunk_size}")
        if len(frame_size) != 2:
            raise ValueError(f"data.frame_size must be (H, W), got {tuple(frame_size)}")
        self.root, self.split, self.name = root, split, name
        self.chunk_size, self.frame_size = chunk_size, (int(frame_size[0]), int(frame_size[1]))
        self.sample_rate, self.bg_classes, self.fps = sample_rate, tuple(bg_classes), fps
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.val_fraction, self.select_on, self.augment = val_fraction, select_on, augment
        self.mean, self.std = tuple(mean), tuple(std)
        self._prepare = prepare
        self.layout: TASLayout | None = None
        self.names: dict[str, list[str]] = {}
        self._labels: dict[str, np.ndarray] = {}

    @classmethod
    def from_params(
        cls, p: TASDatasetParams, train: TrainParams, name: str, prepare: Callable[[], object] | None = None
    ) -> "VideoStreamDataModule":
        if train.shuffle != "seeded":
            raise ConfigError(f"train.shuffle={train.shuffle!r} orders whole feature videos; streams plan their own order "
                              "(keep train.shuffle=seeded with data.input='video')")
        if getattr(p, "pooling", "subsample") != "subsample" or getattr(p, "test_rates", ()):
            raise ConfigError("data.pooling and data.test_rates act on pre-extracted features; with "
                              "data.input='video' keep data.pooling=subsample and data.test_rates empty")
        return cls(p.root, p.split, chunk_size=train.chunk_size, frame_size=p.frame_size, name=name,
                   sample_rate=p.sample_rate, bg_classes=p.bg_classes, fps=p.fps, batch_size=train.batch_size,
                   num_workers=train.num_workers, seed=train.seed, val_fraction=p.val_fraction,
                   select_on=train.select_on, augment=p.augment, prepare=prepare)

    def prepare_data(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.layout is not None:
            return
        layout = TASLayout(self.root)
        names = split_names(layout, self.split, self.val_fraction, self.seed, self.select_on)
        missing = [n for ns in names.values() for n in ns if layout.video_path(n) is None]
        if missing:
            raise FileNotFoundError(
                f"{self.root}/Videos: no video file for {len(missing)} split entries (e.g. {missing[:3]}); "
                "data.input='video' needs Videos/<name>.mp4"
            )
        self.names, self.layout = names, layout

    @property
    def info(self) -> DatasetInfo:
        self.setup()
        assert self.layout is not None
        return dataset_info(self.layout, self.name, self.bg_classes, 3, self.fps, self.sample_rate, self.root)

    @property
    def has_val(self) -> bool:
        self.setup()
        return bool(self.names["val"])

    def full_labels(self, name: str) -> np.ndarray:
        """Ground truth at the original frame rate (the evaluation target)."""
        if name not in self._labels:
            assert self.layout is not None
            self._labels[name] = self.layout.load_labels(name)
        return self._labels[name]

    def _videos(self, split: str) -> list[StreamVideo]:
        assert self.layout is not None
        return [
            StreamVideo(n, partial(VideoFileSource, self.layout.video_path(n), self.sample_rate, self.frame_size),
                        labels=self.full_labels(n))
            for n in self.names[split]
        ]

    def _loader(self, split: str, train: bool) -> StreamLoader:
        self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batcher = StreamBatcher(
            self._videos(split),
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            sample_shape=(3, *self.frame_size),
            sample_rate=self.sample_rate,
            shuffle=train,
            longest_first=not train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            augment_factory=video_augment_factory() if (train and self.augment) else None,
            uint8_frames=True,  # normalised on the device: on_after_batch_transfer
        )
        return StreamLoader(batcher, num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 frames -> ``(x / 255 - mean) / std`` float32, on the batch's device."""
        if isinstance(batch, dict) and isinstance(batch.get("x"), torch.Tensor) and batch["x"].dtype == torch.uint8:
            batch = {**batch, "x": normalize_frames(batch["x"], self.mean, self.std)}
        return batch

    def train_dataloader(self) -> StreamLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> StreamLoader | list:
        return self._loader("val", train=False) if self.names.get("val") else []

    def test_dataloader(self) -> StreamLoader:
        return self._loader("test", train=False)


def build_tas_datamodule(
    p: TASDatasetParams, train: TrainParams, name: str, prepare: Callable[[], object] | None = None
) -> pl.LightningDataModule:
    """The DataModule for `p.input`: whole-video features, or chunked raw-video streams."""
    from .datamodule import FeatureDataModule

    if p.input == "video":
        return VideoStreamDataModule.from_params(p, train, name, prepare)
    return FeatureDataModule.from_params(p, train, name, prepare)
