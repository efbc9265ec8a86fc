"""``streamseg evaluate``: score prediction files against ground truth (MS-TCN eval.py protocol, or
ASFormer's with ``--protocol asformer``).

    streamseg evaluate --pred-dir P --gt-dir G [--mapping M] [--bg NAME ...] [--split-file F]
                       [--json OUT] [--fps F] [--plots DIR] [--protocol mstcn|asformer]

Predictions: one file per video in ``P``, named ``<vid>`` or ``<vid>.txt``, in MS-TCN results format
(header line, then space-separated labels) or ground-truth format (one label per line), at the
original frame rate. A prediction longer than its ground truth is truncated; a shorter one is an error.
Every input is read and checked before anything is scored; all problems are reported at once, each
naming its file and line. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamseg.metrics import PROTOCOLS
from streamseg.metrics.io import LabelFileError

# the library this command wraps (streamseg/evaluate.py), imported when first used: it reaches torch through
# streamseg.data, and every `streamseg` command (`--help` included) imports this module to build its parser
_LIBRARY = ("EvaluationInputError", "evaluate_dirs", "read_split")


def __getattr__(name: str):
    if name in _LIBRARY:  # callers import these names from here
        from streamseg import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on an argparse subparsers object (its ``func`` default is :func:`run`)."""
    p = subparsers.add_parser(
        "evaluate",
        help="score prediction files against ground truth (Acc, Edit, F1@10/25/50)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred-dir", type=Path, required=True, help="folder of prediction files")
    p.add_argument("--gt-dir", type=Path, required=True, help="folder of <vid>.txt ground-truth files")
    p.add_argument(
        "--mapping",
        type=Path,
        help="mapping.txt ('<index> <name>' lines); default: <gt-dir>/../mapping.txt if it exists, "
        "else the sorted set of labels found in the files",
    )
    p.add_argument(
        "--bg",
        nargs="*",
        metavar="NAME",
        help="background labels, dropped before Edit/F1 (default: 'background' where that label "
        "exists, as MS-TCN eval.py; '--bg' alone: none)",
    )
    p.add_argument("--split-file", type=Path, help="bundle file of '<vid>.txt' lines (default: every GT file)")
    p.add_argument("--json", type=Path, help="write the scores as JSON here")
    p.add_argument("--fps", type=float, help="frame rate of the labels: onset delays also in seconds")
    p.add_argument("--plots", type=Path, help="write PNG plots here (per-video bars, confusion, per-class)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="mstcn",
                   help="F1 protocol: mstcn (MS-TCN/C2F-TCN eval.py, default) or asformer (MS-TCN++, ASFormer, "
                        "DiffAct, ASRF eval.py: the final segment ends one frame early); see docs/metrics.md")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate`` from parsed arguments; bad input raises ``SystemExit`` with the problems."""
    from streamseg.evaluate import EvaluationInputError, evaluate_dirs

    try:
        result = evaluate_dirs(
            pred_dir=args.pred_dir,
            gt_dir=args.gt_dir,
            mapping=args.mapping,
            bg_names=args.bg,
            split_file=args.split_file,
            fps=args.fps,
            plots_dir=args.plots,
            protocol=args.protocol,
        )
    except (EvaluationInputError, LabelFileError, FileNotFoundError) as e:
        raise SystemExit(f"streamseg evaluate: error: {e}") from None
    print_result(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ----------------------------------------------------------------------------- terminal output
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_result(result: dict) -> None:
    """Rich tables: per-class scores, then the dataset scores and onset delay."""
    from rich.table import Table

    from .common import make_console

    console = make_console()
    score_keys = [k for k in result if k.startswith("f1@")]
    per_class = Table(title="per class", title_justify="left")
    for col in ("class", "frames", "frame acc", "segments", *score_keys):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, entry in result["per_class"].items():
        label = f"{name} (bg)" if entry["background"] else name
        segs = "-" if entry["num_segments"] is None else str(entry["num_segments"])
        per_class.add_row(label, str(entry["num_frames"]), _fmt(entry["frame_acc"]), segs,
                          *(_fmt(entry[k]) for k in score_keys))
    console.print(per_class)

    summary = Table(title=f"{result['num_videos']} videos, {result['num_frames']} frames", title_justify="left")
    for col in ("Acc", "Edit", *(k.upper() for k in score_keys)):
        summary.add_column(col, justify="right")
    summary.add_row(_fmt(result["acc"]), _fmt(result["edit"]), *(_fmt(result[k]) for k in score_keys))
    console.print(summary)

    od = result["onset_delay"]
    line = f"onset delay: {od['num_hit']}/{od['num_segments']} segments recognised"
    if od["mean_frames"] is not None:
        line += f", mean {od['mean_frames']:.1f} / median {od['median_frames']:.1f} frames"
        if "mean_s" in od:
            line += f" ({od['mean_s']:.2f} / {od['median_s']:.2f} s)"
    console.print(line)
    if result["truncated"]:
        console.print(f"[yellow]{len(result['truncated'])} prediction(s) longer than the ground truth "
                      f"were truncated[/yellow] (e.g. {result['truncated'][0]})")
    bg = ", ".join(result["bg"]) or "none"
    console.print(f"background (dropped before Edit/F1): {bg}; classes from {result['mapping'] or 'the label files'}")


__all__ = ["EvaluationInputError", "add_parser", "evaluate_dirs", "print_result", "run"]
