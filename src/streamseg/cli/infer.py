"""`streamseg infer SOURCE --model MODEL`: label a video file (or every video of a folder) online.

MODEL is an exported ``.onnx`` (with its ``.json`` metadata beside it; ONNX Runtime) or a run
directory / checkpoint (PyTorch). Frames are decoded with PyAV at the model's sample rate and input
size and fed chunk by chunk with the state carried. Each segment is printed as a JSON line the moment
it closes (label, start, end, confidence, emitted-at frame and latency); per-frame labels are written
in MS-TCN results format to --pred-dir/<video name>.

    streamseg infer data/synth/Videos/vid_000.mp4 --model experiments/.../export/model.onnx
    streamseg infer data/synth/Videos --model experiments/synth/tsm_memtcn_chunk32/version_0 --pred-dir preds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="online segmentation of a video file or folder, events as JSON lines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a video file, or a folder of video files")
    p.add_argument("--model", required=True, help="an .onnx export, a run directory or a checkpoint")
    p.add_argument("--chunk", type=int, default=None, help="sampled frames per step (default: training chunk, or 32)")
    p.add_argument("--events", default="-", help="JSON-lines output for segment events (default: stdout)")
    p.add_argument("--pred-dir", default=None, help="write per-frame labels (MS-TCN results format) here")
    p.add_argument("--device", default="cpu", help="PyTorch backend device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    p.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    import torch

    from ..deploy.infer import infer_video, video_files
    from ..deploy.runtime import open_streamer
    from ..metrics.io import write_results

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        streamer = open_streamer(args.model, args.device, args.threads)
        files = list(video_files(args.source))
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    out = sys.stdout if args.events == "-" else open(args.events, "w", encoding="utf-8")

    def emit(event: dict) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()  # the consumer sees each segment as soon as it closes

    pred_dir = Path(args.pred_dir) if args.pred_dir else None
    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    try:
        for path in files:
            result = infer_video(streamer, path, args.chunk, emit)
            if pred_dir is not None:
                write_results(pred_dir / result.name, result.labels, streamer.meta.class_names)
            print(f"{path}: {len(result.labels)} frames, {len(result.events)} segments, "
                  f"{len(result.labels) / max(result.seconds, 1e-9):.1f} frames/s", file=sys.stderr)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
