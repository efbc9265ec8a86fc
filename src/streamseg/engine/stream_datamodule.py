"""LightningDataModule over raw video streams: chunk batches from `streamseg.data.streams`.

Each batch is one chunk of `chunk_size` sampled frames from each of `batch_size` stream slots; a slot
that finishes a video takes the next one (its `reset` flag tells the module to reset that slot's state).
Videos are sharded across DDP ranks by the batcher itself (every rank plans the same epoch), so
Lightning's DistributedSampler is not involved and evaluation scores every video exactly once.

Frames travel as uint8 from the decode workers to the device (4x fewer bytes through the workers'
shared memory and the host -> device copy than float32, which bounded GPU training throughput) and are
normalised there by `on_after_batch_transfer`. Code that iterates the loaders itself calls that hook.

``preprocess`` says where frames are resized and augmented. ``"cpu"``: the workers resize to
``frame_size`` and augment (`streamseg.data.augment.video_augment_factory`), the device only normalises.
``"device-rgb"`` / ``"device-i420"``: the workers only decode (and, for rgb, convert colour) and ship
native-size uint8 frames plus each slot's augmentation draw (``batch["aug"]``, the same draw for the same
seed); `on_after_batch_transfer` crops, resizes, mirrors, shifts colour and normalises on the device
(`streamseg.data.augment.augment_to_model`, compiled with ``train.compile``). Every video must then have
the same native size (checked in `setup`, from the file headers).

``decoder="nvdec"`` (with ``"device-i420"``) decodes on the GPU instead of in worker processes
(`streamseg.data.nvdec`): the loader runs in the main process, each slot's video has one NVDEC reader
that decodes its next chunk in a background thread on its own CUDA stream while the step runs, and the
batch's frames are written on the device; `setup` decides, before training, which files fall back to
PyAV (``decoder_fallback``) or stops with an error naming the file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from ..config import ConfigError, TrainParams
from ..data import TASLayout
from ..data.augment import augment_to_model, video_augment_factory, video_augment_params
from ..data.errors import DataError
from ..data.nvdec import DECODERS, NvdecSource, NvdecUnavailable, nvdec_plan
from ..data.streams import StreamBatcher, StreamLoader, StreamVideo, normalize_frames
from ..data.video import VideoFileSource, probe
from .batches import BatchKind
from .datamodule import DatasetInfo, TASDatasetParams, dataset_info, split_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS = ("cpu", "device-rgb", "device-i420")


class VideoStreamDataModule(pl.LightningDataModule):
    batch_kind = BatchKind.STREAMS  # provides full_labels (batches.StreamLabels)

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
        persistent_workers: bool = False,
        seed: int = 0,
        stream_order: str = "packed",
        val_fraction: float = 0.0,
        select_on: str = "val",
        augment: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        prepare: Callable[[], object] | None = None,
        preprocess: str = "cpu",
        compile_transform: bool = False,
        decoder: str = "pyav",
        decoder_fallback: bool = True,
        nvdec_reader: str = "simple",
        decode_threads: int | None = None,
    ):
        super().__init__()
        if preprocess not in PREPROCESS:
            raise ValueError(f"data.preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        if decoder not in DECODERS:
            raise ValueError(f"data.decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "nvdec" and preprocess != "device-i420":
            raise ConfigError(f"data.decoder=nvdec gives 4:2:0 planes on the GPU: it needs data.preprocess=device-i420, "
                              f"got {preprocess!r}")
        if chunk_size < 1:
            raise ValueError(f"video streams need train.chunk_size >= 1 (sampled frames per chunk), got {chunk_size}")
        if len(frame_size) != 2:
            raise ValueError(f"data.frame_size must be (H, W), got {tuple(frame_size)}")
        self.root, self.split, self.name = root, split, name
        self.chunk_size, self.frame_size = chunk_size, (int(frame_size[0]), int(frame_size[1]))
        self.sample_rate, self.bg_classes, self.fps = sample_rate, tuple(bg_classes), fps
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        if stream_order not in ("packed", "shuffled"):
            raise ValueError(f"stream_order must be 'packed' or 'shuffled', got {stream_order!r}")
        self.stream_order = stream_order  # training order: `streamseg.data.streams.packed_order` or a shuffle
        self.persistent_workers = persistent_workers  # the training loader's workers serve every epoch
        self.val_fraction, self.select_on, self.augment = val_fraction, select_on, augment
        self.mean, self.std = tuple(mean), tuple(std)
        self._prepare = prepare
        self.preprocess, self.compile_transform = preprocess, compile_transform
        self.decoder, self.decoder_fallback, self.nvdec_reader = decoder, decoder_fallback, nvdec_reader
        # FFmpeg threads per PyAV decoder (`VideoFileSource`); None: 1 in worker processes (each decoder on
        # its worker's thread, no idle pool per decoder), PyAV's default (0) in this process
        self.decode_threads = decode_threads if decode_threads is not None else (1 if num_workers else 0)
        self.nvdec = False  # setup: NVDEC decodes (decoder="nvdec" and PyNvVideoCodec usable)
        self.pyav_files: set[str] = set()  # decoder="nvdec": files that fall back to PyAV
        self._pool: ThreadPoolExecutor | None = None
        self.native_size: tuple[int, int] | None = None  # device preprocessing: the videos' (H0, W0)
        self.colour: tuple[int, bool] = (2, False)  # device-i420: the videos' (colorspace, full_range)
        self._transform: Callable | None = None
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
        if p.pooling != "subsample" or p.test_rates or p.zoom_augment or p.test_offsets or p.random_offset:
            raise ConfigError("data.pooling, data.test_rates, data.zoom_augment, data.test_offsets and "
                              "data.random_offset act on pre-extracted features; with data.input='video' keep "
                              "data.pooling=subsample, data.test_rates empty and the others false")
        return cls(p.root, p.split, chunk_size=train.chunk_size, frame_size=p.frame_size, name=name,
                   sample_rate=p.sample_rate, bg_classes=p.bg_classes, fps=p.fps, batch_size=train.batch_size,
                   num_workers=train.num_workers, persistent_workers=train.persistent_workers, seed=train.seed,
                   stream_order=train.stream_order, val_fraction=p.val_fraction,
                   select_on=train.select_on, augment=p.augment, prepare=prepare,
                   preprocess=p.preprocess, compile_transform=train.compile,
                   decoder=p.decoder, decoder_fallback=p.decoder_fallback, nvdec_reader=p.nvdec_reader)

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
                "data.input='video' needs Videos/<name>.mp4 (or .mkv, .mov, .ts, ...; any case)"
            )
        if self.preprocess != "cpu":
            self._probe_native(layout, [n for ns in names.values() for n in ns])
        if self.decoder == "nvdec":  # before training: which files NVDEC decodes (or the one-line error)
            paths = [layout.video_path(n) for ns in names.values() for n in ns]
            try:
                self.nvdec, self.pyav_files = nvdec_plan(paths, self.native_size, self.decoder_fallback,
                                                         reader=self.nvdec_reader)
            except NvdecUnavailable as e:
                raise ConfigError(f"{e} (or set data.decoder_fallback=true to decode with PyAV)") from None
        self.names, self.layout = names, layout

    def _probe_native(self, layout: TASLayout, names: list[str]) -> None:
        """The one native frame size (and, for I420, colour matrix) of all videos, from their headers."""
        first: tuple | None = None
        for name in dict.fromkeys(names):
            path = layout.video_path(name)
            _, _, h, w = probe(path)
            if self.preprocess == "device-i420":
                if h % 2 or w % 2:
                    raise DataError(path, f"data.preprocess=device-i420 needs an even frame size, got {h}x{w} "
                                          "(H x W); use data.preprocess=device-rgb")
                with VideoFileSource(path, pixel_path="i420") as source:
                    colour = source.colour
            else:
                colour = (2, False)
            if first is None:
                first = (path, (h, w), colour)
            elif ((h, w), colour) != first[1:]:
                raise DataError(path, f"{h}x{w} frames, colour {colour}; {first[0]} has {first[1][0]}x{first[1][1]}, "
                                      f"colour {first[2]}: data.preprocess={self.preprocess} needs one native frame "
                                      "size and colour matrix for all videos (use data.preprocess=cpu)")
        if first is not None:
            self.native_size, self.colour = first[1], first[2]

    @property
    def info(self) -> DatasetInfo:
        self.setup()
        assert self.layout is not None
        return dataset_info(self.layout, self.name, self.bg_classes, 3, self.fps, self.sample_rate, self.root,
                            batch_kind=self.batch_kind)

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
        decoding = partial(VideoFileSource, sample_rate=self.sample_rate, decode_threads=self.decode_threads)
        if self.preprocess == "cpu":
            source = partial(decoding, size=self.frame_size)
        else:  # native size; rgb24 (swscale colour conversion) or the decoder's I420 planes
            source = partial(decoding, size=None, pixel_path="i420" if self.preprocess == "device-i420" else "rgb24")
        paths = {n: self.layout.video_path(n) for n in self.names[split]}
        if self.nvdec:
            # two threads per slot: every slot's next chunk decodes at once, on the NVDEC engines, and its next
            # video opens and decodes its first chunk beside it (StreamBatcher.open_pool)
            self._pool = self._pool or ThreadPoolExecutor(2 * self.batch_size, thread_name_prefix="nvdec")
            gpu = partial(NvdecSource, size=self.native_size, sample_rate=self.sample_rate, device=self._device(),
                          pool=self._pool, reader=self.nvdec_reader)
            return [StreamVideo(n, partial(source if str(p) in self.pyav_files else gpu, p), labels=self.full_labels(n))
                    for n, p in paths.items()]
        return [StreamVideo(n, partial(source, p), labels=self.full_labels(n)) for n, p in paths.items()]

    def _device(self) -> torch.device:
        """The trainer's CUDA device (a CPU trainer is refused: NVDEC decodes on a GPU); without a trainer the
        current CUDA device, or the CPU where there is none (tests with a stand-in decoder)."""
        root = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        if isinstance(root, torch.device) and root.type == "cuda":
            return root
        if isinstance(root, torch.device):
            raise ConfigError(f"data.decoder=nvdec decodes on a CUDA device; this run trains on {root}")
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """One frame as the workers ship it: (3, H, W) at frame_size (cpu) or native, or (1, H0*3/2, W0) I420."""
        if self.preprocess == "cpu":
            return (3, *self.frame_size)
        assert self.native_size is not None, "setup() first"
        h0, w0 = self.native_size
        return (1, h0 * 3 // 2, w0) if self.preprocess == "device-i420" else (3, h0, w0)

    def _loader(self, split: str, train: bool) -> StreamLoader:
        self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batcher = StreamBatcher(
            self._videos(split),
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            sample_shape=self.sample_shape,
            sample_rate=self.sample_rate,
            shuffle=train,
            longest_first=not train,
            pack=train and self.stream_order == "packed",
            seed=self.seed,
            rank=rank,
            world_size=world,
            augment_factory=video_augment_factory() if (train and self.augment and self.preprocess == "cpu") else None,
            augment_params=video_augment_params() if (train and self.augment and self.preprocess != "cpu") else None,
            uint8_frames=True,  # normalised on the device: on_after_batch_transfer
        )
        # on a GPU the workers' parts go straight from their shared memory to the device and are merged
        # there (no host concatenation, no second host copy); Lightning's own transfer then has nothing to move
        root = getattr(getattr(trainer, "strategy", None), "root_device", None)
        device = root if isinstance(root, torch.device) and root.type == "cuda" else None
        if self.nvdec:  # decoded on the GPU in this process; frames are written into device batches
            batcher.frame_device = self._device()
            batcher.open_pool = self._pool  # next videos open ahead, beside the decoding
            return StreamLoader(batcher, num_workers=0, device=batcher.frame_device)
        return StreamLoader(batcher, num_workers=self.num_workers, device=device,
                            persistent=train and self.persistent_workers)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 frames -> ``(x / 255 - mean) / std`` float32, on the batch's device; with device
        preprocessing, cropped, resized, mirrored and colour-shifted first (`augment_to_model`)."""
        if not (isinstance(batch, dict) and isinstance(batch.get("x"), torch.Tensor) and batch["x"].dtype == torch.uint8):
            return batch
        if self.preprocess == "cpu":
            return {**batch, "x": normalize_frames(batch["x"], self.mean, self.std)}
        if self._transform is None:
            fn = partial(augment_to_model, size=self.frame_size, mean=self.mean, std=self.std,
                         in_format="i420" if self.preprocess == "device-i420" else "rgb", colour=self.colour)
            self._transform = torch.compile(fn, dynamic=False) if self.compile_transform else fn
        return {**batch, "x": self._transform(batch["x"], batch.get("aug"))}

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
