"""The fast streaming step: S streams advanced one fixed-shape chunk at a time, optimised for a GPU.

`StreamStep` wraps any contract model (``forward(x, state, mask) -> (logits, state)``) and applies, each
optional and measured separately in docs/benchmarks.md:

* **precision**: ``bf16``/``fp16``: the weights, input and state cast (pure low-precision inference, no
  casts per op); ``bf16-mixed``/``fp16-mixed``: fp32 weights, input and state, the step run under
  ``torch.autocast`` (convolutions and matrix products in 16 bits, normalisations, softmax and the state
  in fp32): closer to fp32, which a trained model's labels need (docs/benchmarks.md gives both
  agreements). Labels are compared against fp32 eager by `label_agreement`.
* **channels_last**: 4-D weights in NHWC; the frame tensor is laid out so that the per-frame
  ``(B*T, 3, H, W)`` view the encoders take is NHWC too.
* **compile**: ``torch.compile`` (default mode) of the whole step, preprocessing included, with
  inductor's *freezing* (weights folded as constants, conv+BN fused) for inference.
* **cuda_graph**: the compiled step captured once in a CUDA graph and replayed per chunk: static input,
  mask and state buffers; the new state is copied into the static state inside the graph, so a step is
  one host->device copy plus one ``replay()``. Shapes are fixed (S, T): a video's last, shorter chunk is
  padded and masked, which every contract model supports.
* **uint8 input** (``in_size``): raw ``uint8 (S, 3, T, H0, W0)`` frames are resized (bilinear,
  ``antialias=False``, ``align_corners=False``, the same kernel as the CPU path in float instead of
  uint8 arithmetic) and normalised on the device inside the compiled step, so decode workers only
  decode and colour-convert.
* **I420 input** (``in_format="i420"``): the decoder's own 4:2:0 planes, packed as
  ``uint8 (S, 1, T, H0*3/2, W0)`` (`streamseg.data.video.i420_frames`, 1.5 bytes per pixel), so decode
  workers only decode. Inside the step luma and chroma are resized bilinearly straight to the model's
  size and the BT.601/BT.709 (limited or full range) matrix, composed with the mean/std normalisation
  into one 3x3 matrix + offset built once in ``__init__``, is applied in float32
  (`streamseg.data.video.ycbcr420_to_rgb_float`, the same code as the torch reference `yuv420p_to_rgb`).

`StreamStep.reset(rows)` zeroes the state of the slots that start a new video. The logits returned by
`step` are the LAST stage's, ``(S, K, T)``, and with CUDA graphs live in a static buffer that the next
step overwrites: consume (e.g. ``argmax``) before stepping again.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.video import ycbcr420_to_rgb_float, ycbcr_matrix, ycbcr_name
from .runtime import PRECISIONS as DTYPES

__all__ = ["DTYPES", "IN_FORMATS", "PRECISIONS", "StreamStep", "bench_pipeline", "label_agreement"]

# precision -> (dtype of weights/input/state, autocast dtype or None)
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    **{name: (dtype, None) for name, dtype in DTYPES.items()},
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "fp16-mixed": (torch.float32, torch.float16),
}
IN_FORMATS = ("rgb", "i420")


@contextlib.contextmanager
def _inductor_freezing(enabled: bool):
    """Inductor's ``freezing`` flag for the duration of the first (compiling) calls."""
    try:
        from torch._inductor import config as inductor_config
    except ImportError:  # pragma: no cover - inductor ships with torch >= 2.0
        yield
        return
    old = inductor_config.freezing
    inductor_config.freezing = enabled
    try:
        yield
    finally:
        inductor_config.freezing = old


class StreamStep:
    """One streaming step of ``net`` for ``streams`` slots and chunks of ``chunk`` frames.

    Args:
        net: a contract model (its ``init_state`` zeros are the start-of-video state).
        sample_shape: one input sample as the MODEL takes it: ``(3, H, W)`` frames or ``(D,)`` features.
        streams, chunk: the fixed batch ``S`` and chunk length ``T``.
        device: where to run (``cuda_graph`` needs CUDA).
        precision: ``fp32``, ``bf16``, ``fp16`` (pure casts) or ``bf16-mixed``, ``fp16-mixed`` (autocast).
        channels_last, compile, cuda_graph: see the module docstring.
        in_size: ``(H0, W0)``: take ``uint8`` frames of that size and resize + normalise on the device with
            ``mean``/``std`` (on the [0, 1] scale). None: take the model's input as is (float).
        in_format: with ``in_size``, what the uint8 frames are: ``"rgb"`` ``(S, 3, T, H0, W0)`` or
            ``"i420"`` packed 4:2:0 planes ``(S, 1, T, H0*3/2, W0)`` (H0, W0 even), converted on the device.
        colorspace, full_range: the I420 frames' colour matrix: FFmpeg colorspace id (1 = BT.709, else
            BT.601) and JPEG (full) range; `VideoFileSource.colour` reads both from a file's header.
    """

    def __init__(
        self,
        net: nn.Module,
        sample_shape: Sequence[int],
        *,
        streams: int,
        chunk: int,
        device: str | torch.device = "cuda",
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        cuda_graph: bool = False,
        in_size: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        in_format: str = "rgb",
        colorspace: int = 2,
        full_range: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"StreamStep: precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if streams < 1 or chunk < 1:
            raise ValueError(f"StreamStep: streams and chunk must be >= 1, got {streams}, {chunk}")
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"StreamStep: cuda_graph needs a CUDA device, got {self.device}")
        frames = len(sample_shape) == 3
        if in_size is not None and (not frames or mean is None or std is None):
            raise ValueError("StreamStep: in_size (uint8 input) needs frame input (3, H, W) and mean/std")
        if in_format not in IN_FORMATS:
            raise ValueError(f"StreamStep: in_format must be one of {IN_FORMATS}, got {in_format!r}")
        if in_format == "i420":
            if in_size is None:
                raise ValueError("StreamStep: in_format='i420' needs in_size=(H0, W0), the frames' native size")
            if in_size[0] % 2 or in_size[1] % 2:
                raise ValueError(f"StreamStep: in_format='i420' needs an even in_size (H0, W0) (4:2:0 chroma "
                                 f"is half size), got {tuple(in_size)}")
        self.dtype, self.autocast_dtype = PRECISIONS[precision]
        self.streams, self.chunk = streams, chunk
        self.sample_shape = tuple(sample_shape)
        self.in_size = tuple(in_size) if in_size is not None else None
        self.in_format, self.colorspace, self.full_range = in_format, int(colorspace), bool(full_range)
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.channels_last = channels_last and frames
        net = copy.deepcopy(net).eval().to(self.device)  # casts and layouts must not touch the caller's model
        if self.dtype != torch.float32:
            net = net.to(self.dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        if self.in_size is not None:
            self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1, 1) * 255
            self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1, 1) * 255
        if in_format == "i420":
            # normalised = (M @ yuv + o - 255 mean) / (255 std) = (M / 255std) @ yuv + (o - 255 mean) / 255std
            m, o = ycbcr_matrix(colorspace, full_range)
            mean255, std255 = torch.tensor(mean) * 255, torch.tensor(std) * 255
            self._matrix = (m / std255[:, None]).to(self.device)
            self._offset = ((o - mean255) / std255).to(self.device)
        self._fresh = self._cast_state(net.init_state(streams, self.device))
        self.state = tuple(s.clone() for s in self._fresh)
        self._fn = torch.compile(self._forward) if compile else self._forward
        self._compile = compile
        self._graph: torch.cuda.CUDAGraph | None = None
        self._cuda_graph = cuda_graph
        self._mask = torch.ones(streams, 1, chunk, device=self.device)

    # ------------------------------------------------------------------------------------------ shapes
    def input_shape(self) -> tuple[int, ...]:
        """The ``x`` that `step` takes: ``(S, 3, T, H, W)`` (uint8 at ``in_size`` or model dtype),
        ``(S, 1, T, H0*3/2, W0)`` (uint8 I420) or ``(S, D, T)``."""
        if len(self.sample_shape) == 1:
            return (self.streams, self.sample_shape[0], self.chunk)
        h, w = self.in_size or self.sample_shape[1:]
        if self.in_format == "i420":
            return (self.streams, 1, self.chunk, h * 3 // 2, w)
        return (self.streams, 3, self.chunk, h, w)

    def input_dtype(self) -> torch.dtype:
        return torch.uint8 if self.in_size is not None else self.dtype

    def input_description(self) -> str:
        """What `step` takes, in words, for error messages."""
        if len(self.sample_shape) == 1:
            return f"(S, D, T) {self.dtype} features"
        if self.in_format == "i420":
            return "(S, 1, T, H0*3/2, W0) uint8 packed I420 frames, in_format='i420'"
        if self.in_size is not None:
            return "(S, 3, T, H0, W0) uint8 RGB frames, in_format='rgb'"
        return f"(S, 3, T, H, W) {self.dtype} normalised frames"

    def _cast_state(self, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(s.to(self.dtype) if s.is_floating_point() else s for s in state)

    # ----------------------------------------------------------------------------------------- forward
    def _preprocess(self, x: Tensor) -> Tensor:
        if self.in_format == "i420":  # uint8 (S, 1, T, H0*3/2, W0) -> normalised (S, 3, T, H, W)
            s, _, t, _, w0 = x.shape
            h0 = self.in_size[0]
            h, w = self.sample_shape[1:]
            f = x.reshape(s * t, h0 * 3 // 2, w0)
            y = f[:, :h0]
            uv = f[:, h0:].reshape(s * t, 2, h0 // 2, w0 // 2)  # U then V, each H0/4 rows of W0
            rgb = ycbcr420_to_rgb_float(y, uv, (h, w), self._matrix, self._offset)  # normalised already
            x = rgb.reshape(s, t, 3, h, w).permute(0, 2, 1, 3, 4).to(self.dtype)
        elif self.in_size is not None:  # uint8 (S, 3, T, H0, W0) -> normalised (S, 3, T, H, W)
            s, _, t, h0, w0 = x.shape
            h, w = self.sample_shape[1:]
            f = x.permute(0, 2, 1, 3, 4).reshape(s * t, 3, h0, w0).float()
            if (h0, w0) != (h, w):
                f = F.interpolate(f, size=(h, w), mode="bilinear", antialias=False, align_corners=False)
            x = f.view(s, t, 3, h, w).permute(0, 2, 1, 3, 4)
            x = ((x - self._mean) / self._std).to(self.dtype)
        if self.channels_last:
            # (S, 3, T, H, W) whose memory is (S, T, H, W, 3): the encoders' (S*T, 3, H, W) view is NHWC
            x = x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
        return x

    def _forward(self, x: Tensor, mask: Tensor, *state: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            logits, new_state = self.net(self._preprocess(x), tuple(state), mask)
        return logits[-1], tuple(new_state)

    # -------------------------------------------------------------------------------------------- API
    @torch.no_grad()
    def reset(self, rows: Tensor | None = None) -> None:
        """Start-of-video state for the slots where ``rows`` (bool ``(S,)``) is true; all slots if None."""
        for cur, fresh in zip(self.state, self._fresh):
            if rows is None:
                cur.copy_(fresh)
            else:
                r = rows.to(self.device).view(-1, *([1] * (cur.dim() - 1)))
                cur.copy_(torch.where(r, fresh, cur))

    @torch.no_grad()
    def step(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Advance every slot by one chunk; returns the last stage's logits ``(S, K, T)``."""
        if tuple(x.shape) != self.input_shape():
            raise ValueError(f"StreamStep.step: expected x of shape {self.input_shape()} "
                             f"({self.input_description()}), got {tuple(x.shape)}")
        mask = self._mask if mask is None else mask.to(self.device, torch.float32).view(self.streams, 1, self.chunk)
        if not self._cuda_graph:
            with _inductor_freezing(self._compile):
                out, new_state = self._fn(x.to(self.device, self.input_dtype(), non_blocking=True), mask, *self.state)
            for cur, new in zip(self.state, new_state):  # in place: `reset` and callers keep references
                cur.copy_(new)
            return out
        if self._graph is None:
            self._capture()
        self._x.copy_(x, non_blocking=True)
        self._m.copy_(mask, non_blocking=True)
        self._graph.replay()
        return self._out

    def _capture(self) -> None:
        """Warm up (compiling) on a side stream, then capture step + state update in a CUDA graph."""
        self._x = torch.zeros(self.input_shape(), dtype=self.input_dtype(), device=self.device)
        self._m = torch.ones(self.streams, 1, self.chunk, device=self.device)
        scratch = tuple(s.clone() for s in self.state)  # warm-up must not advance the real state
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), _inductor_freezing(self._compile):
            for _ in range(3):
                self._fn(self._x, self._m, *scratch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        ptrs = {s.untyped_storage().data_ptr() for s in self.state}
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), _inductor_freezing(self._compile):
            out, new_state = self._fn(self._x, self._m, *self.state)
            for cur, new in zip(self.state, new_state):
                if new.untyped_storage().data_ptr() in ptrs:  # a view of some state tensor: copy first
                    new = new.clone()
                cur.copy_(new)
        self._graph, self._out = graph, out


@torch.no_grad()
def label_agreement(reference: nn.Module, fast: StreamStep, chunks: Sequence[Tensor]) -> float:
    """Share of frame labels (argmax of the last stage) on which ``fast`` agrees with ``reference`` (the
    fp32 model) run eagerly in fp32 on the same stream of ``chunks`` (each as `StreamStep.step` takes it;
    uint8 input is preprocessed the same way, in fp32). Both start from a fresh state; ``fast`` is reset after."""
    ref = StreamStep(reference, fast.sample_shape, streams=fast.streams, chunk=fast.chunk, device=fast.device,
                     in_size=fast.in_size, mean=fast.mean, std=fast.std, in_format=fast.in_format,
                     colorspace=fast.colorspace, full_range=fast.full_range)
    fast.reset()
    equal = total = 0
    for x in chunks:
        a = ref.step(x.float() if fast.in_size is None else x).argmax(1)
        b = fast.step(x.to(fast.input_dtype())).argmax(1)
        equal += int((a == b).sum())
        total += a.numel()
    fast.reset()
    return equal / max(total, 1)


def bench_pipeline(step: StreamStep, videos: Sequence[str], *, sample_rate: int = 1, workers: int = 0,
                   decode_size: Sequence[int] | None = None, prefetch_factor: int = 4,
                   run_model: bool = True, repeat: int = 1, pixel_format: str = "rgb",
                   transfer: str = "pageable", decoder: str = "pyav", nvdec_reader: str = "simple") -> dict:
    """End to end from video files: ``workers`` decode processes (each owning a block of the S slots,
    `streamseg.data.streams.StreamLoader`) -> uint8 batches -> ``step`` on the device.

    ``pixel_format``: what the workers ship: ``"rgb"`` (swscale rgb24, optionally resized on the CPU) or
    ``"i420"`` (the decoder's packed 4:2:0 planes at the native size, no conversion or resize on the
    CPU; the step must be built with ``in_format="i420"`` and the videos' colour matrix).
    ``decode_size``: the size the workers resize to on the CPU (rgb only); None decodes at the native
    size and leaves the resize to the step (``step.in_size`` must then be the videos' size). Every video is
    played once; ``run_model=False`` measures decoding alone (the same loader, no model).
    ``repeat`` plays the list that many times (longer runs amortise the workers' start-up).
    ``transfer``: how worker batches reach the device: ``"pageable"`` (the default: the workers fill a ring
    of full batches in shared memory, each copied straight to the device by the main thread; fastest measured),
    ``"pinned"`` (DataLoader's pin thread copies each part to page-locked memory, then an asynchronous
    copy; no ring), or ``"none"`` (kept on the host, merged there; ``run_model=False`` only: what
    decoding + the worker -> main-process hand-over alone reach).
    ``decoder="nvdec"`` (``pixel_format="i420"``, a CUDA step): the GPU's hardware decoder instead of the
    worker processes (`streamseg.data.nvdec.NvdecSource`: one reader per video, each decoding its next
    chunk ahead in a pool of ``2 S`` threads, where each slot's next video is also opened a step ahead
    (`StreamBatcher.open_pool`); ``workers`` and ``transfer`` are then unused; ``nvdec_reader``: which
    decoder reads (`NvdecSource`'s ``reader``: PyNvVideoCodec's ``"simple"`` or ``"threaded"``, or FFmpeg's
    ``"ffmpeg"``).
    Returns frames (sampled, labelled by the model), wall seconds, frames/s, and the seconds the loop
    waited for the loader (``wait_s``: decode-bound when it is most of ``wall_s``).
    """
    import time

    from ..data.streams import StreamBatcher, StreamLoader, StreamVideo
    from ..data.video import VideoFileSource, probe

    if pixel_format not in IN_FORMATS:
        raise ValueError(f"bench_pipeline: pixel_format must be one of {IN_FORMATS}, got {pixel_format!r}")
    if step.in_size is None:
        raise ValueError("bench_pipeline: the step must take uint8 frames (StreamStep(in_size=...))")
    if step.in_format != pixel_format:
        raise ValueError(f"bench_pipeline: pixel_format={pixel_format!r}, but the step takes "
                         f"in_format={step.in_format!r} frames; build it with StreamStep(in_format={pixel_format!r})")
    if transfer not in ("pinned", "pageable", "none"):
        raise ValueError(f"bench_pipeline: transfer must be 'pinned', 'pageable' or 'none', got {transfer!r}")
    if decoder not in ("pyav", "nvdec"):
        raise ValueError(f"bench_pipeline: decoder must be 'pyav' or 'nvdec', got {decoder!r}")
    if decoder == "nvdec" and (pixel_format != "i420" or step.device.type != "cuda"):
        raise ValueError("bench_pipeline: decoder='nvdec' gives I420 frames on a GPU: it needs pixel_format='i420' "
                         "and a CUDA step")
    if transfer == "none" and run_model:
        raise ValueError("bench_pipeline: transfer='none' keeps frames on the host; it needs run_model=False")
    size = tuple(decode_size) if decode_size is not None else None
    if pixel_format == "i420" and size is not None:
        raise ValueError(f"bench_pipeline: pixel_format='i420' ships frames at the native size (the step "
                         f"resizes); decode_size must be None, got {size}")
    if (size or step.in_size) != step.in_size:
        raise ValueError(f"bench_pipeline: frames decoded at {size}, the step takes {step.in_size}")
    pixel_path = "i420" if pixel_format == "i420" else "rgb24"
    pool = None
    if decoder == "nvdec":
        from concurrent.futures import ThreadPoolExecutor
        from functools import partial

        from ..data.nvdec import NvdecSource

        pool = ThreadPoolExecutor(2 * step.streams, thread_name_prefix="nvdec")  # decode ahead + open ahead
    items = []
    for v in videos:
        n, _, h, w = probe(v)
        if size is None and (h, w) != step.in_size:
            raise ValueError(f"bench_pipeline: {v} is {h}x{w}; the step takes {step.in_size} (native decode)")
        if pixel_format == "i420":
            with VideoFileSource(v, sample_rate, None, pixel_path="i420") as source:  # header only
                colour = source.colour
            if ycbcr_name(*colour) != ycbcr_name(step.colorspace, step.full_range):
                raise ValueError(f"bench_pipeline: {v} is {ycbcr_name(*colour)} Y'CbCr, the step converts "
                                 f"{ycbcr_name(step.colorspace, step.full_range)}; build it with "
                                 f"StreamStep(colorspace={colour[0]}, full_range={colour[1]})")
        opener = (_VideoOpener(str(v), sample_rate, size, pixel_path, 1 if workers else 0) if pool is None
                  else partial(NvdecSource, v, (h, w), sample_rate, step.device, pool, reader=nvdec_reader))
        items += [StreamVideo(name=f"{r}:{v}", length=n, open=opener) for r in range(repeat)]
    h0, w0 = step.in_size
    sample_shape = (1, h0 * 3 // 2, w0) if pixel_format == "i420" else (3, h0, w0)
    batcher = StreamBatcher(items, batch_size=step.streams, chunk_size=step.chunk,
                            sample_shape=sample_shape, sample_rate=sample_rate, uint8_frames=True)
    on_gpu = step.device.type == "cuda" and transfer != "none"
    if pool is not None:  # decoded on the GPU in this process, written straight into device batches
        batcher.frame_device = step.device
        batcher.open_pool = pool  # each slot's next video opens (and decodes its first chunk) ahead
        loader = StreamLoader(batcher, num_workers=0, device=step.device)
    else:
        loader = StreamLoader(batcher, num_workers=workers, prefetch_factor=prefetch_factor,
                              device=step.device if on_gpu else None, pin_memory=on_gpu and transfer == "pinned")
    frames = 0
    wait = 0.0
    start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        frames += batch["mask"].sum()
        if run_model:
            step.reset(batch["reset"])  # no host sync: rows that start a video get the initial state
            step.step(batch["x"], batch["mask"])
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    wall = time.perf_counter() - start
    if pool is not None:
        pool.shutdown()
    frames = int(frames)
    return {"frames": frames, "wall_s": wall, "frames_per_s": frames / wall, "wait_s": wait,
            "decoder": decoder if pool is None else f"nvdec-{nvdec_reader}",
            "workers": workers, "decode_size": list(size) if size else "native", "videos": len(items),
            "model": run_model, "pixel_format": pixel_format, "transfer": transfer}


class _VideoOpener:
    """A picklable ``open`` for `StreamVideo` (worker processes rebuild sources from it)."""

    def __init__(self, path: str, sample_rate: int, size: tuple[int, int] | None, pixel_path: str = "rgb24",
                 decode_threads: int = 0) -> None:
        self.path, self.sample_rate, self.size, self.pixel_path = path, sample_rate, size, pixel_path
        self.decode_threads = decode_threads  # 1 in worker processes: see VideoFileSource

    def __call__(self):
        from ..data.video import VideoFileSource

        return VideoFileSource(self.path, self.sample_rate, self.size, pixel_path=self.pixel_path,
                               decode_threads=self.decode_threads)
