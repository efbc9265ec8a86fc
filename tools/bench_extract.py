"""Feature extraction throughput (`streamseg.extract`), and how far window- and dense-mode features differ.

Generates a synthetic 320x240 30 fps H.264 clip (`tools/bench_decode.py`'s scrolling noise texture, the
same for every clip, so it is encoded once and copied), then times `extract_features` end to end (model
build, decode, network, writing the files) for each mode, precision, stream set, decode path (`--decodes`:
rgb24, or i420 planes converted and resized on the device) and number of decoding processes (`--workers`; 0:
the in-process decode thread), and prints one markdown table with, side by side, the rates that bound each
other and where the worker pipeline's time went:

* decode alone: the frames the row's decoding delivers with no network, in one thread (workers 0:
  `VideoFileSource`) or through the worker pipeline's loader (blocks, shared memory, pinned:
  `streamseg.extract.pipeline.BlockStream`);
* model alone (the ceiling): the encoder on segments already on the device, ``--segment-batch`` per run;
* end to end: the whole `extract_features` call (model build, worker start, decode, network, files); the
  model-alone measurement runs first, so cuDNN's autotuning of the row's shape (seconds, once a process: printed
  after the table) is done before every row alike, not charged to whichever row comes first;
* with workers (`ExtractReport.timing`): seconds until the first block came (worker start, first decode),
  the share of the pipeline's time its loop waited for input, and the device's busy share in the network and
  in preparing frames (colour, resize, normalisation): a network share near 100 % says the model bounds the
  run, a large input wait says decoding does, neither says the host loop does.

Weights are random (seeded): no weights are downloaded, and the speed does not depend on them.

The window/dense difference compares the two modes' features of the same frames with the same weights:
mean and 5th-percentile per-frame cosine similarity, and the relative L2 distance ||w - d|| / ||w||.

    python tools/bench_extract.py --device cuda                       # S3D 224x224, W=16, chunk 64 + 2x16
    python tools/bench_extract.py --device cuda --modes dense --dtypes bfloat16 --workers 0 6 12 \
        --decodes rgb24 i420 --segment-batch 4
    python tools/bench_extract.py --device cuda --flow raft_large --videos 2 --frames 600
    python tools/bench_extract.py --device cuda --videos 8 --frames 3000 --ranks 1 4 8   # processes per GPU
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamseg.data.video import VideoFileSource
from streamseg.extract import EncoderSpec, FlowSpec, extract_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import make_clip  # noqa: E402 (a sibling tool script)


def decode_rate(clips: list[Path], size: tuple[int, int], decode: str) -> float:
    """Frames per second of one `VideoFileSource` (one thread), on at most two of the clips (all are the same)."""
    t0, frames = time.perf_counter(), 0
    for clip in clips[:2]:
        with (VideoFileSource(clip, 1, None, pixel_path="i420") if decode == "i420"
              else VideoFileSource(clip, 1, size)) as source:
            while (n := source.read(256).shape[0]) > 0:
                frames += n
    return frames / (time.perf_counter() - t0)


def loader_rate(clips: list[Path], spec: EncoderSpec, workers: int, pin: bool, decode: str) -> float:
    """Frames per second the worker pipeline's loader delivers (decode, shared memory, pinning), no network:
    the input bound of `extract_features(..., decode_workers=workers)`, worker start included."""
    from torch.utils.data import DataLoader

    from streamseg.extract import build_encoder
    from streamseg.extract.pipeline import PREFETCH, BlockStream, block_frames

    enc = build_encoder(spec)
    stream = BlockStream(list(enumerate(clips)), 1, enc.size, block_frames(enc.step), decode)
    t0, frames = time.perf_counter(), 0
    for _, block, _ in DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin,
                                  prefetch_factor=PREFETCH):
        frames += block.shape[0] if block is not None else 0
    return frames / (time.perf_counter() - t0)


def model_rate(spec: EncoderSpec, device: str, dtype: str, segments: int = 1, steps: int = 20) -> tuple[float, float]:
    """Frames per second of the encoder alone on ``segments`` random segments per run, already on the device,
    and the seconds of its first call (with cudnn.benchmark: cuDNN's autotuning of the shape, once a process)."""
    from streamseg.extract import build_encoder

    enc = build_encoder(spec).to(device)
    seg = torch.randn(segments, enc.left + enc.step + enc.right, 3, *enc.size, device=device)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dt, enabled=dt != torch.float32):
        sync()
        t0 = time.perf_counter()
        enc.forward_batch(seg)
        sync()
        first = time.perf_counter() - t0
        for _ in range(2):
            enc.forward_batch(seg)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            enc.forward_batch(seg)
        sync()
    return steps * segments * enc.step / (time.perf_counter() - t0), first


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame cosine similarity of (D, T) arrays."""
    return (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + 1e-30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--encoder", default="s3d")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=1500, help="frames per clip (30 fps)")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="windows per network run in window mode")
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--modes", nargs="+", default=["window", "dense"])
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="encoder frame size (default: the encoder's, 224x224 for S3D)")
    p.add_argument("--workers", type=int, nargs="+", default=[0],
                   help="decoding processes (extract_features' decode_workers) of each RGB row; 0: in-process thread")
    p.add_argument("--segment-batch", type=int, default=1, help="segments per network run when workers > 0")
    p.add_argument("--decodes", nargs="+", default=["rgb24"], choices=("rgb24", "i420"),
                   help="decode paths of the RGB rows (extract_features' decode)")
    p.add_argument("--flow", default=None, help="also time RGB + this RAFT model (raft_small, raft_large)")
    p.add_argument("--flow-updates", type=int, default=12)
    p.add_argument("--flow-frames", type=int, default=None, help="frames of the clips the flow runs use")
    p.add_argument("--ranks", type=int, nargs="+", default=None,
                   help="instead: time `streamseg extract` (dense, the last dtype) under torchrun with N processes "
                        "sharing the one device, process start included")
    args = p.parse_args()

    torch.backends.cudnn.benchmark = True
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    clips = [make_clip(tmp / "clip0.mp4", "libx264", args.frames)]
    clips += [Path(shutil.copyfile(clips[0], tmp / f"clip{i}.mp4")) for i in range(1, args.videos)]
    total = args.videos * args.frames
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"device: {name}; torch {torch.__version__}; {args.videos} clips x {args.frames} frames, 320x240 H.264")
    if args.ranks:
        print("| encoder | mode | processes on one device | dtype | frames/s end to end | seconds |")
        print("|---|---|---|---|---|---|")
        for n in args.ranks:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
                   "streamseg.cli.main", "extract", *map(str, clips), "--encoder", args.encoder, "--mode", "dense",
                   "--chunk", str(args.chunk), "--overlap", str(args.overlap), "--dtype", args.dtypes[-1],
                   "--device", args.device, "--out", str(tmp / f"ranks{n}")]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds = time.perf_counter() - t0
            print(f"| {args.encoder} 224x224 | dense ({args.chunk} + 2x{args.overlap}) | {n} | {args.dtypes[-1]} | "
                  f"{total / seconds:.0f} | {seconds:.1f} |", flush=True)
        return
    from streamseg.extract import build_encoder

    size = tuple(args.size) if args.size else build_encoder(EncoderSpec(args.encoder)).size
    print("\n| encoder | mode | streams | dtype | decode | decode workers (segments a run) | decode alone, frames/s | "
          "model alone, frames/s | end to end, frames/s | seconds | first block, s | waiting for input | "
          "device busy: network | device busy: preparing frames |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    outs: dict[tuple, Path] = {}
    runs = [(mode, dtype, None, w, dec) for mode in args.modes for dtype in args.dtypes for dec in args.decodes
            for w in args.workers]
    if args.flow:
        runs += [(mode, dtype, FlowSpec(args.flow, updates=args.flow_updates), 0, args.decodes[0])
                 for mode in args.modes for dtype in args.dtypes[-1:]]
    loaded: dict[tuple, float] = {}
    alone: dict[tuple, tuple[float, float]] = {}
    for mode, dtype, flow, workers, decode in runs:
        spec = EncoderSpec(args.encoder, mode=mode, window=args.window, chunk=args.chunk, overlap=args.overlap,
                           batch=args.batch, size=size)
        segs = args.segment_batch if workers else 1
        out = tmp / f"out_{mode}_{dtype}_{flow.model if flow else 'rgb'}_{decode}_w{workers}"
        inputs, frames = clips, total
        if flow and args.flow_frames:  # RAFT is slow: time it on a cut of the clips
            inputs = [make_clip(tmp / "flowclip0.mp4", "libx264", args.flow_frames)]
            inputs += [Path(shutil.copyfile(inputs[0], tmp / f"flowclip{i}.mp4")) for i in range(1, args.videos)]
            frames = args.videos * args.flow_frames
        if (mode, dtype, segs) not in alone:  # first: every row then finds cuDNN's autotuning of its shape done
            alone[(mode, dtype, segs)] = model_rate(spec, args.device, dtype, segs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        report = extract_features(inputs, out, spec, flow=flow, device=args.device, dtype=dtype,
                                  decode_workers=workers, segment_batch=segs, decode=decode)
        seconds = time.perf_counter() - t0
        assert not report.failed, report.failed
        streams = f"RGB + {flow.model} ({flow.updates} updates)" if flow else "RGB"
        window = f"W={args.window}" if mode == "window" else f"{args.chunk} + 2x{args.overlap}"
        if (mode, workers, decode) not in loaded:
            loaded[(mode, workers, decode)] = (loader_rate(clips, spec, workers, args.device.startswith("cuda"), decode)
                                               if workers else decode_rate(clips, size, decode))
        t = report.timing
        breakdown = (f"{t['first_block_s']:.2f} | {t['input_wait_s'] / t['seconds']:.0%} | "
                     f"{t.get('network_s', 0) / t['seconds']:.0%} | {t.get('prepare_s', 0) / t['seconds']:.0%}"
                     if t else "- | - | - | -")
        ceiling = f"{alone[(mode, dtype, segs)][0]:.0f}" if not flow else "-"
        print(f"| {args.encoder} {size[0]}x{size[1]} | {mode} ({window}) | {streams} | {dtype} | {decode} | "
              f"{workers} ({segs}) | {loaded[(mode, workers, decode)]:.0f} | {ceiling} | "
              f"{frames / seconds:.0f} | {seconds:.1f} | {breakdown} |", flush=True)
        if workers == args.workers[0] and decode == args.decodes[0]:
            outs[(mode, dtype, flow is None)] = out

    print("\nfirst network call (cuDNN autotuning; made before the rows' timings, once a process): " + "; ".join(
        f"{mode} {dtype}, segments a run {segs}: {first:.1f} s" for (mode, dtype, segs), (_, first) in alone.items()))
    for dtype in args.dtypes:
        if ("window", dtype, True) in outs and ("dense", dtype, True) in outs:
            cos, rel = [], []
            for clip in clips:
                w = np.load(outs[("window", dtype, True)] / f"{clip.stem}.npy")
                d = np.load(outs[("dense", dtype, True)] / f"{clip.stem}.npy")
                cos.append(cosine(w, d))
                rel.append(np.linalg.norm(w - d) / np.linalg.norm(w))
            c = np.concatenate(cos)
            print(f"\nwindow vs dense ({dtype}, random weights, seed 0): per-frame cosine mean {c.mean():.4f}, "
                  f"5th percentile {np.percentile(c, 5):.4f}; relative L2 {np.mean(rel):.4f}")


if __name__ == "__main__":
    main()
