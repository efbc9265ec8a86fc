"""Frame sources: sequential readers of one video's frames (or features) at a sample rate.

Every source has the same small interface (`FrameSource`): ``read(n)`` returns the next ``n`` *sampled*
frames (every ``sample_rate``-th original frame, starting at frame 0), fewer at the end, and nothing
once the video is exhausted. A stream sampler (`streamseg.data.streams`) opens a source when a stream
slot starts a video and keeps it open until the video's last chunk, so each file is opened and decoded
exactly once per pass: never reopened and re-seeked per chunk.

* `VideoFileSource`: a video file through PyAV; one container per video, decoded front to back.
* `FrameFolderSource`: a folder of numbered images (``img_00001.jpg`` ...).
* `FeatureSource`: a ``(D, T)`` ``.npy`` feature file, memory-mapped once.

Frames come back as ``uint8 (n, 3, H, W)`` RGB; features as ``float32 (n, D)``. `VideoFileSource` can
instead return the decoder's own 4:2:0 planes, packed (``pixel_path="i420"``, ``uint8 (n, 1, H*3/2, W)``,
native size), for a consumer that converts colour on the GPU (`streamseg.deploy.accel.StreamStep`).

Video frames come through the shared decode layer (`streamseg.data.decode.FrameDecoder`): upright as
their display matrix says, deinterlaced when interlaced, each with its presentation timestamp; the
sampler then keeps every ``sample_rate``-th frame by index (``DecodeOptions(timing="time")`` first
resamples a variable-rate video to a constant rate).

Colour conversion and resizing, measured (docs/benchmarks.md, ``tools/bench_decode.py``): on the CPUs we
measured, FFmpeg's swscale yuv420p->rgb24 conversion at the native size followed by a torch ``uint8``
bilinear resize is faster than converting yuv420p planes in torch on the CPU (swscale converts in one
SIMD pass, torch needs ~10 elementwise passes over float tensors) and, by the review in issue #25,
closer to the source colours, so the CPU path is swscale only. Resizing is always torch bilinear,
``antialias=False``, ``align_corners=False``, so training, evaluation and deployment resize identically
whatever FFmpeg build is installed.
``pixel_path="i420"`` skips both on the CPU: the conversion matrix (`ycbcr420_to_rgb_float`, the one
implementation behind `yuv420p_to_rgb` too) then runs on the GPU inside the streaming step.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Literal, NamedTuple, Protocol, runtime_checkable

import av
import numpy as np
import torch
import torch.nn.functional as F

from streamseg.data.decode import DecodedFootage, DecodeOptions, FrameDecoder, open_video
from streamseg.data.errors import DataError

__all__ = [
    "FeatureSource",
    "FrameFolderSource",
    "FrameSource",
    "VideoFileSource",
    "i420_colour",
    "i420_frames",
    "open_source",
    "probe",
    "read_sampled",
    "resize_frames",
    "ycbcr420_to_rgb_float",
    "ycbcr_matrix",
    "ycbcr_name",
    "yuv420p_to_rgb",
]

PixelPath = Literal["rgb24", "i420"]
PIXEL_PATHS = ("rgb24", "i420")

# PyAV 17 made swscale conversion multithreaded, default "auto" (one thread per CPU); older PyAV has
# no ``threads`` argument and converts on one thread.
_SWS_HAS_THREADS = int(av.__version__.split(".")[0]) >= 17


@runtime_checkable
class FrameSource(Protocol):
    """A sequential reader of one video at a fixed sample rate.

    Attributes:
        num_frames: frames at the ORIGINAL rate, best known (a container's frame count may be an
            estimate until the video has been decoded to its end; sources then correct it).
        fps: original frames per second (0.0 when unknown, e.g. for features).
        sample_rate: keep every ``sample_rate``-th original frame, starting at frame 0.
    """

    num_frames: int
    fps: float
    sample_rate: int

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` sampled frames: ``uint8 (n', 3, H, W)`` (or ``float32 (n', D)``, or packed I420
        ``uint8 (n', 1, H*3/2, W)`` from ``VideoFileSource(pixel_path="i420")``), ``n' <= n``."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


def _check_sampling(path: Path, sample_rate: int, size: tuple[int, int] | None) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise DataError(path, f"sample_rate must be an int >= 1, got {sample_rate!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(path, f"size must be (H, W) with H, W >= 1, got {size!r}")


def resize_frames(frames: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear resize (``antialias=False``, ``align_corners=False``) of ``uint8 (n, C, H, W)`` to ``size``.

    torch resizes ``uint8`` directly on CPU (rounding to nearest), which is several times cheaper than a
    float round trip; the result may be channels-last in memory (it is copied into the batch anyway).
    """
    if size is None or tuple(frames.shape[-2:]) == tuple(size) or frames.shape[0] == 0:
        return frames
    return F.interpolate(frames, size=tuple(size), mode="bilinear", antialias=False, align_corners=False)


