"""Extraction with decoding in worker processes: several videos decoded at once, their segments batched into
one network run, features copied to the host once per video without stalling the device.

The in-process path (`streamseg.extract.run._Extractor`) decodes one video in a thread while the main
thread runs the network; one decoder (~1,300 frames/s of 320x240 H.264 resized to 224x224, one core)
bounds it. Here ``workers`` processes (a `torch.utils.data.DataLoader` over an `IterableDataset`) each take
every ``workers``-th video, decode it and cut it into the encoder's segments (`frames.segments`, on
``uint8`` frames), so the main process only copies segments to the device (from pinned memory,
``non_blocking``), converts and normalises them there, and runs the network:

    worker k:  decode video -> uint8 segments (L, C, H, W) --(shared memory, pinned)-->
    main:      .to(device, non_blocking) -> normalise -> encoder on ``batch`` segments at once
               -> features stay on the device until the video's last segment -> one copy to pinned host
               memory (non_blocking, an event) -> the file is written once the copy has landed.

Segments of different videos arrive interleaved (the workers in turn) and are batched together: with
``batch = 1`` each network run sees exactly the tensor the in-process path gives it, so features are
bit-identical to it (tests/extract/test_pipeline.py); with ``batch > 1`` they agree to float rounding.
Flow (consecutive frames across segments) and stateful encoders (a trained run's) need one video in
order, and stay on the in-process path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data.video import VideoFileSource
from .frames import i420_to_rgb, segments

__all__ = ["SegmentStream", "run_pipeline"]


class SegmentStream(IterableDataset):
    """Items ``(video index, segment uint8 (L, C, H, W) or None, count, info)`` of the videos ``videos``
    (``[(index, path)]``), worker ``k`` of ``n`` taking videos ``k, k + n, ...``. A video's segments come in
    order (``info``: its i420 ``(height, width, colour)``, else None), then one item with ``segment=None`` and
    ``info = {"frames", "fps"}`` or, when it failed, ``{"error": message}``."""

    def __init__(self, videos: list[tuple[int, Path]], sample_rate: int, size: tuple[int, int], step: int,
                 left: int, right: int, decode: str) -> None:
        self.videos, self.sample_rate, self.size, self.decode = videos, sample_rate, size, decode
        self.step, self.left, self.right = step, left, right

    def __iter__(self) -> Iterator[tuple[int, Tensor | None, int, dict[str, Any] | None]]:
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
                    def read(m: int) -> tuple[Tensor, ...]:
                        frames = source.read(m)
                        return (frames,) if frames.shape[0] else ()

                    colour = (source.height, source.width, tuple(source.colour)) if self.decode == "i420" else None
                    for (segment,), count in segments(read, self.step, self.left, self.right):
                        yield index, segment, count, colour
                    end = {"frames": source.num_frames, "fps": source.fps}
            except (ValueError, OSError, RuntimeError) as e:
                msg = str(e)
                end = {"error": msg if str(path) in msg else f"{path}: {msg}"}
            except Exception as e:  # PyAV's own errors (av.error.*) are OSErrors; anything else, named
                end = {"error": f"{path}: {type(e).__name__}: {e}"}
            yield index, None, 0, end


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


def run_pipeline(extractor, videos: list[tuple[int, Path]], workers: int, batch: int,
                 done: Callable[[int, np.ndarray | None, float, str | None], None]) -> None:
    """Extract ``videos`` (``[(index, path)]``) with ``extractor`` (`run._Extractor`: its encoder, device,
    dtype, sample rate, decode) and ``workers`` decoding processes, ``batch`` segments per network run.
    Calls ``done(index, features (D, T) float32 or None, fps, error)`` once per video as it completes."""
    enc, device = extractor.rgb, extractor.device
    stream = SegmentStream(videos, extractor.sample_rate, enc.size, enc.step, enc.left, enc.right, extractor.decode)
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4, persistent_workers=False)
    mean = torch.tensor(enc.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(enc.std, device=device).view(1, -1, 1, 1)
    converters: dict[str, Callable[[Tensor], Tensor]] = {}
    chunks: dict[int, list[Tensor]] = {}
    pending: list[tuple[int, _Pending, dict[str, Any]]] = []
    queued: list[tuple[int, Tensor, int, Any]] = []  # (video, segment on the device, count, i420 colour)
    failed: set[int] = set()

    def normalise(frames: Tensor, colour) -> Tensor:
        """``uint8 (n, C, H, W)`` on the device -> the encoder's input, as `frames.device_reader` makes it."""
        if colour is None:
            rgb = frames.float()
        else:
            key = repr(colour)  # the loader hands tuples over as lists
            if key not in converters:
                converters[key] = i420_to_rgb(colour[0], colour[1], enc.size, tuple(colour[2]))
            rgb = converters[key](frames)
        return (rgb / 255.0 - mean) / std

    def run_batch() -> None:
        if not queued:
            return
        rows = [normalise(seg, colour) for _, seg, _, colour in queued]
        if len(rows) < batch:  # one shape for every run (cuDNN plans once): pad with the last segment
            rows += [rows[-1]] * (batch - len(rows))
        out = enc.forward_batch(torch.stack(rows) if batch > 1 else rows[0][None])  # (batch, step, D)
        for (video, _, count, _), features in zip(queued, out):
            chunks[video].append(features[:count].float())
        queued.clear()

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
        for video, segment, count, info in loader:
            if video in failed:
                continue
            chunks.setdefault(video, [])
            if segment is not None:
                queued.append((video, segment.to(device, non_blocking=True), count, info))
                if len(queued) == batch:
                    run_batch()
                continue
            if "error" in info:
                failed.add(video)
                queued[:] = [q for q in queued if q[0] != video]
                chunks.pop(video, None)
                done(video, None, 0.0, info["error"])
                continue
            run_batch()  # the video's last segments: its features are complete after this run
            pending.append((video, _Pending(chunks.pop(video), device), info))
            flush_ready(wait=False)
        run_batch()
        flush_ready(wait=True)
