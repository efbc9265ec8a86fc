"""`streamseg serve`'s engine (`StreamPool`) under load: N file streams at once, JSON out.

    python tools/bench_serve.py --model model.onnx --videos data/synth/Videos --streams 1 4 16 --realtime
    python tools/bench_serve.py --model RUN_DIR --device cuda --videos DIR --streams 64     # as fast as possible

Per N: N pull streams (the videos in turn) start together; the pool runs until all have ended.
Reported: original frames labelled per wall second (all streams), late chunks (chunks labelled after the
next one had arrived; paced with ``--realtime``: a stream played at its frame rate, as a camera), the
largest lag behind a source, mean streams per model call, the model call's wall time (``streamer.step``
alone, p50/p99), each chunk's latency from queued to labelled and what the server adds to the model
call (latency minus the model call of its step), p50/p99. With ``--realtime`` the largest N with no late
chunk is the number of real-time streams the model sustains on this machine.

``--http`` runs the real server (`ServerThread`, loopback) and adds the streams through the HTTP client;
without it the pool runs bare (no network). ``--pipeline W`` (PyTorch models) also runs
`bench_pipeline` in the same process on the same videos, model and device: ``W`` decode worker processes,
frames resized to the model's size on the CPU, the N streams as one fixed batch, chunks of the same
length, the server's precision (its autocast); ``--pipeline-compile`` adds `torch.compile` (and a CUDA
graph on CUDA) to that step with pure ``--precision`` casts, the fastest path of docs/benchmarks.md. The
server's frames/s is then reported as a share of it.
``--channels-last`` and ``--compile`` set the server's PyTorch step (`TorchStreamer`); with ``--compile`` a
first pass over the same streams compiles its graphs (its wall time reported as ``server_warmup``) and
the second is measured.
``--random-model H W`` serves the `-E chunk32` architecture (TSM-MobileNetV2 + MemoryTCN, 11 classes)
at H x W with random weights (no trained run needed; the labels mean nothing).

GPU (64 file sources as fast as possible, through the server, against the pipeline)::

    python tools/bench_serve.py --random-model 224 224 --device cuda --precision bf16 --http \\
        --make-clips 64 450 240 320 --videos clips --streams 64 --chunk 32 --pipeline 4 --pipeline-compile \\
        --channels-last --compile --out serve_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from streamseg.deploy.batcher import StepTiming, StreamPool
from streamseg.deploy.infer import video_files
from streamseg.deploy.runtime import PRECISIONS, DeployMeta, TorchStreamer, load_trained_model, open_streamer

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values) or [0.0]
    return round(1e3 * values[min(len(values) - 1, int(q * len(values)))], 3)


def random_model(size: tuple[int, int], sample_rate: int = 1) -> tuple[torch.nn.Module, DeployMeta]:
    from streamseg.models import tsm_memtcn_mobilenet_v2

    torch.manual_seed(0)
    k = 11
    net = tsm_memtcn_mobilenet_v2(k, frame_size=size).eval()
    meta = DeployMeta(class_names=[f"c{i}" for i in range(k)], fps=30.0, sample_rate=sample_rate,
                      input_kind="frames", sample_shape=[3, *size], lookahead=0, chunk_size=32,
                      state_shapes=[list(t.shape[1:]) for t in net.init_state(1, "cpu")], mean=MEAN, std=STD)
    return net, meta


def _drive(pool: StreamPool, videos: list[Path], streams: int, realtime: bool, client=None) -> tuple[list, float]:
    """Start the streams (through ``client`` when given), wait for all; (their final infos, wall seconds)."""
    started = time.perf_counter()
    if client is not None:
        ids = [client.add(str(videos[i % len(videos)]), name=f"s{i}", realtime=realtime) for i in range(streams)]
    else:
        ids = [pool.add(str(videos[i % len(videos)]), f"s{i}", realtime=realtime) for i in range(streams)]
    while any(pool.info(i)["status"] in ("starting", "running") for i in ids):
        time.sleep(0.01)
    return [pool.info(i) for i in ids], time.perf_counter() - started


def run(streamer, videos: list[Path], streams: int, chunk: int | None, realtime: bool, http: bool = False,
        decode_workers: int = 0, stage: bool = False, fixed: bool = False) -> dict:
    """``streams`` streams pulled from ``videos`` through a pool (or the server, ``http``); the pool's start
    (``start_s``: its decode workers' start-up) is timed apart from the streams (``wall_s``)."""
    steps: list[StepTiming] = []
    started = time.perf_counter()
    if http:
        from streamseg.client import Client
        from streamseg.deploy.server import ServerOptions, ServerThread

        options = ServerOptions(chunk=chunk, max_streams=streams, decode_workers=decode_workers, stage_chunks=stage,
                                fixed_batch=fixed)
        with ServerThread(streamer, options) as server:
            start_s = time.perf_counter() - started
            pool = server.pool
            served = pool.on_step
            pool.on_step = lambda t: (served(t), steps.append(t))  # the server's metrics, and ours
            with Client(server.url) as client:
                infos, wall = _drive(pool, videos, streams, realtime, client)
            chunk_used = pool.chunk
    else:
        pool = StreamPool(streamer, chunk, max_streams=streams, on_step=steps.append, decode_workers=decode_workers,
                          stage_chunks=stage, fixed_batch=fixed)
        start_s = time.perf_counter() - started
        try:
            infos, wall = _drive(pool, videos, streams, realtime)
            chunk_used = pool.chunk
        finally:
            pool.close()
    errors = [i["error"] for i in infos if i["status"] != "ended"]
    frames = sum(i["frames"] for i in infos)
    latency = [s for t in steps for s in t.latencies_s]
    model, whole = [t.model_s for t in steps], [t.seconds for t in steps]
    added = [s - t.model_s for t in steps for s in t.latencies_s]
    return {"streams": streams, "realtime": realtime, "http": http, "chunk": chunk_used,
            "decode_workers": decode_workers, "stage": stage, "fixed_batch": fixed, "start_s": round(start_s, 3),
            "frames": frames,
            "wall_s": round(wall, 3), "frames_per_s": round(frames / wall, 1),
            "late_chunks": sum(i["late_chunks"] for i in infos),
            "max_lag_s": max((i["max_lag_s"] or 0.0) for i in infos),
            "model_calls": len(steps), "mean_batch": round(statistics.mean(t.batch for t in steps), 2) if steps else 0,
            "model_p50_ms": _pct(model, 0.5), "model_p99_ms": _pct(model, 0.99),
            "step_p50_ms": _pct(whole, 0.5), "step_p99_ms": _pct(whole, 0.99),
            "chunk_latency_p50_ms": _pct(latency, 0.5), "chunk_latency_p99_ms": _pct(latency, 0.99),
            "added_over_model_p50_ms": _pct(added, 0.5), "added_over_model_p99_ms": _pct(added, 0.99),
            "errors": errors}


def pipeline(net, meta: DeployMeta, videos: list[Path], streams: int, chunk: int, device: str, precision: str,
             workers: int, compiled: bool) -> dict:
    """`bench_pipeline`'s end-to-end figure for the same model: ``streams`` slots, rgb frames resized to the
    model's size by ``workers`` decode processes."""
    from streamseg.deploy.accel import StreamStep, bench_pipeline

    size = tuple(meta.sample_shape[1:])
    step = StreamStep(net, meta.sample_shape, streams=streams, chunk=chunk, device=device, precision=precision,
                      compile=compiled, cuda_graph=compiled and device.startswith("cuda"), in_size=size,
                      mean=meta.mean, std=meta.std)
    started = time.perf_counter()
    step.step(torch.zeros(step.input_shape(), dtype=step.input_dtype(), device=step.device))  # compile / capture
    warm_s = time.perf_counter() - started
    step.reset()
    r = bench_pipeline(step, [str(v) for v in videos], sample_rate=meta.sample_rate, workers=workers,
                       decode_size=size)
    return {"workers": workers, "compiled": compiled, "precision": precision, "warmup_s": round(warm_s, 1),
            "frames": r["frames"], "wall_s": round(r["wall_s"], 3), "frames_per_s": round(r["frames_per_s"], 1),
            "wait_s": round(r["wait_s"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="an .onnx export, a run directory or a checkpoint")
    model.add_argument("--random-model", type=int, nargs=2, metavar=("H", "W"),
                       help="the chunk32 architecture at H x W, random weights")
    p.add_argument("--videos", required=True, help="a video file or folder; streams take them in turn")
    p.add_argument("--make-clips", type=int, nargs=4, metavar=("N", "FRAMES", "H", "W"), default=None,
                   help="first write N synthetic H.264 clips (30 fps, bench_gpu.py's) into --videos")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--realtime", action="store_true", help="play each file at its frame rate")
    p.add_argument("--http", action="store_true", help="through the real server and client (loopback)")
    p.add_argument("--decode-workers", type=int, default=0, metavar="N",
                   help="the pool reads the sources in N worker processes (0: reader threads)")
    p.add_argument("--fixed-batch", action="store_true",
                   help="PyTorch: the pool's fixed-batch CUDA-graph step (StreamPool fixed_batch)")
    p.add_argument("--stage", action="store_true",
                   help="PyTorch on a GPU: each chunk uploaded by the thread that read it (StreamPool stage_chunks)")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="PyTorch models: autocast dtype of the server's model calls (and the pipeline's step)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    p.add_argument("--channels-last", action="store_true", help="PyTorch models: the server's frames channels-last")
    p.add_argument("--compile", action="store_true",
                   help="PyTorch models: the server's step compiled (TorchStreamer compile=True)")
    p.add_argument("--pipeline", type=int, default=None, metavar="W",
                   help="also run bench_pipeline with W decode workers (PyTorch models)")
    p.add_argument("--pipeline-compile", action="store_true",
                   help="the pipeline's step compiled (+ CUDA graph on CUDA), in pure --precision casts")
    p.add_argument("--out", default=None, help="write the results here as JSON (else stdout only)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = PRECISIONS[args.precision]
    net = None
    torch_options = dict(channels_last=args.channels_last, compile=args.compile)
    if args.random_model:
        net, meta = random_model(tuple(args.random_model))
        streamer = TorchStreamer(net, meta, args.device, dtype, **torch_options)
    elif Path(args.model).suffix == ".onnx":
        if args.pipeline is not None:
            raise SystemExit("error: --pipeline needs a PyTorch model (a run directory or --random-model)")
        try:
            streamer = open_streamer(args.model, args.device, args.threads, **torch_options)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
    else:
        net, meta = load_trained_model(args.model)
        streamer = TorchStreamer(net, meta, args.device, dtype, **torch_options)
    # the server's autocast is StreamStep's "-mixed"; a compiled pipeline step runs pure casts (its fastest)
    pipeline_precision = (args.precision if args.precision == "fp32" or args.pipeline_compile
                          else f"{args.precision}-mixed")
    if args.make_clips:
        from bench_gpu import _clips  # tools/ is this script's folder

        n, frames, h, w = args.make_clips
        _clips(Path(args.videos), h, w, n, frames)
    videos = list(video_files(args.videos))
    chunk = args.chunk or streamer.meta.chunk_size or 32
    results = []
    for n in args.streams:
        warm = None
        if args.compile:  # compile the server's graphs on a first pass (reported), then measure a second
            first = run(streamer, videos, n, chunk, False, args.http, args.decode_workers, args.stage, args.fixed_batch)
            warm = {"wall_s": first["wall_s"], "frames_per_s": first["frames_per_s"]}
        result = {"model": str(args.model or f"random {args.random_model}"), "device": args.device,
                  "precision": args.precision if net is not None else "the ONNX graph's", "threads": args.threads,
                  **({"server_step": torch_options} if net is not None else {}),
                  **run(streamer, videos, n, chunk, args.realtime, args.http, args.decode_workers, args.stage,
                        args.fixed_batch),
                  **({"server_warmup": warm} if warm else {})}
        if args.pipeline is not None:
            # bench_pipeline counts sampled frames; the server, original ones
            result["pipeline"] = pipeline(net, streamer.meta, [videos[i % len(videos)] for i in range(n)], n, chunk,
                                          args.device, pipeline_precision, args.pipeline, args.pipeline_compile)
            server_sampled = result["frames_per_s"] / streamer.meta.sample_rate
            result["server_vs_pipeline"] = round(server_sampled / result["pipeline"]["frames_per_s"], 3)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