def set_decode_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """FFmpeg decoder threads of a PyAV video stream, before its first decode opens the codec: 0 keeps
    PyAV's default, 1 turns FFmpeg threading off, ``n > 1`` frame and slice threading on ``n`` threads."""
    if threads:
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "AUTO" if threads > 1 else "NONE"


def rgb24_frames(frames: list, size: tuple[int, int] | None, sws_options: dict | None = None) -> torch.Tensor:
    """PyAV frames -> ``uint8 (n, 3, H, W)``: swscale rgb24 at the native size, then `resize_frames`.
    The one conversion shared by training (`VideoFileSource`) and deployment (`deploy.sources`)."""
    # (n, H, W, 3) -> (n, 3, H, W): a channels-last view, which torch's uint8 resize handles fastest
    rgb = torch.from_numpy(np.stack([f.to_ndarray(format="rgb24", **(sws_options or {})) for f in frames]))
    return resize_frames(rgb.permute(0, 3, 1, 2), size)


# Y'CbCr -> R'G'B' matrices from the standard luma weights (Kr, Kb): R = Y + 2(1-Kr)·Cr,
# B = Y + 2(1-Kb)·Cb, G = (Y - Kr·R - Kb·B) / Kg. FFmpeg colorspace ids: 1 = BT.709; 5, 6 = BT.601;
# 2 = unspecified, which swscale (and we) treat as BT.601.
_LUMA_WEIGHTS = {1: (0.2126, 0.0722)}
_BT601 = (0.299, 0.114)
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def ycbcr_matrix(colorspace: int = 2, full_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (3x3 matrix M, offset vector o) with rgb = M @ yuv + o, yuv in [0, 255] code values.

    ``colorspace``: FFmpeg colorspace id (1 = BT.709, anything else BT.601); ``full_range``: JPEG range.
    """
    kr, kb = _LUMA_WEIGHTS.get(colorspace, _BT601)
    kg = 1.0 - kr - kb
    m = torch.tensor(
        [
            [1.0, 0.0, 2 * (1 - kr)],
            [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
            [1.0, 2 * (1 - kb), 0.0],
        ]
    )
    if full_range:
        y0, y_scale, c_scale = 0.0, 1.0, 1.0
    else:
        # limited ("TV") range: Y in [16, 235] (219 steps), Cb/Cr in [16, 240] (224 steps)
        y0, y_scale, c_scale = 16.0, 255.0 / 219.0, 255.0 / 224.0
    m = m * torch.tensor([y_scale, c_scale, c_scale])  # scales columns Y, Cb, Cr
    o = -(m @ torch.tensor([y0, 128.0, 128.0]))  # chroma is centred on 128
    return m, o


def ycbcr420_to_rgb_float(
    y: torch.Tensor,
    uv: torch.Tensor,
    size: tuple[int, int],
    matrix: torch.Tensor,
    offset: torch.Tensor,
) -> torch.Tensor:
    """Planar 4:2:0 Y'CbCr to an affine colour transform of it, in float32, resizing first (resize and
    matrix are both linear, so they commute: 3 planes are resized instead of 3 channels plus chroma).

    Args:
        y: ``(n, H, W)`` luma; uv: ``(n, 2, ceil(H/2), ceil(W/2))`` Cb and Cr (any dtype, code values).
        size: output ``(h, w)``. Luma and chroma are resized bilinearly (``antialias=False``,
            ``align_corners=False``: chroma samples centred on their 2x2 luma block) straight to it.
        matrix, offset: ``(3, 3)`` and ``(3,)`` float32 on ``y``'s device; ``out = matrix @ yuv + offset``:
            `ycbcr_matrix` for RGB on the 0..255 scale, or that composed with a normalisation.

    Returns:
        float32 ``(n, 3, h, w)``, not rounded or clamped. Traceable by ``torch.compile`` (no data-dependent
        branches, no host syncs).
    """
    luma = F.interpolate(y[:, None].float(), size=size, mode="bilinear", antialias=False, align_corners=False)
    chroma = F.interpolate(uv.float(), size=size, mode="bilinear", antialias=False, align_corners=False)
    # out[:, i] = M[i, 0] Y + M[i, 1] Cb + M[i, 2] Cr + o[i] as broadcast products: elementwise only, so
    # torch.compile fuses it with the resizes into one kernel (a 3x3 einsum would become a matmul)
    m = matrix.view(3, 3, 1, 1)
    return m[:, 0] * luma + m[:, 1] * chroma[:, :1] + m[:, 2] * chroma[:, 1:] + offset.view(3, 1, 1)


def ycbcr_name(colorspace: int, full_range: bool) -> str:
    """The conversion `ycbcr_matrix` applies, in words, e.g. ``"BT.601 limited range"``."""
    return f"{'BT.709' if colorspace in _LUMA_WEIGHTS else 'BT.601'} {'full' if full_range else 'limited'} range"


def yuv420p_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int] | None = None,
    colorspace: int = 2,
    full_range: bool = False,
) -> torch.Tensor:
    """Planar 4:2:0 Y'CbCr to RGB in torch, resizing first (`ycbcr420_to_rgb_float`, then rounded).

    Args:
        y: ``uint8 (n, H, W)`` luma. u, v: ``uint8 (n, ceil(H/2), ceil(W/2))`` chroma.
        size: output ``(h, w)``; None keeps ``(H, W)``. Chroma is upsampled bilinearly straight to it.
        colorspace: FFmpeg colorspace id (1 = BT.709, else BT.601). full_range: JPEG range (yuvj420p).

    Returns:
        ``uint8 (n, 3, h, w)``.
    """
    out = tuple(size) if size is not None else tuple(y.shape[-2:])
    m, o = ycbcr_matrix(colorspace, full_range)
    rgb = ycbcr420_to_rgb_float(y, torch.stack([u, v], 1), out, m.to(y.device), o.to(y.device))
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def i420_frames(frames: list, sws_options: dict | None = None) -> torch.Tensor:
    """PyAV frames -> packed I420 ``uint8 (n, 1, H*3/2, W)``, FFmpeg's own yuv420p ``to_ndarray()`` layout:
    rows ``[0, H)`` luma, then the U plane (H/2 x W/2) and the V plane, each flattened into H/4 rows of W.

    yuv420p and yuvj420p frames are copied (no conversion); frames in any other pixel format are
    converted to yuv420p by swscale first (`i420_colour` says which colour matrix the result then uses).
    H and W must be even.
    """
    # yuvj420p has yuv420p's memory layout (full range): its planes are copied as they are, without swscale,
    # straight into the result (PyAV's to_ndarray would concatenate them into a new array first, and
    # np.stack copy that again: 3 copies of every frame instead of 1; docs/benchmarks.md "Loader CPU cost")
    h, w = frames[0].height, frames[0].width
    out = np.empty((len(frames), h * 3 // 2, w), dtype=np.uint8)
    for k, f in enumerate(frames):
        if f.format.name not in _I420_FORMATS:
            f = f.reformat(format="yuv420p", **(sws_options or {}))
        if any(plane.line_size < 0 for plane in f.planes):  # bottom-up rows (FFmpeg allows them): PyAV's copy
            out[k] = f.to_ndarray()
            continue
        dest = out[k].reshape(-1)
        offset = 0
        for plane, (ph, pw) in zip(f.planes, ((h, w), (h // 2, w // 2), (h // 2, w // 2))):
            rows = np.frombuffer(plane, np.uint8).reshape(ph, plane.line_size)[:, :pw]
            dest[offset:offset + ph * pw].reshape(ph, pw)[:] = rows
            offset += ph * pw
    return torch.from_numpy(out)[:, None]


_I420_FORMATS = ("yuv420p", "yuvj420p")  # same memory layout; yuvj420p is full range


def i420_colour(pix_fmt: str | None, colorspace: int, color_range: int) -> tuple[int, bool]:
    """``(colorspace, full_range)`` of the I420 frames `i420_frames` makes from a stream with this pixel
    format and these colour tags (a codec context's or a frame's): the stream's own for YUV formats;
    swscale's default, BT.601 limited range, for RGB (and other non-YUV) formats it converts."""
    if pix_fmt is None or not pix_fmt.startswith("yuv"):
        return 2, False
    return int(colorspace), pix_fmt.startswith("yuvj") or int(color_range) == _FULL_RANGE


