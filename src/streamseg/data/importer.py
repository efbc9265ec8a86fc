"""`import_segments`: the standard layout from a table of segments and a folder of videos.

The table (CSV, or TSV for ``.tsv``/``.tab`` files) has one segment a row: ``video, start, end, label``, in
that order or named by a header row (``video``/``start``/``end``/``label``, any order, any case; extra
columns ignored). ``video`` is the file stem of a video in the folder. Times are seconds (``units=
"seconds"``: frame ``t`` is in the segment when ``start <= t / fps < end``, fps from the video) or frames
(``units="frames"``: 0-based, ``start <= t < end``; for 1-based inclusive ranges such as Breakfast's
``1-30``, use ``start - 1``).

Problems are collected before anything is written and reported together, each with its ``table:line``:
an unknown video, a start not before its end or outside the video, two segments covering the same frame
(both lines named), a label that is not a plain word, a video of the folder without any segment. Frames
no segment covers are filled with ``background`` (they are counted in the returned summary per video).

Writes into ``root`` (nothing outside it): ``Videos/<video>.<ext>`` (symbolic links to the given files, or
copies with ``copy=True``; nothing when the folder already is ``root/Videos``), ``groundTruth/<video>.txt``,
``mapping.txt`` (background first when used, then the labels in sorted order) and ``splits/``: ``folds``
folds by video (videos shuffled with ``seed``; split k tests fold k and trains on the others) or one split
from given train/test lists. ``root`` must not already hold ``groundTruth/`` or ``mapping.txt``.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamseg.data.errors import DataError
from streamseg.data.layout import VIDEO_SUFFIXES, check_video_name

__all__ = ["ImportSummary", "import_segments", "read_segments"]


@dataclass
class Segment:
    video: str
    start: float
    end: float
    label: str
    line: int


@dataclass
class ImportSummary:
    """videos: ``{name: frames}``; gaps: ``{name: frames filled with background}``; classes: mapping order."""

    root: Path
    videos: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    folds: int = 0


_COLUMNS = ("video", "start", "end", "label")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_segments(table: str | Path) -> tuple[list[Segment], list[DataError]]:
    """The table's segments and the problems of its rows (module docstring)."""
    table = Path(table)
    if not table.is_file():
        return [], [DataError(table, "segment table not found")]
    delimiter = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    with open(table, newline="", encoding="utf-8") as f:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f, delimiter=delimiter), 1)
                if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    columns = {name: i for i, name in enumerate(_COLUMNS)}
    if rows and _number(rows[0][1][1] if len(rows[0][1]) > 1 else "") is None:  # a header row
        line, header = rows.pop(0)
        names = [h.lower() for h in header]
        missing = [c for c in _COLUMNS if c not in names]
        if missing:
            return [], [DataError(table, f"header lacks column(s) {missing}; expected {list(_COLUMNS)}", line)]
        columns = {c: names.index(c) for c in _COLUMNS}
    segments, errors = [], []
    for line, row in rows:
        if len(row) <= max(columns.values()):
            errors.append(DataError(table, f"expected the columns {list(_COLUMNS)}, got {row}", line))
            continue
        video, start, end, label = (row[columns[c]] for c in _COLUMNS)
        s, e = _number(start), _number(end)
        if s is None or e is None:
            errors.append(DataError(table, f"start and end must be numbers, got {start!r}, {end!r}", line))
            continue
        if not label or any(ch.isspace() for ch in label):
            errors.append(DataError(table, f"label {label!r} must be one word (no spaces: mapping.txt and the "
                                           "label files separate by whitespace)", line))
            continue
        segments.append(Segment(video, s, e, label, line))
    return segments, errors


def _label_video(table: Path, name: str, segs: list[Segment], frames: int, fps: float, units: str,
                 background: str) -> tuple[list[str], int, list[DataError]]:
    """Per-frame labels of one video, the number of gap frames, and the problems."""
    labels: list[str | None] = [None] * frames
    owner = np.zeros(frames, dtype=np.int64)  # line of the segment that labelled each frame (0: none)
    errors = []
    for seg in segs:
        scale = fps if units == "seconds" else 1.0
        if units == "seconds" and fps <= 0:
            errors.append(DataError(table, f"{name}: the video has no frame rate; give frames, not seconds", seg.line))
            continue
        start, end = seg.start * scale, seg.end * scale
        if not (0 <= start < end):
            errors.append(DataError(table, f"{name}: expected 0 <= start < end, got {seg.start}, {seg.end}", seg.line))
            continue
        first, stop = int(np.ceil(start - 1e-6)), int(np.ceil(end - 1e-6))  # frames t with start <= t < end
        if stop > frames:
            errors.append(DataError(table, f"{name}: the segment ends at frame {stop}, after the video's {frames} "
                                           f"frames", seg.line))
            continue
        taken = owner[first:stop]
        if taken.any():
            other = int(taken[taken > 0][0])
            errors.append(DataError(table, f"{name}: overlaps the segment of line {other} (frames "
                                           f"{first + int(np.argmax(taken > 0))}..)", seg.line))
            continue
        owner[first:stop] = seg.line
        labels[first:stop] = [seg.label] * (stop - first)
    gaps = sum(1 for label in labels if label is None)
    return [background if label is None else label for label in labels], gaps, errors


