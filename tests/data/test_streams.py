"""The stream sampler: slot refill, flags and masks, DDP sharding, determinism, per-video augmentation."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from streamseg.data.errors import DataError
from streamseg.data.streams import (
    IGNORE_INDEX,
    StreamBatcher,
    StreamLoader,
    StreamVideo,
    packed_order,
    plan_epoch,
    normalize_frames,
    upsample_to_full,
)
from streamseg.data.video import VideoFileSource

OPENS: Counter[str] = Counter()  # FakeSource opens in this process


class FakeSource:
    """In-memory frames: channel 0 = original frame index, channel 1 = video id (uint8, (n, 3, 2, 2))."""

    def __init__(self, vid: int, length: int, sample_rate: int) -> None:
        OPENS[f"v{vid}"] += 1
        self.vid, self.num_frames, self.sample_rate, self.fps = vid, length, sample_rate, 25.0
        self._next = 0

    def read(self, n: int) -> torch.Tensor:
        idx = torch.arange(self._next, self.num_frames, self.sample_rate)[:n]
        self._next = int(idx[-1]) + self.sample_rate if len(idx) else self.num_frames
        frames = torch.zeros((len(idx), 3, 2, 2), dtype=torch.uint8)
        frames[:, 0] = idx.view(-1, 1, 1).to(torch.uint8)
        frames[:, 1] = self.vid
        return frames

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fake_videos(lengths: list[int], sample_rate: int = 1) -> list[StreamVideo]:
    return [
        StreamVideo(f"v{i}", functools.partial(FakeSource, i, n, sample_rate), labels=np.arange(n) % 7)
        for i, n in enumerate(lengths)
    ]


def batches(batcher: StreamBatcher, num_workers: int = 0) -> list[dict]:
    return list(StreamLoader(batcher, num_workers=num_workers))


def test_plan_refills_slots_and_balances_ranks():
    runs, steps = plan_epoch([3, 1, 1, 2], order=[0, 1, 2, 3], batch_size=2)
    assert [(r.video, r.slot, r.first_step) for r in runs] == [(0, 0, 0), (1, 1, 0), (2, 1, 1), (3, 1, 2)]
    assert steps == 4  # lockstep batching would take 3 + 2 = 5 steps
    runs, steps = plan_epoch([5, 5, 1, 1, 1, 1], order=range(6), batch_size=1, world_size=2)
    assert [r.rank for r in runs[:2]] == [0, 1] and steps == 7  # ranks 0 and 1 each get two short ones


def test_flags_masks_labels_and_refill():
    # sample rate 2, chunk 3: v0 has 10 frames -> 5 samples -> chunks of 3 + 2; v1 4 -> 2 samples; v2 5 -> 3
    videos = fake_videos([10, 4, 5], sample_rate=2)
    out = batches(StreamBatcher(videos, batch_size=2, chunk_size=3, sample_shape=(3, 2, 2), sample_rate=2))
    assert len(out) == 2
    b0, b1 = out
    assert b0["names"] == ["v0", "v1"] and b1["names"] == ["v0", "v2"]  # slot 1 refilled at once
    assert b0["reset"].tolist() == [True, True] and b0["last"].tolist() == [False, True]
    assert b1["reset"].tolist() == [False, True] and b1["last"].tolist() == [True, True]
    assert b0["mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b1["mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b1["start"].tolist() == [3, 0] and b1["full_length"].tolist() == [10, 5]
    # x is (B, C, T, H, W) in [0, 1]; channel 0 holds the original frame index: samples 6, 8 of v0
    assert b1["x"].shape == (2, 3, 3, 2, 2) and b1["x"].dtype == torch.float32
    assert (b1["x"][0, 0, :2, 0, 0] * 255).round().tolist() == [6, 8]
    assert b1["labels"][0].tolist() == [6 % 7, 8 % 7, IGNORE_INDEX]
    assert b0["labels"][1].tolist() == [0, 2, IGNORE_INDEX]
    assert (b1["x"][0, :, 2] == 0).all()  # padded frame


def test_empty_slots_pad_until_all_finish():
    videos = fake_videos([12, 2])
    out = batches(StreamBatcher(videos, batch_size=2, chunk_size=4, sample_shape=(3, 2, 2)))
    assert [b["names"] for b in out] == [["v0", "v1"], ["v0", None], ["v0", None]]
    assert out[1]["mask"][1].sum() == 0 and (out[1]["labels"][1] == IGNORE_INDEX).all()
    assert out[1]["start"][1] == -1 and not out[1]["reset"][1] and not out[1]["last"][1]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 2])
def test_padded_frames_are_zero_also_in_reused_ring_buffers(workers):
    """Frames where ``mask`` is 0 (a short last chunk's tail, an empty slot) are zero, also when a worker
    reuses a ring buffer that held a video's frames a few steps before."""
    videos = fake_videos([9, 14, 5, 30, 7, 3])  # FakeSource frames: channel 1 is the video id + 0
    kw = dict(batch_size=3, chunk_size=4, sample_shape=(3, 2, 2), uint8_frames=True)
    out = list(StreamLoader(StreamBatcher(videos, **kw), num_workers=workers))
    pads = [b["x"][i, :, t] for b in out for i in range(3) for t in range(4) if b["mask"][i, t] == 0]
    real = [b["x"][i, 1, t] for b in out for i in range(3) for t in range(4) if b["mask"][i, t] == 1]
    assert len(pads) > 10 and all((p == 0).all() for p in pads)
    assert sorted({int(r[0, 0]) for r in real}) == list(range(len(videos)))  # the frames themselves are there


def coverage(videos, world_size, **kw) -> tuple[list[int], Counter]:
    """(batches per rank, count of each (video, sampled frame) over all ranks)."""
    counts, seen = [], Counter()
    for rank in range(world_size):
        batcher = StreamBatcher(videos, sample_shape=(3, 2, 2), rank=rank, world_size=world_size, **kw)
        out = batches(batcher)
        assert len(out) == len(batcher)
        counts.append(len(out))
        for b in out:
            for i, name in enumerate(b["names"]):
                if name is not None:
                    for t in range(int(b["mask"][i].sum())):
                        seen[name, int(b["start"][i]) + t] += 1
    return counts, seen


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_covers_every_video_exactly_once_over_ranks(world_size):
    lengths = [9, 3, 17, 1, 6, 11, 4]
    videos = fake_videos(lengths, sample_rate=2)
    counts, seen = coverage(videos, world_size, batch_size=2, chunk_size=3, sample_rate=2, longest_first=True)
    expected = Counter({(f"v{i}", t): 1 for i, n in enumerate(lengths) for t in range((n + 1) // 2)})
    assert seen == expected
    assert len(set(counts)) == 1


def test_training_ranks_yield_equal_batch_counts():
    lengths = [50, 3, 3, 3, 3, 3, 40, 2]
    videos = fake_videos(lengths)
    for epoch in range(3):
        counts, seen = coverage(videos, 3, batch_size=1, chunk_size=4, shuffle=True, seed=5)
        assert len(set(counts)) == 1
        assert sum(seen.values()) == sum(lengths)


def test_order_depends_on_seed_and_epoch_only():
    videos = fake_videos([5] * 8)
    batcher = StreamBatcher(videos, batch_size=2, chunk_size=5, sample_shape=(3, 2, 2), shuffle=True, seed=1)
    first = [b["names"] for b in batches(batcher)]
    assert first == [b["names"] for b in batches(batcher)]
    batcher.set_epoch(1)
    assert first != [b["names"] for b in batches(batcher)]


# chunk counts of `data synth`'s 48 training videos at chunk 32 (lengths 278-600 frames)
SYNTH_CHUNKS = [9, 19, 14, 12, 16, 10, 17, 13, 19, 9, 15, 11, 12, 18, 14, 10, 16, 13, 19, 9, 11, 15, 17, 12,
                14, 10, 18, 16, 9, 13, 11, 19, 15, 12, 17, 10, 14, 16, 13, 18, 9, 11, 15, 12, 17, 14, 10, 16]


@pytest.mark.parametrize("world_size", [1, 2])
def test_packed_order_leaves_fewer_idle_slots_than_a_plain_shuffle(world_size):
    bound = -(-sum(SYNTH_CHUNKS) // (16 // world_size * world_size))  # every slot busy to the end
    packed, plain = [], []
    for epoch in range(4):
        order = packed_order(SYNTH_CHUNKS, np.random.default_rng([0, epoch]), 16 // world_size, world_size)
        assert sorted(order) == list(range(len(SYNTH_CHUNKS)))
        packed.append(plan_epoch(SYNTH_CHUNKS, order, 16 // world_size, world_size)[1])
        shuffled = np.random.default_rng([0, epoch]).permutation(len(SYNTH_CHUNKS)).tolist()
        plain.append(plan_epoch(SYNTH_CHUNKS, shuffled, 16 // world_size, world_size)[1])
    assert packed == [bound] * 4  # this length mix packs perfectly
    assert min(plain) > bound


def test_packed_order_is_still_a_shuffle_per_seed_and_epoch():
    orders = {(seed, epoch): tuple(packed_order(SYNTH_CHUNKS, np.random.default_rng([seed, epoch]), 16))
              for seed in range(2) for epoch in range(3)}
    assert len(set(orders.values())) == len(orders)  # no fixed longest-first order
    assert tuple(packed_order(SYNTH_CHUNKS, np.random.default_rng([1, 2]), 16)) == orders[(1, 2)]
    by_length = tuple(sorted(range(len(SYNTH_CHUNKS)), key=lambda i: -SYNTH_CHUNKS[i]))
    assert by_length not in orders.values()


def test_packed_batcher_plays_every_video_once_in_fewer_steps():
    lengths = [c * 4 - 1 for c in SYNTH_CHUNKS]  # chunk 4: the same chunk counts
    videos = fake_videos(lengths)
    kw = dict(batch_size=16, chunk_size=4, sample_shape=(3, 2, 2), shuffle=True, seed=3)
    packed = StreamBatcher(videos, pack=True, **kw)
    plain = StreamBatcher(videos, **kw)
    seen = Counter(n for b in batches(packed) for n in b["names"] if n is not None)
    assert seen == Counter({v.name: c for v, c in zip(videos, SYNTH_CHUNKS)})
    assert len(packed) < len(plain)
    assert packed.order() != plain.order()


def test_lightning_sets_the_epoch_through_loader_sampler():
    # the fit loop calls this on each train dataloader before every epoch (after which it calls iter())
    from lightning_fabric.utilities.data import _set_sampler_epoch

    batcher = StreamBatcher(fake_videos([5] * 4), batch_size=2, chunk_size=5, sample_shape=(3, 2, 2), shuffle=True)
    _set_sampler_epoch(StreamLoader(batcher), 3)
    assert batcher.epoch == 3


class OffsetAugment:
    """Per-video augmentation: one offset (drawn once) added to channel 2 of every frame."""

    def __call__(self, rng: np.random.Generator):
        offset = int(rng.integers(1, 200))

        def apply(frames: torch.Tensor) -> torch.Tensor:
            out = frames.clone()
            out[:, 2] += offset
            return out

        return apply


def test_augmentation_drawn_once_per_video():
    videos = fake_videos([13, 9, 20, 5])
    batcher = StreamBatcher(videos, batch_size=2, chunk_size=3, sample_shape=(3, 2, 2), augment_factory=OffsetAugment())
    offsets: dict[str, set[int]] = {}
    for b in batches(batcher):
        for i, name in enumerate(b["names"]):
            n = int(b["mask"][i].sum())
            if name is not None:
                values = (b["x"][i, 2, :n] * 255).round().long().unique().tolist()
                offsets.setdefault(name, set()).update(values)
    assert all(len(v) == 1 for v in offsets.values())  # same offset in every chunk of a video
    assert len({next(iter(v)) for v in offsets.values()}) > 1  # but drawn anew per video


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize(("workers", "slots"), [(2, 3), (3, 2), (1, 2)])  # (3, 2): one worker owns no slot
def test_batches_identical_for_any_number_of_workers(workers, slots):
    videos = fake_videos([13, 9, 20, 5, 7, 30], sample_rate=2)
    kw = dict(batch_size=slots, chunk_size=4, sample_shape=(3, 2, 2), sample_rate=2, shuffle=True, seed=3,
              augment_factory=OffsetAugment(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    batcher = StreamBatcher(videos, **kw)
    batcher.set_epoch(2)
    ref, par = batches(batcher, 0), batches(batcher, workers)
    assert len(ref) == len(par) == len(batcher)
    for a, b in zip(ref, par):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [1, 2])
def test_reused_worker_buffers_are_not_overwritten_under_a_slow_consumer(workers):
    """Workers refill a ring of shared-memory parts; with a consumer slower than decoding they run as far
    ahead as DataLoader lets them, and every batch must still be the one the main process would make
    (and stay so while the consumer keeps it)."""
    import time

    videos = fake_videos([40, 33, 52, 25, 47, 30])
    kw = dict(batch_size=2, chunk_size=3, sample_shape=(3, 2, 2), uint8_frames=True)
    ref = batches(StreamBatcher(videos, **kw))
    kept = []
    for batch in StreamLoader(StreamBatcher(videos, **kw), num_workers=workers, prefetch_factor=2):
        time.sleep(0.02)
        kept.append(batch)
    assert len(kept) == len(ref) > 8
    for a, b in zip(ref, kept):
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_write_into_the_shared_ring_and_send_no_tensors(monkeypatch):
    """The workers write their rows of a ring of full batches that the main process allocated once in
    shared memory, and send only tokens (step, first slot, names): a tensor sent through the worker queue
    costs the main process a socket connection per tensor to receive its file descriptor."""
    import streamseg.data.streams as streams

    tokens = []

    def spy(ring, parts, device):
        tokens.extend(parts)
        return from_ring(ring, parts, device)

    from_ring = streams._from_ring
    monkeypatch.setattr(streams, "_from_ring", spy)
    videos = fake_videos([40, 33, 52, 25, 47, 30])
    kw = dict(batch_size=3, chunk_size=3, sample_shape=(3, 2, 2), uint8_frames=True)
    ref = batches(StreamBatcher(videos, **kw))
    loader = StreamLoader(StreamBatcher(videos, **kw), num_workers=2, prefetch_factor=2)
    for epoch in (0, 1):  # the second epoch's workers reuse the first one's ring
        got = list(loader)
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert a["names"] == b["names"]
            assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert len(tokens) == 2 * 2 * len(ref) and {t["first"] for t in tokens} == {0, 2}
    assert not [v for t in tokens for v in t.values() if isinstance(v, torch.Tensor)]
    assert len(loader._ring) == 4 and all(b["x"].is_shared() and b["x"].shape[0] == 3 for b in loader._ring)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_only_workers_that_own_a_slot_are_started():
    """More workers than slots: the extra ones would stop at once and hand their turns to the others,
    which could then run further ahead than the shared ring allows; they are not started."""
    videos = fake_videos([13, 9, 20, 5])
    kw = dict(batch_size=2, chunk_size=4, sample_shape=(3, 2, 2), uint8_frames=True)
    loader = StreamLoader(StreamBatcher(videos, **kw), num_workers=5, persistent=True)
    got, ref = list(loader), batches(StreamBatcher(videos, **kw))
    assert len(loader._loader._iterator._workers) == 2
    assert [b["names"] for b in got] == [b["names"] for b in ref]
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(got, ref))


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_worker_batches_reach_the_gpu_intact_through_the_side_stream():
    """Parts are copied and merged on a side CUDA stream; the consumer's stream waits for it at hand-over,
    so a consumer that works on each batch at once (here: a slow kernel queued first) reads complete data."""
    videos = fake_videos([40, 33, 52, 25, 47, 30])
    kw = dict(batch_size=4, chunk_size=3, sample_shape=(3, 2, 2), uint8_frames=True)
    ref = batches(StreamBatcher(videos, **kw))
    busy = torch.randn(2048, 2048, device="cuda")
    got = []
    for batch in StreamLoader(StreamBatcher(videos, **kw), num_workers=2, device="cuda"):
        busy = busy @ busy / 2048  # keeps the consumer's stream busy while the next copy is queued
        got.append({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_plain_dataloader_with_workers_is_refused(monkeypatch):
    # inside a DataLoader worker (simulated) without StreamLoader, parts of batches would leak out
    import streamseg.data.streams as streams

    monkeypatch.setattr(streams, "get_worker_info", lambda: SimpleNamespace(id=0, num_workers=2))
    batcher = StreamBatcher(fake_videos([4]), batch_size=1, chunk_size=2, sample_shape=(3, 2, 2))
    with pytest.raises(RuntimeError, match="StreamLoader"):
        next(iter(batcher))


def test_features_batch_shape():
    feats = np.arange(5 * 11, dtype=np.float32).reshape(5, 11)

    class ArraySource:
        sample_rate, fps, num_frames = 1, 0.0, 11

        def __init__(self):
            self.pos = 0

        def read(self, n):
            out = torch.from_numpy(feats[:, self.pos : self.pos + n].T.copy())
            self.pos += len(out)
            return out

        def close(self):
            pass

    videos = [StreamVideo("f", ArraySource, labels=np.zeros(11, np.int64))]
    out = batches(StreamBatcher(videos, batch_size=1, chunk_size=8, sample_shape=(5,)))
    assert [tuple(b["x"].shape) for b in out] == [(1, 5, 8), (1, 5, 8)]
    np.testing.assert_array_equal(out[1]["x"][0, :, :3].numpy(), feats[:, 8:])
    assert (out[1]["x"][0, :, 3:] == 0).all()


def test_normalisation_and_uint8_frames():
    videos = fake_videos([3])
    kw = dict(batch_size=1, chunk_size=3, sample_shape=(3, 2, 2))
    x8 = batches(StreamBatcher(videos, uint8_frames=True, **kw))[0]["x"]
    assert x8.dtype == torch.uint8 and x8[0, 0, :, 0, 0].tolist() == [0, 1, 2]
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.5, 2.0)
    xf = batches(StreamBatcher(videos, mean=mean, std=std, **kw))[0]["x"]
    assert torch.allclose(xf, normalize_frames(x8, mean, std))
    assert torch.allclose(xf[0, 2], torch.full_like(xf[0, 2], (0 - 0.3) / 2.0))


def test_source_shorter_than_labels_names_the_video():
    short = StreamVideo("short", functools.partial(FakeSource, 0, 5, 1), labels=np.zeros(9, np.int64))
    with pytest.raises(DataError, match="'short' ended after 5 sampled frames; its 9 labels need 9"):
        batches(StreamBatcher([short], batch_size=1, chunk_size=4, sample_shape=(3, 2, 2)))


def test_source_with_other_sample_rate_is_refused():
    video = StreamVideo("v", functools.partial(FakeSource, 0, 5, 2), labels=np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="sample_rate=1"):
        batches(StreamBatcher([video], batch_size=1, chunk_size=4, sample_shape=(3, 2, 2)))


def test_upsample_to_full():
    assert upsample_to_full(torch.tensor([1, 2, 3]), 2, 5).tolist() == [1, 1, 2, 2, 3]
    assert upsample_to_full(torch.tensor([1, 2]), 2, 6).tolist() == [1, 1, 2, 2, 2, 2]
    assert upsample_to_full(np.array([4, 5]), 3, 4).tolist() == [4, 4, 4, 5]


def write_clip(path: Path, n: int) -> Path:
    """Grey 32x32 mpeg4 frames whose level encodes the frame index (8 + 8 * i)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(n):
            image = np.full((32, 32, 3), 8 + 8 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_video_files_opened_once_per_pass(tmp_path):
    lengths = [11, 5, 8]
    clips = [write_clip(tmp_path / f"c{i}.mp4", n) for i, n in enumerate(lengths)]
    videos = [
        StreamVideo(c.stem, functools.partial(VideoFileSource, c, 2, (16, 16)), labels=np.arange(n))
        for c, n in zip(clips, lengths)
    ]
    batcher = StreamBatcher(videos, batch_size=2, chunk_size=2, sample_shape=(3, 16, 16), sample_rate=2,
                            uint8_frames=True)
    before = Counter(VideoFileSource.opens)
    frames: dict[str, list[int]] = {}
    for b in batches(batcher):
        for i, name in enumerate(b["names"]):
            if name is not None:
                n = int(b["mask"][i].sum())
                levels = b["x"][i, 0, :n, 8, 8].float()
                frames.setdefault(name, []).extend(((levels - 8) / 8).round().long().tolist())
    assert {c: VideoFileSource.opens[str(c)] - before[str(c)] for c in clips} == {c: 1 for c in clips}
    assert frames == {f"c{i}": list(range(0, n, 2)) for i, n in enumerate(lengths)}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_persistent_workers_serve_every_epoch_with_its_own_order_and_augmentation():
    """`StreamLoader(persistent=True)` starts its workers once; `set_epoch` reaches them through shared
    memory, so each epoch's batches equal the in-process ones of that epoch (order and draws change with
    the epoch), and the same worker processes made them."""
    import os

    videos = fake_videos([13, 9, 20, 5, 7, 30])
    kw = dict(batch_size=3, chunk_size=4, sample_shape=(3, 2, 2), shuffle=True, seed=3, augment_factory=OffsetAugment())
    loader = StreamLoader(StreamBatcher(videos, **kw), num_workers=2, persistent=True)
    reference = StreamBatcher(videos, **kw)
    pids = []
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        got, ref = list(loader), batches(reference)
        assert [b["names"] for b in got] == [b["names"] for b in ref]
        for a, b in zip(got, ref):
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["labels"], b["labels"])
        pids.append(sorted(w.pid for w in loader._loader._iterator._workers))
    assert pids[0] == pids[1] == pids[2] and os.getpid() not in pids[0]
    orders = {tuple(n for b in batches(reference) for n in b["names"]) for e in (0, 1, 2) if not reference.set_epoch(e)}
    assert len(orders) > 1  # the epochs really differ


class _NowExecutor:
    """An executor that runs each task at once, recording how many batches the consumer had by then."""

    def __init__(self, received: list) -> None:
        self.received, self.when = received, []

    def submit(self, fn, *args):
        from concurrent.futures import Future

        self.when.append((args[0].video, len(self.received)))
        future = Future()
        future.set_result(fn(*args))
        return future


def test_open_pool_opens_each_video_a_step_before_its_first_chunk_with_the_same_batches():
    # in-process decoding (NVDEC): a slot's next video is opened while the step before it is produced, so
    # its decoder's creation and first chunk do not stall the step that needs it
    from streamseg.data.streams import OPEN_AHEAD

    lengths = [10, 4, 5, 7, 3, 6]
    plain = batches(StreamBatcher(fake_videos(lengths), batch_size=2, chunk_size=3, sample_shape=(3, 2, 2)))
    batcher = StreamBatcher(fake_videos(lengths), batch_size=2, chunk_size=3, sample_shape=(3, 2, 2))
    received: list = []
    batcher.open_pool = _NowExecutor(received)
    for batch in StreamLoader(batcher, num_workers=0):
        received.append(batch)
    assert len(received) == len(plain)
    for got, want in zip(received, plain):
        assert got["names"] == want["names"]
        for key in ("x", "labels", "mask", "reset", "last", "index", "start"):
            assert torch.equal(got[key], want[key]), key
    first = {r.video: r.first_step for r in batcher.plan()[0]}
    assert sorted(v for v, _ in batcher.open_pool.when) == list(range(len(lengths)))  # each opened once, ahead
    for video, had in batcher.open_pool.when:
        assert had == max(first[video] - OPEN_AHEAD, 0), (video, had, first[video])


def test_videos_opened_ahead_are_closed_when_the_consumer_stops_early():
    closed: list[int] = []

    class Closing(FakeSource):
        def close(self) -> None:
            closed.append(self.vid)

    videos = [StreamVideo(f"v{i}", functools.partial(Closing, i, n, 1), length=n) for i, n in enumerate([6, 3, 9, 3])]
    batcher = StreamBatcher(videos, batch_size=2, chunk_size=3, sample_shape=(3, 2, 2))
    batcher.open_pool = _NowExecutor([])
    it = iter(StreamLoader(batcher, num_workers=0))
    next(it)  # step 0: v0 and v1 play; v2 (slot 1, step 1) is already opened ahead
    it.close()
    assert sorted(closed) == [0, 1, 2]


def test_a_source_opened_ahead_is_asked_to_prefetch_its_first_chunk():
    asked: list[tuple[int, int]] = []

    class Prefetching(FakeSource):
        def prefetch(self, n: int) -> None:
            asked.append((self.vid, n))

    videos = [StreamVideo(f"v{i}", functools.partial(Prefetching, i, n, 1), length=n) for i, n in enumerate([6, 2, 9])]
    batcher = StreamBatcher(videos, batch_size=2, chunk_size=3, sample_shape=(3, 2, 2))
    batcher.open_pool = _NowExecutor([])
    batches(batcher)
    assert sorted(asked) == [(0, 3), (1, 2), (2, 3)]  # the first chunk's length: v1 has only 2 samples


def test_open_pool_is_refused_with_worker_processes():
    batcher = StreamBatcher(fake_videos([6, 3]), batch_size=2, chunk_size=3, sample_shape=(3, 2, 2))
    batcher.open_pool = _NowExecutor([])
    with pytest.raises(ValueError, match="open_pool .* needs num_workers=0"):
        StreamLoader(batcher, num_workers=2)
