"""`streamseg serve`'s engine (`StreamPool`) under load: N file streams at once, JSON out.

    python tools/bench_serve.py --model model.onnx --videos data/synth/Videos --streams 1 4 16 --realtime
    python tools/bench_serve.py --model RUN_DIR --device cuda --videos DIR --streams 64     # as fast as possible

Per N: N pull streams (the videos in turn) start together; the pool runs until all have ended.
Reported: original frames labelled per wall second (all streams), late chunks (chunks labelled after the
next one had arrived; paced with ``--realtime``: a stream played at its frame rate, as a camera), the
largest lag behind a source, mean streams per model call, and the model call's wall time (p50/p99,
preprocessing included). With ``--realtime`` the largest N with no late chunk is the number of real-time
streams the model sustains on this machine. No HTTP: this measures the batching engine, not the network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from streamseg.deploy.batcher import StreamPool
from streamseg.deploy.infer import video_files
from streamseg.deploy.runtime import open_streamer


def run(streamer, videos: list[Path], streams: int, chunk: int | None, realtime: bool) -> dict:
    steps: list[tuple[int, float]] = []
    pool = StreamPool(streamer, chunk, max_streams=streams, on_step=lambda b, s: steps.append((b, s)))
    try:
        started = time.perf_counter()
        ids = [pool.add(str(videos[i % len(videos)]), f"s{i}", realtime=realtime) for i in range(streams)]
        while any(pool.info(i)["status"] in ("starting", "running") for i in ids):
            time.sleep(0.01)
        wall = time.perf_counter() - started
        infos = [pool.info(i) for i in ids]
    finally:
        pool.close()
    errors = [i["error"] for i in infos if i["status"] != "ended"]
    seconds = sorted(s for _, s in steps) or [0.0]
    return {"streams": streams, "realtime": realtime, "chunk": pool.chunk, "frames": sum(i["frames"] for i in infos),
            "wall_s": round(wall, 3), "frames_per_s": round(sum(i["frames"] for i in infos) / wall, 1),
            "late_chunks": sum(i["late_chunks"] for i in infos),
            "max_lag_s": max((i["max_lag_s"] or 0.0) for i in infos),
            "model_calls": len(steps), "mean_batch": round(statistics.mean(b for b, _ in steps), 2) if steps else 0,
            "step_p50_ms": round(1e3 * seconds[len(seconds) // 2], 3),
            "step_p99_ms": round(1e3 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))], 3),
            "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an .onnx export, a run directory or a checkpoint")
    p.add_argument("--videos", required=True, help="a video file or folder; streams take them in turn")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--realtime", action="store_true", help="play each file at its frame rate")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    p.add_argument("--out", default=None, help="write the results here as JSON (else stdout only)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    streamer = open_streamer(args.model, args.device, args.threads)
    videos = list(video_files(args.videos))
    results = []
    for n in args.streams:
        result = {"model": str(args.model), "device": args.device, "threads": args.threads, **run(
            streamer, videos, n, args.chunk, args.realtime)}
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
