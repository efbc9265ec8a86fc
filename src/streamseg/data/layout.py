"""Reader for the standard temporal-action-segmentation dataset layout (the MS-TCN data bundle).

::

    <root>/
      mapping.txt                      "<index> <name>" per line, indices 0..K-1 in file order
      splits/train.split<k>.bundle     one "<video>.txt" per line (k = 1, 2, ...)
      splits/val.split<k>.bundle       optional
      splits/test.split<k>.bundle
      groundTruth/<video>.txt          one label name per frame, one per line
      features/<video>.npy             float array (D, T): D channels, T frames
      Videos/<video>.mp4 | .mkv | ...  optional raw videos (`VIDEO_SUFFIXES`, any case)

GTEA, 50Salads and Breakfast ship in this layout, and so does the built-in synthetic dataset
(`streamseg.data.synth`). Each ``scan_*`` function returns what it could parse *and* every problem it
found (`streamseg.data.check` reports them all at once); each ``read_*`` function raises the first
problem as a `DataError` instead.
"""

from __future__ import annotations

import glob
import os
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from streamseg.data.errors import DataError
from streamseg.data.names import child_path, unsafe_name_reason

SPLITS = ("train", "val", "test")
"""Split kinds a layout may hold; ``val`` is optional."""

DEFAULT_LENGTH_TOLERANCE = 8
"""Largest accepted ``abs(T_features - T_labels)``, in frames.

8 because 50Salads' I3D features are exactly 8 frames shorter than its raw videos (yabufarha/ms-tcn
issue #44: e.g. rgb-01-1 has 11,687 video frames and 11,679 feature frames), so labels made from the
videos must still load against the shipped features. The bundle's own labels match the features."""

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                  ".flv", ".wmv", ".3gp", ".mxf", ".ogv")
"""Suffixes of the video files a dataset's ``Videos/`` and a folder given to ``streamseg infer`` may hold,
compared case-insensitively (``.MP4`` counts): containers FFmpeg demuxes, in order of preference when a
name has several (``vid.mp4`` before ``vid.mkv``)."""


