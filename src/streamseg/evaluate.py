"""Score prediction files against ground truth (MS-TCN eval.py protocol, or ASFormer's): `evaluate_dirs`,
the library behind ``streamseg evaluate`` (`streamseg.cli.evaluate`) and `streamseg.api.evaluate_dirs`.

Predictions: one file per video, named ``<vid>`` or ``<vid>.txt``, in MS-TCN results format (header line,
then space-separated labels) or ground-truth format (one label per line), at the original frame rate. A
prediction longer than its ground truth is truncated; a shorter one is an error. Every input is read and
checked before anything is scored; all problems are reported at once, each naming its file and line.
Definitions: docs/metrics.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .data.names import unsafe_name_reason
from .metrics import OnsetDelay, SegmentationMetrics
from .metrics.io import LabelFile, LabelFileError, read_ground_truth, read_label_file, read_mapping

DEFAULT_BG = ("background",)  # MS-TCN eval.py's bg_class; ignored silently if no such label exists
MAX_ERRORS_SHOWN = 20


class EvaluationInputError(ValueError):
    """Bad evaluation input; the message lists every problem found, each naming its file and line."""


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
    from .viz import plot_confusion_matrix, plot_per_class, plot_segmentation

    for vid, g, p in labelled:
        plot_segmentation(out / "videos" / f"{vid}.png", g, p, class_names, bg_ids, title=vid, fps=fps)
    plot_confusion_matrix(out / "confusion_matrix.png", metrics.confusion_matrix(), class_names)
    plot_per_class(out / "per_class.png", result["per_class"])
