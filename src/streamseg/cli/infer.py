"""`streamseg infer SOURCE --model MODEL`: label a video file, a folder of videos, a network stream or a
capture device online, chunk by chunk, as the frames arrive.

SOURCE is a video file, a folder (every video in it), a URL PyAV can open (rtsp://, rtmp://, http(s)://,
udp://, tcp://, srt://), a device (/dev/video0, read with v4l2) or FORMAT:TARGET for any FFmpeg input
format (v4l2:/dev/video0, lavfi:testsrc=size=64x64:rate=15); -O passes input options
(-O video_size=640x480 -O framerate=30 -O rtsp_transport=tcp). A live source has no known length: it
runs until it ends, --max-frames, or Ctrl-C (which closes the open segment and writes what it has).

MODEL is an exported .onnx (with its .json metadata beside it; ONNX Runtime) or a run directory /
checkpoint (PyTorch). Frames are decoded with PyAV at the model's sample rate and input size and fed
chunk by chunk with the state carried. Outputs:
  * each segment as a JSON line the moment it closes (label, start, end, confidence, emitted-at frame,
    latency), on stdout or --events FILE;
  * per-frame labels in MS-TCN results format in --pred-dir/<video name>;
  * --annotate: a copy of the video with the current label and a timeline bar of the segments so far;
  * --summary FILE: one JSON object per source (frames, segments, speed, and the real-time report);
  * --live: a live view on the terminal (stderr): label, confidence, speed, lag, last segments.

--realtime plays a file at its frame rate (as a camera would deliver it) and reports whether the model
keeps up: seconds behind the source and chunks labelled late (after the next chunk had arrived).
Nothing is dropped. Live sources are always measured.

    streamseg infer data/synth/Videos/coffee_000.mp4 --model experiments/.../export/model.onnx
    streamseg infer data/synth/Videos --model experiments/synth/tsm_memtcn_chunk32/version_0 --pred-dir preds
    streamseg infer rtsp://camera.local/stream --model model.onnx -O rtsp_transport=tcp --live
    streamseg infer /dev/video0 --model model.onnx -O video_size=640x480 --annotate cam.mp4 --max-frames 900
    streamseg infer vid.mp4 --model model.onnx --realtime --summary summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="online segmentation of a video, folder, stream or device; events as JSON lines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a video file, a folder of videos, a stream URL, /dev/videoN or FORMAT:TARGET")
    p.add_argument("--model", required=True, help="an .onnx export, a run directory or a checkpoint")
    p.add_argument("--chunk", type=int, default=None, help="sampled frames per step (default: training chunk, or 32)")
    p.add_argument("--events", default="-", help="JSON-lines output for segment events (default: stdout)")
    p.add_argument("--pred-dir", default=None, help="write per-frame labels (MS-TCN results format) here")
    p.add_argument("--summary", default=None, help="write a JSON list with one summary per source here")
    p.add_argument("--annotate", default=None, metavar="PATH",
                   help="annotated video: a file (.mp4, .mkv, ...) for one source, else a folder (<name>.mp4 each)")
    p.add_argument("--annotate-width", type=int, default=None,
                   help="annotated video width (default: the source's, at least 320)")
    p.add_argument("--realtime", action="store_true",
                   help="play the source at its frame rate and report the lag (files too; nothing is dropped)")
    p.add_argument("--live", action="store_true", help="a live view on the terminal (stderr)")
    p.add_argument("--format", default=None, help="FFmpeg input format / device (e.g. v4l2, mpegts); default: guessed")
    p.add_argument("-O", "--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg input option, e.g. -O video_size=640x480 -O rtsp_transport=tcp (repeatable)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a stream may take to open or to send data")
    p.add_argument("--max-frames", type=int, default=None, help="stop each source after this many original frames")
    p.add_argument("--name", default=None, help="name of a single source in events and output files")
    p.add_argument("--device", default="cpu", help="PyTorch backend device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    p.set_defaults(func=run_infer)


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: -O/--input-option expects KEY=VALUE, got {pair!r}")
        options[key] = value
    return options


def _annotate_path(arg: str, name: str, several: bool) -> Path:
    """--annotate: a file with a video suffix for one source, else a folder of <name>.mp4."""
    from ..deploy.infer import VIDEO_SUFFIXES

    path = Path(arg)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if several:
            raise SystemExit(f"error: --annotate {arg}: several sources, give a folder instead of a file")
        return path
    return path / f"{name}.mp4"


def run_infer(args: argparse.Namespace) -> int:
    import torch

    from ..data.names import unsafe_name_reason
    from ..deploy.infer import VideoResult, infer_stream, open_source, sources
    from ..deploy.runtime import open_streamer
    from ..deploy.sources import source_name
    from ..engine.checkpoint_io import CheckpointError
    from ..metrics.io import write_results

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if (args.chunk is not None and args.chunk < 1) or (args.max_frames is not None and args.max_frames < 1):
        raise SystemExit(f"error: --chunk and --max-frames must be >= 1, got {args.chunk}, {args.max_frames}")
    options = _options(args.input_option)
    unsafe = unsafe_name_reason(args.name) if args.name is not None else None
    if unsafe:  # the name becomes a file name in --pred-dir and --annotate
        raise SystemExit(f"error: --name {args.name!r} is not a plain file name ({unsafe})")
    try:
        streamer = open_streamer(args.model, args.device, args.threads)
        todo = sources(args.source)
    except (FileNotFoundError, CheckpointError, ValueError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.name is not None and len(todo) > 1:
        raise SystemExit(f"error: --name names one source, {args.source} has {len(todo)}")
    meta = streamer.meta
    out = None if args.events == "-" else open(args.events, "w", encoding="utf-8")
    view = None
    if args.live:
        from ..deploy.live_view import LiveView

        view = LiveView(redirect_stdout=out is None and sys.stdout.isatty())

    def emit(event: dict) -> None:
        stream = out or sys.stdout  # looked up per call: the live view may redirect stdout on a terminal
        stream.write(json.dumps(event) + "\n")
        stream.flush()  # the consumer sees each segment as soon as it closes
        if view is not None:
            view.event(event)

    def say(message: str) -> None:
        if view is not None:
            view.print(message)
        else:
            print(message, file=sys.stderr)

    pred_dir = Path(args.pred_dir) if args.pred_dir else None
    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    results: list[VideoResult] = []
    try:
        if view is not None:
            view.__enter__()
        for item in todo:
            name = args.name or source_name(item)
            writer = None
            with open_source(item, streamer, fmt=args.format, options=options, timeout_s=args.timeout,
                             max_frames=args.max_frames) as source:
                if source.fps and abs(source.fps - meta.fps) > 0.01 * meta.fps:
                    say(f"note: {item} runs at {source.fps:g} fps, the model was trained on {meta.fps:g} fps video: "
                        f"to the model, actions will look {meta.fps / source.fps:.2g}x as fast")
                if args.annotate:
                    from ..deploy.annotate import AnnotatedVideoWriter

                    writer = AnnotatedVideoWriter(_annotate_path(args.annotate, name, len(todo) > 1), meta.class_names,
                                                  source.fps or meta.fps, num_frames=source.num_frames,
                                                  bg_classes=meta.bg_classes, width=args.annotate_width)
                try:
                    result = infer_stream(streamer, source, args.chunk, emit, name=name, realtime=args.realtime,
                                          on_frames=writer.write if writer else None,
                                          on_progress=view.progress if view else None)
                finally:
                    if writer is not None:
                        writer.close()
            results.append(result)
            if view is not None:
                view.finished(result)
            if pred_dir is not None:
                write_results(pred_dir / result.name, result.labels, meta.class_names)
            say(_line(item, result) + (f"; annotated video {writer.path}" if writer else ""))
    except ValueError as e:  # DataError (a bad file or stream) is a ValueError
        raise SystemExit(f"error: {e}") from None
    finally:
        if view is not None:
            view.__exit__(None, None, None)
        if out is not None:
            out.close()
        if args.summary:
            Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
            Path(args.summary).write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
    return 0


def _line(item, result) -> str:
    text = (f"{item}: {len(result.labels)} frames, {len(result.events)} segments, "
            f"{len(result.labels) / max(result.seconds, 1e-9):.1f} frames/s")
    rt = result.realtime
    if rt is not None:
        if rt["behind"]:
            state = (f"FELL BEHIND the source: {rt['late_chunks']} of {rt['chunks']} chunks late, up to "
                     f"{rt['max_lag_s']:.2f} s behind (final {rt['final_lag_s']:.2f} s)")
        else:
            state = (f"kept up with the source (max lag {rt['max_lag_s']:.2f} s, "
                     f"chunk period {rt['chunk_period_s'] or 0:.2f} s)")
        text += f"; real time x{rt['speed']}: {state}"
    if result.interrupted:
        text += "; stopped by Ctrl-C"
    return text