class SampledRead(NamedTuple):
    """What `read_sampled` decoded: the kept frames, the original-rate index of the next frame, and why
    it stopped early (None: ``n`` frames were kept; "end": the decoder has no more frames, see its
    ``error``; "limit": ``limit`` original frames have been decoded)."""

    frames: list[av.VideoFrame]
    next_index: int
    stop: Literal["end", "limit"] | None


def read_sampled(decoder: Iterator[av.VideoFrame], n: int, sample_rate: int, next_index: int, *,
                 limit: int | None = None, on_frame: Callable[[av.VideoFrame], None] | None = None) -> SampledRead:
    """THE PyAV read loop, shared by training (`VideoFileSource`) and deployment (`deploy.sources.
    StreamSource`): decode original frames front to back from ``decoder`` (a `FrameDecoder`; inter-coded
    video cannot skip frames) and keep every ``sample_rate``-th one (original indices 0, s, 2s, ...) until
    ``n`` are kept. ``next_index`` is the original-rate index of the decoder's next frame; ``on_frame`` sees
    every decoded frame (kept or not) in order; decoding stops before frame ``limit`` when given."""
    kept: list[av.VideoFrame] = []
    while len(kept) < n:
        if limit is not None and next_index >= limit:
            return SampledRead(kept, next_index, "limit")
        frame = next(decoder, None)
        if frame is None:
            return SampledRead(kept, next_index, "end")
        if on_frame is not None:
            on_frame(frame)
        if next_index % sample_rate == 0:
            kept.append(frame)
        next_index += 1
    return SampledRead(kept, next_index, None)


