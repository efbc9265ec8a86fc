"""`check_dataset`: find every problem of a dataset in the standard layout in one pass.

Training on a broken dataset fails on the first bad file, often an hour in; this check reads every
file the chosen splits reference (feature files through memory mapping, each value once: one epoch's
worth of feature I/O) and reports all problems together, each with its file and, where one line or
frame is at fault, its line or frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streamseg.data.errors import DataError
from streamseg.data.layout import (
    DEFAULT_LENGTH_TOLERANCE,
    FEATURE_READERS,
    SPLITS,
    VIDEO_SUFFIXES,
    find_split_indices,
    find_video,
    load_feature_array,
    nonfinite_frames,
    scan_labels,
    scan_mapping,
    scan_split,
)

# feature files are checked FEATURE_READERS at once (layout.py): reading them costs page faults and memory
# bandwidth, which several cores share out (66 files, 775 MB: 0.54 s -> 0.26 s on a 2-core CPU, docs/benchmarks.md)


@dataclass(frozen=True)
class Problem:
    """One problem: the file, the 1-based line (None when no single line is at fault) and what is wrong."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"

    @classmethod
    def from_error(cls, error: DataError) -> Problem:
        return cls(error.path, error.line, error.reason)


def check_dataset(
    root: str | Path,
    splits: Sequence[int] | None = None,
    length_tolerance: int = DEFAULT_LENGTH_TOLERANCE,
    features_dir: str = "features",
    notes: list[str] | None = None,
    check_videos: bool = True,
) -> list[Problem]:
    """Every problem of the dataset at ``root``, in discovery order ([] when it is sound).

    Checks ``mapping.txt`` (present, lines ``<index> <name>`` with indices 0..K-1); the split files of
    ``splits`` (default: every k found in ``splits/``): train and test present, none empty, no repeated
    video, every video name a plain file name (`streamseg.data.names`); and for every listed video: the
    label file (UTF-8, present, non-empty, every label in the mapping), the feature file (a readable
    ``.npy`` holding a 2-D float array (D, T), D the same for all videos, every value finite),
    ``abs(T_features - T_labels) <= length_tolerance`` (default `DEFAULT_LENGTH_TOLERANCE` = 8 frames,
    the 50Salads I3D offset), and, when ``Videos/`` exists, a video (any `VIDEO_SUFFIXES`, any case)
    whose decodable frames cover its labels: every frame is decoded once (`scan_video`, cached by file
    size and mtime), the header's count is never trusted. ``notes``, when given, receives one line per
    video worth knowing about that is no problem (rotated, interlaced, variable frame rate, ...).
    ``check_videos=False`` leaves ``Videos/`` alone (a run on features does not read it).
    """
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), None, "dataset root is not a directory")]
    problems: list[Problem] = []

    classes, errors = scan_mapping(root / "mapping.txt")
    problems += [Problem.from_error(e) for e in errors]
    # Unknown labels can only be told apart when the mapping parsed; otherwise skip that check.
    class_to_index = {name: i for i, name in enumerate(classes)} if classes else None

    names, split_problems = _check_splits(root / "splits", splits)
    problems += split_problems

    first_dim: tuple[int, str] | None = None  # (D, file it was first seen in)
    videos_dir = root / "Videos"
    paths = [root / features_dir / f"{name}.npy" for name in names]
    # the feature files are read by FEATURE_READERS threads at once (numpy releases the GIL while it sums
    # a block), the labels meanwhile by this one; results are consumed in listing order
    with ThreadPoolExecutor(max_workers=FEATURE_READERS) as pool:
        scans = pool.map(_scan_features, paths)
        for (name, listed_in), features_path, scan in zip(names.items(), paths, scans):
            num_labels = _check_labels(root / "groundTruth" / f"{name}.txt", listed_in, class_to_index, problems)
            if scan is None:
                problems.append(Problem(str(features_path), None,
                                        f"missing features of '{name}' (listed in {listed_in})"))
            elif isinstance(scan, Problem):
                problems.append(scan)
            else:
                shape, nonfinite = scan
                problems += nonfinite
                if first_dim is None:
                    first_dim = (shape[0], str(features_path))
                elif shape[0] != first_dim[0]:
                    problems.append(Problem(str(features_path), None, f"feature dim D={shape[0]} differs from "
                                            f"D={first_dim[0]} of {first_dim[1]}"))
                if num_labels is not None:
                    problems += _length_problems(features_path, shape, num_labels, length_tolerance)
            if check_videos and videos_dir.is_dir():
                problems += _video_problems(videos_dir, name, num_labels, notes)
    return problems


def _scan_features(path: Path) -> tuple[tuple[int, ...], list[Problem]] | Problem | None:
    """One feature file: None when missing, a `Problem` when unreadable or not a 2-D float array, else
    (its shape, the problem of its non-finite values if any)."""
    if not path.is_file():
        return None
    try:
        array = load_feature_array(path)
    except DataError as exc:
        return Problem.from_error(exc)
    return array.shape, _nonfinite_problems(path, array)


