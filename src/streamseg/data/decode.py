"""Decoding footage as cameras and phones make it: the one decode layer under every video reader.

Training (`streamseg.data.video.VideoFileSource`), inference and annotation (`streamseg.deploy.sources`)
and the dataset check (`streamseg.data.video_scan`) open videos with `open_video` and iterate their
frames through `FrameDecoder`, so that all of them see the same frames:

* **Rotation.** A phone stores a portrait clip as landscape pixels plus a display matrix saying how to
  turn them (FFmpeg's ``rotate`` / ``Display Matrix`` side data; PyAV's ``frame.rotation``, degrees
  counter-clockwise). `FrameDecoder` turns every frame upright with FFmpeg's ``transpose`` (90, 270)
  or ``hflip,vflip`` (180) filters, as the ``ffmpeg`` command does by default (its ``-autorotate``).
* **Interlacing.** Broadcast ``.ts`` and some IP cameras send interlaced frames (two fields of
  alternate lines, 1/50 s apart). With ``deinterlace="auto"`` (default), a stream whose header says it
  is interlaced (field order) or whose first frame is flagged interlaced goes through FFmpeg's
  ``bwdif`` filter in ``send_frame`` mode (one frame out per frame in, so frame counts and labels stay
  aligned) with ``deint=interlaced`` (only frames flagged interlaced are touched).
* **Variable frame rate.** Every frame keeps its presentation timestamp (``frame.time``, seconds);
  times reported downstream (events, the annotated video's clock) are these, never ``index / fps``.
  ``timing="index"`` (default) hands on every decoded frame, so samplers pick frames by index (what
  per-frame labels need); ``timing="time"`` resamples the stream to a constant ``fps`` with FFmpeg's
  ``fps`` filter (frames dropped or repeated to a regular time grid), so that a sampler that takes
  every s-th frame takes them evenly in time.

All filtering is FFmpeg's (PyAV's filter graph), built only when a video needs it: an upright,
progressive video decoded by index costs nothing extra.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av

from streamseg.data.errors import DataError

__all__ = ["DEINTERLACE", "TIMING", "DecodeOptions", "DecodedFootage", "FrameDecoder", "av_reason", "open_video",
           "rotation_filters"]

Deinterlace = Literal["auto", "on", "off"]
Timing = Literal["index", "time"]
DEINTERLACE = ("auto", "on", "off")
TIMING = ("index", "time")
_INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)  # AV_FIELD_TT, BB, TB, BT (0 unknown, 1 progressive)


def av_reason(error: BaseException) -> str:
    """An FFmpeg error in words: ``"Invalid data found when processing input"`` rather than
    ``"[Errno 1094995529] Invalid data found when processing input: '/path'"`` (the path is said once,
    by the `DataError` that carries this reason)."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return str(error.strerror)
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class DecodeOptions:
    """How `FrameDecoder` hands frames on (see the module docstring).

    Attributes:
        rotate: turn frames upright as their display matrix says (default True).
        deinterlace: ``"auto"`` (interlaced streams only), ``"on"`` (every frame), ``"off"``.
        timing: ``"index"`` (every decoded frame) or ``"time"`` (resampled to a constant ``fps``).
        fps: the constant rate of ``timing="time"``; None: the stream's average rate.
    """

    rotate: bool = True
    deinterlace: Deinterlace = "auto"
    timing: Timing = "index"
    fps: float | None = None

    def check(self, where: str | Path) -> None:
        """Raise `DataError` naming ``where`` for an unknown mode or a bad rate."""
        if self.deinterlace not in DEINTERLACE:
            raise DataError(where, f"deinterlace must be one of {DEINTERLACE}, got {self.deinterlace!r}")
        if self.timing not in TIMING:
            raise DataError(where, f"timing must be one of {TIMING}, got {self.timing!r}")
        if self.fps is not None and not self.fps > 0:
            raise DataError(where, f"fps must be > 0, got {self.fps!r}")


