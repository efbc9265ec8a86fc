"""The stream sampler: B parallel video streams advanced chunk by chunk, sharded by video over ranks.

A batch holds one chunk of ``T`` sampled frames from each of ``B`` *slots*. A slot plays one video from
its first chunk to its last, then immediately takes the next video from the epoch's queue, so short
videos never pad the batch while a long one finishes (lockstep batching wastes up to half the compute on
datasets like Breakfast whose lengths differ tenfold). A slot with no video left is padded (mask 0)
until the epoch's last step.

The schedule is decided before anything is decoded, from the video lengths alone (`plan_epoch`):
videos, in shuffled order (seed, epoch; for training by default the packed shuffle of `packed_order`, which
keeps slots busy to the epoch's end) or given order, go one by one to whichever of the
``world_size * B`` global slots frees first (ties: lowest global slot; global slot ``g`` is slot
``g // world_size`` of rank ``g % world_size``). Every rank computes the same plan, so

* every video is played exactly once per epoch over all ranks (no DistributedSampler-style duplicates);
* all ranks yield the same number of batches, the plan's last step (ranks that finish earlier yield
  fully masked batches), so DDP never waits on a rank that has stopped; greedy assignment keeps the
  ranks within one video's length of each other, so that padding is small;
* the order depends on (seed, epoch) only, never on DataLoader workers.

Decoding. Each video is opened once, when its slot starts it, and read sequentially until its last
chunk (`streamseg.data.video`). `StreamLoader` runs the batcher in the main process (``num_workers=0``)
or in worker processes that each own a fixed block of slots and decode only those slots' videos; the
parts of a step are merged by their step tag, not by the order workers answer in.

Batch (``StreamBatcher`` with ``sample_shape=(C, H, W)`` for frames or ``(D,)`` for features)::

    x        float32 (B, C, T, H, W) frames normalised ((v/255 - mean) / std), or (B, D, T) features;
             uint8 (B, C, T, H, W) with uint8_frames=True (normalise on the GPU with `normalize_frames`)
    labels   int64 (B, T), labels at the sample rate, -100 where mask is 0
    mask     float32 (B, T), 1 for real frames
    reset    bool (B,), the slot starts a new video in this chunk: reset its model state first
    last     bool (B,), the slot's video ends in this chunk
    names    list[str | None] (B,), None for an empty slot
    index    int64 (B,), the video's index in ``videos`` (-1 for an empty slot)
    start    int64 (B,), index of the chunk's first sampled frame within its video (-1 empty)
    full_length int64 (B,), the video's length at the original frame rate (0 empty)
    step     int, the batch's index within the epoch
    aug      float64 (B, 6), only with ``augment_params``: each slot's per-video augmentation draw
             (`streamseg.data.augment.AUGMENT_FIELDS`; the identity for empty slots), applied on the device
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from streamseg.data.augment import IDENTITY
from streamseg.data.errors import DataError
from streamseg.data.features import IGNORE_INDEX  # -100: torch's cross_entropy default ignore_index
from streamseg.data.video import FrameSource

# steps before its first chunk at which a slot's next video is opened, with `StreamBatcher.open_pool`: one
# step lets the opening and the first chunk's decode run while the step before it is consumed
OPEN_AHEAD = 1

__all__ = [
    "IGNORE_INDEX",
    "SlotRun",
    "StreamBatcher",
    "StreamLoader",
    "StreamVideo",
    "hand_over",
    "normalize_frames",
    "packed_order",
    "plan_epoch",
    "upsample_to_full",
]


Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StreamVideo:
    """One video of a stream epoch.

    Args:
        name: the video's id (used in predictions and errors).
        open: a factory returning a fresh `FrameSource` for this video at the batcher's sample rate;
            called once per video per epoch.
        labels: int64 ``(L,)`` per-frame labels at the ORIGINAL frame rate, or None when unlabelled.
        length: ``L``; taken from ``labels`` when omitted (and must agree with it when given).
    """

    name: str
    open: Callable[[], FrameSource]
    labels: np.ndarray | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"video {self.name!r}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
                )
            if self.length is not None and self.length != len(labels):
                raise ValueError(f"video {self.name!r}: length={self.length} but {len(labels)} labels")
            object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
            object.__setattr__(self, "length", len(labels))
        if self.length is None or self.length < 1:
            raise ValueError(f"video {self.name!r}: needs labels or a length >= 1, got length={self.length}")


@dataclass(frozen=True)
class SlotRun:
    """One video played by one slot: chunks ``0..num_chunks-1`` at steps ``first_step..``."""

    video: int
    rank: int
    slot: int
    first_step: int
    num_chunks: int


def plan_epoch(
    num_chunks: Sequence[int], order: Sequence[int], batch_size: int, world_size: int = 1
) -> tuple[list[SlotRun], int]:
    """Assign videos (in ``order``) to ``world_size * batch_size`` slots, each to the slot that frees first.

    Returns:
        (runs, num_steps): one `SlotRun` per video, and the number of steps (batches) every rank yields.
    """
    free = [(0, g) for g in range(world_size * batch_size)]  # (step at which it frees, global slot)
    runs = []
    for video in order:
        step, g = heapq.heappop(free)
        runs.append(SlotRun(int(video), g % world_size, g // world_size, step, int(num_chunks[video])))
        heapq.heappush(free, (step + int(num_chunks[video]), g))
    return runs, max((step for step, _ in free), default=0)


PACK_CANDIDATES = 32
PACK_SORTED_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def packed_order(num_chunks: Sequence[int], rng: np.random.Generator, batch_size: int,
                 world_size: int = 1) -> list[int]:
    """A shuffled training order whose `plan_epoch` has (close to) the fewest steps.

    With few videos per slot, a plain shuffle leaves slots idle at the epoch's end while the last long
    videos finish: on the 48 training videos of ``data synth`` at 16 slots x 32 frames, 48-49 steps carry
    42 steps' worth of frames (14 % padding). Handing the longest videos out first (the
    longest-processing-time rule) packs the slots, but a fixed order loses the shuffle. So
    `PACK_CANDIDATES` orders are drawn from ``rng``: each a permutation whose last 25, 50, 75 or 100 %
    (cycling, most random first) is sorted longest first (stable: equal lengths keep their random order),
    and the first order with the fewest steps wins. The choice depends on (seed, epoch) only, so every
    rank computes the same one; planning costs milliseconds (about 80 ms for 1,460 videos).
    """
    lengths = np.asarray(num_chunks)
    best: tuple[int, list[int]] | None = None
    for c in range(PACK_CANDIDATES):
        order = rng.permutation(len(lengths))
        keep = int(round(len(order) * (1 - PACK_SORTED_FRACTIONS[c % len(PACK_SORTED_FRACTIONS)])))
        tail = order[keep:]
        order = np.concatenate([order[:keep], tail[np.argsort(-lengths[tail], kind="stable")]]).tolist()
        steps = plan_epoch(lengths, order, batch_size, world_size)[1]
        if best is None or steps < best[0]:
            best = (steps, order)
    return best[1] if best is not None else []


def normalize_frames(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 (B, C, T, H, W)`` (or already-[0, 1] float) -> ``(x/255 - mean) / std`` as float32.

    Padded frames are not masked here; the loss and metrics ignore them through ``mask``.
    """
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x.sub_(m).div_(s)


