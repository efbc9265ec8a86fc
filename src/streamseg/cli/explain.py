"""`streamseg explain RUN VIDEO`: class activation maps of a trained model on frames, as an mp4.

RUN is a run directory (or a checkpoint inside one) of a model on frames (TSM, Transeger, the video
backbones). The video is decoded at the model's sample rate and input size and fed chunk by chunk with
the state carried, as `streamseg infer` does; each sampled frame is shown beside its class activation
map (Grad-CAM through Captum, or HiResCAM), above its label and the timeline of the segments so far.

    streamseg explain experiments/synth/tsm_memtcn_chunk32/version_0 data/synth/Videos/vid_000.mp4
    streamseg explain RUN VIDEO --out cam.mp4 --class pour_milk --method hirescam --layer encoder.features.17

Needs Captum: pip install 'streamseg[explain]'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="class activation maps of a trained model on a video, as an mp4",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory or a checkpoint inside one (a model on frames)")
    p.add_argument("video", help="the video file to explain")
    p.add_argument("--out", default=None, help="output mp4 (default: <RUN>/explain/<video name>_cam.mp4)")
    p.add_argument("--class", dest="target", default=None, help="explain this class (default: each frame's prediction)")
    p.add_argument("--method", default="gradcam", help="gradcam (default) or hirescam (deploy.explain.METHODS)")
    p.add_argument("--layer", default=None, help="module name of the layer (default: the encoder's last convolution "
                                                   "whose output has more than one position in space)")
    p.add_argument("--chunk", type=int, default=None, help="sampled frames per step (default: the training chunk)")
    p.add_argument("--width", type=int, default=None, help="output width (default: twice the frame, at least 320)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many sampled frames")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    try:
        from ..deploy.explain import explain_video
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit(f"error: streamseg explain needs Captum: pip install 'streamseg[explain]' ({e})") from None
    run = Path(args.run)
    run_dir = run if run.is_dir() else run.parent.parent
    out = Path(args.out) if args.out else run_dir / "explain" / f"{Path(args.video).stem}_cam.mp4"
    try:
        summary = explain_video(run, args.video, out, chunk=args.chunk, target=args.target, layer=args.layer,
                                method=args.method, width=args.width, max_frames=args.max_frames)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary))
    return 0
