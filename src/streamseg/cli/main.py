"""`streamseg` command line: parse, then call the library.

    streamseg train    -D synth -M mstcn -E quick [-o train.epochs=5 ...] [-R experiments] [--new]
    streamseg test     -D synth -M mstcn -E quick [--version N] [--ckpt best|last|PATH]
    streamseg evaluate --pred-dir P --gt-dir G [--bg background] [--json out.json]
    streamseg data synth [--root data/synth]
    streamseg data check ROOT
    streamseg data import --segments SEGMENTS.csv --videos DIR --root ROOT [--units frames --folds 4]
    streamseg search   -D synth -M mstcn -E quick --trials 20 [--storage URL] [--cost flops]
    streamseg export onnx RUN_DIR [--out model.onnx]
    streamseg infer    (VIDEO | FOLDER | URL | /dev/videoN) --model (RUN_DIR | model.onnx) [--realtime --live --annotate out.mp4]
    streamseg serve    --model (RUN_DIR | model.onnx) [--port 8000 --source rtsp://cam1 ...]
    streamseg client   (add SOURCE | push VIDEO | list | status ID | events [ID] | remove ID) [--server URL]
    streamseg explain  RUN_DIR VIDEO [--out cam.mp4 --class NAME --method gradcam|hirescam]
    streamseg extract  (DATASET_ROOT | FOLDER | LIST.txt | VIDEO...) --encoder s3d --weights s3d.pth [--mode dense --flow raft_large]
    streamseg bench    -D synth -M tsm_memtcn -E chunk32 [--streams 16 --chunk 32 --device cuda]
"""

from __future__ import annotations

import argparse
import sys

from . import bench as bench_cmd
from . import client as client_cmd
from . import data as data_cmd
from . import evaluate as evaluate_cmd
from . import explain as explain_cmd
from . import export as export_cmd
from . import extract as extract_cmd
from . import infer as infer_cmd
from . import search as search_cmd
from . import serve as serve_cmd
from . import train as train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamseg", description="Streaming and offline temporal action segmentation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parsers(sub)
    evaluate_cmd.add_parser(sub)
    data_cmd.add_parser(sub)
    search_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    infer_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    client_cmd.add_parser(sub)
    explain_cmd.add_parser(sub)
    extract_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