def upsample_to_full(pred: torch.Tensor | np.ndarray, sample_rate: int, full_length: int) -> torch.Tensor | np.ndarray:
    """Per-sample predictions ``(T',)`` to the original frame rate ``(full_length,)``.

    Each prediction covers the ``sample_rate`` original frames from its sample on (sample ``i`` is frame
    ``i * sample_rate``); the result is truncated to ``full_length``, or padded with the last prediction
    if ``T' * sample_rate`` falls short. Works on torch tensors and numpy arrays alike.
    """
    if len(pred) == 0:
        raise ValueError(f"upsample_to_full: empty prediction for a video of {full_length} frames")
    if isinstance(pred, torch.Tensor):
        full = pred.repeat_interleave(sample_rate)[:full_length]
        missing = full_length - len(full)
        return torch.cat([full, full[-1:].expand(missing)]) if missing > 0 else full
    full = np.repeat(np.asarray(pred), sample_rate)[:full_length]
    missing = full_length - len(full)
    return np.concatenate([full, np.full(missing, full[-1], full.dtype)]) if missing > 0 else full


class StreamBatcher(IterableDataset):
    """Batches of ``batch_size`` parallel streams, one chunk of ``chunk_size`` sampled frames per step.

    Args:
        videos: the epoch's videos (every rank passes the same list).
        batch_size: slots per rank, ``B``.
        chunk_size: sampled frames per chunk, ``T``.
        sample_shape: one sample's shape after augmentation: ``(C, H, W)`` for frames, ``(D,)`` for
            features; sets the shape of ``x`` (also for ranks that get no video).
        sample_rate: keep every ``sample_rate``-th original frame; each video's sources must use it.
        stride: sampled frames between chunk starts; only ``chunk_size`` (no overlap) is supported.
        shuffle: shuffle the video order per epoch (training); else the given order.
        pack: with shuffle, choose among `PACK_CANDIDATES` shuffled orders (each with its last 25, 50, 75 or
            100 % of videos sorted longest first) the one whose plan has the fewest steps (`packed_order`):
            less padding at the epoch's end, where slots run out of videos.
        longest_first: without shuffle, play the longest videos first (less padding at the end of an
            evaluation epoch; the classic longest-processing-time rule).
        seed: seeds the order and each video's augmentation together with the epoch.
        rank, world_size: this process's place in DDP; videos are sharded across ranks.
        augment_factory: ``augment_factory(rng)`` is called ONCE per video and epoch, with a
            ``numpy.random.Generator`` seeded by (seed, epoch, video index), and returns a callable
            applied to every chunk of that video: ``uint8 (n, 3, H, W) -> (n, C, H', W')`` uint8 or
            float in [0, 1]; draw the crop/flip/colour parameters from ``rng`` when the factory runs, so
            that a video keeps one augmentation throughout.
        augment_params: instead of ``augment_factory`` (device augmentation): ``augment_params(rng)`` is
            called once per video and epoch with the same generator and returns that video's float64
            parameter row, yielded as ``aug`` for every chunk of it; frames travel unaugmented.
        mean, std: per-channel normalisation of frames on the [0, 1] scale (None: leave v/255).
        uint8_frames: yield frames as uint8 (4x less memory to move; call `normalize_frames` on device).
    """

    def __init__(
        self,
        videos: Sequence[StreamVideo],
        batch_size: int,
        chunk_size: int,
        sample_shape: Sequence[int],
        sample_rate: int = 1,
        stride: int | None = None,
        shuffle: bool = False,
        longest_first: bool = False,
        pack: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment_factory: Callable[[np.random.Generator], Augment] | None = None,
        augment_params: Callable[[np.random.Generator], np.ndarray] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        uint8_frames: bool = False,
    ) -> None:
        super().__init__()
        sizes = dict(batch_size=batch_size, chunk_size=chunk_size, sample_rate=sample_rate, world_size=world_size)
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StreamBatcher: {key} must be an int >= 1, got {value!r}")
        if stride is not None and stride != chunk_size:
            raise ValueError(
                f"StreamBatcher: stride={stride} != chunk_size={chunk_size}; overlapping chunks are not supported yet"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"StreamBatcher: rank={rank} outside 0..{world_size - 1}")
        if len(sample_shape) not in (1, 3):
            raise ValueError(f"StreamBatcher: sample_shape must be (C, H, W) or (D,), got {tuple(sample_shape)}")
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError("StreamBatcher: give both mean and std, of the same length, or neither")
        if mean is not None and len(sample_shape) == 3 and len(mean) != sample_shape[0]:
            raise ValueError(f"StreamBatcher: {len(mean)} mean/std values for {sample_shape[0]} channels")
        if seed < 0:
            raise ValueError(f"StreamBatcher: seed must be >= 0, got {seed}")
        if augment_factory is not None and augment_params is not None:
            raise ValueError("StreamBatcher: give augment_factory (augment in the workers) or augment_params "
                             "(augment on the device), not both")
        names = [v.name for v in videos]
        if len(set(names)) != len(names):
            raise ValueError(f"StreamBatcher: duplicate video names {sorted({n for n in names if names.count(n) > 1})}")
        self.videos = list(videos)
        self.batch_size, self.chunk_size, self.sample_rate = batch_size, chunk_size, sample_rate
        self.sample_shape = tuple(sample_shape)
        self.shuffle, self.longest_first, self.pack, self.seed = shuffle, longest_first, pack, seed
        self.rank, self.world_size = rank, world_size
        self.augment_factory, self.augment_params = augment_factory, augment_params
        self.mean, self.std, self.uint8_frames = mean, std, uint8_frames
        if mean is not None:  # (C, 1, 1, 1), broadcast over (C, n, H, W)
            self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
            self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
        # the epoch, in a tensor: StreamLoader's persistent workers read it from shared memory, so that
        # set_epoch in the main process reaches workers started in an earlier epoch
        self._epoch = torch.zeros(1, dtype=torch.int64)
        self.worker_parts = False  # set by StreamLoader: worker processes yield parts of batches
        # set by StreamLoader: full batches in shared memory, made once by the main process; a worker
        # writes its slots' rows of ring[step % len(ring)] and yields only the step, its first slot and
        # the names, so that no tensor crosses the worker queue (see StreamLoader)
        self.ring: list[dict] | None = None
        # set by the owner for GPU decoding (`streamseg.data.nvdec`): frames are written into parts on
        # this device (sources then return frames there, or CPU frames that are copied in)
        self.frame_device: torch.device | None = None
        # set by the owner for in-process decoding (num_workers=0, e.g. NVDEC): each slot's next video is
        # opened in this executor `OPEN_AHEAD` steps before its first chunk is due, and its source's
        # ``prefetch(n)`` (where it has one) starts decoding that chunk, so that opening a decoder and its
        # first chunk do not stall the step loop (every other slot waits for a batch's slowest row)
        self.open_pool: Executor | None = None
        # samples per video: frames 0, s, 2s, ... < L  ->  ceil(L / s); chunks: ceil(samples / T)
        self.num_samples = [math.ceil(v.length / sample_rate) for v in self.videos]
        self.num_chunks = [math.ceil(n / chunk_size) for n in self.num_samples]

    @property
    def is_features(self) -> bool:
        return len(self.sample_shape) == 1

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order and augmentations; call before iterating (the engine does, per epoch)."""
        self._epoch[0] = epoch

    def order(self) -> list[int]:
        """Video indices in the order they are handed to slots this epoch."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self.pack:
                return packed_order(self.num_chunks, rng, self.batch_size, self.world_size)
            return rng.permutation(len(self.videos)).tolist()
        if self.longest_first:
            return sorted(range(len(self.videos)), key=lambda i: -self.num_chunks[i])  # stable: ties keep order
        return list(range(len(self.videos)))

    def plan(self) -> tuple[list[SlotRun], int]:
        """This epoch's plan for ALL ranks: (runs, number of steps every rank yields)."""
        return plan_epoch(self.num_chunks, self.order(), self.batch_size, self.world_size)

    def __len__(self) -> int:
        return self.plan()[1]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        slots = list(range(self.batch_size))
        if info is not None:
            if not self.worker_parts:
                raise RuntimeError(
                    "StreamBatcher in a DataLoader worker: wrap it in StreamLoader(batcher, num_workers=...), "
                    "which merges each step's parts; a plain DataLoader would yield partial batches"
                )
            # contiguous blocks of slots per worker; workers beyond batch_size get none and yield nothing
            slots = np.array_split(np.arange(self.batch_size), info.num_workers)[info.id].tolist()
            if not slots:
                return
        for part in self._iter_slots(slots):
            if info is None:
                del part["slots"]
            yield part

    def _iter_slots(self, slots: list[int]) -> Iterator[dict]:
        """Yield one (part of a) batch per step for the given local slots, decoding only their videos."""
        runs, num_steps = self.plan()
        queues = {s: [r for r in runs if r.rank == self.rank and r.slot == s] for s in slots}  # by first_step
        playing: dict[int, tuple[SlotRun, FrameSource, Augment | np.ndarray | None]] = {}
        pending: dict[int, Future] = {}  # slot -> its next run's (source, augment), opened ahead
        try:
            if self.open_pool is not None:
                self._open_ahead(queues, pending, 0)
            for step in range(num_steps):
                if self.ring is not None:  # this worker's rows (a contiguous block) of a shared batch
                    rows = slice(slots[0], slots[-1] + 1)
                    buffer = self.ring[step % len(self.ring)]
                    part = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in buffer.items()}
                    part = self._clear_part({**part, "names": [None] * len(slots)}, step)
                else:
                    part = self._empty_part(slots, step)
                for i, s in enumerate(slots):
                    if s not in playing and queues[s] and queues[s][0].first_step == step:
                        run = queues[s].pop(0)
                        playing[s] = (run, *(pending.pop(s).result() if s in pending else self._start(run)))
                    if s in playing:
                        run, source, augment = playing[s]
                        self._fill(part, i, run, step - run.first_step, source, augment)
                        if step - run.first_step == run.num_chunks - 1:
                            source.close()
                            del playing[s]
                    else:  # an empty slot: zero frames (only the rows no video fills are zeroed)
                        part["x"][i].zero_()
                if self.open_pool is not None:  # after this step's starts, so that a slot's next run is free
                    self._open_ahead(queues, pending, step + 1)
                yield part if self.ring is None else {"step": step, "first": slots[0], "names": part["names"]}
        finally:  # also when the consumer stops early: close what is still open, or opened ahead
            for _, source, _ in playing.values():
                source.close()
            for future in pending.values():
                if not future.cancel():
                    with contextlib.suppress(Exception):
                        future.result()[0].close()

    def _open_ahead(self, queues: dict[int, list[SlotRun]], pending: dict[int, Future], step: int) -> None:
        """Open, in `open_pool`, each slot's next run that starts before ``step + OPEN_AHEAD`` (``step``: the
        next step to be produced)."""
        for s, queue in queues.items():
            if queue and s not in pending and queue[0].first_step < step + OPEN_AHEAD:
                pending[s] = self.open_pool.submit(self._start_ahead, queue[0])

    def _start_ahead(self, run: SlotRun) -> tuple[FrameSource, Augment | np.ndarray | None]:
        source, augment = self._start(run)
        prefetch = getattr(source, "prefetch", None)
        if prefetch is not None:
            prefetch(min(self.chunk_size, self.num_samples[run.video]))
        return source, augment

    def _start(self, run: SlotRun) -> tuple[FrameSource, Augment | np.ndarray | None]:
        video = self.videos[run.video]
        source = video.open()
        if getattr(source, "sample_rate", self.sample_rate) != self.sample_rate:
            source.close()
            raise ValueError(
                f"video {video.name!r}: its source samples every {source.sample_rate} frames, "
                f"the batcher every {self.sample_rate}; build the source with sample_rate={self.sample_rate}"
            )
        augment = None
        rng = np.random.default_rng([self.seed, self.epoch, run.video])
        if self.augment_factory is not None:
            augment = self.augment_factory(rng)
        elif self.augment_params is not None:
            augment = np.asarray(self.augment_params(rng), dtype=np.float64)
        return source, augment

    def _empty_part(self, slots: list[int], step: int) -> dict:
        m, t = len(slots), self.chunk_size
        if self.is_features:
            x = torch.empty((m, self.sample_shape[0], t), dtype=torch.float32)
        else:
            c, h, w = self.sample_shape
            x = torch.empty((m, c, t, h, w), dtype=torch.uint8 if self.uint8_frames else torch.float32,
                            device=self.frame_device)
        part = {"x": x, "labels": torch.empty((m, t), dtype=torch.int64), "mask": torch.empty((m, t)),
                "reset": torch.empty(m, dtype=torch.bool), "last": torch.empty(m, dtype=torch.bool),
                "names": [None] * m, "index": torch.empty(m, dtype=torch.int64),
                "start": torch.empty(m, dtype=torch.int64), "full_length": torch.empty(m, dtype=torch.int64),
                "slots": torch.tensor(slots, dtype=torch.int64)}
        if self.augment_params is not None:
            part["aug"] = torch.empty((m, len(IDENTITY.as_row())), dtype=torch.float64)
        return self._clear_part(part, step)

    @staticmethod
    def _clear_part(part: dict, step: int) -> dict:
        """A part's start values (ignored labels, no valid frame), set in place: for a new part and for a ring
        part whose shared memory is reused. Frames are not touched here: every row is written by `_fill`
        (which zeroes a short chunk's tail) or zeroed as an empty slot."""
        part["labels"].fill_(IGNORE_INDEX)
        part["mask"].zero_()
        part["reset"].zero_()
        part["last"].zero_()
        part["index"].fill_(-1)
        part["start"].fill_(-1)
        part["full_length"].zero_()
        part["names"] = [None] * len(part["names"])
        if "aug" in part:
            part["aug"].copy_(torch.from_numpy(IDENTITY.as_row()))
        part["step"] = step
        return part

    def _fill(self, part: dict, i: int, run: SlotRun, chunk: int, source: FrameSource,
              augment: Augment | np.ndarray | None) -> None:
        """Read chunk ``chunk`` of ``run``'s video into row ``i`` of ``part``; ``augment`` is the worker's
        augmentation, or the video's parameter row for the device (``augment_params``)."""
        video = self.videos[run.video]
        start = chunk * self.chunk_size
        n = min(self.chunk_size, self.num_samples[run.video] - start)
        data = source.read(n)
        where = getattr(source, "path", None) or getattr(source, "folder", None) or video.name
        if data.shape[0] != n:
            raise DataError(
                where,
                f"video {video.name!r} ended after {start + data.shape[0]} sampled frames; its {video.length} "
                f"labels need {self.num_samples[run.video]} (= ceil({video.length} / sample_rate {self.sample_rate}))",
            )
        if isinstance(augment, np.ndarray):
            part["aug"][i] = torch.from_numpy(augment)
        elif augment is not None:
            data = augment(data)
        if tuple(data.shape[1:]) != self.sample_shape:
            shape = tuple(data.shape[1:])
            raise DataError(where, f"samples of shape {shape}; the batcher's sample_shape is {self.sample_shape}")
        x = part["x"]
        if n < self.chunk_size:  # the video's last, short chunk: zero padding after its frames
            x[i, :, n:].zero_()
        if self.is_features:
            x[i, :, :n] = data.T
        elif self.uint8_frames:
            if data.dtype != torch.uint8:
                raise DataError(where, f"uint8_frames=True but the frames (after augmentation) are {data.dtype}")
            x[i, :, :n] = data.permute(1, 0, 2, 3)
        else:
            view = x[i, :, :n]  # (C, n, H, W), written in place
            view.copy_(data.permute(1, 0, 2, 3))  # uint8 -> float32, still on the 0..255 scale
            if data.dtype == torch.uint8:
                view.div_(255.0)
            if self.mean is not None:
                view.sub_(self._mean).div_(self._std)
        if video.labels is not None:
            sampled = video.labels[start * self.sample_rate : (start + n) * self.sample_rate : self.sample_rate]
            part["labels"][i, :n] = torch.from_numpy(sampled)
        part["mask"][i, :n] = 1.0
        part["reset"][i] = chunk == 0
        part["last"][i] = chunk == run.num_chunks - 1
        part["names"][i] = video.name
        part["index"][i] = run.video
        part["start"][i] = start
        part["full_length"][i] = video.length


