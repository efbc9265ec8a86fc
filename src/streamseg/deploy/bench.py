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

Timings are wall clock (``time.perf_counter``), CUDA synchronised around each step.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..data.streams import normalize_frames
from ..data.video import VideoFileSource
from ..flops import count_flops, count_params

__all__ = ["PRECISIONS", "bench_end_to_end", "bench_model", "environment", "model_cost"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


@torch.no_grad()
def bench_model(net: nn.Module, sample_shape: Sequence[int], *, streams: int, chunk: int, device: str = "cpu",
                precision: Precision = "fp32", warmup: int = 3, steps: int = 20, repeats: int = 3) -> dict[str, Any]:
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
    with _autocast(dev, precision):
        for _ in range(warmup):
            _, state = net(x, state, None)
        _sync(dev)
        step_times: list[float] = []
        run_fps: list[float] = []
        for _ in range(repeats):
            run_start = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                _, state = net(x, state, None)
                _sync(dev)
                step_times.append(time.perf_counter() - t0)
            run_fps.append(streams * chunk * steps / (time.perf_counter() - run_start))
    ms = np.array(step_times) * 1000
    return {
        "frames_per_s": statistics.median(run_fps), "frames_per_s_runs": run_fps,
        "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p99": float(np.percentile(ms, 99)),
        "steps": len(step_times), "warmup": warmup, "repeats": repeats, **_peak_memory_mb(dev),
    }


@torch.no_grad()
def bench_end_to_end(net: nn.Module, videos: Sequence[str | Path], *, frame_size: tuple[int, int],
                     sample_rate: int, mean: Sequence[float], std: Sequence[float], streams: int, chunk: int,
                     device: str = "cpu", precision: Precision = "fp32", max_frames: int | None = None) -> dict[str, Any]:
    """Decode + preprocess + model from video files: every video once (or until ``max_frames`` sampled
    frames), ``streams`` slots in one process, state reset per slot when it starts a video.

    Returns ``{"frames_per_s", "original_frames_per_s", "decode_s", "model_s", "wall_s", "frames", "videos"}``.
    """
    dev = torch.device(device)
    net = net.eval().to(dev)
    queue = [Path(v) for v in videos]
    if not queue:
        raise ValueError("bench_end_to_end: no video files given")
    sources: list[VideoFileSource | None] = [None] * streams
    state = net.init_state(streams, dev)
    fresh = net.init_state(streams, dev)
    frames = decode_s = model_s = 0.0
    done_videos = 0
    _reset_peak(dev)
    wall = time.perf_counter()
    while True:
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
        x = normalize_frames(batch.to(dev, non_blocking=True), mean, std)
        decode_s += time.perf_counter() - t0
        t1 = time.perf_counter()
        if reset.any():
            r = reset.to(dev)
            state = tuple(torch.where(r.view(-1, *([1] * (a.dim() - 1))), b, a) for a, b in zip(state, fresh))
        with _autocast(dev, precision):
            _, state = net(x, state, mask.to(dev))
        _sync(dev)
        model_s += time.perf_counter() - t1
        frames += n
    wall = time.perf_counter() - wall
    return {
        "frames_per_s": frames / wall, "original_frames_per_s": frames * sample_rate / wall,
        "decode_s": decode_s, "model_s": model_s, "wall_s": wall, "frames": int(frames),
        "videos": done_videos, **_peak_memory_mb(dev),
    }


def run_benchmark(configs: Any, params: Any, *, device: str = "cpu", streams: int = 1, chunk: int | None = None,
                  precision: Precision = "fp32", warmup: int = 3, steps: int = 20, repeats: int = 3,
                  end_to_end: bool = True, e2e_max_frames: int | None = 2000) -> dict[str, Any]:
    """`streamseg bench`: the experiment's model (freshly initialised: speed does not depend on the
    weights) on its dataset's input; the end-to-end part plays the dataset's videos (test split first,
    repeated when there are fewer videos than streams) until ``e2e_max_frames``.

    ``chunk`` defaults to the experiment's ``train.chunk_size`` (or 32 for offline experiments).
    End to end needs a raw-video experiment (``data.input = "video"``); feature models skip it.
    """
    from ..engine import dist
    from ..engine.runner import build
    from ..engine.stream_datamodule import VideoStreamDataModule

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
                     "warmup": warmup, "steps": steps, "repeats": repeats},
        "environment": environment(device),
    }
    result["cost"] = model_cost(net, sample_shape, chunk)
    result["model_only"] = bench_model(net, sample_shape, streams=streams, chunk=chunk, device=device,
                                       precision=precision, warmup=warmup, steps=steps, repeats=repeats)
    if end_to_end and frames_input:
        dm.setup()
        names = list(dict.fromkeys(dm.names["test"] + dm.names["val"] + dm.names["train"]))
        videos = [dm.layout.video_path(n) for n in names]
        videos = videos * -(-streams // len(videos))  # at least one video per slot (repeats if needed)
        result["end_to_end"] = bench_end_to_end(
            net, videos, frame_size=dm.frame_size, sample_rate=info.sample_rate, mean=dm.mean, std=dm.std,
            streams=streams, chunk=chunk, device=device, precision=precision, max_frames=e2e_max_frames)
    elif end_to_end:
        result["end_to_end"] = None  # feature input: nothing to decode
    return result
