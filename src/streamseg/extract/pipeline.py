"""Extraction with decoding in worker processes that overlaps the network: several videos decoded at once,
their frames handed over in blocks through a bounded prefetch queue, segments cut and batched on the device.

The in-process path (`streamseg.extract.run._Extractor`) decodes one video in a thread while the main
thread runs the network; one decoder (~1,300 frames/s of 320x240 H.264 resized to 224x224, one core)
bounds it. Here ``workers`` processes (a `torch.utils.data.DataLoader` over `BlockStream`) each take every
``workers``-th video and decode it into blocks of sampled frames, nothing more (with ``decode="i420"``
not even the colour conversion and resize: 4:2:0 planes at the video's size, 1.5 bytes a pixel). The main
process does the rest where it is cheap, on the device:

    worker k:  decode video -> uint8 blocks (n, C, H, W), n = `block` frames, each frame once
               --(shared memory; the loader's pin thread copies it to pinned memory; at most
                 prefetch_factor blocks a worker waiting: the bounded prefetch queue)-->
    main:      .to(device, non_blocking) on a side CUDA stream (the copy overlaps the network running
               on the main stream; `streamseg.data.streams.hand_over` makes the main stream wait for it)
               -> colour conversion, resize, normalisation of the block (once per frame)
               -> the video's `SegmentCutter` yields the segments the block completes (indices on the device)
               -> ``batch`` segments of any videos -> the encoder
               -> features stay on the device until the video's last segment has run -> one copy to pinned
               host memory (non_blocking, an event) -> the file is written once the copy has landed.

The host never waits for the device: nothing in the loop reads a device value, so while the network runs
the host already receives and queues the next blocks, and the network never waits for a whole video's
decode, only for the next block of any video. Segments of different videos are batched together; a batch
is padded (with its last segment) only at the very end. With ``batch = 1`` each network run sees exactly
the tensor the in-process path gives it, so features are bit-identical to it (tests/extract/test_pipeline.py);
with ``batch > 1`` they agree to float rounding. Flow (consecutive frames across segments) and stateful
encoders (a trained run's) need one video in order, and stay on the in-process path.

``timing`` (`run_pipeline`) says what bounded a run: seconds the loop waited for the loader (input-bound),
seconds until the first block came (worker start and first decode), and the device's busy seconds in the
network and in the frame preparation (CUDA events; on a CPU, the host's seconds in those calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data.streams import hand_over
from ..data.video import VideoFileSource
from .frames import SegmentCutter, i420_to_rgb

__all__ = ["BlockStream", "run_pipeline"]

PREFETCH = 4
"""Blocks each worker may have decoded ahead of the main loop (the DataLoader's ``prefetch_factor``): with
64-frame blocks of 320x240 I420 (115 KB a frame), 4 x 7.4 MB a worker, enough to ride out the main loop
spending one network run (~25 ms for 4 dense S3D segments on an H100) not receiving."""


def block_frames(step: int) -> int:
    """Sampled frames per block a worker sends: one encoder step, at least 32 (a block per handed-over item
    costs a shared-memory segment, a pin copy and a host-to-device copy: fewer, bigger blocks cost less)."""
    return max(step, 32)


class BlockStream(IterableDataset):
    """Items ``(video index, frames uint8 (n, C, H, W) or None, info)`` of the videos ``videos``
    (``[(index, path)]``), worker ``k`` of ``n`` taking videos ``k, k + n, ...``. A video's blocks come in order,
    ``block`` sampled frames each (fewer only at its end; ``info``: the i420 ``(height, width, colour)``, else
    None), then one item with ``frames=None`` and ``info = {"frames", "fps"}`` or, when it failed,
    ``{"error": message}``."""

    def __init__(self, videos: list[tuple[int, Path]], sample_rate: int, size: tuple[int, int], block: int,
                 decode: str) -> None:
        self.videos, self.sample_rate, self.size, self.block, self.decode = videos, sample_rate, size, block, decode

    def __iter__(self) -> Iterator[tuple[int, Tensor | None, Any]]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        torch.set_num_threads(1)  # one core per decoder: the resize would otherwise spin threads per worker
        for index, path in self.videos[k::n]:
            try:
                if self.decode == "i420":
                    source = VideoFileSource(path, self.sample_rate, None, pixel_path="i420")
                else:
                    source = VideoFileSource(path, self.sample_rate, self.size)
                with source:
                    colour = (source.height, source.width, tuple(source.colour)) if self.decode == "i420" else None
                    while (frames := source.read(self.block)).shape[0]:
                        yield index, frames, colour
                        if frames.shape[0] < self.block:
                            break
                    end = {"frames": source.num_frames, "fps": source.fps}
            except (ValueError, OSError, RuntimeError) as e:
                msg = str(e)
                end = {"error": msg if str(path) in msg else f"{path}: {msg}"}
            except Exception as e:  # PyAV's own errors (av.error.*) are OSErrors; anything else, named
                end = {"error": f"{path}: {type(e).__name__}: {e}"}
            yield index, None, end


class _Pending:
    """A video's features on their way to the host: the device->host copy runs while the device works on."""

    def __init__(self, chunks: list[Tensor], device: torch.device) -> None:
        features = torch.cat(chunks)  # (sampled, D) float32 on the device
        if device.type == "cuda":
            self.host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
            self.host.copy_(features, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = features, None

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def result(self) -> Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.host


class _Clock:
    """Busy seconds of the work between `start` and `stop` under one name: CUDA events on a GPU, the host's
    clock elsewhere (the work is done when the call returns). Events are never waited for before
    `seconds`: every `FOLD_EVERY` spans of a name, the leading ones whose end event has completed
    (``query``, no wait) are added up and released, so an extraction of any length keeps at most the
    spans the device has not reached yet plus `FOLD_EVERY`, not two events per network run forever."""

    FOLD_EVERY = 64

    def __init__(self, device: torch.device, event: Callable[[], Any] | None = None) -> None:
        self.cuda = device.type == "cuda"
        self._event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self.spans: dict[str, list] = {}  # name -> spans not added up yet: (start, end) events, or seconds
        self.folded: dict[str, float] = {}  # name -> seconds of the spans already added up

    def start(self) -> Any:
        if self.cuda:
            event = self._event()
            event.record()
            return event
        return time.perf_counter()

    def stop(self, name: str, began: Any) -> None:
        if self.cuda:
            end = self._event()
            end.record()
            pending = self.spans.setdefault(name, [])
            pending.append((began, end))
            if len(pending) % self.FOLD_EVERY == 0:
                self._fold(name)
        else:
            self.spans.setdefault(name, []).append(time.perf_counter() - began)

    def _fold(self, name: str) -> None:
        """Add up the leading spans whose end has completed (one stream: they complete in order)."""
        pending = self.spans[name]
        done = 0
        for began, end in pending:
            if not end.query():
                break
            self.folded[name] = self.folded.get(name, 0.0) + began.elapsed_time(end) / 1e3
            done += 1
        del pending[:done]

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            for name in self.spans:
                self._fold(name)
            return {k: self.folded.get(k, 0.0) for k in self.spans}
        return {k: float(sum(v)) for k, v in self.spans.items()}


@dataclass
class _Video:
    cutter: SegmentCutter
    chunks: list[Tensor] = field(default_factory=list)  # its features so far, (count, D) each, on the device
    queued: int = 0  # its segments waiting for a network run
    end: dict[str, Any] | None = None  # the worker's end item (frames, fps) once its last block came


def run_pipeline(extractor, videos: list[tuple[int, Path]], workers: int, batch: int,
                 done: Callable[[int, np.ndarray | None, float, str | None], None],
                 timing: dict[str, float] | None = None) -> None:
    """Extract ``videos`` (``[(index, path)]``) with ``extractor`` (`run._Extractor`: its encoder, device,
    dtype, sample rate, decode) and ``workers`` decoding processes, ``batch`` segments per network run.
    Calls ``done(index, features (D, T) float32 or None, fps, error)`` once per video as it completes.
    ``timing``, when given, is filled with ``seconds`` (the whole call), ``first_block_s``, ``input_wait_s``
    (the loop waiting for the loader), ``network_s`` and ``prepare_s`` (device busy: module docstring),
    ``runs`` and ``padded`` (network runs, and padding segments in them)."""
    if not videos:  # all done already (a resumed run)
        return
    t0 = time.perf_counter()
    enc, device = extractor.rgb, extractor.device
    cuda = device.type == "cuda"
    stream = BlockStream(videos, extractor.sample_rate, enc.size, block_frames(enc.step), extractor.decode)
    workers = min(workers, len(videos))  # a worker without a video would only cost its start
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=cuda, prefetch_factor=PREFETCH)
    side = torch.cuda.Stream(device) if cuda else None  # host->device copies, beside the network's stream
    mean = torch.tensor(enc.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(enc.std, device=device).view(1, -1, 1, 1)
    converters: dict[str, Callable[[Tensor], Tensor]] = {}
    state: dict[int, _Video] = {}
    pending: list[tuple[int, _Pending, dict[str, Any]]] = []
    queued: list[tuple[int, Tensor, int]] = []  # (video, normalised segment on the device, count)
    failed: set[int] = set()
    clock = _Clock(device)
    stats = {"first_block_s": 0.0, "input_wait_s": 0.0, "runs": 0, "padded": 0}

    def prepare(frames: Tensor, colour) -> Tensor:
        """``uint8 (n, C, H, W)`` block on the host -> the encoder's input on the device, as
        `frames.device_reader` makes it (the same operations, so the same bits)."""
        if side is not None:
            with torch.cuda.stream(side):
                frames = frames.to(device, non_blocking=True)
            frames = hand_over({"x": frames}, side)["x"]
        else:
            frames = frames.to(device)
        began = clock.start()
        if colour is None:
            rgb = frames.float()
        else:
            key = repr(colour)  # the loader hands tuples over as lists
            if key not in converters:
                converters[key] = i420_to_rgb(colour[0], colour[1], enc.size, tuple(colour[2]))
            rgb = converters[key](frames)
        out = (rgb / 255.0 - mean) / std
        clock.stop("prepare_s", began)
        return out

    def run_batch() -> None:
        if not queued:
            return
        rows = [segment for _, segment, _ in queued]
        stats["runs"] += 1
        stats["padded"] += batch - len(rows)
        if len(rows) < batch:  # one shape for every run (cuDNN plans once): pad with the last segment
            rows += [rows[-1]] * (batch - len(rows))
        began = clock.start()
        out = enc.forward_batch(torch.stack(rows) if batch > 1 else rows[0][None])  # (batch, step, D)
        clock.stop("network_s", began)
        finished = []
        for (video, _, count), features in zip(queued, out):
            v = state[video]
            v.chunks.append(features[:count].float())
            v.queued -= 1
            if v.end is not None and not v.queued:
                finished.append(video)
        queued.clear()
        for video in finished:
            hand_to_host(video)

    def queue(video: int, cut: Iterator[tuple[tuple[Tensor, ...], int]]) -> None:
        for (segment,), count in cut:
            queued.append((video, segment, count))
            state[video].queued += 1
            if len(queued) == batch:
                run_batch()

    def hand_to_host(video: int) -> None:
        v = state.pop(video)
        pending.append((video, _Pending(v.chunks, device), v.end))
        flush_ready(wait=False)

    def fail(video: int, error: str) -> None:
        failed.add(video)
        queued[:] = [q for q in queued if q[0] != video]
        state.pop(video, None)
        done(video, None, 0.0, error)

    def flush_ready(wait: bool) -> None:
        keep = []
        for video, copy, info in pending:
            if wait or copy.ready():
                _finish(video, copy.result(), info)
            else:
                keep.append((video, copy, info))
        pending[:] = keep

    def _finish(video: int, sampled: Tensor, info: dict[str, Any]) -> None:
        rate, frames = extractor.sample_rate, info["frames"]
        if sampled.shape[0] != -(-frames // rate):
            done(video, None, 0.0, f"{sampled.shape[0]} sampled frames decoded, the video has {frames} frames")
            return
        full = sampled.repeat_interleave(rate, dim=0)[:frames]
        done(video, np.ascontiguousarray(full.T.numpy(), dtype=np.float32), info["fps"], None)

    with torch.inference_mode(), torch.autocast(device.type, dtype=extractor.dtype,
                                                enabled=extractor.dtype != torch.float32):
        items = iter(loader)
        while True:
            waited = time.perf_counter()
            item = next(items, None)
            now = time.perf_counter()
            stats["input_wait_s"] += now - waited
            if not stats["first_block_s"]:
                stats["first_block_s"] = now - t0
            if item is None:
                break
            video, frames, info = item
            if video in failed:
                continue
            v = state.setdefault(video, _Video(SegmentCutter(enc.step, enc.left, enc.right)))
            if frames is not None:
                v.cutter.push((prepare(frames, info),))
                queue(video, v.cutter.cut(ended=False))
            elif "error" in info:
                fail(video, info["error"])
            else:
                if v.cutter.empty:  # tested first: a ValueError inside queue() may come from another video's batch
                    fail(video, "no frames decoded (empty video)")
                    continue
                queue(video, v.cutter.cut(ended=True))
                v.end = info
                if not v.queued:
                    hand_to_host(video)
        run_batch()
        flush_ready(wait=True)
    if timing is not None:
        timing.update(stats, **clock.seconds(), seconds=time.perf_counter() - t0)