def hand_over(batch: dict, side: torch.cuda.Stream | None) -> dict:
    """A batch made on the ``side`` stream, made safe for the consumer's current stream: it waits for
    the side stream's work so far (not the host), and the allocator keeps the tensors until it is done."""
    if side is None:
        return batch
    current = torch.cuda.current_stream(side.device)
    current.wait_stream(side)
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
            value.record_stream(current)
    return batch


_BATCH_KEYS = ("x", "labels", "mask", "reset", "last", "index", "start", "full_length", "aug")


def _merge(parts: list[dict]) -> dict:
    """Concatenate one step's parts (contiguous slot blocks) into the full batch."""
    parts = sorted(parts, key=lambda p: int(p["slots"][0]))
    batch = {"step": parts[0]["step"], "names": [n for p in parts for n in p["names"]]}
    for key in _BATCH_KEYS:
        if key in parts[0]:
            batch[key] = parts[0][key] if len(parts) == 1 else torch.cat([p[key] for p in parts])
    return batch


def _from_ring(ring: list[dict], tokens: list[dict], device: torch.device | None) -> dict:
    """One step's batch out of the shared ``ring``, whose rows the workers' ``tokens`` say they wrote: copied
    to ``device`` (one copy per tensor), or cloned on the host (the workers refill the buffer later)."""
    step = tokens[0]["step"]
    buffer = ring[step % len(ring)]
    batch = {"step": step, "names": [n for t in sorted(tokens, key=lambda t: t["first"]) for n in t["names"]]}
    for key in _BATCH_KEYS:
        if key in buffer:
            value = buffer[key]
            batch[key] = value.to(device, non_blocking=True) if device is not None else value.clone()
    return batch