def _videos(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, "video folder not found")
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            found[check_video_name(path.stem, str(path))] = path
    if not found:
        raise DataError(folder, f"no videos ({', '.join(VIDEO_SUFFIXES)})")
    return found


def _write(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, path)


def import_segments(
    table: str | Path,
    videos: str | Path,
    root: str | Path,
    units: str = "seconds",
    background: str = "background",
    folds: int = 4,
    split_lists: tuple[Sequence[str], Sequence[str]] | None = None,
    seed: int = 0,
    copy: bool = False,
) -> ImportSummary:
    """Build the layout at ``root`` (module docstring). Raises `DataError` listing every problem found."""
    from streamseg.data.video import probe

    table, folder, root = Path(table), Path(videos), Path(root)
    if units not in ("seconds", "frames"):
        raise ValueError(f"units must be 'seconds' or 'frames', got {units!r}")
    if split_lists is None and folds < 2:
        raise ValueError(f"folds must be >= 2 (each split tests one fold), got {folds}")
    for existing in (root / "groundTruth", root / "mapping.txt"):
        if existing.exists():
            raise DataError(existing, "already exists; import into a new dataset folder")
    files = _videos(folder)
    segments, errors = read_segments(table)
    by_video: dict[str, list[Segment]] = {name: [] for name in files}
    for seg in segments:
        if seg.video not in by_video:
            errors.append(DataError(table, f"video {seg.video!r} is not in {folder}", seg.line))
        else:
            by_video[seg.video].append(seg)
    summary = ImportSummary(root)
    per_frame: dict[str, list[str]] = {}
    for name, segs in by_video.items():
        if not segs:
            errors.append(DataError(files[name], f"no segment of this video in {table}"))
            continue
        try:
            frames, fps, _, _ = probe(files[name])
        except DataError as e:
            errors.append(e)
            continue
        labels, gaps, problems = _label_video(table, name, segs, frames, fps, units, background)
        errors += problems
        per_frame[name], summary.videos[name] = labels, frames
        if gaps:
            summary.gaps[name] = gaps
    if split_lists is not None:
        for kind, names in zip(("train", "test"), split_lists):
            errors += [DataError(f"<{kind} list>", f"video {n!r} is not in {folder}") for n in names if n not in files]
    if errors:
        errors.sort(key=lambda e: (e.path, e.line or 0))
        raise DataError(table, f"{len(errors)} problem(s); nothing written:\n" + "\n".join(str(e) for e in errors))

    used = {label for labels in per_frame.values() for label in labels}
    summary.classes = ([background] if background in used else []) + sorted(used - {background})
    names = sorted(files)
    if split_lists is not None:
        splits = [(list(split_lists[0]), list(split_lists[1]))]
    else:
        if folds > len(names):
            raise ValueError(f"folds ({folds}) must not exceed the number of videos ({len(names)})")
        order = names[:]
        random.Random(seed).shuffle(order)
        parts = [sorted(order[k::folds]) for k in range(folds)]
        splits = [([n for n in names if n not in part], part) for part in parts]
    summary.folds = len(splits)

    for sub in ("Videos", "groundTruth", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if folder.resolve() != (root / "Videos").resolve():
        for name, path in files.items():
            target = root / "Videos" / f"{name}{path.suffix.lower()}"
            if target.exists() or target.is_symlink():
                raise DataError(target, "already exists")
            if copy:
                shutil.copy2(path, target)
            else:
                target.symlink_to(path.resolve())
    for name, labels in per_frame.items():
        _write(root / "groundTruth" / f"{name}.txt", labels)
    for k, (train, test) in enumerate(splits, 1):
        _write(root / "splits" / f"train.split{k}.bundle", [f"{n}.txt" for n in train])
        _write(root / "splits" / f"test.split{k}.bundle", [f"{n}.txt" for n in test])
    _write(root / "mapping.txt", [f"{i} {c}" for i, c in enumerate(summary.classes)])
    return summary
