"""`streamseg extract INPUT... --encoder NAME [--weights FILE] [--out DIR]`: per-frame features of videos.

INPUT: a dataset root (its Videos/), a folder of videos, a .txt list of video paths, or video files.
Writes OUT/<video>.npy, float32 (D, T) with T the video's frame count, and OUT/extract.json (what made
them). OUT defaults to <root>/features for one dataset root. Re-running resumes (finished videos are
skipped); settings that differ from the manifest's are refused.

    streamseg extract data/gtea --encoder s3d --weights s3d_kinetics400.pth --mode window --window 21 \\
        --out data/gtea/features_s3d --device cuda
    streamseg extract videos/ --encoder resnet50 --weights resnet50.pth --out feats/
    streamseg extract data/gtea --encoder run --weights experiments/gtea/tsm_memtcn_chunk32/version_0
    tools/run_singlenode.sh extract 4 data/breakfast --encoder s3d --weights s3d.pth --mode dense --device cuda

Under torchrun or SLURM each rank extracts a disjoint share of the videos. See docs/extract.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


# the names `streamseg.extract` knows (tests/extract/test_extract_run.py checks they agree); spelled out here
# so that building the parser does not import torchvision
ENCODERS = ("s3d", "r2plus1d_18", "swin3d_t", "mvit_v2_s", "resnet50", "mobilenet_v2", "thumbnail", "run")
FLOW_MODELS = ("raft_small", "raft_large")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract per-frame features of videos (features/<video>.npy)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="dataset root, folder of videos, .txt list of videos, or video files")
    p.add_argument("--out", default=None, help="output folder (default: <root>/features for one dataset root)")
    p.add_argument("--encoder", required=True, choices=ENCODERS,
                   help="torchvision video or image model, 'thumbnail' (each frame pooled to 8x8 cells, no weights), "
                        "or 'run': the frame encoder of a trained run")
    p.add_argument("--weights", default=None,
                   help="local torchvision state dict (no downloads; omitted: random init, for tests); "
                        "for --encoder run: the run directory or checkpoint")
    p.add_argument("--mode", choices=("window", "dense"), default="window",
                   help="video models: a W-frame clip centred on each frame, or long overlapping chunks")
    p.add_argument("--window", type=int, default=16, help="window mode: frames per clip W (default 16)")
    p.add_argument("--chunk", type=int, default=64, help="dense mode: frames kept per network run (default 64)")
    p.add_argument("--overlap", type=int, default=16, help="dense mode: context frames on each side (default 16)")
    p.add_argument("--batch", type=int, default=32, help="windows (or frames) per network run (default 32)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="frame size the encoder gets (default: the model's, e.g. 224 224 for S3D)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="encode every N-th frame (default 1; --encoder run: the run's sample rate)")
    p.add_argument("--flow", choices=FLOW_MODELS, default=None,
                   help="add RAFT optical flow as a second stream (video models), concatenated")
    p.add_argument("--flow-weights", default=None, help="local torchvision RAFT state dict")
    p.add_argument("--flow-updates", type=int, default=12, help="RAFT refinement iterations (default 12)")
    p.add_argument("--flow-encoder-weights", default=None,
                   help="the flow stream's encoder weights (2-channel first conv); default: the RGB weights, "
                        "cross-modality initialised")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses its local GPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="compute precision (autocast); files are float32")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when there are no weights")
    p.add_argument("--decode", choices=("rgb24", "i420"), default="rgb24",
                   help="rgb24: colour and resize on the CPU (as training); i420: on the device (less CPU work)")
    p.add_argument("--decode-workers", type=int, default=0,
                   help="processes that decode videos (several at once) while the network runs; 0: one thread of "
                        "this process, one video at a time (default). Not with --flow or --encoder run")
    p.add_argument("--segment-batch", type=int, default=1,
                   help="with --decode-workers: segments (of several videos) per network run (default 1: the same "
                        "features bit for bit; more: equal to float rounding)")
    # set by tools/run_*.sh; the ranks themselves come from torchrun's environment
    p.add_argument("--devices", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--num-nodes", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_extract)


def _default_out(inputs: list[str]) -> Path:
    if len(inputs) == 1 and (Path(inputs[0]) / "Videos").is_dir():
        return Path(inputs[0]) / "features"
    raise ValueError("--out is needed unless the input is one dataset root (a folder with Videos/)")


def run_extract(args: argparse.Namespace) -> int:
    from ..extract import EncoderSpec, FlowSpec, extract_features

    try:
        out = Path(args.out) if args.out else _default_out(args.inputs)
    except ValueError as e:
        console.print(f"[red]extract: {e}[/red]")
        return 2
    spec = EncoderSpec(args.encoder, args.weights, args.mode, args.window, args.chunk, args.overlap, args.batch,
                       tuple(args.size) if args.size else None)
    flow = None
    if args.flow:
        flow = FlowSpec(args.flow, args.flow_weights, args.flow_updates, args.flow_encoder_weights)

    def progress(e: dict) -> None:
        eta = f"{e['eta_s'] / 60:.1f} min" if e["eta_s"] >= 60 else f"{e['eta_s']:.0f} s"
        line = (f"[rank {e['rank']}] {e['index']}/{e['total']} {e['name']}: {e['status']}"
                + (f", {e['frames']} frames in {e['seconds']:.1f} s" if e["status"] == "done" else "")
                + f"; {e['fps_rate']:.0f} frames/s, ETA {eta}")
        console.print(line if e["status"] != "failed" else f"{line}\n  {e['error']}", markup=False, highlight=False,
                      soft_wrap=True)

    try:
        report = extract_features(args.inputs, out, spec, flow, args.sample_rate, args.device, args.dtype,
                                  args.seed, progress, args.decode, args.decode_workers, args.segment_batch)
    except ValueError as e:  # bad settings, weights, names or output folder: nothing was extracted
        console.print(f"extract: {e}", markup=False, highlight=False, style="red", soft_wrap=True)
        return 2
    if report.rank != 0:  # rank 0 reports for all ranks
        return 1 if report.failed else 0
    console.print(f"{out}: {len(report.done)} extracted ({report.frames} frames, {report.seconds:.1f} s), "
                  f"{len(report.skipped)} already there, {len(report.failed)} failed", markup=False, soft_wrap=True)
    for name, err in sorted(report.failed.items()):
        console.print(f"  failed {name}: {err}", markup=False, highlight=False, style="red", soft_wrap=True)
    return 1 if report.failed else 0
