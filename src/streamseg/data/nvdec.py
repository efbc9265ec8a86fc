"""Hardware (NVDEC) video decoding through PyNvVideoCodec: frames decoded by the GPU, straight into its memory.

An optional backend beside PyAV (`streamseg.data.video.VideoFileSource`, the default and the reference),
installed with ``pip install 'streamseg[gpu-decode]'`` and chosen with ``data.decoder=nvdec`` (training
needs ``data.preprocess=device-i420``, which consumes exactly what NVDEC gives: the 4:2:0 planes at the
native size). What it keeps from the PyAV path:

* **the same frames**: every decoded frame in display order, frame ``i`` of the file is frame ``i`` here,
  and a reader keeps frames ``0, s, 2s, ...`` (``sample_rate`` ``s``) exactly as `VideoFileSource` does;
  the planes are the decoder's own 8-bit 4:2:0 samples, so for the same H.264 stream they are
  bit-identical to PyAV's ``yuv420p`` planes (H.264 decoding is exactly specified; tested on a GPU,
  ``tests/data/test_nvdec.py``). No colour conversion happens here (the device augmentation converts,
  `streamseg.data.augment.augment_to_model`), so there is no YUV->RGB rounding to tolerate.
* **one reader per video**, opened when its stream slot starts the video and kept open across all its
  chunks (`NvdecSource`).

What it adds: each reader decodes its NEXT chunk in a background thread (a pool shared by all readers,
one thread per slot) on its own CUDA stream, while the training or inference step runs; the consumer's
stream waits on an event, never the host. Measured on one H100 (docs/benchmarks.md, "NVDEC decoding"):
bit-exact, but with PyNvVideoCodec's SimpleDecoder 16 readers decode only 2.2-2.4x what one does, not
faster than 15 PyAV worker processes; the ThreadedDecoder reader (``threaded=True``,
``data.nvdec_reader=threaded``) decodes one 1280x720 clip 1.9x faster than SimpleDecoder, but 16 of them
are still no faster than the PyAV processes, and one benchmark process aborted in native code
(``malloc(): unaligned tcache chunk detected``) with it, so it stays opt-in.

A third reader needs no extra package: ``data.nvdec_reader=ffmpeg`` drives the same NVDEC engines through
FFmpeg's own decoder, reached by PyAV's CUDA hardware acceleration (``av.open(..., hwaccel=HWAccel("cuda",
is_hw_owned=True))``, PyAV >= 18); its frames stay in GPU memory and are taken as DLPack tensors
(luma, interleaved chroma), and FFmpeg writes them on CUDA's legacy default stream, which this reader's
stream waits for. Measured on one H100 (docs/benchmarks.md, "Eleventh session"): 16-32 readers decode
4,019-4,069 frames/s of 1280x720 H.264, 94 % of PyNvVideoCodec's 4,245-4,321 on the same host.

Files NVDEC cannot decode like PyAV (a codec or profile NVDEC lacks, 10-bit or 4:2:2/4:4:4 planes, a
display rotation or interlacing, which PyAV's decode layer corrects and NVDEC would not) are found
before training by `nvdec_plan`: with fallback on (default) they are decoded by PyAV with a warning
naming the file; with fallback off the run stops with a one-line error naming the file.

NV12, NVDEC's 4:2:0 layout, holds the luma plane then ONE half-height plane of interleaved Cb, Cr
samples; `nv12_to_i420` repacks it as FFmpeg's I420 (`streamseg.data.video.i420_frames`): luma, then the
whole Cb plane, then the whole Cr plane, each chroma plane flattened into H/4 rows of W.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import torch

from streamseg.data.errors import DataError

__all__ = ["DECODERS", "EXTRA", "READERS", "NvdecSource", "import_pynvvideocodec", "nv12_to_i420", "nvdec_plan",
           "planes_to_i420"]

DECODERS = ("pyav", "nvdec")
READERS = ("simple", "threaded", "ffmpeg")  # PyNvVideoCodec's two decoders, FFmpeg's through PyAV
EXTRA = "streamseg[gpu-decode]"


class NvdecUnavailable(ImportError):
    """PyNvVideoCodec cannot be imported; the message names the extra that installs it."""


def import_pynvvideocodec() -> Any:
    """The ``PyNvVideoCodec`` module, or `NvdecUnavailable` naming the extra to install."""
    try:
        return importlib.import_module("PyNvVideoCodec")
    except ImportError as e:  # not installed, or its native library (libnvcuvid) missing
        raise NvdecUnavailable(
            f"data.decoder=nvdec needs PyNvVideoCodec: pip install '{EXTRA}' ({type(e).__name__}: {e})"
        ) from e


def nv12_to_i420(nv12: torch.Tensor) -> torch.Tensor:
    """NV12 ``uint8 (n, H*3/2, W)`` (luma rows, then H/2 rows of interleaved Cb Cr) -> packed I420
    ``uint8 (n, 1, H*3/2, W)`` as `streamseg.data.video.i420_frames` lays it out. Exact (a copy), any device."""
    n, hx, w = nv12.shape
    h = hx * 2 // 3
    return planes_to_i420(nv12[:, :h], nv12[:, h:].reshape(n, h // 2, w // 2, 2))


def planes_to_i420(luma: torch.Tensor, cbcr: torch.Tensor) -> torch.Tensor:
    """NV12's two planes, luma ``uint8 (n, H, W)`` and interleaved chroma ``(n, H/2, W/2, 2)`` (any strides:
    FFmpeg's frames are pitched) -> packed I420 ``uint8 (n, 1, H*3/2, W)``. Exact (a copy), any device."""
    n, h, w = luma.shape
    out = torch.empty((n, 1, h * 3 // 2, w), dtype=torch.uint8, device=luma.device)
    out[:, 0, :h] = luma
    q = h // 4  # a chroma plane (H/2 x W/2) is H/4 rows of W
    out[:, 0, h : h + q] = cbcr[..., 0].reshape(n, q, w)
    out[:, 0, h + q :] = cbcr[..., 1].reshape(n, q, w)
    return out


def _plane_tensor(frame: Any, size: tuple[int, int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A decoded frame as ``uint8 (H*3/2, W)`` NV12 (PyNvVideoCodec's, DLPack), or as FFmpeg's two planes
    ``(luma (H, W), chroma (H/2, W/2, 2))``; ValueError for any other layout."""
    h, w = size
    if isinstance(frame, tuple):  # `_FfmpegDecoder`'s planes
        luma, cbcr = frame
        if (luma.dtype, cbcr.dtype) != (torch.uint8, torch.uint8) or tuple(luma.shape) != (h, w) \
                or tuple(cbcr.shape) != (h // 2, w // 2, 2):
            raise ValueError(f"decoded planes are {luma.dtype} {tuple(luma.shape)} and {cbcr.dtype} "
                             f"{tuple(cbcr.shape)}, not 8-bit 4:2:0 NV12 ({h}, {w}) and ({h // 2}, {w // 2}, 2) "
                             "(a 10-bit or 4:2:2/4:4:4 stream?)")
        return frame
    try:
        t = torch.from_dlpack(frame)
    except (TypeError, RuntimeError, BufferError, AttributeError):  # no DLPack: the CUDA array interface
        t = torch.as_tensor(frame, device="cuda")
    if t.dim() > 2:  # (H*3/2, W, 1) or (1, H*3/2, W)
        t = t.squeeze()
    if t.dtype != torch.uint8 or tuple(t.shape) != (h * 3 // 2, w):
        raise ValueError(f"decoded frames are {t.dtype} {tuple(t.shape)}, not 8-bit 4:2:0 NV12 "
                         f"uint8 ({h * 3 // 2}, {w}) (a 10-bit or 4:2:2/4:4:4 stream?)")
    return t


# Frames a ThreadedDecoder decodes ahead of the reader: two chunks of 32 (a 1280x720 NV12 frame is 1.4 MB,
# so 64 frames are 88 MB of GPU memory per open video)
AHEAD = 64


class _FfmpegDecoder:
    """FFmpeg's NVDEC decoder (PyAV's CUDA hardware acceleration) behind PyNvVideoCodec's sequential
    interface: ``len()`` is the container's frame count (0 when its header has none), ``get_batch_frames(k)``
    the next ``k`` frames (fewer at the end) as ``(luma, chroma)`` CUDA tensors that keep FFmpeg's frames
    alive. FFmpeg writes them on CUDA's legacy default stream. A frame FFmpeg did not decode on the GPU is
    an error (software fallback is off: a silent CPU decode would hide a codec NVDEC lacks)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import av
        from av.codec.hwaccel import HWAccel

        self.path = path
        # FFmpeg's default for owned frames, the device's primary context, is refused ("Primary context
        # already active with incompatible flags", EOPNOTSUPP) once torch has made that context with its
        # own flags; so FFmpeg takes the context current on this thread, torch's primary context, which
        # the stream query below makes current here
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.cuda.device(index):
            torch.cuda.current_stream(index).query()
            self._container = av.open(str(path), hwaccel=HWAccel(
                "cuda", device=str(index), allow_software_fallback=False, is_hw_owned=True,
                options={"primary_ctx": "0", "current_ctx": "1"}))
        stream = self._container.streams.video[0]
        self._count = int(stream.frames or 0)
        self._frames = self._container.decode(stream)

    def __len__(self) -> int:
        return self._count

    def get_batch_frames(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for frame in itertools.islice(self._frames, k):
            if frame.format.name != "cuda":
                raise ValueError(f"FFmpeg decoded a frame as {frame.format.name} on the CPU, not with NVDEC")
            # PyAV exports CUDA planes only when asked without a stream (the order is the default stream's)
            out.append((torch.from_dlpack(frame.planes[0].__dlpack__()),
                        torch.from_dlpack(frame.planes[1].__dlpack__())))
        return out

    def close(self) -> None:
        self._frames = iter(())
        self._container.close()


def _ffmpeg_cuda() -> None:
    """`NvdecUnavailable` unless this PyAV keeps decoded frames on the GPU (``HWAccel(is_hw_owned=True)``,
    CUDA planes exported as DLPack: PyAV 18 has both) and its FFmpeg has CUDA hardware acceleration
    (``reader="ffmpeg"``)."""
    import av
    from av.codec.hwaccel import HWAccel, hwdevices_available
    from av.video.plane import VideoPlane

    try:
        HWAccel("cuda", is_hw_owned=True)
    except TypeError:
        owned = False
    else:
        owned = hasattr(VideoPlane, "__dlpack__")
    if not owned:
        raise NvdecUnavailable(f"data.nvdec_reader=ffmpeg needs a PyAV that keeps decoded frames on the GPU "
                               f"(PyAV >= 18; this is {av.__version__}): pip install -U av")
    if "cuda" not in hwdevices_available():
        raise NvdecUnavailable("data.nvdec_reader=ffmpeg needs a PyAV whose FFmpeg has CUDA hardware "
                               f"acceleration (this one has: {', '.join(hwdevices_available()) or 'none'}); "
                               f"use data.nvdec_reader=simple with pip install '{EXTRA}'")


def _open_decoder(nvc: Any, path: Path, device: torch.device, stream: int, reader: str = "simple") -> Any:
    """PyNvVideoCodec's ThreadedDecoder (``"threaded"``: decodes on its own native thread, ahead of the
    reader) or SimpleDecoder (``"simple"``: decodes inside each ``get_batch_frames`` call), or FFmpeg's
    (``"ffmpeg"``, `_FfmpegDecoder`; ``nvc`` and ``stream`` unused)."""
    if reader == "ffmpeg":
        return _FfmpegDecoder(path, device)
    common = dict(gpu_id=device.index or 0, cuda_stream=stream, use_device_memory=True,
                  output_color_type=nvc.OutputColorType.NATIVE)
    if reader == "threaded":
        return nvc.ThreadedDecoder(str(path), buffer_size=AHEAD, **common)
    return nvc.SimpleDecoder(str(path), **common)


def _check_reader(reader: str) -> None:
    if reader not in READERS:
        raise ValueError(f"the NVDEC reader must be one of {READERS}, got {reader!r}")


def nvdec_plan(paths: Iterable[str | Path], size: tuple[int, int], fallback: bool,
               device: torch.device | str = "cuda", reader: str = "simple") -> tuple[bool, set[str]]:
    """Which files NVDEC decodes, decided before training: ``(use_nvdec, pyav_files)``.

    Each file is opened by NVDEC and its first frame decoded and checked (8-bit 4:2:0, ``size`` (H, W));
    its PyAV reading must need no rotation or deinterlacing. A file that fails goes to ``pyav_files``
    with a warning naming it (``fallback``), or raises `DataError` naming it. PyNvVideoCodec missing (or,
    for ``reader="ffmpeg"``, a PyAV without CUDA acceleration): ``(False, set())`` with a warning naming
    the extra (``fallback``), else `NvdecUnavailable`.
    """
    from streamseg.data.video import VideoFileSource  # PyAV: only to compare what it would do

    _check_reader(reader)
    try:
        nvc = _ffmpeg_cuda() if reader == "ffmpeg" else import_pynvvideocodec()
    except NvdecUnavailable as e:
        if not fallback:
            raise
        warnings.warn(f"{e}; decoding every video with PyAV (data.decoder_fallback=true)", stacklevel=2)
        return False, set()
    device = torch.device(device)
    pyav: set[str] = set()
    for path in dict.fromkeys(Path(p) for p in paths):
        try:
            with VideoFileSource(path, pixel_path="i420") as ref:
                if ref.rotation or ref.interlaced:
                    raise ValueError(f"it is {'rotated' if ref.rotation else 'interlaced'}; PyAV corrects that, "
                                     "NVDEC would not")
            decoder = _open_decoder(nvc, path, device, 0, reader)
            first = decoder.get_batch_frames(1)
            if not first:
                raise ValueError("NVDEC decoded no frame")
            _plane_tensor(first[0], size)
            del first
            if isinstance(decoder, _FfmpegDecoder):
                decoder.close()
            del decoder
        except DataError:
            raise
        except Exception as e:  # the library raises plain RuntimeErrors for unsupported codecs/profiles
            reason = f"NVDEC cannot decode it like PyAV ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            if not fallback:
                raise DataError(path, f"{reason}; data.decoder_fallback=false (set it true to decode such "
                                      "files with PyAV, or use data.decoder=pyav)") from e
            warnings.warn(f"{path}: {reason}; decoding it with PyAV (data.decoder_fallback=true)", stacklevel=2)
            pyav.add(str(path))
    return True, pyav


class NvdecSource:
    """Sequential NVDEC decoding of one video, one decoder kept open across all reads (`FrameSource`).

    ``read(n)`` returns the next ``n`` sampled frames (frames ``0, s, 2s, ...``) as packed I420
    ``uint8 (n', 1, H*3/2, W)`` on ``device``, ready for the caller's current CUDA stream; ``n' < n`` only
    at the end. After each read the next ``n`` are decoded ahead in ``pool`` (one thread per video at a
    time) on this source's own CUDA stream.

    Args:
        path: the video. size: its ``(H, W)`` (even), as `probe` gives it.
        sample_rate: keep every ``sample_rate``-th frame. device: the decoding GPU.
        pool: the thread pool that decodes ahead (None: decode when asked, on the caller's thread).
        reader: ``"simple"``, PyNvVideoCodec's SimpleDecoder (decodes inside each call; the default, the
            first one measured on the GPU: bit-exact), ``"threaded"``, its ThreadedDecoder (its own native
            thread decodes up to `AHEAD` frames ahead; one benchmark process aborted with it), or
            ``"ffmpeg"``, FFmpeg's NVDEC decoder through PyAV (`_FfmpegDecoder`; no PyNvVideoCodec needed).
        threaded: the older spelling of ``reader="threaded"``.
    """

    opens: ClassVar[Counter[str]] = Counter()

    def __init__(self, path: str | Path, size: tuple[int, int], sample_rate: int = 1,
                 device: torch.device | str = "cuda", pool: ThreadPoolExecutor | None = None,
                 threaded: bool = False, reader: str | None = None) -> None:
        self.path, self.size, self.sample_rate = Path(path), (int(size[0]), int(size[1])), sample_rate
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise DataError(self.path, f"sample_rate must be an int >= 1, got {sample_rate!r}")
        self.device, self.pool = torch.device(device), pool
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self.reader = reader or ("threaded" if threaded else "simple")
        _check_reader(self.reader)
        nvc = None if self.reader == "ffmpeg" else import_pynvvideocodec()
        # the decoder works on CUDA's legacy default stream, not on ours: FFmpeg's always does
        self._legacy = self._cuda and self.reader == "ffmpeg"
        try:
            try:
                self._decoder = _open_decoder(nvc, self.path, self.device, self._stream.cuda_stream if self._cuda else 0,
                                              self.reader)
            except TypeError:  # a binding that takes no raw stream handle
                self._decoder, self._legacy = _open_decoder(nvc, self.path, self.device, 0, self.reader), self._cuda
        except Exception as e:
            raise DataError(self.path, f"NVDEC cannot open it: {e}") from e
        NvdecSource.opens[str(self.path)] += 1
        self.num_frames, self.fps = len(self._decoder), 0.0
        self._header_frames = self.num_frames  # the container's count: never ask the decoder past it
        self._next = 0  # original-rate index of the next frame the decoder returns
        self._ended = False
        self._ready: torch.Tensor | None = None  # sampled frames decoded and not yet returned
        self._ahead: Future | None = None

    def __repr__(self) -> str:
        return f"NvdecSource({str(self.path)!r}, sample_rate={self.sample_rate})"

    def _decode(self, n: int) -> tuple[torch.Tensor, Any]:
        """Decode until ``n`` more sampled frames (fewer at the end): (I420 frames, event or None)."""
        s = self.sample_rate
        first = math.ceil(self._next / s) * s  # the next frame to keep
        need = 0 if self._ended or n == 0 else first + (n - 1) * s - self._next + 1
        ctx = torch.cuda.stream(self._stream) if self._cuda else contextlib.nullcontext()
        with ctx:
            try:
                ask = min(need, self._header_frames - self._next) if self._header_frames > 0 else need
                frames = []
                while len(frames) < ask:  # a ThreadedDecoder hands out at most AHEAD frames a call
                    got = self._decoder.get_batch_frames(min(ask - len(frames), AHEAD))
                    frames += got
                    if not got:
                        break
                if self._legacy:  # our copies below wait for the decoder's work on the default stream
                    self._stream.wait_stream(torch.cuda.default_stream(self.device))
                keep = [_plane_tensor(f, self.size) for j, f in enumerate(frames) if (self._next + j) % s == 0]
            except Exception as e:
                raise DataError(self.path, f"NVDEC decoding failed after frame {self._next}: {e}") from e
            self._next += len(frames)
            if len(frames) < need:
                self._ended = True
                self.num_frames = self._next
            h, w = self.size
            if not keep:
                out = torch.empty((0, 1, h * 3 // 2, w), dtype=torch.uint8, device=self.device)
            elif isinstance(keep[0], tuple):  # FFmpeg's frames: the two planes apart
                out = planes_to_i420(torch.stack([y for y, _ in keep]), torch.stack([c for _, c in keep]))
            else:
                out = nv12_to_i420(torch.stack(keep))
            del frames, keep
            event = None
            if self._cuda:
                event = torch.cuda.Event()
                event.record(self._stream)
                # the decoder may reuse its surfaces at its next call: the copies above finish first (this
                # thread waits, not the consumer)
                event.synchronize()
        return out, event

    def _take(self, result: tuple[torch.Tensor, Any]) -> torch.Tensor:
        frames, event = result
        if event is not None:  # the consumer's stream waits for the decode stream, the host does not
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            frames.record_stream(current)
        return frames

    def prefetch(self, n: int) -> None:
        """Start decoding the first ``n`` sampled frames in ``pool`` (no-op without a pool, or once reading
        began): `StreamBatcher.open_pool` calls it when it opens a video ahead of its first chunk."""
        if self.pool is not None and self._ahead is None and self._ready is None and self._next == 0:
            self._ahead = self.pool.submit(self._decode, n)

    def read(self, n: int) -> torch.Tensor:
        if self._decoder is None:
            raise DataError(self.path, "read() after close()")
        have = self._ready
        if self._ahead is not None:
            got = self._take(self._ahead.result())
            self._ahead = None
            have = got if have is None else torch.cat([have, got])
        if have is None or len(have) < n:
            more = self._take(self._decode(n - (0 if have is None else len(have))))
            have = more if have is None else torch.cat([have, more])
        out, rest = have[:n], have[n:]
        self._ready = rest if len(rest) else None
        if self.pool is not None and not self._ended:
            self._ahead = self.pool.submit(self._decode, n)
        return out

    def close(self) -> None:
        if self._ahead is not None:  # the decoder must outlive the thread using it
            with contextlib.suppress(Exception):
                self._ahead.result()
            self._ahead = None
        if isinstance(self._decoder, _FfmpegDecoder):
            self._decoder.close()
        self._decoder, self._ready = None, None

    def __enter__(self) -> NvdecSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
