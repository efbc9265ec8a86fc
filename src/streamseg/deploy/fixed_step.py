"""A pool's model step at a fixed batch: every stream owns one row of a `streamseg.deploy.accel.StreamStep`.

`StreamPool(fixed_batch=True)` (``streamseg serve --fixed-batch``) runs a PyTorch model through the same
fixed-shape step as `bench_pipeline`: ``max_streams`` rows, chunks of the pool's length, uint8 frames
normalised inside the step, and on a GPU compiled and captured in one CUDA graph, so that a step is one
upload and one graph replay instead of one launch per operation. With 64 file sources on one H200 and 8
decode workers, the model call went from 234 to 191 ms (p50) and the server from 5,730 to 6,951 frames/s;
with 15 workers, 130 ms and 7,127 frames/s (docs/benchmarks.md, "Fifth session"). Chunks from decode
workers arrive in page-locked shared memory (`streamseg.deploy.pull.ChunkRing`) and are uploaded from
there; other host chunks are first copied into this step's own pinned rows; with ``stage_chunks`` the
threads that read the chunks upload them and `run` copies them on the device.

How the rows map to streams: a stream takes a free row when it is added and gives it back when it ends;
its recurrent state lives in that row of the step's state (reset when the row is taken), so no state is
gathered or split per step. Each step runs all rows: the rows of streams with a chunk ready get it, the
others run on whatever frames their row last held and have their state put back afterwards, so an idle
stream's state never moves. A short chunk (a stream's last) is padded and masked, as every contract
model supports. The cost: a step costs
the full batch whatever the number of ready streams, which is what the graph buys its speed with.

Precision: ``bf16``/``fp16`` run as autocast (``bf16-mixed`` in `StreamStep`'s terms), as `TorchStreamer`
does; labels then match the eager step up to the compiled kernels' rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .accel import StreamStep
from .runtime import PRECISIONS, TorchStreamer

__all__ = ["FixedBatchStep"]


class FixedBatchStep:
    """``rows`` stream rows of a `StreamStep` built from a `TorchStreamer` (see the module docstring)."""

    def __init__(self, streamer: TorchStreamer, rows: int, chunk: int) -> None:
        meta = streamer.meta
        if meta.input_kind != "frames":
            raise ValueError("fixed_batch: the model takes features; a fixed-batch pool serves video models")
        # the streamer's autocast dtype as StreamStep's precision: fp32, or autocast to bf16 / fp16
        name = next(n for n, dtype in PRECISIONS.items() if dtype == streamer.dtype)
        precision = name if name == "fp32" else f"{name}-mixed"
        gpu = streamer.device.type == "cuda"
        size = tuple(meta.sample_shape[1:])
        self.step = StreamStep(streamer.net, meta.sample_shape, streams=rows, chunk=chunk, device=streamer.device,
                               precision=precision, channels_last=streamer.channels_last, compile=gpu, cuda_graph=gpu,
                               in_size=size, mean=meta.mean, std=meta.std)
        self.rows, self.chunk = rows, chunk
        # (S, T, H, W, 3) on the step's device: each stream's chunk one contiguous block, channels-last as
        # the readers' frames and the decode workers' rings are (a plain copy up, from a ring or from a
        # pinned copy); the step takes the (S, 3, T, H, W) view and copies it into its own buffer on the
        # device, transposing there (a host tensor of that view would be made contiguous on the host)
        shape = (rows, chunk, *size, 3)
        self._x = torch.zeros(shape, dtype=torch.uint8, device=streamer.device)
        self._pinned = torch.zeros(shape, dtype=torch.uint8, pin_memory=True) if gpu else None
        self._free = list(range(rows - 1, -1, -1))
        self._fresh: set[int] = set()
        self._lock = threading.Lock()  # rows are taken and given by other threads than the stepping one

    def warm_up(self) -> None:
        """Compile and capture now (before the first stream) rather than at the first step; the state is
        reset. On the CPU nothing is compiled, so nothing is done."""
        if self.step.device.type != "cuda":
            return
        self.step.step(self._x.permute(0, 4, 1, 2, 3))
        self.step.reset()

    def take_row(self) -> int:
        """A free row for a new stream (its state is reset before its first chunk); IndexError when none."""
        with self._lock:
            row = self._free.pop()
            self._fresh.add(row)
        return row

    def give_row(self, row: int) -> None:
        with self._lock:
            self._fresh.discard(row)
            self._free.append(row)

    @torch.no_grad()
    def run(self, rows: list[int], chunks: list[torch.Tensor]) -> np.ndarray:
        """One chunk (uint8 ``(t, 3, H, W)``, the same ``t <= chunk`` for all) for each of ``rows``: their logits
        ``(len(rows), K, t)`` float32; the other rows' states are left as they were."""
        t = len(chunks[0])
        step, device = self.step, self.step.device
        with self._lock:
            reset, self._fresh = sorted(self._fresh), set()
        if reset:
            fresh = torch.zeros(self.rows, dtype=torch.bool)
            fresh[reset] = True
            step.reset(fresh)
        for row, frames in zip(rows, chunks):
            frames = frames.permute(0, 2, 3, 1)  # (t, H, W, 3): contiguous for channels-last frames
            if self._pinned is not None and not frames.is_cuda and not (frames.is_pinned() and frames.is_contiguous()):
                # the previous step's uploads have finished (its logits were read): the row can be rewritten
                self._pinned[row, :t].copy_(frames)
                frames = self._pinned[row, :t]
            # page-locked memory (a decode worker's ring, or our own rows) uploads without blocking; the
            # caller keeps it unchanged until this call returns
            self._x[row, :t].copy_(frames, non_blocking=True)
        mask = None
        if t < self.chunk:
            mask = torch.zeros(self.rows, self.chunk)
            mask[rows, :t] = 1.0
        index = torch.tensor(rows, device=device)
        idle = torch.ones(self.rows, dtype=torch.bool)
        idle[rows] = False
        idle = idle.nonzero().flatten().to(device)
        kept = [s.index_select(0, idle) for s in step.state]
        try:
            out = step.step(self._x.permute(0, 4, 1, 2, 3), mask)
            return out.index_select(0, index)[:, :, :t].float().cpu().numpy()
        finally:  # streams without a chunk this step keep their state, even when the step failed
            for s, k in zip(step.state, kept):
                s.index_copy_(0, idle, k)