def _stream_info(path: Path, container, stream) -> tuple[int, float, int, int]:
    """(num_frames, fps, height, width) from the container header: a count to plan with, never trusted
    to be decodable (a stream-copy trim's header counts the non-key frames it cannot show; a cut file's
    header counts frames that are gone): `streamseg.data.video_scan.scan_video` counts what decodes."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.frames > 0:  # mp4/mov store a sample count (stts)
        num_frames = int(stream.frames)
    else:  # estimate from the duration; corrected once the file has been decoded to its end
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base  # container duration is in microseconds
        else:
            seconds = 0.0
        num_frames = int(round(seconds * fps))
    height, width = stream.codec_context.height, stream.codec_context.width
    if height <= 0 or width <= 0:
        raise DataError(path, f"video stream has no frame size ({width}x{height})")
    return num_frames, fps, height, width


def probe(path: str | Path, decode: DecodeOptions = DecodeOptions()) -> tuple[int, float, int, int]:
    """``(num_frames, fps, H, W)`` of a video file: the frame count from its header (see `_stream_info`;
    `streamseg.data.video_scan.scan_video` counts decodable frames), ``H, W`` as `VideoFileSource`
    delivers frames (upright: the first frame is decoded to read its rotation).

    Raises `DataError` naming the file when it is missing, empty, unreadable or has no video stream.
    """
    path = Path(path)
    container, stream = open_video(path)
    try:
        num_frames, fps, height, width = _stream_info(path, container, stream)
        first = FrameDecoder(container, stream, decode).peek()
        if first is not None:
            height, width = first.height, first.width
    finally:
        container.close()
    return num_frames, fps, height, width


class VideoFileSource(DecodedFootage):
    """Sequential decoding of one video file through ONE PyAV container kept open across all reads.

    Every original frame is decoded (inter-coded video cannot skip frames), but only every
    ``sample_rate``-th one is colour-converted and resized, which is where the time goes. Frames come
    upright, deinterlaced when interlaced, and (``decode.timing="time"``) on a constant time grid, as
    `streamseg.data.decode.FrameDecoder` says; `rotation`, `interlaced` and `filters` tell what was done.

    Args:
        path: the video file.
        sample_rate: keep frames 0, s, 2s, ... .
        size: output ``(H, W)`` (torch bilinear, no antialias); None keeps the native size.
        pixel_path: ``"rgb24"`` (swscale colour conversion, default) or ``"i420"``: no conversion and no
            resize, `read` returns the packed 4:2:0 planes ``uint8 (n, 1, H*3/2, W)`` at the native size
            (`i420_frames`; ``size`` must be None, H and W even); ``colour`` then says which matrix
            converts them (``StreamStep(colorspace, full_range)``).
        convert_threads: swscale threads per conversion (PyAV >= 17; 0 = one per CPU). 1 by default:
            parallelism comes from decoding several streams at once (DataLoader workers), and on a busy
            2-core machine one thread cost 200 us/frame of CPU against 320 us for "auto".
        decode_threads: FFmpeg decoder threads. 0 (default): PyAV's default, slice threading with one
            thread per CPU (an H.264 stream of one slice per frame, x264's default, decodes on one of
            them, handed over per frame); 1: no FFmpeg threading; ``n > 1``: ``n`` threads, frame and slice
            threading. Give 1
            where many sources decode at once in worker processes (`StreamLoader`): each worker then
            decodes on its own thread, without one idle pool per decoder (docs/benchmarks.md, "Loader
            CPU cost").
        decode: rotation, deinterlacing and timing (`DecodeOptions`; the defaults honour rotation,
            deinterlace interlaced video and keep every decoded frame).

    Attributes:
        num_frames: the header's count (`_stream_info`) until the file has been decoded to its end, then
            the frames decoded: a file that decodes fewer frames than its header says (a stream-copy
            trim, a cut file) ends without an error, and its reader (`streamseg.data.streams`) compares
            the length with the labels; the dataset check (`streamseg.data.check`) does so up front.

    Raises:
        DataError: naming the file, when it cannot be opened (missing, empty, not a video), and naming
            the file and the frame index when decoding fails.

    ``VideoFileSource.opens`` counts opens per path (a `collections.Counter`) so tests can check that a
    pass opens each file once.
    """

    opens: ClassVar[Counter[str]] = Counter()

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = 1,
        size: tuple[int, int] | None = None,
        pixel_path: PixelPath = "rgb24",
        convert_threads: int = 1,
        decode: DecodeOptions = DecodeOptions(),
        decode_threads: int = 0,
    ) -> None:
        self.path = Path(path)
        if isinstance(decode_threads, bool) or not isinstance(decode_threads, int) or decode_threads < 0:
            raise DataError(self.path, f"decode_threads must be an int >= 0, got {decode_threads!r}")
        _check_sampling(self.path, sample_rate, size)
        if pixel_path not in PIXEL_PATHS:
            raise DataError(self.path, f"pixel_path must be one of {PIXEL_PATHS}, got {pixel_path!r}")
        if pixel_path == "i420" and size is not None:
            raise DataError(
                self.path, f"pixel_path='i420' returns frames at the native size; size must be None, got {size!r}"
            )
        self.sample_rate = sample_rate
        self.size = tuple(size) if size is not None else None
        self.pixel_path = pixel_path
        self._sws_options = {"threads": convert_threads} if _SWS_HAS_THREADS else {}
        decode.check(self.path)
        self._container, stream = open_video(self.path)
        VideoFileSource.opens[str(self.path)] += 1
        self.num_frames, self.fps, self.height, self.width = _stream_info(self.path, self._container, stream)
        set_decode_threads(stream, decode_threads)
        self._decoder = FrameDecoder(self._container, stream, decode)
        first = self._decoder.peek()  # rotation and interlacing are known from the first frame on
        if first is not None:
            self.height, self.width = first.height, first.width
        self.fps = self._decoder.fps or self.fps
        cc = stream.codec_context
        # (colorspace, full_range) of pixel_path="i420" frames, from the stream's header
        self.colour = i420_colour(cc.pix_fmt, cc.colorspace, cc.color_range)
        if pixel_path == "i420" and (self.height % 2 or self.width % 2):
            self.close()
            raise DataError(
                self.path,
                f"pixel_path='i420' needs an even frame height and width (4:2:0 chroma is half size), "
                f"got {self.height}x{self.width} (H x W)",
            )
        self._next = 0  # original-rate index of the next frame the decoder will return
        self._ended = False

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self.path)!r}, sample_rate={self.sample_rate}, size={self.size})"

    @property
    def out_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames `read` returns."""
        return self.size if self.size is not None else (self.height, self.width)

    def read(self, n: int) -> torch.Tensor:
        """Decode the next ``n`` sampled frames: ``uint8 (n', 3, H, W)``, ``n' < n`` only at the end."""
        if self._container is None:
            raise DataError(self.path, "read() after close()")
        if self._ended:
            return self._convert([])
        kept, self._next, stop = read_sampled(self._decoder, n, self.sample_rate, self._next)
        if stop == "end":
            self._finish()
        return self._convert(kept)

    def _finish(self) -> None:
        """End of stream: the length is now known; a decoding error is raised (the file is corrupt)."""
        self._ended = True
        self.num_frames = self._next
        if self._decoder.error is not None:
            raise DataError(self.path, self._decoder.error)

    def _convert(self, frames: list[av.VideoFrame]) -> torch.Tensor:
        if not frames:
            if self.pixel_path == "i420":
                return torch.empty((0, 1, self.height * 3 // 2, self.width), dtype=torch.uint8)
            return torch.empty((0, 3, *self.out_size), dtype=torch.uint8)
        if len({(f.width, f.height, f.format.name) for f in frames}) != 1:  # a mid-stream format change
            raise DataError(self.path, f"frame size or pixel format changes before frame {self._next}")
        if self.pixel_path == "i420":
            if (frames[0].height, frames[0].width) != (self.height, self.width):
                raise DataError(
                    self.path,
                    f"frames of {frames[0].height}x{frames[0].width} before frame {self._next}; the header "
                    f"says {self.height}x{self.width} (pixel_path='i420' keeps the native size)",
                )
            return i420_frames(frames, self._sws_options)
        return rgb24_frames(frames, self.size, self._sws_options)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``img_%05d.jpg`` -> a regex capturing the number; exactly one ``%d``/``%0Nd`` field is allowed."""
    fields = re.findall(r"%0?\d*d", pattern)
    if len(fields) != 1:
        raise ValueError(f"frame pattern {pattern!r} must contain exactly one %d or %0Nd field")
    head, tail = pattern.split(fields[0])
    return re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"\Z")


class FrameFolderSource:
    """Numbered images in one folder (``img_00001.jpg``, ...), decoded with torchvision.

    Args:
        folder: the frame folder.
        pattern: printf-style file name with one integer field.
        sample_rate: keep images ``start_index``, ``start_index + s``, ... .
        size: output ``(H, W)`` (torch bilinear, no antialias); None keeps the native size.
        start_index: number of the first frame (1 for the common ``img_00001.jpg``).

    Raises:
        DataError: naming the folder when it is missing, empty or has a gap in the numbering (naming
            the first missing file), and naming the image when it cannot be decoded.
    """

    opens: ClassVar[Counter[str]] = Counter()

    def __init__(
        self,
        folder: str | Path,
        pattern: str = "img_%05d.jpg",
        sample_rate: int = 1,
        size: tuple[int, int] | None = None,
        start_index: int = 1,
    ) -> None:
        self.folder = Path(folder)
        _check_sampling(self.folder, sample_rate, size)
        if not self.folder.is_dir():
            raise DataError(self.folder, "frame folder not found")
        regex = _pattern_regex(pattern)
        numbers = sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := regex.match(p.name)))
        if not numbers:
            raise DataError(self.folder, f"no frames matching {pattern!r}")
        expected = list(range(start_index, start_index + len(numbers)))
        if numbers != expected:
            missing = next(e for e, got in zip(expected, numbers) if e != got)
            raise DataError(self.folder / (pattern % missing), "frame missing (numbering has a gap)")
        FrameFolderSource.opens[str(self.folder)] += 1
        self.pattern, self.start_index = pattern, start_index
        self.sample_rate, self.size = sample_rate, tuple(size) if size is not None else None
        self.num_frames, self.fps = len(numbers), 0.0
        self._next = 0  # original-rate index of the next frame to return
        self._closed = False

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` sampled images as ``uint8 (n', 3, H, W)``."""
        if self._closed:
            raise DataError(self.folder, "read() after close()")
        indices = range(self._next, self.num_frames, self.sample_rate)[:n]
        images = [self._decode(self.folder / (self.pattern % (self.start_index + i))) for i in indices]
        self._next = indices[-1] + self.sample_rate if len(indices) else self.num_frames
        if not images:
            return torch.empty((0, 3, *(self.size or (0, 0))), dtype=torch.uint8)
        if len({im.shape for im in images}) != 1:
            raise DataError(self.folder, f"images of different sizes: {sorted({tuple(im.shape) for im in images})}")
        return resize_frames(torch.stack(images), self.size)

    @staticmethod
    def _decode(path: Path) -> torch.Tensor:
        import torchvision.io as tvio

        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its image codecs in favour of torchcodec, which we do not
                # depend on; the functions still work on every torchvision we support (0.26-0.29).
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
                return tvio.decode_image(tvio.read_file(str(path)), mode=tvio.ImageReadMode.RGB)
        except (RuntimeError, OSError) as e:
            raise DataError(path, f"cannot decode image: {e}") from e

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> FrameFolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureSource:
    """Per-frame features from a ``(D, T)`` ``.npy`` file (the MS-TCN layout), memory-mapped once.

    ``read(n)`` returns ``float32 (n', D)``: frames ``t, t+s, ...`` of the original ``T``.
    """

    opens: ClassVar[Counter[str]] = Counter()

    def __init__(self, npy_path: str | Path, sample_rate: int = 1, fps: float = 0.0) -> None:
        self.path = Path(npy_path)
        _check_sampling(self.path, sample_rate, None)
        if not self.path.is_file():
            raise DataError(self.path, "feature file not found")
        try:
            self._array = np.load(self.path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise DataError(self.path, f"cannot load as .npy: {e}") from e
        if self._array.ndim != 2:
            raise DataError(self.path, f"features must be 2-D (D, T), got shape {self._array.shape}")
        FeatureSource.opens[str(self.path)] += 1
        self.sample_rate, self.fps = sample_rate, fps
        self.dim, self.num_frames = (int(s) for s in self._array.shape)
        self._next = 0

    def read(self, n: int) -> torch.Tensor:
        """The next ``n`` sampled feature vectors, ``float32 (n', D)``."""
        if self._array is None:
            raise DataError(self.path, "read() after close()")
        stop = min(self._next + n * self.sample_rate, self.num_frames)
        block = self._array[:, self._next : stop : self.sample_rate]
        self._next = max(stop, self._next)
        return torch.from_numpy(np.ascontiguousarray(block.T, dtype=np.float32))

    def close(self) -> None:
        self._array = None  # drops the memory map

    def __enter__(self) -> FeatureSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(
    path: str | Path,
    sample_rate: int = 1,
    size: tuple[int, int] | None = None,
    pattern: str = "img_%05d.jpg",
) -> FrameSource:
    """The source for ``path`` by what it is: a ``.npy`` file (features), a folder (images), else a video."""
    path = Path(path)
    if path.suffix == ".npy":
        return FeatureSource(path, sample_rate)
    if path.is_dir():
        return FrameFolderSource(path, pattern, sample_rate, size)
    return VideoFileSource(path, sample_rate, size)
