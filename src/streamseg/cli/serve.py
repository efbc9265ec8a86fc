"""`streamseg serve --model MODEL`: one model, many live streams, continuous batching, over HTTP/WebSocket.

The server owns the model (an .onnx export with its .json beside it, or a run directory / checkpoint
run with PyTorch on --device) and up to --max-streams stream slots. Each step runs the next chunk of
every stream that has one ready as one batch; each stream keeps its own state, reset when it starts;
streams join and leave at any time. A stream is pulled by the server from anything `streamseg infer`
opens (file, URL, /dev/videoN, FORMAT:TARGET; --realtime paces files) or pushed by a client over a
WebSocket. Segment events (the JSON lines `infer` prints) go out over WebSocket, Server-Sent Events
and an optional --webhook. http://HOST:PORT/ is a live dashboard. See docs/serve.md.

Control calls (add, remove, push) need the token of --token-file or $STREAMSEG_TOKEN when one is set;
without a token the server only binds a loopback address.

    streamseg serve --model experiments/.../export/model.onnx --port 8000
    streamseg serve --model model.onnx --source rtsp://cam1/stream --source rtsp://cam2/stream -O rtsp_transport=tcp
    STREAMSEG_TOKEN=... streamseg serve --model model.onnx --host 0.0.0.0 --webhook http://alerts.local/hook
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve one model to many streams (HTTP/WebSocket, continuous batching)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an .onnx export, a run directory or a checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--chunk", type=int, default=None, help="sampled frames per step (default: training chunk, or 32)")
    p.add_argument("--max-streams", type=int, default=64, help="stream slots")
    p.add_argument("--buffer-chunks", type=int, default=4,
                   help="chunks a stream may have waiting; a full buffer pauses its reader or pusher (no drops)")
    p.add_argument("--retries", type=int, default=3, help="attempts to open a failing source (backoff 1, 2, 4 s...)")
    p.add_argument("--token-file", default=None, help="file holding the control token (else $STREAMSEG_TOKEN)")
    p.add_argument("--webhook", default=None, metavar="URL", help="POST every event (JSON) to this URL")
    p.add_argument("--source", action="append", default=[], help="a stream to pull from the start (repeatable)")
    p.add_argument("--realtime", action="store_true", help="pace the --source streams at their frame rate")
    p.add_argument("--reconnect", action="store_true",
                   help="open a live --source (URL, device) again when it ends or fails, and go on")
    p.add_argument("--format", default=None, help="FFmpeg input format for pulled sources (e.g. v4l2, mpegts)")
    p.add_argument("-O", "--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg input option for pulled sources (repeatable)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a stream may take to open or to send data")
    p.add_argument("--max-frames", type=int, default=None, help="stop each pulled source after this many frames")
    p.add_argument("--decode-workers", type=int, default=0, metavar="N",
                   help="read pulled sources in N worker processes instead of threads of the server "
                        "(many sources with a GPU model: see docs/serve.md)")
    p.add_argument("--decode-threads", type=int, default=1, metavar="N",
                   help="FFmpeg decoder threads of each pulled source (default 1: many readers share the cores; "
                        "0: FFmpeg's own choice, for a few very high resolution cameras)")
    p.add_argument("--fixed-batch", action="store_true",
                   help="PyTorch models: one fixed-batch step of --max-streams rows, compiled and captured in a "
                        "CUDA graph on a GPU (compiles at start; see docs/serve.md)")
    p.add_argument("--device", default="cpu", help="PyTorch backend device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch intra-op threads")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="PyTorch models: autocast dtype of the model calls (bf16 on GPUs)")
    p.add_argument("--channels-last", action="store_true", help="PyTorch models: channels-last frames (GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="PyTorch models: torch.compile the step (full chunks; the batch axis dynamic)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import torch

    from ..client import read_token
    from ..deploy.runtime import open_streamer
    from .infer import _options

    try:
        from ..deploy.server import ServerOptions, build_app, check_host
    except ImportError as e:
        raise SystemExit(f"error: serve needs the serve extra ({e.name} is missing): "
                         "pip install -e '.[serve]'") from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for flag, value in (("--chunk", args.chunk), ("--max-streams", args.max_streams),
                        ("--buffer-chunks", args.buffer_chunks), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise SystemExit(f"error: {flag} must be >= 1, got {value}")
    for flag, value in (("--decode-workers", args.decode_workers), ("--decode-threads", args.decode_threads)):
        if value < 0:
            raise SystemExit(f"error: {flag} must be >= 0, got {value}")
    if args.fixed_batch and str(args.model).endswith(".onnx"):
        raise SystemExit(f"error: --fixed-batch needs a PyTorch model (a run directory or checkpoint), "
                         f"not an ONNX export: {args.model}")
    if args.reconnect:
        from ..deploy.sources import is_stream

        for source in args.source:
            if not is_stream(source):
                raise SystemExit(f"error: --reconnect needs live --source streams (URLs, devices), not the file "
                                 f"{source}: opening it again would replay it")
    source_options = {"fmt": args.format, "options": _options(args.input_option), "timeout_s": args.timeout,
                      "max_frames": args.max_frames, "decode_threads": args.decode_threads}
    try:
        token = read_token(args.token_file)
        check_host(args.host, token)
        streamer = open_streamer(args.model, args.device, args.threads, precision=args.precision,
                                 channels_last=args.channels_last, compile=args.compile)
        opts = ServerOptions(chunk=args.chunk, max_streams=args.max_streams, buffer_chunks=args.buffer_chunks,
                             retries=args.retries, token=token, webhook=args.webhook, source_options=source_options,
                             decode_workers=args.decode_workers, fixed_batch=args.fixed_batch)
        app = build_app(streamer, opts)
        for source in args.source:
            app.state.pool.add(source, realtime=args.realtime, reconnect=args.reconnect)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    import uvicorn

    from ..deploy.server import uvicorn_config

    print(f"streamseg serve: {args.model} on http://{args.host}:{args.port}/ "
          f"({'token required for control calls' if token else 'no token: loopback only'})", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, opts, host=args.host, port=args.port)).run()
    return 0
