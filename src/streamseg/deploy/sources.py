"""Video input for deployment: a file, a network stream or a capture device, read as it arrives.

`StreamSource` opens anything PyAV (FFmpeg) can: a video file, a URL (``rtsp://``, ``rtmp://``,
``http(s)://``, ``udp://``, ``tcp://``, ``srt://``, ...), a capture device (``/dev/video0`` through
``v4l2``) or any FFmpeg input format named as ``FORMAT:TARGET`` (``v4l2:/dev/video0``,
``lavfi:testsrc=size=64x64:rate=15``, ``avfoundation:0``, ``dshow:video=My Camera``). Device options
(``video_size=640x480``, ``framerate=30``, ``input_format=mjpeg``, ``rtsp_transport=tcp``) are FFmpeg
``-option value`` pairs given as ``options``.

``read(n)`` returns the next ``n`` *sampled* frames (every ``sample_rate``-th original frame, from frame
0) as ``uint8 (n', 3, H, W)`` RGB, converted and resized exactly as `streamseg.data.video.VideoFileSource`
does for training (swscale rgb24, then torch bilinear, ``antialias=False``): a video gives the same
frames whether it is read from its file or from a stream of it. ``read`` blocks until ``n`` sampled
frames have arrived or the stream ends; fewer than ``n`` means it ended.

Frames come through the shared decode layer (`streamseg.data.decode.FrameDecoder`, as for training):
upright as the display matrix says, deinterlaced when interlaced, and with ``decode.timing="time"``
resampled to a constant rate. Each frame's media time is its timestamp (pts) relative to the first
frame: `time_of` gives it for any frame index (event times on variable-frame-rate video come from it),
`media_time_s` is that of the last frame read, and ``first_frame_wall`` the ``time.perf_counter()`` at
which the first frame arrived, so a consumer can measure how far it is behind a real-time source
(`streamseg.deploy.infer`).

A *live* source (a URL or a device) has no known length: ``num_frames`` is None until it ends. A file
whose header count is more than what decodes is not an error (a stream-copy trim); a decoding error, or
a file that ends early in time (cut short), ends the source early: `read` returns what decoded and
`ended_early` says why, so the frames labelled so far are kept (`streamseg infer` writes them).
"""

from __future__ import annotations

import re
import time
from array import array
from pathlib import Path

import av
import torch

from ..data.decode import DecodedFootage, DecodeOptions, FrameDecoder, av_reason
from ..data.errors import DataError
from ..data.video import read_sampled, rgb24_frames, set_decode_threads

