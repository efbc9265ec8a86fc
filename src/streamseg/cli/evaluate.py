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
import os
from pathlib import Path
from typing import Sequence

from streamseg.data.names import unsafe_name_reason
from streamseg.metrics import PROTOCOLS, OnsetDelay, SegmentationMetrics
from streamseg.metrics.io import LabelFile, LabelFileError, read_ground_truth, read_label_file, read_mapping

DEFAULT_BG = ("background",)  # MS-TCN eval.py's bg_class; ignored silently if no such label exists
MAX_ERRORS_SHOWN = 20


class EvaluationInputError(ValueError):
    """Bad evaluation input; the message lists every problem found, each naming its file and line."""


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


# ----------------------------------------------------------------------------- loading
def read_split(path: Path) -> list[str]:
    """Video ids from a bundle file (``<vid>.txt`` per line; blank lines skipped)."""
    if not path.is_file():
        raise EvaluationInputError(f"{path}: split file not found")
    vids: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        name = line.strip()
        if not name:
            continue
        vid = name[:-4] if name.endswith(".txt") else name
        reason = unsafe_name_reason(vid)
        if reason is not None:  # it would read, and plot to, a file outside the given folders
            raise EvaluationInputError(f"{path}:{i + 1}: video name {vid!r} is not a plain file name ({reason})")
        if vid in seen:
            raise EvaluationInputError(f"{path}:{i + 1}: video {vid!r} already listed on line {seen[vid]}")
        seen[vid] = i + 1
        vids.append(vid)
    if not vids:
        raise EvaluationInputError(f"{path}: no videos listed")
    return vids


def _find_prediction(pred_dir: Path, vid: str) -> Path | str:
    """The prediction file of ``vid``, or an error message."""
    candidates = [p for p in (pred_dir / vid, pred_dir / f"{vid}.txt") if p.is_file()]
    if not candidates:
        return f"{pred_dir / vid}: missing prediction for video {vid!r} (looked for '{vid}' and '{vid}.txt')"
    if len(candidates) == 2:
        return f"{pred_dir}: both '{vid}' and '{vid}.txt' exist; keep one"
    return candidates[0]


def _load(
    pred_dir: Path, gt_dir: Path, vids: Sequence[str], errors: list[str]
) -> list[tuple[str, LabelFile, LabelFile]]:
    loaded = []
    for vid in vids:
        gt_path = gt_dir / f"{vid}.txt"
        pred_path = _find_prediction(pred_dir, vid)
        gt = pred = None
        try:
            if not gt_path.is_file():
                errors.append(f"{gt_path}: missing ground truth for video {vid!r}")
            else:
                gt = read_ground_truth(gt_path)
        except LabelFileError as e:
            errors.append(str(e))
        if isinstance(pred_path, str):
            errors.append(pred_path)
        else:
            try:
                pred = read_label_file(pred_path)
            except LabelFileError as e:
                errors.append(str(e))
        if gt is not None and pred is not None:
            if len(pred.names) < len(gt.names):
                errors.append(
                    f"{pred.path}: {len(pred.names)} labels, but the ground truth {gt.path} has "
                    f"{len(gt.names)} lines; predictions must cover every frame at the original rate"
                )
            loaded.append((vid, gt, pred))
    return loaded


def _class_names(
    mapping: Path | None, gt_dir: Path, files: list[tuple[str, LabelFile, LabelFile]]
) -> tuple[list[str], str | None]:
    """Class names and the mapping file they came from (``None``: derived from the label files)."""
    if mapping is None and (gt_dir.parent / "mapping.txt").is_file():
        mapping = gt_dir.parent / "mapping.txt"
    if mapping is not None:
        if not mapping.is_file():
            raise EvaluationInputError(f"{mapping}: mapping file not found")
        return read_mapping(mapping), str(mapping)
    names = set()
    for _, gt, pred in files:
        names.update(gt.names)
        names.update(pred.names)
    return sorted(names), None


def _partial_predictions_hint(pred_dir: Path, gt_dir: Path, vids: Sequence[str]) -> str | None:
    """Without a split file every ground-truth video is scored; when predictions exist for only some of
    them (a run predicts its test split), say so, with the flag that scores just those."""
    missing = [v for v in vids if isinstance(_find_prediction(pred_dir, v), str)]
    if not missing or len(missing) == len(vids):
        return None
    splits = sorted((gt_dir.parent / "splits").glob("test.split*.bundle"))
    example = splits[0] if splits else Path("splits/test.split1.bundle")
    return (
        f"{pred_dir} has predictions for {len(vids) - len(missing)} of the {len(vids)} videos in {gt_dir}: "
        f"to score only the split that was predicted, pass --split-file (e.g. --split-file {example})"
    )