def is_video_file(path: str | Path) -> bool:
    """A file whose suffix is one of `VIDEO_SUFFIXES`, in any case."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_video_name(name: str, where: str) -> str:
    """``name`` if it is a plain file name (a video's name becomes ``<name>.npy``, ``<name>.txt``: no folders,
    no leading ``.``, no control characters), else a `DataError` at ``where``."""
    bad = (not name or name in (".", "..") or name.startswith(".") or Path(name).name != name
           or "/" in name or "\\" in name or any(ord(c) < 32 for c in name))
    if bad:
        raise DataError(where, f"video name {name!r} is not a plain file name (no folders, no leading '.', "
                               "no control characters)")
    return name


def _more(errors: list[DataError]) -> str:
    """Suffix for a raised first error that says how many others the same file has."""
    if len(errors) <= 1:
        return ""
    return f" (and {len(errors) - 1} more problem(s) in this file; `streamseg data check` lists all)"


def _raise_first(errors: list[DataError]) -> None:
    if errors:
        first = errors[0]
        raise DataError(first.path, first.reason + _more(errors), first.line)


def _read_lines(path: Path) -> list[str] | DataError:
    """The file's lines with line endings and surrounding whitespace stripped, or the error."""
    if not path.is_file():
        return DataError(path, "file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return DataError(path, f"cannot read: {exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        return DataError(path, f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {exc.start - line_start + 1} "
                               f"({exc.reason}); expected UTF-8", data.count(b"\n", 0, exc.start) + 1)
    return [line.strip() for line in text.splitlines()]


def scan_mapping(path: str | Path) -> tuple[list[str], list[DataError]]:
    """Parse ``mapping.txt``: returns (class names in index order, problems).

    Blank lines are skipped. A line with a wrong index is still counted, so one typo gives one
    problem rather than shifting every later line.
    """
    path = Path(path)
    lines = _read_lines(path)
    if isinstance(lines, DataError):
        return [], [DataError(path, "missing class mapping; expected lines '<index> <name>'")]
    names: list[str] = []
    first_line: dict[str, int] = {}
    errors: list[DataError] = []
    for lineno, line in enumerate(lines, start=1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            errors.append(DataError(path, f"expected '<index> <name>', got {line!r}", lineno))
            continue
        index, name = parts
        expected = len(names)
        reason = unsafe_name_reason(name)
        if reason is not None:
            errors.append(DataError(path, f"class name {name!r} is not a plain file name ({reason})", lineno))
        if not index.isdigit() or int(index) != expected:
            errors.append(
                DataError(path, f"index {index!r} out of order; expected {expected} "
                          f"(indices must run 0..K-1 in file order)", lineno)
            )
        if name in first_line:
            errors.append(
                DataError(path, f"class name {name!r} repeated (first at line {first_line[name]})", lineno)
            )
        first_line.setdefault(name, lineno)
        names.append(name)
    if not names and not errors:
        errors.append(DataError(path, "no classes; expected lines '<index> <name>'"))
    return names, errors


def read_mapping(path: str | Path) -> list[str]:
    """Class names in index order from ``mapping.txt``; raises `DataError` naming file:line."""
    names, errors = scan_mapping(path)
    _raise_first(errors)
    return names


def scan_labels(path: str | Path, class_to_index: dict[str, int]) -> tuple[np.ndarray, list[DataError]]:
    """Parse a ground-truth file: returns (int64 (T,) class indices, problems).

    Trailing blank lines are ignored; a blank line before the last label is a problem. Each distinct
    unknown label is reported once, at its first line, with its line count; its frames read as -1.
    """
    path = Path(path)
    lines = _read_lines(path)
    if isinstance(lines, DataError):
        return np.zeros(0, dtype=np.int64), [lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return np.zeros(0, dtype=np.int64), [DataError(path, "empty label file; expected one label per frame")]
    get = class_to_index.get  # every label known (the usual case): one pass, no per-line bookkeeping
    labels = np.fromiter((get(name, -1) for name in lines), dtype=np.int64, count=len(lines))
    if labels.min() >= 0:
        return labels, []
    errors: list[DataError] = []
    unknown: dict[str, list[int]] = {}  # label -> [first line, count]
    for t in np.flatnonzero(labels < 0).tolist():
        name = lines[t]
        if not name:
            errors.append(DataError(path, "empty line; expected one label name per frame", t + 1))
        else:
            seen = unknown.setdefault(name, [t + 1, 0])
            seen[1] += 1
    valid = ", ".join(class_to_index)
    for name, (lineno, count) in unknown.items():
        errors.append(
            DataError(path, f"unknown label {name!r} ({count} line(s), first here); valid: {valid}", lineno)
        )
    errors.sort(key=lambda e: e.line or 0)
    return labels, errors


def read_labels(path: str | Path, class_to_index: dict[str, int]) -> np.ndarray:
    """int64 (T,) class indices of a ground-truth file; raises `DataError` naming file:line."""
    labels, errors = scan_labels(path, class_to_index)
    _raise_first(errors)
    return labels


def scan_split(path: str | Path) -> tuple[list[str], list[DataError]]:
    """Parse a split file (lines like ``S1_Cheese_C1.txt``): returns (video names without ``.txt``,
    problems). Blank lines are skipped; a repeated video is a problem (it would be scored twice), and so is
    a name that is not a plain file name (`streamseg.data.names`: it would reach outside the dataset)."""
    path = Path(path)
    lines = _read_lines(path)
    if isinstance(lines, DataError):
        return [], [lines]
    names: list[str] = []
    first_line: dict[str, int] = {}
    errors: list[DataError] = []
    for lineno, line in enumerate(lines, start=1):
        if not line:
            continue
        name = line.removesuffix(".txt")
        reason = unsafe_name_reason(name)
        if reason is not None:
            errors.append(DataError(path, f"video name {name!r} is not a plain file name ({reason}); "
                                          "expected '<video>.txt' naming a file of groundTruth/", lineno))
            continue
        if name in first_line:
            errors.append(DataError(path, f"video {name!r} repeated (first at line {first_line[name]})", lineno))
            continue
        first_line[name] = lineno
        names.append(name)
    return names, errors


def read_split(path: str | Path) -> list[str]:
    """Video names (without ``.txt``) of a split file, in file order; raises `DataError`."""
    names, errors = scan_split(path)
    _raise_first(errors)
    return names


# NumPy parses a .npy header with `ast.literal_eval`, and CPython 3.11's AST constructor is not safe to run
# from several threads at once: the data check's and the preload's reader threads failed a test run with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Memory-mapping reads
# only the header, so holding this lock costs the readers little; the values are read outside it.
_NPY_HEADER_LOCK = threading.Lock()
# threads that read feature files at once (the data check, the preload): numpy releases the GIL while it reads
FEATURE_READERS = min(8, os.cpu_count() or 1)


def load_feature_array(path: str | Path) -> np.ndarray:
    """Memory-map a ``.npy`` feature file and check it is a 2-D float array (D, T).

    Raises `DataError` if it is missing, unreadable or of the wrong rank / dtype. Pickled objects are
    refused (``allow_pickle=False``): a feature file must never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "feature file not found")
    try:
        with _NPY_HEADER_LOCK:  # one header parse at a time (see _NPY_HEADER_LOCK); the data is read later
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read as .npy: {exc}") from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise DataError(path, f"expected a 2-D float array (D, T), got shape {array.shape} dtype {array.dtype}")
    return array


def nonfinite_frames(array: np.ndarray, block_values: int = 1 << 24) -> tuple[int, int | None]:
    """(number of frames with a NaN or inf value, first such frame or None) of a (D, T) feature array.

    Reads the (memory-mapped) array in blocks of about ``block_values`` values (2**24: 64 MB of float32),
    one pass. Each block's column sums are tested first: a NaN or inf anywhere in a column makes its sum
    NaN or inf (IEEE arithmetic propagates them), so a finite sum clears the column; only columns whose
    sum is not finite (a bad value, or finite values whose sum overflows) are tested value by value.
    Summing writes no (D, T) boolean array."""
    count, first = 0, None
    step = max(1, block_values // max(1, array.shape[0]))
    for t0 in range(0, array.shape[1], step):
        block = array[:, t0:t0 + step]
        suspect = np.flatnonzero(~np.isfinite(np.add.reduce(block, axis=0)))
        if not len(suspect):
            continue
        bad = suspect[~np.isfinite(block[:, suspect]).all(axis=0)]
        if len(bad) and first is None:
            first = t0 + int(bad[0])
        count += len(bad)
    return count, first


class TASLayout:
    """One dataset in the standard layout (see the module docstring).

    Args:
        root: the dataset directory.
        features_dir: sub-directory holding ``<video>.npy``; change it to pick one of several feature
            sets kept side by side (e.g. ``"features_i3d"``).

    Raises:
        DataError: ``root`` is not a directory, or ``mapping.txt`` is missing or malformed.
    """

    def __init__(self, root: str | Path, features_dir: str = "features") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root is not a directory")
        self.features_dir = self.root / features_dir
        self.labels_dir = self.root / "groundTruth"
        self.splits_dir = self.root / "splits"
        self.videos_dir = self.root / "Videos"
        self.mapping_path = self.root / "mapping.txt"
        self.classes: list[str] = read_mapping(self.mapping_path)
        self.class_to_index: dict[str, int] = {name: i for i, name in enumerate(self.classes)}

    def __repr__(self) -> str:
        return f"TASLayout({str(self.root)!r}, {len(self.classes)} classes)"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_path(self, split: str, k: int) -> Path:
        """``splits/<split>.split<k>.bundle``; split in {"train", "val", "test"}, k >= 1."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.splits_dir / f"{split}.split{k}.bundle"

    def has_split(self, split: str, k: int) -> bool:
        return self.split_path(split, k).is_file()

    def split_indices(self) -> list[int]:
        """Sorted k of every ``<split>.split<k>.bundle`` present (any split kind)."""
        return find_split_indices(self.splits_dir)

    def split_names(self, split: str, k: int) -> list[str]:
        """Video names of one split file. A missing ``val`` file gives []; a missing train/test file
        raises `DataError` listing the split files that do exist."""
        path = self.split_path(split, k)
        if not path.is_file():
            if split == "val":
                return []
            present = sorted(p.name for p in self.splits_dir.glob("*.bundle")) if self.splits_dir.is_dir() else []
            raise DataError(path, f"split file not found; present: {', '.join(present) or 'none'}")
        return read_split(path)

    # each refuses a name that is not a plain file name (`DataError`): nothing outside the dataset is read
    def features_path(self, name: str) -> Path:
        return child_path(self.features_dir, name, ".npy")

    def labels_path(self, name: str) -> Path:
        return child_path(self.labels_dir, name, ".txt")

    def video_path(self, name: str) -> Path | None:
        """``Videos/<name><suffix>`` for a suffix of `VIDEO_SUFFIXES` in any case (the earliest suffix in
        that list when several exist), else None."""
        return find_video(self.videos_dir, name)

    def load_features(self, name: str) -> np.ndarray:
        """Float array (D, T), memory-mapped read-only (copy before writing to it)."""
        return load_feature_array(self.features_path(name))

    def load_labels(self, name: str) -> np.ndarray:
        """int64 (T,) class indices at the original frame rate."""
        return read_labels(self.labels_path(name), self.class_to_index)

    @cached_property
    def feature_dim(self) -> int:
        """D of the first ``.npy`` (by name) in the features directory."""
        first = min(self.features_dir.glob("*.npy"), default=None)
        if first is None:
            raise DataError(self.features_dir, "no .npy feature files")
        return int(load_feature_array(first).shape[0])


def find_split_indices(splits_dir: str | Path) -> list[int]:
    """Sorted k of every ``<split>.split<k>.bundle`` (any split kind) in ``splits_dir``."""
    found: set[int] = set()
    splits_dir = Path(splits_dir)
    if splits_dir.is_dir():
        for path in splits_dir.glob("*.split*.bundle"):
            kind, _, rest = path.name.partition(".split")
            number = rest.removesuffix(".bundle")
            if kind in SPLITS and number.isdigit():
                found.add(int(number))
    return sorted(found)


def find_video(videos_dir: str | Path, name: str) -> Path | None:
    """The file ``<name><suffix>`` in ``videos_dir`` with a video suffix in any case (``.mp4``, ``.MP4``,
    ``.mkv``, ... `VIDEO_SUFFIXES`; the earliest in that list wins), else None."""
    videos_dir = Path(videos_dir)
    child_path(videos_dir, name)  # a name that is not a plain file name is refused (DataError), never looked up
    for suffix in VIDEO_SUFFIXES:  # the common case, exact lower-case names: no directory listing
        path = videos_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    if not videos_dir.is_dir():
        return None
    found = [p for p in videos_dir.glob(f"{glob.escape(name)}.*")
             if p.stem == name and is_video_file(p) and p.is_file()]
    return min(found, key=lambda p: (VIDEO_SUFFIXES.index(p.suffix.lower()), p.name), default=None)
