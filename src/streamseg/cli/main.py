"""`streamseg` command line: parse, then call the library.

    streamseg train    -D synth -M mstcn -E quick [-o train.epochs=5 ...] [-R experiments] [--new]
    streamseg test     -D synth -M mstcn -E quick [--version N] [--ckpt best|last|PATH]
    streamseg evaluate --pred-dir P --gt-dir G [--bg background] [--json out.json]
    streamseg data synth [--root data/synth]
    streamseg data check ROOT
"""

from __future__ import annotations

import argparse
import sys

from . import data as data_cmd
from . import evaluate as evaluate_cmd
from . import train as train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamseg", description="Streaming and offline temporal action segmentation."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parsers(sub)
    evaluate_cmd.add_parser(sub)
    data_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
