"""Reading the standard TAS layout: mapping, labels, splits, features, and the errors they raise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamseg.data import DataError, TASLayout, read_labels, read_mapping, read_split

CLASSES = ["background", "take", "pour"]


def write_dataset(root: Path, videos: dict[str, list[str]], dim: int = 4) -> Path:
    """A sound dataset: mapping, train/test split 1, labels and (dim, T) float32 features."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "features").mkdir()
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for t, (name, labels) in enumerate(videos.items()):
        (root / "groundTruth" / f"{name}.txt").write_text("\n".join(labels) + "\n")
        np.save(root / "features" / f"{name}.npy", np.full((dim, len(labels)), t, dtype=np.float32))
    names = list(videos)
    (root / "splits" / "train.split1.bundle").write_text("".join(f"{n}.txt\n" for n in names[:-1]))
    (root / "splits" / "test.split1.bundle").write_text(f"{names[-1]}.txt\n")
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds", {
        "S1_Tea": ["background", "take", "take", "pour", "background"],
        "S2_Tea": ["take", "pour", "pour"],
        "S3_Tea": ["background", "pour"],
    })


def test_read_mapping_in_index_order(tmp_path: Path) -> None:
    path = tmp_path / "mapping.txt"
    path.write_text("0 background\n1 take\n\n2 pour\n")  # a blank line is allowed
    assert read_mapping(path) == ["background", "take", "pour"]


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("0 a\n2 b\n", 2, "expected 1"),
    ("0 a\n1 b c\n", 2, "expected '<index> <name>'"),
    ("0 a\n1 a\n", 2, "repeated (first at line 1)"),
    ("1 a\n", 1, "expected 0"),
])
def test_read_mapping_names_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "mapping.txt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_mapping(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value)


def test_read_labels_to_indices_and_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("background\r\ntake\npour\n\n\n")
    labels = read_labels(path, {c: i for i, c in enumerate(CLASSES)})
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2]


def test_read_labels_unknown_label_names_line_and_valid_names(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("take\ntake\nstirr\npour\nstirr\n")
    with pytest.raises(DataError) as info:
        read_labels(path, {c: i for i, c in enumerate(CLASSES)})
    message = str(info.value)
    assert message.startswith(f"{path}:3: unknown label 'stirr' (2 line(s)")
    assert "valid: background, take, pour" in message


def test_read_labels_blank_line_inside_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("take\n\npour\n")
    with pytest.raises(DataError, match=r":2: empty line"):
        read_labels(path, {c: i for i, c in enumerate(CLASSES)})


def test_read_split_strips_txt_and_rejects_repeats(tmp_path: Path) -> None:
    path = tmp_path / "train.split1.bundle"
    path.write_text("S1_Cheese_C1.txt\nS2_Tea_C1.txt\n\n")
    assert read_split(path) == ["S1_Cheese_C1", "S2_Tea_C1"]
    path.write_text("a.txt\nb.txt\na.txt\n")
    with pytest.raises(DataError, match=r":3: video 'a' repeated \(first at line 1\)"):
        read_split(path)


def test_layout_classes_and_splits(dataset: Path) -> None:
    layout = TASLayout(dataset)
    assert layout.classes == CLASSES
    assert layout.class_to_index == {"background": 0, "take": 1, "pour": 2}
    assert layout.split_names("train", 1) == ["S1_Tea", "S2_Tea"]
    assert layout.split_names("test", 1) == ["S3_Tea"]
    assert layout.has_split("train", 1) and not layout.has_split("val", 1)
    assert layout.split_names("val", 1) == []  # val is optional
    (dataset / "splits" / "val.split1.bundle").write_text("S2_Tea.txt\n")
    assert layout.split_names("val", 1) == ["S2_Tea"]
    assert layout.split_indices() == [1]


def test_layout_missing_test_split_lists_present_files(dataset: Path) -> None:
    layout = TASLayout(dataset)
    with pytest.raises(DataError) as info:
        layout.split_names("test", 2)
    assert "test.split2.bundle" in info.value.path
    assert "present: test.split1.bundle, train.split1.bundle" in str(info.value)
    with pytest.raises(ValueError, match="split must be one of"):
        layout.split_names("dev", 1)


def test_layout_loads_features_and_labels(dataset: Path) -> None:
    layout = TASLayout(dataset)
    features = layout.load_features("S1_Tea")
    assert features.shape == (4, 5) and features.dtype == np.float32
    assert layout.feature_dim == 4
    assert layout.load_labels("S1_Tea").tolist() == [0, 1, 1, 2, 0]
    assert layout.features_path("x") == dataset / "features" / "x.npy"
    assert layout.labels_path("x") == dataset / "groundTruth" / "x.txt"


@pytest.mark.parametrize("array", [np.zeros(5, np.float32), np.zeros((2, 5), np.int64),
                                   np.array([{"a": 1}], dtype=object)])
def test_layout_rejects_features_that_are_not_2d_float(dataset: Path, array: np.ndarray) -> None:
    np.save(dataset / "features" / "S1_Tea.npy", array, allow_pickle=True)
    with pytest.raises(DataError, match=r"S1_Tea\.npy"):
        TASLayout(dataset).load_features("S1_Tea")


def test_layout_video_path(dataset: Path) -> None:
    layout = TASLayout(dataset)
    assert layout.video_path("S1_Tea") is None
    (dataset / "Videos").mkdir()
    (dataset / "Videos" / "S1_Tea.avi").write_bytes(b"")
    (dataset / "Videos" / "S2_Tea.mp4").write_bytes(b"")
    assert layout.video_path("S1_Tea") == dataset / "Videos" / "S1_Tea.avi"
    assert layout.video_path("S2_Tea") == dataset / "Videos" / "S2_Tea.mp4"


def test_layout_errors_on_missing_root_and_mapping(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        TASLayout(tmp_path / "nope")
    with pytest.raises(DataError, match=r"mapping\.txt: missing class mapping"):
        TASLayout(tmp_path)


def test_feature_headers_are_parsed_one_thread_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The data check and the preload read feature files from several threads; NumPy parses each header
    with `ast.literal_eval`, which CPython 3.11 cannot run in two threads at once (a full test run failed
    with "AST constructor recursion depth mismatch"), so `load_feature_array` opens one file at a time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import streamseg.data.layout as layout

    paths = []
    for i in range(8):
        paths.append(tmp_path / f"v{i}.npy")
        np.save(paths[-1], np.zeros((4, 10), np.float32))
    inside, most, guard, real_load = [0], [0], threading.Lock(), np.load

    def counting_load(*args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # long enough for the other threads to enter if nothing stops them
        try:
            return real_load(*args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(layout.np, "load", counting_load)
    with ThreadPoolExecutor(8) as pool:
        shapes = [a.shape for a in pool.map(layout.load_feature_array, paths)]
    assert shapes == [(4, 10)] * 8 and most[0] == 1
