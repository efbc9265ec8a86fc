"""LightningDataModule over the standard TAS layout (features + frame labels), one video per item.

Splits: `train`, `test` from `splits/<split>.split<k>.bundle`; validation from `val.split<k>.bundle` when
the dataset has one, else `val_fraction` of the training videos held out (a seeded, sorted draw, so the
same videos every run). With no validation videos, `best.ckpt` is the last epoch (MS-TCN's protocol).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import ConfigError, TrainParams
from ..data import FeatureVideoDataset, TASLayout, collate_videos
from ..data.layout import FEATURE_READERS
from ..data.zoom import EpochKeys, OffsetAugmented, ZoomAugmented, check_zoom
from .batches import BatchKind


@dataclass
class TASDatasetParams:
    """Parameters shared by datasets in the standard TAS layout (dataset configs subclass this).

    root: dataset folder. split: split number k of `splits/*.split<k>.bundle`. sample_rate: keep every
    n-th feature frame (MS-TCN uses 2 on 50Salads); predictions are upsampled back and scored at the
    original rate. fps: original frame rate (for latency in seconds). bg_classes: label names dropped
    from Edit/F1 (the MS-TCN protocol ignores only GTEA's `background`). val_fraction: share of the
    training videos held out for model selection when the dataset has no `val` split. input: what the
    model consumes: pre-extracted `features` (whole videos per item) or `video` streams (chunk batches).
    preload: keep decoded feature videos in RAM (`memory`) or on the GPU (`device`), each split read whole
    (several videos at once) when its loader is made.
    features_dir: the folder under `root` holding `<video>.npy` (e.g. `features_s3d`, written by
    `streamseg extract`), so several feature sets can sit side by side.
    pooling: how `sample_rate` feature frames become one: `subsample` (the first; MS-TCN) or `max` (each
    feature's maximum over the group, the group's most frequent label: C2F-TCN). test_rates /
    test_rate_weights: test-time augmentation over sample rates (C2F-TCN's eval.py): validation and test
    videos are also pooled at each rate, the model runs on each, its last stage's class probabilities
    (softmax) are repeated back to the original frame rate and averaged with these weights (empty: equal
    weights), and the prediction is the argmax. Empty `test_rates`: off (features only).
    zoom_augment: C2F-TCN's training augmentation (`streamseg.data.zoom`): each epoch, half of the training
    videos (a draw per seed, epoch and video) are re-pooled with a group size drawn log-uniformly between
    sample_rate / zoom_range[1] and sample_rate / zoom_range[0] (official 0.5, 2), after a crop keeping at
    least zoom_crop of the video (official 1.0: no crop); zoom_window: the model's window in pooled frames,
    which the zoomed video must fit (None: no window; the C2F-TCN model config sets it to model.window).
    Features only; off by default (the C2F-TCN paper configs turn it on).
    test_offsets: DiffAct's test-time mean over the sample-rate offsets (Finspire13/DiffAct main.py): validation
    and test videos are also subsampled at each offset o of sample_rate (features[:, o::sample_rate]), the model
    runs on each, its last stage's class probabilities are averaged, post-processed (a model's `PostProcesses`)
    and brought back to the original rate centred on each group (`Evaluation.add_offsets`). random_offset:
    DiffAct's training augmentation: each epoch, each training video is subsampled from a random offset in
    [0, sample_rate) (a draw per seed, epoch and video: `streamseg.data.zoom.OffsetAugmented`). Features with
    pooling=subsample only; both off by default (the DiffAct 50Salads paper config turns them on).
    """

    root: str = "data"
    split: int = 1
    sample_rate: int = 1
    fps: float = 15.0
    bg_classes: tuple[str, ...] = ()
    val_fraction: float = 0.0
    # Streaming from raw video (`input="video"`, needs `Videos/` and train.chunk_size > 0): frames are
    # decoded with PyAV, resized to frame_size (H, W), and augmented once per video in training.
    input: Literal["features", "video"] = "features"
    frame_size: tuple[int, ...] = (224, 224)
    augment: bool = True
    # Where video frames are resized, augmented and normalised: "cpu" (decode workers resize to frame_size
    # and augment; the reference), or on the training device from native-size uint8 frames that the workers
    # ship as RGB ("device-rgb") or as the decoder's I420 planes ("device-i420", no colour conversion on
    # the CPU); all videos of the dataset must then share one frame size (data/augment.py).
    preprocess: Literal["cpu", "device-rgb", "device-i420"] = "cpu"
    # Video decoder: "pyav" (CPU worker processes; the default and the reference) or "nvdec" (the GPU's
    # hardware decoder through PyNvVideoCodec, `pip install 'streamseg[gpu-decode]'`; needs
    # preprocess="device-i420" and a CUDA device; data/nvdec.py). decoder_fallback: files NVDEC cannot
    # decode (codec, profile, rotation, interlacing), or a missing PyNvVideoCodec, fall back to PyAV with
    # a warning naming the file; false: stop before training with an error naming it.
    decoder: Literal["pyav", "nvdec"] = "pyav"
    decoder_fallback: bool = True
    # nvdec only: PyNvVideoCodec's SimpleDecoder (decodes inside each call) or its ThreadedDecoder
    # (decodes ahead on its own native thread: 1.9x one SimpleDecoder at 1280x720 on an H100, but one
    # benchmark process aborted in native code with it; docs/benchmarks.md "NVDEC decoding"), or "ffmpeg":
    # FFmpeg's own NVDEC decoder through PyAV's CUDA acceleration, no PyNvVideoCodec needed (94 % of
    # SimpleDecoder's raw rate at 1280x720 on one H100, "Eleventh session"; not yet run end to end on a GPU)
    nvdec_reader: Literal["simple", "threaded", "ffmpeg"] = "simple"
    # Features only: "memory" reads every video once and keeps it in RAM; "device" keeps it on the
    # training GPU (no per-step file reads, collation or host->device copies; needs num_workers=0).
    preload: Literal["none", "memory", "device"] = "none"
    features_dir: str = "features"
    pooling: Literal["subsample", "max"] = "subsample"
    test_rates: tuple[int, ...] = ()
    test_rate_weights: tuple[float, ...] = ()
    zoom_augment: bool = False
    zoom_range: tuple[float, ...] = (0.5, 2.0)
    zoom_crop: float = 1.0
    zoom_window: int | None = None
    test_offsets: bool = False
    random_offset: bool = False


@dataclass
class DatasetInfo:
    """What models and metrics need to know about a dataset (`test_rates`, `test_rate_weights`: see
    `TASDatasetParams`; the weights are filled in, one per rate). `batch_kind`: the kind of batch the
    DataModule that reports this info feeds (engine/batches.py), its class attribute."""

    name: str
    class_names: list[str]
    bg_ids: list[int]
    in_channels: int
    fps: float
    sample_rate: int
    test_rates: tuple[int, ...] = ()
    test_rate_weights: tuple[float, ...] = ()
    batch_kind: BatchKind = BatchKind.VIDEOS

    @property
    def streams(self) -> bool:
        """Batches are chunks of parallel streams (`BatchKind.STREAMS`), not whole videos."""
        return self.batch_kind is BatchKind.STREAMS

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_names(layout: TASLayout, split: int, val_fraction: float, seed: int, select_on: str) -> dict[str, list[str]]:
    """Video names of the train / val / test splits (see the module docstring for where val comes from)."""
    train = layout.split_names("train", split)
    val = layout.split_names("val", split) if layout.has_split("val", split) else []
    if not val and val_fraction > 0:
        rng = np.random.default_rng(seed)
        ordered = sorted(train)
        n_val = max(1, round(val_fraction * len(ordered)))
        held = set(rng.choice(len(ordered), size=n_val, replace=False).tolist())
        val = [n for i, n in enumerate(ordered) if i in held]
        train = [n for i, n in enumerate(ordered) if i not in held]
    test = layout.split_names("test", split)
    if select_on == "test":
        val = test
    return {"train": train, "val": val, "test": test}


def dataset_info(
    layout: TASLayout, name: str, bg_classes: Sequence[str], in_channels: int, fps: float, sample_rate: int, root: str,
    test_rates: Sequence[int] = (), test_rate_weights: Sequence[float] = (),
    batch_kind: BatchKind = BatchKind.VIDEOS,
) -> DatasetInfo:
    classes = list(layout.classes)
    missing = [b for b in bg_classes if b not in classes]
    if missing:
        raise ValueError(f"{root}/mapping.txt: background classes {missing} (data.bg_classes) are not in the mapping")
    rates, weights = check_test_rates(test_rates, test_rate_weights)
    return DatasetInfo(name, classes, [classes.index(b) for b in bg_classes], in_channels, fps, sample_rate,
                       rates, weights, batch_kind)


def check_test_rates(rates: Sequence[int], weights: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """`data.test_rates` and `data.test_rate_weights` checked, the weights filled in (1 each when empty)."""
    rates, weights = tuple(int(r) for r in rates), tuple(float(w) for w in weights)
    if any(r < 1 for r in rates):
        raise ConfigError(f"data.test_rates must be >= 1, got {rates}")
    if not weights:
        weights = (1.0,) * len(rates)
    if len(weights) != len(rates) or (rates and sum(weights) <= 0) or any(w < 0 for w in weights):
        raise ConfigError(f"data.test_rate_weights {weights}: expected one weight >= 0 per rate of "
                          f"data.test_rates {rates}, with a positive sum")
    return rates, weights


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch) alone: the order does not depend on any global RNG state,
    so a resumed run sees the same order as an uninterrupted one. Lightning calls `set_epoch`."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class PythonShuffleSampler(EpochShuffleSampler):
    """The training order of the official MS-TCN / MS-TCN++ batch generators (``batch_gen.py``):
    ``random.seed(seed)``, the video list shuffled once by ``random.shuffle`` in ``read_data`` and once more,
    in place, after every epoch (``reset``). Epoch e's order is the list after e + 1 shuffles, recomputed
    from (seed, epoch) alone, so a resumed run keeps it.

    ``reseed=True``: ASFormer's ``batch_gen.py`` ``my_shuffle``: each shuffle first draws
    ``r = random.randint(0, 100)``, then shuffles after ``random.seed(r)`` (it re-seeds with r before
    shuffling its two parallel lists as well, so the stream then continues from seed r after one shuffle)."""

    def __init__(self, n: int, seed: int, reseed: bool = False):
        super().__init__(n, seed)
        self.reseed = reseed

    def __iter__(self) -> Iterator[int]:
        rng, order = random.Random(self.seed), list(range(self.n))
        for _ in range(self.epoch + 1):
            if self.reseed:
                rng.seed(rng.randint(0, 100))
            rng.shuffle(order)
        return iter(order)


# videos read at once when a split is preloaded (`_CachedItems.fill`): numpy copies the memory-mapped
# features out of the page cache without holding the GIL, so several cores read several files
PRELOAD_READERS = FEATURE_READERS


class _CachedItems(torch.utils.data.Dataset):
    """A `FeatureVideoDataset` whose items are read once and kept (shared by the splits through
    ``cache``); ``device``: the tensors the model consumes live there (full labels stay on the CPU)."""

    def __init__(self, ds: FeatureVideoDataset, cache: dict[str, dict], device: torch.device | None) -> None:
        self.ds, self.cache, self.device = ds, cache, device

    def __len__(self) -> int:
        return len(self.ds)

    def _place(self, item: dict) -> dict:
        if self.device is None:
            return item
        return {**item, "features": item["features"].to(self.device), "labels": item["labels"].to(self.device)}

    def fill(self) -> None:
        """Read every item not cached yet, `PRELOAD_READERS` videos at a time, and keep them (in order):
        the whole split is loaded when its loader is made, not one video at a time inside the first epoch."""
        missing = [i for i, name in enumerate(self.ds.names) if name not in self.cache]
        if len(missing) < 2:
            return
        window = 2 * PRELOAD_READERS  # at most this many items read and not yet placed on the device
        with ThreadPoolExecutor(max_workers=PRELOAD_READERS) as pool:
            for first in range(0, len(missing), window):
                batch = missing[first:first + window]
                for index, item in zip(batch, pool.map(self.ds.__getitem__, batch)):
                    self.cache[self.ds.names[index]] = self._place(item)

    def __getitem__(self, index: int) -> dict:
        name = self.ds.names[index]
        item = self.cache.get(name)
        if item is None:
            item = self._place(self.ds[index])
            self.cache[name] = item
        return item


class FeatureDataModule(pl.LightningDataModule):
    """Pre-extracted features, whole videos per item, padded into batches of `batch_size` videos (the time
    axis rounded up to a multiple of `length_bucket` frames when > 0: `train.length_bucket`)."""

    batch_kind = BatchKind.VIDEOS

    def __init__(
        self,
        root: str,
        split: int,
        *,
        name: str = "dataset",
        sample_rate: int = 1,
        bg_classes: Sequence[str] = (),
        fps: float = 15.0,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.0,
        select_on: str = "val",
        prepare: Callable[[], object] | None = None,
        preload: str = "none",
        features_dir: str = "features",
        pooling: str = "subsample",
        test_rates: Sequence[int] = (),
        test_rate_weights: Sequence[float] = (),
        shuffle: str = "seeded",
        zoom: dict | None = None,
        length_bucket: int = 0,
        test_offsets: bool = False,
        random_offset: bool = False,
    ):
        super().__init__()
        if length_bucket < 0:
            raise ConfigError(f"train.length_bucket must be >= 0 (sampled frames), got {length_bucket}")
        self.length_bucket = length_bucket
        if zoom is not None:  # {"window", "zoom", "crop"} of ZoomAugmented: C2F-TCN's training augmentation
            try:
                check_zoom(zoom.get("zoom", (0.5, 2.0)), zoom.get("crop", 1.0), zoom.get("window"))
            except ValueError as e:
                raise ConfigError(str(e)) from None
            if preload == "device":
                raise ConfigError("data.zoom_augment re-pools the training videos on the CPU at every epoch: "
                                  "use data.preload=none or memory (got device)")
        self.zoom = zoom
        if shuffle not in ("seeded", "python", "asformer"):
            raise ConfigError(f"train.shuffle must be 'seeded', 'python' or 'asformer', got {shuffle!r}")
        self.shuffle = shuffle
        if pooling not in ("subsample", "max"):
            raise ConfigError(f"data.pooling must be 'subsample' or 'max', got {pooling!r}")
        self.pooling = pooling
        if (test_offsets or random_offset) and pooling != "subsample":
            raise ConfigError("data.test_offsets and data.random_offset subsample the features: they need "
                              f"data.pooling=subsample, got {pooling!r}")
        if random_offset and zoom is not None:
            raise ConfigError("data.random_offset and data.zoom_augment are two training augmentations: turn one off")
        if random_offset and preload == "device":
            raise ConfigError("data.random_offset re-subsamples the training videos on the CPU at every epoch: "
                              "use data.preload=none or memory (got device)")
        self.test_offsets, self.random_offset = test_offsets, random_offset
        self.test_rates, self.test_rate_weights = check_test_rates(test_rates, test_rate_weights)
        if preload not in ("none", "memory", "device"):
            raise ConfigError(f"data.preload must be 'none', 'memory' or 'device', got {preload!r}")
        if preload == "device" and num_workers > 0:
            raise ConfigError("data.preload='device' keeps features on the GPU: set train.num_workers=0 "
                              f"(got {num_workers}); worker processes cannot hand out CUDA tensors")
        self.preload, self.features_dir = preload, features_dir
        self._cache: dict[str, dict] = {}
        self.root, self.split, self.name = root, split, name
        self.sample_rate, self.bg_classes, self.fps = sample_rate, tuple(bg_classes), fps
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.val_fraction, self.select_on = val_fraction, select_on
        self._prepare = prepare
        self.layout: TASLayout | None = None
        self.names: dict[str, list[str]] = {}

    # Lightning calls prepare_data on one process per node; the CLI also calls it before launching work.
    def prepare_data(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.layout is not None:
            return
        layout = TASLayout(self.root, self.features_dir)
        self.names = split_names(layout, self.split, self.val_fraction, self.seed, self.select_on)
        self.layout = layout

    @classmethod
    def from_params(
        cls, p: TASDatasetParams, train: TrainParams, name: str, prepare: Callable[[], object] | None = None
    ) -> "FeatureDataModule":
        return cls(
            p.root,
            p.split,
            name=name,
            sample_rate=p.sample_rate,
            bg_classes=p.bg_classes,
            fps=p.fps,
            batch_size=train.batch_size,
            num_workers=train.num_workers,
            seed=train.seed,
            val_fraction=p.val_fraction,
            select_on=train.select_on,
            prepare=prepare,
            preload=getattr(p, "preload", "none"),
            features_dir=getattr(p, "features_dir", "features"),
            pooling=getattr(p, "pooling", "subsample"),
            test_rates=getattr(p, "test_rates", ()),
            test_rate_weights=getattr(p, "test_rate_weights", ()),
            shuffle=train.shuffle,
            zoom=dict(window=p.zoom_window, zoom=tuple(p.zoom_range), crop=p.zoom_crop)
            if getattr(p, "zoom_augment", False) else None,
            length_bucket=train.length_bucket,
            test_offsets=getattr(p, "test_offsets", False),
            random_offset=getattr(p, "random_offset", False),
        )

    @property
    def info(self) -> DatasetInfo:
        self.setup()
        assert self.layout is not None
        return dataset_info(self.layout, self.name, self.bg_classes, self.layout.feature_dim, self.fps,
                            self.sample_rate, self.root, self.test_rates, self.test_rate_weights, self.batch_kind)

    @property
    def has_val(self) -> bool:
        self.setup()
        return bool(self.names["val"])

    def _dataset(self, split: str) -> FeatureVideoDataset:
        self.setup()
        ds = FeatureVideoDataset(self.layout, self.names[split], sample_rate=self.sample_rate, pooling=self.pooling,
                                 test_rates=self.test_rates if split != "train" else (),
                                 test_offsets=self.test_offsets and split != "train")
        if self.preload == "none":
            return ds
        device = None
        if self.preload == "device" and self.trainer is not None:
            device = self.trainer.strategy.root_device
        return _CachedItems(ds, self._cache, device)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self._dataset(split)
        sampler = self._sampler(len(ds)) if shuffle else None
        if split == "train" and self.zoom is not None:  # items keyed (index, epoch): each epoch draws anew
            plain = FeatureVideoDataset(self.layout, self.names[split], sample_rate=self.sample_rate,
                                        pooling=self.pooling)
            ds, sampler = ZoomAugmented(plain, self.seed, **self.zoom), EpochKeys(sampler)
        if split == "train" and self.random_offset:  # items keyed (index, epoch): each epoch draws anew
            plain = FeatureVideoDataset(self.layout, self.names[split], sample_rate=self.sample_rate)
            ds, sampler = OffsetAugmented(plain, self.seed), EpochKeys(sampler)
        if isinstance(ds, _CachedItems):
            ds.fill()
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=partial(collate_videos, length_multiple=max(1, self.length_bucket)),
            persistent_workers=self.num_workers > 0,
        )

    def _sampler(self, n: int) -> EpochShuffleSampler:
        if self.shuffle == "seeded":
            return EpochShuffleSampler(n, self.seed)
        return PythonShuffleSampler(n, self.seed, reseed=self.shuffle == "asformer")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.names.get("val") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
