"""One video's sampled frames as the encoders want them: decoded ahead in a thread, moved to the device,
normalised, optionally with RAFT optical flow, and cut into equal segments with context on both sides.

Decoding is `streamseg.data.video.VideoFileSource` (the decode and resize of training and deployment),
run in a background thread (PyAV releases the GIL while it decodes) so that decoding the next frames
overlaps the network on the current ones.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..data.video import FrameSource, ycbcr420_to_rgb_float, ycbcr_matrix

__all__ = ["PrefetchReader", "SegmentCutter", "device_reader", "i420_to_rgb", "segments"]

Read = Callable[[int], tuple[Tensor, ...]]


class PrefetchReader:
    """``read(n)`` over a frame source, decoded ahead in blocks of ``block`` sampled frames by a daemon
    thread (at most ``depth`` blocks waiting). An exception in the thread is raised by the next ``read``."""

    def __init__(self, source: FrameSource, block: int, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._pending: Tensor | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, block), daemon=True)
        self._thread.start()

    def _run(self, source: FrameSource, block: int) -> None:
        try:
            while not self._stop.is_set():
                frames = source.read(block)
                self._put(frames)
                if frames.shape[0] < block:
                    break
            self._put(None)
        except BaseException as e:  # handed to the reading thread
            self._put(e)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> Tensor:
        """The next ``n`` sampled frames (fewer only at the end)."""
        parts, have = [], 0
        while have < n:
            if self._pending is None:
                if self._ended:
                    break
                item = self._queue.get()
                if isinstance(item, BaseException):
                    self._ended = True
                    raise item
                if item is None:
                    self._ended = True
                    break
                self._pending = item
            take = self._pending[: n - have]
            self._pending = self._pending[take.shape[0] :] if take.shape[0] < self._pending.shape[0] else None
            parts.append(take)
            have += take.shape[0]
        if not parts:
            return torch.empty(0, dtype=torch.uint8)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def close(self) -> bool:
        """Stop the thread; True once it has ended (only then may the source be closed: closing a container
        that another thread is decoding from is a use after free)."""
        self._stop.set()
        self._thread.join(timeout=30)
        return not self._thread.is_alive()


def device_reader(read: Callable[[int], Tensor], device: torch.device, norms: list[tuple],
                  flow: Callable[[Tensor, Tensor], Tensor] | None = None,
                  to_rgb: Callable[[Tensor], Tensor] | None = None) -> Read:
    """``read(n)`` -> ``tuple`` of float32 ``(n', C, H, W)`` tensors on ``device``: the frames normalised once
    per ``(mean, std)`` in ``norms``, then, with ``flow``, the flow of each frame to the next (``(n', 2, H, W)``;
    the last frame of the video repeats the flow before it, a one-frame video gets zero flow). With flow, the
    frame after the last one returned is read ahead and kept for the next call. ``n' < n`` only at the end.

    ``to_rgb``: what ``read`` returns, on the device, -> float RGB ``(n', 3, H, W)`` on the 0..255 scale
    (default: ``uint8`` RGB frames as they are; `i420_to_rgb` for packed 4:2:0 planes)."""
    state = {"last": None, "last_flow": None}
    convert = to_rgb or (lambda frames: frames.float())

    # made once: a tensor built from a list on a GPU is a blocking copy, which would make the host wait for the
    # device at every read instead of queueing the next segment's work behind the current one's
    stats = [(torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))
             for mean, std in norms]

    def normalise(rgb: Tensor) -> list[Tensor]:
        x = rgb / 255.0
        return [(x - m) / s for m, s in stats]

    def read_plain(n: int) -> tuple[Tensor, ...]:
        frames = read(n)
        if frames.shape[0] == 0:
            return ()
        return tuple(normalise(convert(frames.to(device, non_blocking=True))))

    def read_flow(n: int) -> tuple[Tensor, ...]:
        pending = state["last"]
        want = n if pending is not None else n + 1  # one frame more than returned: its flow needs the next
        frames = read(want)
        ended = frames.shape[0] < want
        new = convert(frames.to(device, non_blocking=True)) if frames.shape[0] else None
        if new is None and pending is None:
            return ()
        seq = new if pending is None else (pending if new is None else torch.cat([pending, new]))
        if seq.shape[0] > 1:
            flows = flow(seq[:-1], seq[1:])
            state["last_flow"] = flows[-1:]
        else:
            flows = seq.new_zeros((0, 2, *seq.shape[2:]), dtype=torch.float32)
        if ended:  # the video's last frame: its flow repeats the one before (zero for a one-frame video)
            last = state["last_flow"] if state["last_flow"] is not None else torch.zeros(
                (1, 2, *seq.shape[2:]), device=device)
            flows, out, state["last"] = torch.cat([flows, last]), seq, None
        else:
            out, state["last"] = seq[:-1], seq[-1:]
        if out.shape[0] == 0:
            return ()
        return (*normalise(out), flows)

    return read_flow if flow is not None else read_plain


def i420_to_rgb(height: int, width: int, size: tuple[int, int], colour: tuple[int, bool]) -> Callable[[Tensor], Tensor]:
    """Packed I420 frames ``uint8 (n, 1, H*3/2, W)`` (`VideoFileSource(pixel_path="i420")`) -> float RGB
    ``(n, 3, *size)`` on the 0..255 scale, colour-converted and resized where they are (the GPU), with
    `streamseg.data.video.ycbcr420_to_rgb_float`, the conversion of the streaming fast path."""
    matrices: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def convert(frames: Tensor) -> Tensor:
        if frames.device not in matrices:
            m, o = ycbcr_matrix(*colour)
            matrices[frames.device] = (m.to(frames.device), o.to(frames.device))
        n = frames.shape[0]
        y = frames[:, 0, :height]
        uv = frames[:, 0, height:].reshape(n, 2, height // 2, width // 2)
        return ycbcr420_to_rgb_float(y, uv, size, *matrices[frames.device]).clamp_(0, 255)

    return convert


class SegmentCutter:
    """The segments of one video (`segments`), fed frames as they come: `push` appends frames, `cut` yields the
    segments they complete. Frames no later segment needs are dropped, so it holds about ``left + step + right``
    frames plus what was pushed ahead. The indices are made on the frames' device (no host-to-device copy, which
    would make the host wait for the device)."""

    def __init__(self, step: int, left: int, right: int) -> None:
        self.step, self.left, self.right = step, left, right
        self.buf: list[Tensor] = []
        self.base = self.pos = 0  # buf holds frames [base, base + len); pos = the next frame to encode

    def _have(self) -> int:
        return self.buf[0].shape[0] if self.buf else 0

    @property
    def empty(self) -> bool:
        """No frame was ever pushed (`cut(ended=True)` would raise)."""
        return self.base + self._have() == 0

    def missing(self) -> int:
        """Frames still to push before the next segment is complete (0: `cut` yields it)."""
        return max(0, self.pos + self.step + self.right - self.base - self._have())

    def push(self, new: tuple[Tensor, ...]) -> None:
        """Append the next frames of each stream (``(n, ...)`` each)."""
        self.buf = list(new) if not self.buf else [torch.cat([b, x]) for b, x in zip(self.buf, new)]

    def cut(self, ended: bool) -> Iterator[tuple[tuple[Tensor, ...], int]]:
        """``(streams, count)`` of every segment the pushed frames complete (``ended``: the video has no more
        frames, so the last segments are cut too, their missing frames the last one repeated)."""
        while ended or not self.missing():
            total = self.base + self._have()
            if self.pos >= total:
                if total == 0:
                    raise ValueError("no frames decoded (empty video)")
                return
            count = min(self.step, total - self.pos)
            index = torch.arange(self.pos - self.left, self.pos + self.step + self.right, device=self.buf[0].device)
            index = index.clamp_(0, total - 1).sub_(self.base)
            yield tuple(b.index_select(0, index) for b in self.buf), count
            self.pos += count
            drop = max(0, self.pos - self.left - self.base)
            if drop:
                self.buf, self.base = [b[drop:] for b in self.buf], self.base + drop


def segments(read: Read, step: int, left: int, right: int) -> Iterator[tuple[tuple[Tensor, ...], int]]:
    """Cut a video into segments for `streamseg.extract.encoders`.

    ``read(n)`` returns a tuple of streams, each ``(n', ...)``, ``n' < n`` only at the end (``()`` when
    nothing is left). Yields ``(streams, count)``: each stream's frames ``[p - left, p + step + right)`` for
    ``p = 0, step, 2 step, ...``, indices clamped into the video (the first and last frames repeat), and the
    number ``count <= step`` of frames ``[p, p + count)`` that exist. Frames are read as segments need them
    (`SegmentCutter`), so memory holds about ``left + step + right`` frames, whatever the video's length.
    """
    cutter, ended = SegmentCutter(step, left, right), False
    while True:
        while not ended and (want := cutter.missing()):
            new = read(want)
            ended = not new or new[0].shape[0] < want
            if new:
                cutter.push(new)
        yield from cutter.cut(ended)
        if ended:
            return