__all__ = ["StreamSource", "is_stream", "parse_source", "source_name"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FORMAT_PREFIX = re.compile(r"^([A-Za-z0-9_]+):(?!//)(.+)$")
# one swscale thread, as VideoFileSource's default (PyAV >= 17 has the argument)
_SWS_OPTIONS = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
DEVICE_FORMAT = "v4l2"  # /dev/videoN on Linux


def is_stream(source: str | Path) -> bool:
    """True for a URL, a ``/dev/`` device or a ``FORMAT:TARGET`` input; False for a file or folder path."""
    text = str(source)
    if _URL.match(text) or text.startswith("/dev/"):
        return True
    m = _FORMAT_PREFIX.match(text)
    return bool(m and m.group(1) in av.formats_available and not Path(text).exists())


def parse_source(source: str, fmt: str | None = None) -> tuple[str, str | None]:
    """``source`` -> (what `av.open` gets, its input format or None).

    ``v4l2:/dev/video0`` -> (``/dev/video0``, ``v4l2``); ``/dev/video0`` -> (``/dev/video0``, ``v4l2``);
    a URL or a file -> (itself, ``fmt``). An explicit ``fmt`` wins over a prefix or a default.
    """
    text = str(source)
    m = _FORMAT_PREFIX.match(text)
    if m and not _URL.match(text) and m.group(1) in av.formats_available and not Path(text).exists():
        return m.group(2), fmt or m.group(1)
    if text.startswith("/dev/"):
        return text, fmt or DEVICE_FORMAT
    return text, fmt


def source_name(source: str | Path) -> str:
    """A short name for outputs (prediction file, event ``video`` field): a file's or URL path's stem,
    else the device or host (``/dev/video0`` -> ``video0``, ``rtsp://cam.local:554/`` -> ``cam.local``)."""
    text = str(source)
    if not is_stream(text):
        return Path(text).stem
    target, _ = parse_source(text)
    if _URL.match(target):
        rest = target.split("://", 1)[1].split("?", 1)[0]
        host, _, path = rest.partition("/")
        stem = Path(path).stem if path.strip("/") else ""
        name = stem or host.rsplit("@", 1)[-1].split(":", 1)[0]
    else:
        name = Path(target).stem or target
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "stream"


class StreamSource(DecodedFootage):
    """Sampled RGB frames from a file, URL or device through one PyAV container, decoded front to back.

    Args:
        source: a path, a URL, ``/dev/videoN`` or ``FORMAT:TARGET`` (see the module docstring).
        sample_rate: keep original frames 0, s, 2s, ... .
        size: output ``(H, W)`` (torch bilinear, no antialias); None keeps the native size.
        fmt: FFmpeg input format (demuxer or device, e.g. ``v4l2``, ``mpegts``); None: from the source.
        options: FFmpeg input options, e.g. ``{"video_size": "640x480", "rtsp_transport": "tcp"}``.
        timeout_s: how long opening and each network read may wait (live sources).
        keep_frames: keep every decoded original frame (``av.VideoFrame``) until `take_frames` (for an
            annotated copy of the video at its own resolution).
        max_frames: stop after this many original frames (a camera never ends by itself); None: no limit.
        decode: rotation, deinterlacing and timing (`streamseg.data.decode.DecodeOptions`).
        decode_threads: FFmpeg decoder threads, as `streamseg.data.video.VideoFileSource`'s: 0 (default)
            PyAV's default (slice threading, one thread per CPU), 1 none. A `StreamPool` gives 1: its many
            sources decode at once, one reader thread each.

    Attributes:
        live: True for a URL or device (length unknown until it ends).
        fps: the stream's frame rate (0.0 when the container does not say).
        num_frames: original frames: the header's count for files that store one (a plan, not a promise),
            else None until the stream has ended; then the frames decoded.
        decoded: original frames decoded so far (after rotation, deinterlacing and ``timing="time"``).
        rotation, interlaced, filters: what the decode layer found and did (`FrameDecoder`).
        ended_early: why the source ended before its end (a decoding error, a cut file), else None.
        media_time_s: media time of the last decoded frame, relative to the first (seconds).
        first_frame_wall: ``time.perf_counter()`` when the first frame was decoded (None before).

    Raises:
        DataError: naming the source when it cannot be opened (missing, empty, not a video) or has no video
            stream, and naming the frame index when the frame size changes mid-stream.
    """

    def __init__(self, source: str | Path, sample_rate: int = 1, size: tuple[int, int] | None = None, *,
                 fmt: str | None = None, options: dict[str, str] | None = None, timeout_s: float = 10.0,
                 keep_frames: bool = False, max_frames: int | None = None,
                 decode: DecodeOptions = DecodeOptions(), decode_threads: int = 0) -> None:
        self.source = str(source)
        if isinstance(decode_threads, bool) or not isinstance(decode_threads, int) or decode_threads < 0:
            raise DataError(self.source, f"decode_threads must be an int >= 0, got {decode_threads!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise DataError(self.source, f"sample_rate must be an int >= 1, got {sample_rate!r}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise DataError(self.source, f"size must be (H, W) with H, W >= 1, got {size!r}")
        if max_frames is not None and max_frames < 1:
            raise DataError(self.source, f"max_frames must be >= 1, got {max_frames}")
        self.live = is_stream(self.source)
        target, fmt = parse_source(self.source, fmt)
        if fmt is not None and fmt not in av.formats_available:
            raise DataError(self.source, f"this FFmpeg build (PyAV {av.__version__}) has no input format {fmt!r}")
        decode.check(self.source)
        if not self.live and not Path(target).is_file():
            raise DataError(self.source, "video file not found" if not Path(target).exists() else "not a regular file")
        if not self.live and Path(target).stat().st_size == 0:
            raise DataError(self.source, "empty file (0 bytes)")
        self.sample_rate, self.size = sample_rate, tuple(size) if size is not None else None
        self.keep_frames, self.max_frames, self.decode = keep_frames, max_frames, decode
        try:
            self._container = av.open(target, format=fmt, options=dict(options or {}), timeout=timeout_s)
        except (av.FFmpegError, OSError) as e:
            what = "stream or device" if self.live else "video (truncated or not a video file?)"
            raise DataError(self.source, f"cannot open as a {what}: {av_reason(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise DataError(self.source, "no video stream (audio only?)")
        stream = self._container.streams.video[0]
        set_decode_threads(stream, decode_threads)
        self._decoder = FrameDecoder(self._container, stream, decode)
        self.fps = self._decoder.fps
        header = int(stream.frames) if not self.live and stream.frames > 0 else None
        self.num_frames: int | None = header if decode.timing == "index" else None
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        if not self.live:  # a file: its first frame says how it stands (a live source would block here)
            first = self._decoder.peek()
            if first is not None:
                self.width, self.height = first.width, first.height
        self._kept: list[av.VideoFrame] = []
        self._t0: float | None = None  # the first frame's timestamp (seconds)
        self._times = array("d")  # media time of every decoded frame (seconds from the first)
        self.decoded = 0
        self.media_time_s = 0.0
        self.first_frame_wall: float | None = None
        self.ended = False
        self.ended_early: str | None = None

    def __repr__(self) -> str:
        return f"StreamSource({self.source!r}, sample_rate={self.sample_rate}, size={self.size})"

    @property
    def out_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames `read` returns."""
        return self.size if self.size is not None else (self.height, self.width)

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` sampled frames, ``uint8 (n', 3, H, W)``; ``n' < n`` only once the stream ended."""
        if self._container is None:
            raise DataError(self.source, "read() after close()")
        if self.ended:
            return self._convert([])
        sampled, _, stop = read_sampled(self._decoder, n, self.sample_rate, self.decoded, limit=self.max_frames,
                                        on_frame=self._arrived)
        if stop is not None:
            self._finish(truncated_ok=stop == "limit")
        return self._convert(sampled)

    def _arrived(self, frame: av.VideoFrame) -> None:
        if self.first_frame_wall is None:
            self.first_frame_wall = time.perf_counter()
        if frame.time is not None:
            if self._t0 is None:
                self._t0 = frame.time
            t = frame.time - self._t0
        else:
            t = self.time_of(self.decoded)  # no timestamp: one nominal frame after the last
        self._times.append(t)
        self.media_time_s = max(self.media_time_s, t)
        self.decoded += 1
        if self.keep_frames:
            self._kept.append(frame)

    def time_of(self, index: int) -> float:
        """Media time (seconds from the first frame) of original frame ``index``: its timestamp when it
        has been decoded, else extrapolated from the last one at the last frame interval (``index`` equal
        to the frame count gives the end of the last frame)."""
        if index < len(self._times):
            return self._times[index]
        n = len(self._times)
        if n >= 2:
            step = self._times[-1] - self._times[-2]
        else:
            step = 1.0 / self.fps if self.fps > 0 else 0.0
        last = self._times[-1] if n else -step
        return last + (index - n + 1) * step

    def _finish(self, truncated_ok: bool = False) -> None:
        self.ended = True
        if not truncated_ok:
            self.ended_early = self._decoder.error
        self.num_frames = self.decoded

    def take_frames(self) -> list[av.VideoFrame]:
        """The original frames decoded since the last call (``keep_frames=True``), in order."""
        kept, self._kept = self._kept, []
        return kept

    def _convert(self, frames: list[av.VideoFrame]) -> torch.Tensor:
        if not frames:
            return torch.empty((0, 3, *self.out_size), dtype=torch.uint8)
        if self.width <= 0 or self.height <= 0:  # some live streams only say with the first frame
            self.width, self.height = frames[0].width, frames[0].height
        bad = next((f for f in frames if (f.width, f.height) != (self.width, self.height)), None)
        if bad is not None:
            raise DataError(self.source, f"the frame size changes mid-stream (before frame {self.decoded}): "
                                         f"{self.width}x{self.height} -> {bad.width}x{bad.height}")
        return rgb24_frames(frames, self.size, _SWS_OPTIONS)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