def open_video(path: str | Path, **kwargs) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open a video file and return it with its first video stream; errors name the file and say why in
    words (missing, empty, not a video, no video stream). ``kwargs`` go to `av.open`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "video file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), **kwargs)
    except av.FFmpegError as e:
        raise DataError(path, f"cannot open as a video ({av_reason(e)}; truncated or not a video file?)") from None
    if not container.streams.video:
        container.close()
        raise DataError(path, "no video stream in the file (truncated, or audio only?)")
    return container, container.streams.video[0]


def rotation_filters(rotation: float) -> list[tuple[str, str]]:
    """FFmpeg filters ``[(name, args)]`` that turn a frame with this display rotation (degrees
    counter-clockwise, PyAV's ``frame.rotation``) upright, as ``ffmpeg``'s autorotation does."""
    turn = int(round(rotation)) % 360
    if turn == 90:
        return [("transpose", "cclock")]
    if turn == 180:
        return [("hflip", ""), ("vflip", "")]
    if turn == 270:
        return [("transpose", "clock")]
    return []


class FrameDecoder:
    """The frames of one video stream, upright, deinterlaced and timed as `DecodeOptions` says.

    Iterate it for ``av.VideoFrame`` objects (each keeps ``pts``/``time_base``, so ``frame.time`` is its
    presentation time in seconds). Decoding stops at the end of the stream, at the first FFmpeg error or
    at a change of frame size; then `error` says, in words, where and why (frames decoded before it are
    all handed on).

    Attributes (known once the first frame is decoded, `peek`):
        rotation: the display rotation the frames were turned by (degrees counter-clockwise, 0 when none
            or ``rotate=False``).
        interlaced: the header or a decoded frame says the video is interlaced.
        filters: the FFmpeg filter chain applied (``""`` when none), e.g. ``"bwdif=mode=send_frame:
            deint=interlaced,transpose=cclock"``.
        decoded: frames the decoder produced (before any ``fps`` resampling).
        error: why decoding stopped early, or None.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 options: DecodeOptions = DecodeOptions()) -> None:
        self.options = options
        self._stream = stream
        self._frames = container.decode(stream)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(options.fps or (rate if rate else 0.0))
        self.rotation = 0
        self.interlaced = int(getattr(stream.codec_context, "field_order", 0) or 0) in _INTERLACED_FIELD_ORDERS
        self.filters = ""
        self.decoded = 0
        self.error: str | None = None
        self._end_time: float | None = None  # presentation time (s) of the end of the last decoded frame
        self._graph: av.filter.Graph | None = None
        self._started = False
        self._size = (0, 0)  # (width, height) of the first decoded frame
        self._done = False  # the decoder (and the graph, if any) has nothing more
        self._out: deque[av.VideoFrame] = deque()

    def __iter__(self) -> FrameDecoder:
        return self

    def peek(self) -> av.VideoFrame | None:
        """The next frame without consuming it (None at the end)."""
        if not self._out:
            self._fill()
        return self._out[0] if self._out else None

    def __next__(self) -> av.VideoFrame:
        if not self._out:
            self._fill()
        if not self._out:
            raise StopIteration
        return self._out.popleft()

    def _fill(self) -> None:
        """Decode until at least one output frame is ready or the stream has ended."""
        while not self._out and not self._done:
            try:
                frame = next(self._frames)
            except StopIteration:
                frame = None
            except av.FFmpegError as e:
                self.error = f"decoding failed at frame {self.decoded}: {av_reason(e)}"
                frame = None
            if frame is not None and self._started and (frame.width, frame.height) != self._size:
                # the filters were built for the first frame's size, and the readers' batches need one size
                self.error = (f"the frame size changes mid-stream at frame {self.decoded}: "
                              f"{self._size[0]}x{self._size[1]} -> {frame.width}x{frame.height}")
                frame = None
            if frame is not None:
                if not self._started:
                    self._start(frame)
                self.decoded += 1
                self.interlaced = self.interlaced or bool(frame.interlaced_frame)
                self._timed(frame)
            elif self.error is None:
                self.error = self._cut_short()
            if self._graph is None:
                if frame is None:
                    self._done = True
                else:
                    self._out.append(frame)
                continue
            try:
                self._graph.push(frame)  # None flushes the filters (bwdif holds one frame back)
            except (av.FFmpegError, ValueError) as e:  # e.g. a frame size change the graph was not built for
                self.error = f"filtering failed at frame {self.decoded - 1}: {av_reason(e)}"
                frame = None
                with contextlib.suppress(av.FFmpegError, ValueError):
                    self._graph.push(None)  # flush what the filters hold
            self._pull(final=frame is None)

    def _timed(self, frame: av.VideoFrame) -> None:
        if frame.time is None:
            return
        step = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        self._end_time = max(self._end_time or 0.0, frame.time + step)

    def _cut_short(self) -> str | None:
        """At the end of the stream: why it ended before the header's length, when it did (None otherwise).

        The header's frame count alone proves nothing (a stream-copy trim counts leading non-key frames
        that never decode), so a file counts as cut short only when it also ends early in TIME: its last
        frame ends more than two frame intervals before the stream's duration."""
        stream = self._stream
        if stream.frames <= self.decoded or not stream.duration or not stream.time_base or self._end_time is None:
            return None
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        expected = float(stream.duration * stream.time_base)
        reached = self._end_time - start
        interval = 1.0 / self.fps if self.fps > 0 else 0.0
        if reached >= expected - 2 * interval:
            return None
        return (f"the file ends at {reached:.2f} s of the {expected:.2f} s its header gives ({self.decoded} of "
                f"{stream.frames} frames): cut short")

    def _pull(self, final: bool) -> None:
        assert self._graph is not None
        while True:
            try:
                self._out.append(self._graph.pull())
            except (av.BlockingIOError, av.EOFError):
                break
        if final:
            self._done = True

    def _start(self, first: av.VideoFrame) -> None:
        """Build the filter chain the first frame shows to be needed."""
        self._started = True
        self._size = (first.width, first.height)
        opts = self.options
        chain: list[tuple[str, str]] = []
        interlaced = self.interlaced or bool(first.interlaced_frame)
        if opts.deinterlace == "on" or (opts.deinterlace == "auto" and interlaced):
            chain.append(("bwdif", f"mode=send_frame:deint={'all' if opts.deinterlace == 'on' else 'interlaced'}"))
        turn = int(round(first.rotation)) % 360
        if opts.rotate and rotation_filters(turn):  # quarter turns only; any other angle is left alone
            self.rotation = turn
            chain += rotation_filters(turn)
        if opts.timing == "time" and self.fps > 0:
            chain.append(("fps", f"fps={self.fps!r}"))
        if not chain:
            return
        self.filters = ",".join(f"{name}={args}" if args else name for name, args in chain)
        graph = av.filter.Graph()
        node = graph.add_buffer(width=first.width, height=first.height, format=first.format,
                                time_base=first.time_base or self._stream.time_base)
        for name, args in chain:
            nxt = graph.add(name, args)
            node.link_to(nxt)
            node = nxt
        node.link_to(graph.add("buffersink"))
        graph.configure()
        self._graph = graph


class DecodedFootage:
    """What a reader that decodes through a `FrameDecoder` (its ``_decoder``) found and did, as attributes."""

    _decoder: FrameDecoder

    @property
    def rotation(self) -> int:
        """Degrees (counter-clockwise) the frames were turned by to stand upright (0: none)."""
        return self._decoder.rotation

    @property
    def interlaced(self) -> bool:
        """The video is interlaced (deinterlaced unless ``deinterlace="off"``)."""
        return self._decoder.interlaced

    @property
    def filters(self) -> str:
        """The FFmpeg filter chain applied to every frame (``""``: none)."""
        return self._decoder.filters