class StreamLoader:
    """Iterates a `StreamBatcher`, decoding in the main process or in ``num_workers`` worker processes.

    With workers, worker ``w`` owns a fixed contiguous block of the ``B`` slots and decodes only those
    slots' videos (each video still opened once); the step-tagged parts are merged here in step order,
    so batches are identical for any ``num_workers`` (only ``min(num_workers, B)`` workers are started: more
    would own no slot).
    ``persistent``: the worker processes are started once and serve every epoch (`set_epoch` reaches them
    through the batcher's epoch in shared memory); otherwise a fresh DataLoader is made per epoch. Starting
    a worker forks the training process (its CUDA context, compiled graphs and all), so with short epochs
    and many workers the start-up is a visible share of each epoch (docs/benchmarks.md, issue #18).
    """

    def __init__(
        self, batcher: StreamBatcher, num_workers: int = 0, pin_memory: bool = False, prefetch_factor: int = 2,
        device: torch.device | str | None = None, persistent: bool = False,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"StreamLoader: num_workers must be >= 0, got {num_workers}")
        if num_workers > 0 and batcher.open_pool is not None:
            raise ValueError("StreamLoader: the batcher's open_pool (videos opened ahead in threads of this "
                             "process) needs num_workers=0; worker processes open their own videos")
        self.batcher, self.num_workers = batcher, num_workers
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        # device: each worker's part goes there straight from shared memory and the step is merged
        # there, saving the host two copies of every batch (merge + pin); used by the GPU pipeline
        self.device = torch.device(device) if device is not None else None
        self.persistent = persistent
        self._loader: DataLoader | None = None  # persistent: the DataLoader of the first epoch, kept
        self._ring: list[dict] | None = None  # full batches in shared memory, written by the workers

    def set_epoch(self, epoch: int) -> None:
        self.batcher.set_epoch(epoch)

    @property
    def sampler(self) -> StreamBatcher:
        """The batcher, under the name Lightning's fit loop looks for: before each training epoch it calls
        ``loader.sampler.set_epoch(epoch)`` on every train dataloader, so no engine hook is needed."""
        return self.batcher

    @property
    def dataset(self) -> StreamBatcher:
        """The batcher (an IterableDataset), under DataLoader's name: Lightning then knows not to look
        for samplers or shuffling on evaluation loaders."""
        return self.batcher

    def __len__(self) -> int:
        return len(self.batcher)

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers == 0:
            for batch in self.batcher:
                yield self._pin(batch) if self.device is None else self._to(batch)
            return
        batcher = copy.copy(self.batcher) if self._loader is None else self._loader.dataset
        batcher.worker_parts = True
        # with a CUDA device and pin_memory, DataLoader's pin thread copies each part into page-locked
        # memory beside the main thread, so the copy below is a real asynchronous DMA (from the workers'
        # pageable shared memory it is a synchronous staged copy on the main thread)
        pin = self.pin_memory and self.device is not None and self.device.type == "cuda"
        # Without the pin thread, the workers write into a ring of full batches that this process
        # allocates once in shared memory (the workers inherit it) and send only small tokens; each tensor
        # sent through the worker queue instead costs a socket connection to pass its file descriptor and a
        # merge here (docs/benchmarks.md, "Loader CPU cost"). Buffer step % R is in use from the step until
        # this loop has copied it (to the device, or cloned it on the host). DataLoader hands each worker a
        # new task only as this loop takes results, in worker order, so when step s is copied no worker is
        # past step s + prefetch_factor: a ring of R = prefetch_factor + 2 is never overwritten early. (That
        # holds while every worker has work: a worker that stops early hands its turn to the others, so
        # only workers that own a slot are started.)
        ring = not pin and (self.device is None or self.device.type != "cpu")
        if ring and self._ring is None:
            full = list(range(self.batcher.batch_size))
            self._ring = [self.batcher._empty_part(full, -1) for _ in range(self.prefetch_factor + 2)]
            for buffer in self._ring:
                for value in buffer.values():
                    if isinstance(value, torch.Tensor):
                        value.share_memory_()
        batcher.ring = self._ring if ring else None
        expected = min(self.num_workers, self.batcher.batch_size)  # workers that own at least one slot
        if self._loader is None:
            if self.persistent:
                self.batcher._epoch.share_memory_()  # before the workers fork: they read set_epoch's value
            loader = DataLoader(batcher, batch_size=None, num_workers=expected, persistent_workers=self.persistent,
                                prefetch_factor=self.prefetch_factor, pin_memory=pin)
            if self.persistent:
                self._loader = loader
        else:
            loader = self._loader
        # on a GPU, copies and merges run on a side stream, so the next batch's transfer overlaps the
        # step that the consumer's stream is running; the consumer's stream waits for it at hand-over
        side = torch.cuda.Stream(self.device) if self.device is not None and self.device.type == "cuda" else None
        on_side = (lambda: torch.cuda.stream(side)) if side is not None else contextlib.nullcontext
        pending: dict[int, list[dict]] = {}
        next_step = 0
        for part in loader:
            if self.device is not None and not ring:
                with on_side():
                    part = self._to(part)
            pending.setdefault(part["step"], []).append(part)
            while len(pending.get(next_step, ())) == expected:
                parts = pending.pop(next_step)
                with on_side():
                    merged = _from_ring(self._ring, parts, self.device) if ring else _merge(parts)
                yield self._pin(merged) if self.device is None else hand_over(merged, side)
                next_step += 1
        if pending:
            raise RuntimeError(f"StreamLoader: incomplete steps {sorted(pending)} (a worker stopped early)")

    def _to(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _pin(self, batch: dict) -> dict:
        if self.pin_memory:
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch
