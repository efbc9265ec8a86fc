"""Benchmarks of a streaming model: size, FLOPs, model-only speed, end-to-end speed from video files.

* `model_cost`: parameters, FLOPs per forward of one chunk (batch 1) and per frame (attention counted,
  see `streamseg.flops`). A stateful causal model's chunk forward includes the work on its cached
  context, so FLOPs per frame = FLOPs per chunk / chunk length is what streaming really costs.
* `bench_model`: S concurrent streams advanced chunk by chunk (batch S, state carried) on random input:
  per-chunk latency (p50, p99 over every timed step) and throughput (frames/s = S * T * steps / time,
  the median over repeats), after warm-up steps. Peak memory: CUDA's max allocated, or the process's
  peak RSS on CPU (which includes everything the process ever held, Python and libraries too).
* `bench_end_to_end`: the same streams fed from video files: PyAV decode + resize + normalise + model,
  one process, S slots each taking the next video when its own ends (state row reset). Frames/s counts
  sampled frames the model labels; decode and model time are reported separately.
* Backends: ``torch`` (eager PyTorch, any precision) or ``onnxruntime``: the model exported with its
  state as graph inputs/outputs (`streamseg.deploy.onnx_export`) and run through `OnnxStreamer`, fp32,
  the same timing loops. The graph has no mask input: a video's last, short chunk is padded and run
  whole, and the slot's state is reset before its next video, so padding never reaches a real frame.
  ONNX Runtime's memory is outside torch's allocator: its peak is the process's RSS.

Timings are wall clock (``time.perf_counter``), CUDA synchronised around each step.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..data.streams import normalize_frames
from ..data.video import VideoFileSource
from ..flops import count_flops, count_params
from .runtime import PRECISIONS

__all__ = ["BACKENDS", "PRECISIONS", "bench_end_to_end", "bench_model", "bench_onnx_model", "environment",
           "model_cost", "onnx_streamer"]

Precision = Literal["fp32", "bf16", "fp16"]
Backend = Literal["torch", "onnxruntime"]
BACKENDS = ("torch", "onnxruntime")


def environment(device: str) -> dict[str, Any]:
    """What the numbers depend on: versions, CPU model and threads, GPU."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import av

        env["av"] = av.__version__
    except ImportError:  # pragma: no cover - av is a core dependency
        pass
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


def _example(sample_shape: Sequence[int], batch: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.randn(batch, sample_shape[0], length, *sample_shape[1:], device=device)


def model_cost(net: nn.Module, sample_shape: Sequence[int], chunk: int) -> dict[str, Any]:
    """Parameters and FLOPs (multiply-add = 2) of one forward of ``chunk`` frames, batch 1, on CPU."""
    net = net.eval()
    device = next(net.parameters()).device
    x = _example(sample_shape, 1, chunk, device)
    flops = count_flops(net, (x, net.init_state(1, device), None))
    return {"params": count_params(net), "flops_per_forward": flops, "flops_per_frame": flops / chunk,
            "macs_per_frame": flops / 2 / chunk, "forward_frames": chunk}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    # ru_maxrss is in KiB on Linux
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


# progress(phase, done, total): called after each step of a phase, so a caller can show progress and an
# estimate of the time left (the CLI draws a bar on stderr).
Progress = Callable[[str, int, int], None]


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


def _time_steps(step: Callable[[], None], frames_per_step: int, warmup: int, steps: int,
                repeats: int, progress: Progress = _no_progress, phase: str = "model") -> dict[str, Any]:
    """``warmup`` untimed calls of ``step`` (which must block until its work is done), then ``repeats``
    runs of ``steps`` timed calls: throughput per run, latency percentiles over every timed call."""
    total = warmup + steps * repeats
    for i in range(warmup):
        step()
        progress(phase, i + 1, total)
    step_times: list[float] = []
    run_fps: list[float] = []
    for _ in range(repeats):
        run_start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - t0)
            progress(phase, warmup + len(step_times), total)
        run_fps.append(frames_per_step * steps / (time.perf_counter() - run_start))
    ms = np.array(step_times) * 1000
    return {
        "frames_per_s": statistics.median(run_fps), "frames_per_s_runs": run_fps,
        "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p99": float(np.percentile(ms, 99)),
        "steps": len(step_times), "warmup": warmup, "repeats": repeats,
    }


@torch.no_grad()
def bench_model(net: nn.Module, sample_shape: Sequence[int], *, streams: int, chunk: int, device: str = "cpu",
                precision: Precision = "fp32", warmup: int = 3, steps: int = 20, repeats: int = 3,
                progress: Progress = _no_progress) -> dict[str, Any]:
    """Model-only speed of ``streams`` concurrent streams advanced ``chunk`` frames per step.

    Returns ``{"frames_per_s", "frames_per_s_runs", "latency_ms_p50", "latency_ms_p99", "steps", ...}``:
    throughput is the median over ``repeats`` runs of ``steps`` steps; latency percentiles are over all
    timed steps (the time to label one chunk of every stream).
    """
    dev = torch.device(device)
    net = net.eval().to(dev)
    x = _example(sample_shape, streams, chunk, dev)
    state = net.init_state(streams, dev)
    _reset_peak(dev)

    def step() -> None:
        nonlocal state
        _, state = net(x, state, None)
        _sync(dev)

    with _autocast(dev, precision):
        result = _time_steps(step, streams * chunk, warmup, steps, repeats, progress)
    return {**result, **_peak_memory_mb(dev)}


def bench_onnx_model(streamer: Any, *, streams: int, chunk: int, warmup: int = 3, steps: int = 20,
                     repeats: int = 3, progress: Progress = _no_progress) -> dict[str, Any]:
    """`bench_model` through ONNX Runtime: an `OnnxStreamer` (its graph's input shape) stepped on random
    float32 input with its state carried. Same keys; peak memory is the process's RSS."""
    shape = streamer.meta.sample_shape
    x = np.random.default_rng(0).standard_normal((streams, shape[0], chunk, *shape[1:]), dtype=np.float32)
    state = streamer.init_state(streams)

    def step() -> None:
        nonlocal state
        _, state = streamer.step(x, state)  # session.run returns once the outputs are on the host

    return {**_time_steps(step, streams * chunk, warmup, steps, repeats, progress),
            **_peak_memory_mb(torch.device("cpu"))}


def onnx_streamer(path: str | Path, device: str = "cpu", threads: int | None = None):
    """An `OnnxStreamer` on ``device``: ``cpu`` (CPUExecutionProvider) or ``cuda[:N]`` (CUDAExecutionProvider,
    which needs the onnxruntime-gpu package)."""
    import onnxruntime as ort

    from .runtime import OnnxStreamer

    if device == "cpu":
        providers: list = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"--device {device} with --backend onnxruntime needs CUDAExecutionProvider; this "
                             f"onnxruntime has {ort.get_available_providers()} (install onnxruntime-gpu)")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    else:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return OnnxStreamer(path, threads=threads, providers=providers)


class _TorchSlots:
    """`bench_end_to_end`'s model side on PyTorch: normalise on the device, masked step, state rows reset."""

    def __init__(self, net: nn.Module, device: torch.device, precision: Precision, mean, std) -> None:
        self.net, self.dev, self.precision, self.mean, self.std = net.eval().to(device), device, precision, mean, std

    def init_state(self, streams: int):
        return self.net.init_state(streams, self.dev)

    def reset(self, state, fresh, rows: torch.Tensor):
        r = rows.to(self.dev)
        return tuple(torch.where(r.view(-1, *([1] * (a.dim() - 1))), b, a) for a, b in zip(state, fresh))

    def prepare(self, batch: torch.Tensor):
        return normalize_frames(batch.to(self.dev, non_blocking=True), self.mean, self.std)

    def step(self, x, state, mask: torch.Tensor):
        with _autocast(self.dev, self.precision):
            _, state = self.net(x, state, mask.to(self.dev))
        _sync(self.dev)
        return state


class _OnnxSlots:
    """The same on an `OnnxStreamer` (no mask input: see the module docstring)."""

    def __init__(self, streamer: Any, mean, std) -> None:
        self.streamer, self.mean, self.std = streamer, mean, std

    def init_state(self, streams: int):
        return self.streamer.init_state(streams)

    def reset(self, state, fresh, rows: torch.Tensor):
        r = rows.numpy()
        return [np.where(r.reshape(-1, *([1] * (a.ndim - 1))), b, a) for a, b in zip(state, fresh)]

    def prepare(self, batch: torch.Tensor):
        return normalize_frames(batch, self.mean, self.std).numpy()

    def step(self, x, state, mask: torch.Tensor):
        _, state = self.streamer.step(x, state)
        return state