def _check_errors(errors: list[str], hint: str | None = None) -> None:
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise EvaluationInputError(
            (f"{hint}\n" if hint else "")
            + f"{len(errors)} problem(s) in the inputs:\n  " + "\n  ".join(shown) + more
        )


# ----------------------------------------------------------------------------- evaluation
def evaluate_dirs(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    mapping: str | os.PathLike | None = None,
    bg_names: Sequence[str] | None = None,
    split_file: str | os.PathLike | None = None,
    fps: float | None = None,
    plots_dir: str | os.PathLike | None = None,
    protocol: str = "mstcn",
) -> dict:
    """Score every video of a split; returns a JSON-ready dict.

    Args:
        pred_dir: prediction files ``<vid>`` or ``<vid>.txt`` (MS-TCN results or ground-truth format).
        gt_dir: ground-truth files ``<vid>.txt``.
        mapping: ``mapping.txt``; default ``<gt_dir>/../mapping.txt`` if present, else the sorted set
            of labels in the files (then no label is "unknown").
        bg_names: background labels; ``None`` = ``("background",)`` where that label exists;
            explicit names must exist in the class list.
        split_file: ``<vid>.txt`` lines; default every ``*.txt`` in ``gt_dir``.
        fps: frame rate of the labels, for onset delays in seconds.
        plots_dir: if given, PNGs: ``videos/<vid>.png``, ``confusion_matrix.png``, ``per_class.png``.
        protocol: "mstcn" or "asformer" (`streamseg.metrics.tas`), recorded as ``protocol``.

    Returns ``acc``, ``edit``, ``f1@10``, ``f1@25``, ``f1@50`` (percent), ``num_videos``,
    ``num_frames``, ``per_class``, ``per_video``, ``onset_delay``, ``truncated`` (videos whose
    prediction was longer than the GT), ``class_names``, ``bg``, ``mapping``, ``protocol``.
    Raises :class:`EvaluationInputError` listing every problem (file and line) before scoring.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise EvaluationInputError(f"{d}: {what} folder not found")
    if split_file is not None:
        vids = read_split(Path(split_file))
    else:
        vids = sorted(p.name[:-4] for p in gt_dir.glob("*.txt"))
        if not vids:
            raise EvaluationInputError(f"{gt_dir}: no ground-truth files (*.txt)")

    errors: list[str] = []
    files = _load(pred_dir, gt_dir, vids, errors)
    _check_errors(errors, None if split_file is not None else _partial_predictions_hint(pred_dir, gt_dir, vids))
    class_names, mapping_used = _class_names(Path(mapping) if mapping is not None else None, gt_dir, files)
    class_to_id = {name: i for i, name in enumerate(class_names)}
    if bg_names is None:
        bg_names = [b for b in DEFAULT_BG if b in class_to_id]
    unknown_bg = [b for b in bg_names if b not in class_to_id]
    if unknown_bg:
        raise EvaluationInputError(
            f"background label(s) {unknown_bg} not among the {len(class_names)} classes "
            f"({mapping_used or 'labels found in the files'})"
        )
    bg_ids = [class_to_id[b] for b in bg_names]

    labelled = []
    for vid, gt, pred in files:
        try:
            labelled.append((vid, gt.to_ids(class_to_id), pred.to_ids(class_to_id)))
        except LabelFileError as e:
            errors.append(str(e))
    _check_errors(errors)

    metrics = SegmentationMetrics(len(class_names), bg_ids, class_names, protocol=protocol)
    onset = OnsetDelay(bg_ids, fps)
    truncated = []
    for vid, g, p in labelled:
        if len(p) > len(g):
            truncated.append(vid)
        metrics.update(p, g, vid)
        onset.update(p, g, vid)
    result = metrics.compute()
    result["per_video"] = metrics.per_video()
    result["onset_delay"] = onset.compute()
    result["truncated"] = truncated
    result["class_names"] = class_names
    result["bg"] = list(bg_names)
    result["mapping"] = mapping_used
    result["protocol"] = protocol
    if plots_dir is not None:
        _plot(Path(plots_dir), labelled, metrics, result, class_names, bg_ids, fps)
    return result


def _plot(out: Path, labelled, metrics: SegmentationMetrics, result: dict, class_names, bg_ids, fps) -> None:
    from streamseg.viz import plot_confusion_matrix, plot_per_class, plot_segmentation

    for vid, g, p in labelled:
        plot_segmentation(out / "videos" / f"{vid}.png", g, p, class_names, bg_ids, title=vid, fps=fps)
    plot_confusion_matrix(out / "confusion_matrix.png", metrics.confusion_matrix(), class_names)
    plot_per_class(out / "per_class.png", result["per_class"])


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
