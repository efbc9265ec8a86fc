"""INT8 against fp32 ONNX Runtime on the CPU: throughput of the streaming step and label agreement, JSON out.

    python tools/bench_int8.py --model RUN_DIR --videos data/synth/Videos --out results/int8.json
    python tools/bench_int8.py --random --frame-size 32 --videos data/synth/Videos   # no trained run at hand

``--model``: a trained run (or .ckpt), exported here (fp32, parity-checked) then quantised with
`streamseg.deploy.quantize.quantize_int8` calibrated on the first half of ``--videos``; agreement is
measured on the other half. ``--random``: the `-E chunk32` architecture (TSM-MobileNetV2 + MemoryTCN, 11
classes) with random weights and BatchNorm statistics taken from one video (labels then vary, but an
agreement on random weights says little about a trained model). Throughput: original frames per second
of one `OnnxStreamer.step` on chunks of ``--chunk`` sampled frames at batch 1 and ``--batch`` streams
(``--threads`` intra-op threads, fp32 and INT8 alternated, median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from streamseg.deploy.infer import video_files
from streamseg.deploy.onnx_export import export_onnx, export_trained
from streamseg.deploy.quantize import quantize_int8
from streamseg.deploy.runtime import DeployMeta, OnnxStreamer


def _random_model(frame: int, video: Path, out: Path) -> Path:
    from streamseg.data.video import VideoFileSource
    from streamseg.models import tsm_memtcn_mobilenet_v2

    torch.manual_seed(0)
    k, sr = 11, 2
    net = tsm_memtcn_mobilenet_v2(k, frame_size=(frame, frame))
    meta = DeployMeta(class_names=[f"c{i}" for i in range(k)], fps=15.0, sample_rate=sr, input_kind="frames",
                      sample_shape=[3, frame, frame], lookahead=0, chunk_size=32,
                      state_shapes=[list(t.shape[1:]) for t in net.init_state(1, "cpu")],
                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    for m in net.modules():  # BatchNorm statistics of a real video, so that labels vary
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with VideoFileSource(video, sr, (frame, frame)) as src, torch.no_grad():
        net.train()(torch.from_numpy(meta.preprocess(src.read(100_000))), net.init_state(1, "cpu"), None)
    return export_onnx(net.eval(), meta, out)[0]


def _speed(streamer: OnnxStreamer, batch: int, chunk: int, repeats: int) -> float:
    shape = streamer.meta.sample_shape
    x = np.random.default_rng(0).normal(size=(batch, shape[0], chunk, *shape[1:])).astype(np.float32)
    state = streamer.init_state(batch)
    streamer.step(x, state)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        streamer.step(x, state)
        times.append(time.perf_counter() - t)
    return batch * chunk * streamer.meta.sample_rate / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a trained run directory or checkpoint")
    src.add_argument("--random", action="store_true", help="the chunk32 architecture with random weights")
    p.add_argument("--videos", required=True, help="a folder of videos: first half calibrates, second half checks")
    p.add_argument("--frame-size", type=int, default=32, help="--random: input H = W")
    p.add_argument("--work", default="bench_int8", help="folder for the exported graphs")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--calib-chunks", type=int, default=64)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    videos = list(video_files(args.videos))
    calib, check = videos[: max(1, len(videos) // 2)], videos[len(videos) // 2:]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.random:
        fp32_path = _random_model(args.frame_size, videos[0], work / "model.onnx")
    else:
        fp32_path = export_trained(args.model, work / "model.onnx")[0]
    started = time.perf_counter()
    int8_path, _, agreement = quantize_int8(fp32_path, calib, max_chunks=args.calib_chunks, check_videos=check)
    quant_s = time.perf_counter() - started
    fp32, int8 = OnnxStreamer(fp32_path, threads=args.threads), OnnxStreamer(int8_path, threads=args.threads)
    result = {"model": args.model or f"random tsm_memtcn {args.frame_size}x{args.frame_size}",
              "threads": args.threads, "chunk": args.chunk, "quantize_s": round(quant_s, 1), **agreement}
    for batch in (1, args.batch):
        speeds = {"fp32": [], "int8": []}
        for _ in range(3):  # alternated, so that a busy machine slows both alike
            speeds["fp32"].append(_speed(fp32, batch, args.chunk, args.repeats))
            speeds["int8"].append(_speed(int8, batch, args.chunk, args.repeats))
        f, i = statistics.median(speeds["fp32"]), statistics.median(speeds["int8"])
        result[f"batch{batch}"] = {"fp32_frames_per_s": round(f, 1), "int8_frames_per_s": round(i, 1),
                                   "int8_speedup": round(i / f, 2),
                                   "realtime_15fps_streams_fp32": int(f // 15), "realtime_15fps_streams_int8": int(i // 15)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