@torch.no_grad()
def bench_end_to_end(model: Any, videos: Sequence[str | Path], *, frame_size: tuple[int, int],
                     sample_rate: int, mean: Sequence[float], std: Sequence[float], streams: int, chunk: int,
                     device: str = "cpu", precision: Precision = "fp32",
                     max_frames: int | None = None, max_steps: int | None = None,
                     progress: Progress = _no_progress) -> dict[str, Any]:
    """Decode + preprocess + model from video files: every video once (or until ``max_frames`` sampled
    frames, or ``max_steps`` steps of one chunk per slot), ``streams`` slots in one process, state reset
    per slot when it starts a video. ``"steps"`` in the result counts the steps run.

    ``model``: an ``nn.Module`` (PyTorch on ``device`` at ``precision``) or an `OnnxStreamer` (ONNX Runtime).
    Returns ``{"frames_per_s", "original_frames_per_s", "decode_s", "model_s", "wall_s", "frames", "videos"}``.
    """
    dev = torch.device(device)
    if isinstance(model, nn.Module):
        slots: _TorchSlots | _OnnxSlots = _TorchSlots(model, dev, precision, mean, std)
    else:
        slots, dev = _OnnxSlots(model, mean, std), torch.device("cpu")
    queue = [Path(v) for v in videos]
    if not queue:
        raise ValueError("bench_end_to_end: no video files given")
    sources: list[VideoFileSource | None] = [None] * streams
    state = slots.init_state(streams)
    fresh = slots.init_state(streams)
    frames = decode_s = model_s = 0.0
    done_videos = steps = 0
    _reset_peak(dev)
    wall = time.perf_counter()
    while max_steps is None or steps < max_steps:
        t0 = time.perf_counter()
        reset = torch.zeros(streams, dtype=torch.bool)
        batch = torch.zeros(streams, 3, chunk, *frame_size, dtype=torch.uint8)
        mask = torch.zeros(streams, 1, chunk)
        for s in range(streams):
            got = sources[s].read(chunk) if sources[s] is not None else torch.empty(0)
            while len(got) == 0 and (sources[s] is not None or queue):
                if sources[s] is not None:  # this slot's video has ended: take the next one
                    sources[s].close()
                    sources[s] = None
                    done_videos += 1
                if queue and (max_frames is None or frames < max_frames):
                    sources[s] = VideoFileSource(queue.pop(0), sample_rate, frame_size)
                    reset[s] = True
                    got = sources[s].read(chunk)
            if len(got):
                batch[s, :, : len(got)] = got.permute(1, 0, 2, 3)
                mask[s, 0, : len(got)] = 1
        n = int(mask.sum())
        if n == 0:
            break
        x = slots.prepare(batch)
        decode_s += time.perf_counter() - t0
        t1 = time.perf_counter()
        if reset.any():
            state = slots.reset(state, fresh, reset)
        state = slots.step(x, state, mask)
        model_s += time.perf_counter() - t1
        frames += n
        steps += 1
        progress("end-to-end", steps, max_steps or 0)  # 0: no step bound, the total is unknown
    wall = time.perf_counter() - wall
    return {
        "frames_per_s": frames / wall, "original_frames_per_s": frames * sample_rate / wall,
        "decode_s": decode_s, "model_s": model_s, "wall_s": wall, "frames": int(frames),
        "videos": done_videos, "steps": steps, **_peak_memory_mb(dev),
    }


