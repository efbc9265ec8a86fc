"""How long adding N pull streams to a `StreamPool` takes, one after the other as a client adds them.

    python tools/bench_pool_add.py --videos DIR --streams 64 --decode-workers 2 --size 224 224

The pool runs a stand-in model that does no work (all zero logits), so the figure is the pool's own cost
of accepting streams while the streams already added decode (with ``--decode-workers N``, in N worker
processes). Why it matters: a stream added late starts late, and with many streams added at once the last
one's start bounds how full the engine's first steps are (docs/benchmarks.md, "Eighth session"). Run it
with ``PYTHONPATH`` on another tree's ``src`` to time that tree: it uses only the public pool API. Prints
one JSON line: streams, workers, input size, seconds for all the adds, per add (mean), and the seconds
from the first add until every stream has had a chunk labelled (``all_started_s``: what the adds cost
the streams, wherever the work of starting them is done).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from streamseg.deploy.batcher import StreamPool
from streamseg.deploy.infer import video_files
from streamseg.deploy.runtime import DeployMeta


class _Idle:
    """A streaming model that computes nothing: zero logits for 11 classes."""

    def __init__(self, meta: DeployMeta) -> None:
        self.meta = meta

    def init_state(self, batch: int) -> list:
        return []

    def step(self, x: np.ndarray, state: list):
        return np.zeros((x.shape[0], len(self.meta.class_names), x.shape[2]), np.float32), state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, help="a video file or folder; streams take them in turn")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--decode-workers", type=int, default=2, help="0: reader threads in this process")
    p.add_argument("--size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"), help="the model's input size")
    p.add_argument("--chunk", type=int, default=32)
    args = p.parse_args(argv)
    try:
        videos = [str(v) for v in video_files(args.videos)]
    except FileNotFoundError as e:  # a missing path, or a folder with no video in it
        p.error(f"--videos {e}")
    meta = DeployMeta(class_names=[f"c{i}" for i in range(11)], fps=30.0, sample_rate=1, input_kind="frames",
                      sample_shape=[3, *args.size], lookahead=0, chunk_size=args.chunk, state_shapes=[],
                      mean=[0.5] * 3, std=[0.5] * 3)
    pool = StreamPool(_Idle(meta), args.chunk, max_streams=args.streams, decode_workers=args.decode_workers)
    try:
        t = time.perf_counter()
        ids = [pool.add(videos[i % len(videos)], f"s{i}") for i in range(args.streams)]
        seconds = time.perf_counter() - t
        while any(i["chunks"] == 0 and i["status"] in ("starting", "running") for i in map(pool.info, ids)):
            time.sleep(0.005)
        started = time.perf_counter() - t
    finally:
        pool.close()
    print(json.dumps({"streams": args.streams, "decode_workers": args.decode_workers, "size": args.size,
                      "adds_s": round(seconds, 4), "per_add_ms": round(1e3 * seconds / args.streams, 3),
                      "all_started_s": round(started, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