def _check_splits(splits_dir: Path, ks: Sequence[int] | None) -> tuple[dict[str, str], list[Problem]]:
    """(video name -> first split file listing it, problems) over the split files of ``ks``."""
    problems: list[Problem] = []
    names: dict[str, str] = {}
    if not splits_dir.is_dir():
        return names, [Problem(str(splits_dir), None, "missing splits directory")]
    if ks is None:
        ks = find_split_indices(splits_dir)
        if not ks:
            return names, [Problem(str(splits_dir), None, "no split files; expected train.split<k>.bundle, "
                                   "test.split<k>.bundle (and optionally val.split<k>.bundle)")]
    for k in ks:
        for split in SPLITS:
            path = splits_dir / f"{split}.split{k}.bundle"
            if not path.is_file():
                if split != "val":  # val is optional
                    problems.append(Problem(str(path), None, f"missing {split} split file of split {k}"))
                continue
            listed, errors = scan_split(path)
            problems += [Problem.from_error(e) for e in errors]
            if not listed and not errors:
                problems.append(Problem(str(path), None, "empty split file; expected one '<video>.txt' per line"))
            for name in listed:
                names.setdefault(name, str(path))
    return names, problems


def _check_labels(path: Path, listed_in: str, class_to_index: dict[str, int] | None,
                  problems: list[Problem]) -> int | None:
    """Append the label file's problems; return its frame count T, or None when unreadable or empty."""
    if not path.is_file():
        problems.append(Problem(str(path), None, f"missing label file of '{path.stem}' (listed in {listed_in})"))
        return None
    if class_to_index is None:
        # No usable mapping: accept every label name so that emptiness and length are still checked.
        labels_text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        while labels_text and not labels_text[-1].strip():
            labels_text.pop()
        if not labels_text:
            problems.append(Problem(str(path), None, "empty label file; expected one label per frame"))
            return None
        return len(labels_text)
    labels, errors = scan_labels(path, class_to_index)
    problems += [Problem.from_error(e) for e in errors]
    return len(labels) or None


def _nonfinite_problems(path: Path, array) -> list[Problem]:
    count, first = nonfinite_frames(array)
    if not count:
        return []
    return [Problem(str(path), None, f"non-finite values in {count} frame(s), first at frame {first} (0-based "
                                     "column of (D, T)); a NaN or inf feature makes the training loss NaN")]


def _length_problems(path: Path, shape: tuple[int, ...], num_labels: int, tolerance: int) -> list[Problem]:
    num_features = shape[1]
    if abs(num_features - num_labels) <= tolerance:
        return []
    message = (f"features have T={num_features} frames but the labels have {num_labels} "
               f"(|difference| {abs(num_features - num_labels)} > tolerance {tolerance})")
    if shape[0] == num_labels:
        message += f"; the array looks transposed: expected (D, T), got {shape}"
    return [Problem(str(path), None, message)]


def _video_problems(videos_dir: Path, name: str, num_labels: int | None, notes: list[str] | None) -> list[Problem]:
    """The video of ``name`` exists and decodes a frame for each of its ``num_labels`` labels."""
    # Imported here: PyAV is only needed for datasets that ship videos.
    from streamseg.data.video_scan import scan_video

    path = find_video(videos_dir, name)
    if path is None:
        return [Problem(str(videos_dir / f"{name}.mp4"), None,
                        f"missing video of '{name}' (Videos/ exists; expected {name}.mp4 or another of "
                        f"{' '.join(VIDEO_SUFFIXES)}, any case)")]
    try:
        scan = scan_video(path)
    except DataError as exc:
        return [Problem.from_error(exc)]
    if notes is not None:
        notes += [f"{path}: {note}" for note in scan.notes()]
    if scan.frames == 0:
        return [Problem(str(path), None, f"no decodable frame ({scan.error or 'empty video stream'})")]
    if num_labels is not None and scan.frames < num_labels:
        why = (f"decoding stopped: {scan.error}" if scan.error else
               f"the header says {scan.header_frames}" if scan.header_frames > scan.frames else "")
        return [Problem(str(path), None, f"decodes {scan.frames} frames but its labels have {num_labels}"
                                         + (f" ({why})" if why else "") + "; every label needs a frame")]
    return []


def format_problems(problems: Sequence[Problem], where: str | os.PathLike | None = None) -> str:
    """A human-readable report: one header (naming ``where`` if given), then one ``path:line: message``
    per problem; or "no problems found"."""
    if not problems:
        return "no problems found"
    lines = [f"{len(problems)} problem(s) found" + (f" in {where}:" if where is not None else ":")]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