def run_benchmark(configs: Any, params: Any, *, device: str = "cpu", streams: int = 1, chunk: int | None = None,
                  precision: Precision = "fp32", warmup: int = 3, steps: int = 20, repeats: int = 3,
                  end_to_end: bool = True, e2e_max_frames: int | None = 2000, backend: Backend = "torch",
                  onnx_path: str | Path | None = None, threads: int | None = None,
                  progress: Progress = _no_progress) -> dict[str, Any]:
    """`streamseg bench`: the experiment's model (freshly initialised: speed does not depend on the
    weights) on its dataset's input; the end-to-end part plays the dataset's videos (test split first,
    repeated when there are fewer videos than streams) until ``e2e_max_frames`` sampled frames or
    ``warmup + steps * repeats`` steps, whichever comes first (the same bound as the model-only part).

    ``chunk`` defaults to the experiment's ``train.chunk_size`` (or 32 for offline experiments).
    End to end needs a raw-video experiment (``data.input = "video"``); feature models skip it.
    ``backend="onnxruntime"``: the model is exported to ONNX first (parity-checked, into a temporary
    folder; or ``onnx_path``, an existing export of this experiment's model) and timed through ONNX
    Runtime with ``threads`` intra-op threads; fp32 only. The JSON then records the graph's opset, parity
    and export time under ``"onnx"``. FLOPs are counted on the PyTorch model (the same computation).
    """
    from ..engine import dist
    from ..engine.runner import build
    from ..engine.stream_datamodule import VideoStreamDataModule

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnxruntime" and precision != "fp32":
        raise ValueError(f"--backend onnxruntime runs the exported fp32 graph; --precision {precision} is torch only")
    dm, info, module = build(configs, params, dist.Launch(0, 0, 1, 0))
    net = module.net.eval()
    frames_input = isinstance(dm, VideoStreamDataModule)
    sample_shape = (3, *dm.frame_size) if frames_input else (info.in_channels,)
    chunk = chunk or params.train.chunk_size or 32
    result: dict[str, Any] = {
        "dataset": configs.dataset_name, "model": configs.model_name, "exp": configs.exp_name,
        "input": {"kind": "frames" if frames_input else "features", "sample_shape": list(sample_shape),
                  "sample_rate": info.sample_rate, "fps": info.fps},
        "lookahead": net.lookahead,
        "settings": {"device": device, "streams": streams, "chunk": chunk, "precision": precision,
                     "warmup": warmup, "steps": steps, "repeats": repeats, "backend": backend},
        "environment": environment(device),
    }
    result["cost"] = model_cost(net, sample_shape, chunk)
    with tempfile.TemporaryDirectory(prefix="streamseg-bench-") as tmp:
        if backend == "onnxruntime":
            model, result["onnx"] = _onnx_model(net, dm, params, Path(tmp), onnx_path, device, threads)
            result["environment"].update(_ort_environment(model))
            result["model_only"] = bench_onnx_model(model, streams=streams, chunk=chunk, warmup=warmup, steps=steps,
                                                    repeats=repeats, progress=progress)
        else:
            model = net
            result["model_only"] = bench_model(net, sample_shape, streams=streams, chunk=chunk, device=device,
                                               precision=precision, warmup=warmup, steps=steps, repeats=repeats,
                                               progress=progress)
        if end_to_end and frames_input:
            dm.setup()
            names = list(dict.fromkeys(dm.names["test"] + dm.names["val"] + dm.names["train"]))
            videos = [dm.layout.video_path(n) for n in names]
            videos = videos * -(-streams // len(videos))  # at least one video per slot (repeats if needed)
            result["end_to_end"] = bench_end_to_end(
                model, videos, frame_size=dm.frame_size, sample_rate=info.sample_rate, mean=dm.mean, std=dm.std,
                streams=streams, chunk=chunk, device=device, precision=precision, max_frames=e2e_max_frames,
                max_steps=warmup + steps * repeats, progress=progress)
        elif end_to_end:
            result["end_to_end"] = None  # feature input: nothing to decode
    return result


def _onnx_model(net: nn.Module, dm: Any, params: Any, tmp: Path, onnx_path: str | Path | None, device: str,
                threads: int | None) -> tuple[Any, dict[str, Any]]:
    """(an `OnnxStreamer`, the JSON's ``"onnx"`` record): ``onnx_path`` checked against the experiment's
    input and state shapes, or ``net`` exported (and parity-checked) into ``tmp``."""
    from .onnx_export import export_onnx
    from .runtime import deploy_meta

    want = deploy_meta(net, dm, int(params.train.chunk_size))
    started = time.perf_counter()
    if onnx_path is None:
        path, _ = export_onnx(net, want, tmp / "model.onnx")
        exported = True
    else:
        path, exported = Path(onnx_path), False
    streamer = onnx_streamer(path, device, threads)
    meta = streamer.meta
    if (meta.sample_shape, meta.state_shapes) != (want.sample_shape, want.state_shapes):
        raise ValueError(f"{path}: input {meta.sample_shape} and state shapes {meta.state_shapes} do not match "
                         f"the experiment's model ({want.sample_shape}, {want.state_shapes})")
    record = {"path": None if exported else str(path), "exported": exported, "opset": meta.opset,
              "parity": meta.parity, "export_s": round(time.perf_counter() - started, 3) if exported else None}
    return streamer, record


def _ort_environment(streamer: Any) -> dict[str, Any]:
    import onnxruntime as ort

    session = streamer.session
    opts = session.get_session_options()
    return {"onnxruntime": ort.__version__, "ort_providers": session.get_providers(),
            "ort_intra_op_threads": opts.intra_op_num_threads}
