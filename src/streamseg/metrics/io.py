"""Label files of the standard TAS layout, read strictly with errors that name file and line.

* ground truth (``groundTruth/<vid>.txt``): one class name per line, one line per frame;
* MS-TCN results (``predictions/<vid>``): line 1 ``### Frame level recognition: ###``, line 2 the
  frame labels separated by spaces (MS-TCN ``predict()`` output, read by its ``eval.py``);
* ``mapping.txt``: ``<index> <name>`` per line, indices 0..K-1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

RESULTS_HEADER = "### Frame level recognition: ###"

PathLike = str | os.PathLike


class LabelFileError(ValueError):
    """A malformed label, mapping or results file; the message starts with ``<path>:<line>:``."""


@dataclass(frozen=True)
class LabelFile:
    """Frame labels read from one file. ``results_format``: MS-TCN results (all labels on line 2)."""

    path: str
    names: list[str]
    results_format: bool

    def where(self, frame: int) -> str:
        """``path:line`` of ``frame`` (0-based), for error messages."""
        if self.results_format:
            return f"{self.path}:2 (label {frame + 1})"
        return f"{self.path}:{frame + 1}"

    def to_ids(self, class_to_id: Mapping[str, int]) -> np.ndarray:
        """Class ids (T,) int64; an unknown name raises :class:`LabelFileError` at its line."""
        ids = np.empty(len(self.names), dtype=np.int64)
        for t, name in enumerate(self.names):
            idx = class_to_id.get(name)
            if idx is None:
                known = ", ".join(sorted(class_to_id)[:20])
                raise LabelFileError(f"{self.where(t)}: unknown label {name!r}; known labels: {known}")
            ids[t] = idx
        return ids


def _read_lines(path: PathLike) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:  # name the line (and column) an editor jumps to, not a byte offset
        line, line_start = data.count(b"\n", 0, e.start) + 1, data.rfind(b"\n", 0, e.start) + 1
        raise LabelFileError(f"{path}:{line}: not UTF-8 text: byte "
                             f"0x{data[e.start]:02x} at column {e.start - line_start + 1} ({e.reason})") from None
    lines = text.splitlines()
    # Trailing blank lines (a final newline, an editor's extra one) carry no frames.
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_ground_truth(path: PathLike) -> LabelFile:
    """One label per line; a blank or multi-word line in the middle is an error naming its line."""
    lines = _read_lines(path)
    names = []
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != 1:
            what = "blank line" if not tokens else f"{len(tokens)} words {line.strip()!r}"
            raise LabelFileError(f"{path}:{i + 1}: expected one label per line, got {what}")
        names.append(tokens[0])
    if not names:
        raise LabelFileError(f"{path}:1: no labels: a label file needs at least one frame")
    return LabelFile(str(path), names, results_format=False)


def read_results(path: PathLike) -> LabelFile:
    """MS-TCN results file: the header line, then all frame labels on line 2."""
    lines = _read_lines(path)
    if not lines or lines[0].strip() != RESULTS_HEADER:
        got = repr(lines[0][:60]) if lines else "an empty file"
        raise LabelFileError(f"{path}:1: expected the header {RESULTS_HEADER!r}, got {got}")
    if len(lines) < 2 or not lines[1].split():
        raise LabelFileError(f"{path}:2: no labels after the header")
    for i in range(2, len(lines)):
        if lines[i].strip():
            raise LabelFileError(f"{path}:{i + 1}: unexpected content after the label line")
    return LabelFile(str(path), lines[1].split(), results_format=True)


def read_label_file(path: PathLike) -> LabelFile:
    """Either format: a first line starting with ``#`` means MS-TCN results (so a mangled header is
    reported as such, not as a label), anything else ground truth."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    return read_results(path) if first.startswith("#") else read_ground_truth(path)


def read_mapping(path: PathLike) -> list[str]:
    """``mapping.txt`` -> class names indexed by id. Indices must be exactly 0..K-1, names unique."""
    lines = _read_lines(path)
    by_index: dict[int, str] = {}
    line_of_name: dict[str, int] = {}
    for i, line in enumerate(lines):
        tokens = line.split()
        if not tokens:
            raise LabelFileError(f"{path}:{i + 1}: blank line; expected '<index> <name>'")
        if len(tokens) != 2 or not tokens[0].lstrip("-").isdigit():
            raise LabelFileError(f"{path}:{i + 1}: expected '<index> <name>', got {line.strip()!r}")
        idx, name = int(tokens[0]), tokens[1]
        if idx in by_index:
            raise LabelFileError(f"{path}:{i + 1}: index {idx} appears twice")
        if name in line_of_name:
            raise LabelFileError(f"{path}:{i + 1}: name {name!r} already on line {line_of_name[name]}")
        by_index[idx] = name
        line_of_name[name] = i + 1
    if not by_index:
        raise LabelFileError(f"{path}:1: empty mapping: expected '<index> <name>' lines")
    k = len(by_index)
    if sorted(by_index) != list(range(k)):
        missing = sorted(set(range(k)) - set(by_index))
        raise LabelFileError(f"{path}: indices must be 0..{k - 1} without gaps; missing {missing[:10]}")
    return [by_index[i] for i in range(k)]


def _names(labels: Sequence[str] | np.ndarray, class_names: Sequence[str] | None, path: PathLike) -> list[str]:
    if class_names is None:
        names = [str(x) for x in labels]
    else:
        ids = np.asarray(labels)
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(class_names)):
            raise ValueError(f"{path}: label ids must be integers in 0..{len(class_names) - 1}")
        names = [class_names[int(i)] for i in ids]
    for name in names:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"{path}: label {name!r} is empty or contains whitespace; it cannot be written")
    if not names:
        raise ValueError(f"{path}: refusing to write an empty label sequence")
    return names


def write_results(
    path: PathLike, labels: Sequence[str] | np.ndarray, class_names: Sequence[str] | None = None
) -> None:
    """Write an MS-TCN results file: ``labels`` are names, or ids (T,) with ``class_names``."""
    names = _names(labels, class_names, path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(RESULTS_HEADER + "\n" + " ".join(names) + "\n")


def write_ground_truth(
    path: PathLike, labels: Sequence[str] | np.ndarray, class_names: Sequence[str] | None = None
) -> None:
    """Write a ground-truth file (one label per line); arguments as :func:`write_results`."""
    names = _names(labels, class_names, path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")


def write_mapping(path: PathLike, class_names: Sequence[str]) -> None:
    """Write ``mapping.txt`` with ``<index> <name>`` lines."""
    _names(list(class_names), None, path)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{i} {name}\n" for i, name in enumerate(class_names))
