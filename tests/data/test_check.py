"""`check_dataset` reports every problem of a broken dataset at once, each with its file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamseg.data import DEFAULT_LENGTH_TOLERANCE, Problem, check_dataset, format_problems
from streamseg.data.synth_render import encode_mp4

CLASSES = ["background", "take", "pour"]


def write_dataset(root: Path, videos: dict[str, int], dim: int = 4) -> Path:
    """A sound dataset with videos: name -> number of frames; labels cycle through CLASSES."""
    for sub in ("groundTruth", "features", "splits", "Videos"):
        (root / sub).mkdir(parents=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for name, num_frames in videos.items():
        (root / "groundTruth" / f"{name}.txt").write_text("".join(CLASSES[t % 3] + "\n" for t in range(num_frames)))
        np.save(root / "features" / f"{name}.npy", np.zeros((dim, num_frames), np.float32))
        encode_mp4(root / "Videos" / f"{name}.mp4", np.zeros((num_frames, 16, 16, 3), np.uint8), fps=15)
    names = list(videos)
    (root / "splits" / "train.split1.bundle").write_text("".join(f"{n}.txt\n" for n in names[:-2]))
    (root / "splits" / "val.split1.bundle").write_text(f"{names[-2]}.txt\n")
    (root / "splits" / "test.split1.bundle").write_text(f"{names[-1]}.txt\n")
    return root


def where(problems: list[Problem], path: Path) -> list[Problem]:
    return [p for p in problems if p.path == str(path)]


def test_sound_dataset_has_no_problems(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, {"a": 10, "b": 12, "c": 9, "d": 11})
    assert check_dataset(root) == []
    assert format_problems([]) == "no problems found"


def test_broken_dataset_reports_every_problem_at_once(tmp_path: Path) -> None:
    names = ["ok", "nolabels", "nofeatures", "unknown", "short", "within", "flat", "ints", "empty", "corrupt",
             "badvideo", "novideo", "val", "test"]
    root = write_dataset(tmp_path, dict.fromkeys(names, 20))
    gt, feats, videos, splits = (root / d for d in ("groundTruth", "features", "Videos", "splits"))
    (root / "mapping.txt").write_text("0 background\n1 take\n2 pour\nthree words here\n")
    (gt / "nolabels.txt").unlink()
    (feats / "nofeatures.npy").unlink()
    (gt / "unknown.txt").write_text("take\ntake\nstir\n" + "pour\n" * 17)
    np.save(feats / "short.npy", np.zeros((4, 20 - DEFAULT_LENGTH_TOLERANCE - 1), np.float32))
    np.save(feats / "within.npy", np.zeros((4, 20 - DEFAULT_LENGTH_TOLERANCE), np.float32))  # 50Salads-like: fine
    np.save(feats / "flat.npy", np.zeros(20, np.float32))
    np.save(feats / "ints.npy", np.zeros((4, 20), np.int32))
    (gt / "empty.txt").write_text("\n")
    (feats / "corrupt.npy").write_bytes(b"not an npy file")
    (videos / "badvideo.mp4").write_bytes(b"\x00" * 100)
    (videos / "novideo.mp4").unlink()
    (splits / "val.split1.bundle").write_text("\n")

    problems = check_dataset(root)
    report = format_problems(problems)

    assert [p.line for p in where(problems, root / "mapping.txt")] == [4]
    assert "missing label file of 'nolabels'" in where(problems, gt / "nolabels.txt")[0].message
    assert "missing features of 'nofeatures'" in where(problems, feats / "nofeatures.npy")[0].message
    unknown = where(problems, gt / "unknown.txt")
    assert [(p.line, p.message.split(";")[0]) for p in unknown] == [(3, "unknown label 'stir' (1 line(s), first here)")]
    assert "valid: background, take, pour" in unknown[0].message
    assert "T=11 frames but the labels have 20" in where(problems, feats / "short.npy")[0].message
    assert f"tolerance {DEFAULT_LENGTH_TOLERANCE}" in where(problems, feats / "short.npy")[0].message
    assert where(problems, feats / "within.npy") == []
    assert "2-D float" in where(problems, feats / "flat.npy")[0].message
    assert "2-D float" in where(problems, feats / "ints.npy")[0].message
    assert "empty label file" in where(problems, gt / "empty.txt")[0].message
    assert "cannot read as .npy" in where(problems, feats / "corrupt.npy")[0].message
    assert "cannot open as a video (Invalid data found" in where(problems, videos / "badvideo.mp4")[0].message
    assert "missing video of 'novideo'" in where(problems, videos / "novideo.mp4")[0].message
    assert "empty split file" in where(problems, splits / "val.split1.bundle")[0].message
    # The 12 problems above and nothing else: the sound videos ("ok", "test") are not reported.
    assert len(problems) == 12, report
    assert report.startswith("12 problem(s) found:\n")
    assert f"  {gt / 'unknown.txt'}:3: unknown label 'stir'" in report


def test_missing_mapping_and_split_files(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, {"a": 5, "b": 5, "c": 5})
    (root / "mapping.txt").unlink()
    (root / "splits" / "test.split1.bundle").unlink()
    (root / "splits" / "train.split1.bundle").write_text("a.txt\nb.txt\na.txt\n")
    problems = check_dataset(root)
    assert [(Path(p.path).name, p.line) for p in problems] == [
        ("mapping.txt", None), ("train.split1.bundle", 3), ("test.split1.bundle", None)]
    assert "missing test split file of split 1" in problems[2].message


def test_requested_split_that_does_not_exist(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, {"a": 5, "b": 5, "c": 5})
    problems = check_dataset(root, splits=[2])
    assert [Path(p.path).name for p in problems] == ["train.split2.bundle", "test.split2.bundle"]


def test_feature_dim_mismatch_and_transposed_hint(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, {"a": 30, "b": 30, "c": 30})
    np.save(root / "features" / "b.npy", np.zeros((8, 30), np.float32))
    np.save(root / "features" / "c.npy", np.zeros((30, 4), np.float32))
    problems = check_dataset(root)
    messages = {Path(p.path).name: p.message for p in problems}
    assert "feature dim D=8 differs from D=4" in messages["b.npy"]
    assert "looks transposed" in messages["c.npy"]


@pytest.mark.parametrize("tolerance", [0, 3])
def test_length_tolerance_is_inclusive(tmp_path: Path, tolerance: int) -> None:
    root = write_dataset(tmp_path, {"a": 10, "b": 10, "c": 10})
    np.save(root / "features" / "a.npy", np.zeros((4, 10 - tolerance), np.float32))
    np.save(root / "features" / "b.npy", np.zeros((4, 10 + tolerance + 1), np.float32))
    problems = check_dataset(root, length_tolerance=tolerance)
    assert [Path(p.path).name for p in problems] == ["b.npy"]


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert check_dataset(missing) == [Problem(str(missing), None, "dataset root is not a directory")]


@pytest.mark.parametrize("line", ["../../../../tmp/x/v.txt", "/etc/passwd.txt", "sub/v.txt", "..txt", "..",
                                  "a\\b.txt", "a\x00b.txt"])
def test_a_video_name_that_is_not_a_plain_file_name_is_an_error_at_its_line(tmp_path: Path, line: str) -> None:
    """Video names are data, not paths: a split line that would reach another folder is reported, not read."""
    root = write_dataset(tmp_path, {"a": 5, "b": 5, "c": 5})
    split = root / "splits" / "train.split1.bundle"
    split.write_text(f"a.txt\n{line}\n")
    problems = check_dataset(root)
    assert [(p.path, p.line) for p in problems] == [(str(split), 2)], format_problems(problems)
    assert "not a plain file name" in problems[0].message


def test_non_utf8_labels_are_reported_by_line_and_nonfinite_features_by_frame(tmp_path: Path) -> None:
    from streamseg.metrics.io import LabelFileError, read_ground_truth

    root = write_dataset(tmp_path, {"a": 20, "b": 20, "c": 20, "d": 20})
    gt, feats = root / "groundTruth", root / "features"
    (gt / "a.txt").write_bytes(b"take\n" * 4 + b"pour\xff\n" + b"take\n" * 15)  # a Latin-1 byte on line 5
    features = np.zeros((4, 20), np.float32)
    features[2, 7], features[0, 12] = np.nan, np.inf
    np.save(feats / "b.npy", features)
    problems = check_dataset(root)
    assert [(Path(p.path).name, p.line) for p in problems] == [("a.txt", 5), ("b.npy", None)], format_problems(problems)
    assert "not UTF-8" in problems[0].message
    assert "non-finite values in 2 frame(s), first at frame 7" in problems[1].message
    with pytest.raises(LabelFileError, match=r"a\.txt:5: not UTF-8"):
        read_ground_truth(gt / "a.txt")


def test_class_names_must_be_plain_and_the_layout_builds_no_path_from_an_unsafe_name(tmp_path: Path) -> None:
    from streamseg.data import DataError, TASLayout

    root = write_dataset(tmp_path, {"a": 5, "b": 5, "c": 5})
    layout = TASLayout(root)
    for build in (layout.labels_path, layout.features_path, layout.video_path):
        with pytest.raises(DataError, match="'../b' is not a plain file name"):
            build("../b")
    (root / "mapping.txt").write_text("0 background\n1 take\n2 ../pour\n")
    problems = check_dataset(root)
    assert [(Path(p.path).name, p.line) for p in problems][0] == ("mapping.txt", 3), format_problems(problems)
    assert "class name '../pour' is not a plain file name" in problems[0].message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_frames_counts_every_bad_frame_across_blocks_and_ignores_sums_that_overflow(dtype) -> None:
    """Columns are cleared by their sums: a bad value in any block is found, the first bad frame is the
    earliest one, and finite values whose sum overflows to inf are not reported."""
    from streamseg.data.layout import nonfinite_frames

    big = np.finfo(dtype).max
    features = np.ones((6, 50), dtype)
    features[:, 3] = big  # six maxima: the column sum overflows to inf, every value is finite
    features[:, 20] = -big
    assert nonfinite_frames(features, block_values=6 * 7) == (0, None)  # blocks of 7 frames
    features[5, 9], features[0, 30], features[2, 31], features[4, 49] = np.nan, np.inf, -np.inf, np.nan
    features[1, 30] = -np.inf  # inf + -inf: the sum is NaN, still one bad frame
    for block_values in (6 * 7, 6, 1 << 24):  # several blocks, one column per block, one block
        assert nonfinite_frames(features, block_values) == (4, 9)
    features[3, 3] = np.inf  # beside the overflowing maxima
    assert nonfinite_frames(features, block_values=6 * 7) == (5, 3)
