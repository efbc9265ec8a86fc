"""The training loader alone: frames/s and CPU time per frame of the main process and of the workers.

Builds the training loader of ``streamseg train -D synth -E chunk32`` (`VideoStreamDataModule`, the same
shuffle, slots and augmentation draws) over a camera-like dataset and plays ``--epochs`` epochs with no
model. Per epoch it prints the frames handed over per second (wall clock), and CPU microseconds per frame
of this (main) process and of the worker processes together (their threads included: FFmpeg's decoder
threads count). On a shared machine wall-clock rates move with the load; CPU per frame much less.

``--device cuda`` copies each batch to the GPU as under a GPU trainer (the path `streamseg train` takes);
the default ``cpu`` keeps batches on the host (merged and copied out of the workers' shared memory).
``--profile main.prof`` writes a cProfile of the main process's loop (``python -m pstats``).
``--no-decode`` replaces each video's decoder with blank frames of its size and length (same schedule,
same hand-over): what the hand-over alone costs the main process, for any number of workers.

    streamseg data synth --root /tmp/cam320 --num-videos 24 --size 320x240 --camera
    python tools/bench_loader.py --root /tmp/cam320 --workers 2 --batch 16 --epochs 2
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import resource
import time

import torch

from streamseg.data.streams import StreamVideo
from streamseg.engine.stream_datamodule import VideoStreamDataModule


def _cpu(pid: int | str = "self") -> float:
    """CPU seconds (user + system, all threads) of a live process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class _Blank:
    """A stand-in source: ``length`` blank frames of ``shape``, read in chunks (no decoding)."""

    def __init__(self, length: int, shape: tuple[int, ...]) -> None:
        self.left, self.frames = length, torch.zeros((64, *shape), dtype=torch.uint8)

    def read(self, n: int) -> torch.Tensor:
        k = min(n, self.left, len(self.frames))
        self.left -= k
        return self.frames[:k]

    def close(self) -> None:
        pass


def _workers(loader) -> list[int]:
    """The persistent DataLoader's worker pids (none before the first epoch)."""
    it = getattr(getattr(loader, "_loader", None), "_iterator", None)
    return [w.pid for w in it._workers] if it is not None else []


def epoch(loader, persistent: bool, device: torch.device, prof: cProfile.Profile | None) -> dict:
    """One epoch of ``loader``: frames/s, CPU per frame of this process and of the worker processes."""
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = {pid: _cpu(pid) for pid in _workers(loader)}
    main0, t0 = _cpu(), time.perf_counter()
    frames = torch.zeros((), device=device)
    steps = 0
    if prof is not None:
        prof.enable()
    for batch in loader:
        frames += batch["mask"].sum()
        steps += 1
    if prof is not None:
        prof.disable()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, main = time.perf_counter() - t0, _cpu() - main0
    if persistent:  # still running: their CPU from /proc (started in this epoch: all of it)
        work = sum(_cpu(pid) - before.get(pid, 0.0) for pid in _workers(loader))
    else:  # exited and reaped at the end of the epoch
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        work = c.ru_utime + c.ru_stime - children0.ru_utime - children0.ru_stime
    n = int(frames)
    return {"frames": n, "steps": steps, "wall_s": round(wall, 3), "frames_per_s": round(n / wall, 1),
            "main_us_per_frame": round(1e6 * main / n, 1), "workers_us_per_frame": round(1e6 * work / n, 1),
            "main_cpu_share": round(main / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a `streamseg data synth --camera` dataset")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--preprocess", default="device-i420", choices=["cpu", "device-rgb", "device-i420"])
    ap.add_argument("--persistent", action=argparse.BooleanOptionalAction, default=True,
                    help="persistent workers (train.persistent_workers); the first epoch includes their start")
    ap.add_argument("--decode-threads", type=int, default=None,
                    help="FFmpeg threads per decoder (default: the datamodule's, 1 with workers; 0: PyAV's default)")
    ap.add_argument("--no-decode", action="store_true", help="blank frames instead of decoding (the hand-over alone)")
    ap.add_argument("--device", default="cpu", help="cpu (batches stay on the host) or cuda")
    ap.add_argument("--profile", default=None, help="write a cProfile of the main process's loop here")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    threads = {} if args.decode_threads is None else {"decode_threads": args.decode_threads}  # older trees: none
    dm = VideoStreamDataModule(args.root, 1, chunk_size=args.chunk, frame_size=(224, 224), batch_size=args.batch,
                               num_workers=args.workers, persistent_workers=args.persistent,
                               bg_classes=("background",), preprocess=args.preprocess, **threads)
    dm.setup()
    loader = dm._loader("train", train=True)
    if args.no_decode:
        b = loader.batcher
        blank = [functools.partial(_Blank, v.length, b.sample_shape) for v in b.videos]
        b.videos = [StreamVideo(v.name, source, v.labels) for v, source in zip(b.videos, blank)]
    if device.type == "cuda":
        loader.device = device  # as under a GPU trainer
    prof = cProfile.Profile(time.process_time) if args.profile else None  # CPU time: the loop waits a lot
    rows = []
    for e in range(args.epochs):
        loader.set_epoch(e)
        rows.append({"epoch": e, **epoch(loader, args.persistent, device, prof)})
        print(json.dumps(rows[-1]), flush=True)
    res = {"args": vars(args), "cpus": os.cpu_count(), "epochs": rows}
    if prof is not None:
        prof.dump_stats(args.profile)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
