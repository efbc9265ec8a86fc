import numpy as np
import pytest

from streamseg.metrics.io import (
    RESULTS_HEADER,
    LabelFileError,
    read_ground_truth,
    read_label_file,
    read_mapping,
    read_results,
    write_ground_truth,
    write_mapping,
    write_results,
)

NAMES = ["take", "open", "background"]


def test_results_round_trip_is_byte_exact_and_readable(tmp_path):
    ids = np.array([2, 2, 0, 0, 0, 1, 2])
    path = tmp_path / "S1_Cheese_C1"
    write_results(path, ids, NAMES)
    text = path.read_text()
    assert text == RESULTS_HEADER + "\nbackground background take take take open background\n"
    # The MS-TCN eval.py way of reading it: second line, split on whitespace.
    assert text.split("\n")[1].split() == [NAMES[i] for i in ids]
    f = read_results(path)
    assert f.results_format and f.to_ids({n: i for i, n in enumerate(NAMES)}).tolist() == ids.tolist()
    assert read_label_file(path).names == f.names


def test_ground_truth_round_trip_and_autodetect(tmp_path):
    path = tmp_path / "v.txt"
    write_ground_truth(path, ["take", "take", "open"])
    assert path.read_text() == "take\ntake\nopen\n"
    f = read_label_file(path)
    assert not f.results_format and f.names == ["take", "take", "open"]


def test_mapping_round_trip_and_errors(tmp_path):
    path = tmp_path / "mapping.txt"
    write_mapping(path, NAMES)
    assert read_mapping(path) == NAMES
    path.write_text("0 take\n2 open\n")
    with pytest.raises(LabelFileError, match=r"mapping.txt: indices must be 0..1.*missing \[1\]"):
        read_mapping(path)
    path.write_text("0 take\n1 take\n")
    with pytest.raises(LabelFileError, match=r"mapping.txt:2: name 'take' already on line 1"):
        read_mapping(path)
    path.write_text("0 take\nopen\n")
    with pytest.raises(LabelFileError, match=r"mapping.txt:2: expected '<index> <name>'"):
        read_mapping(path)


def test_unknown_label_names_file_and_line(tmp_path):
    gt = tmp_path / "v.txt"
    gt.write_text("take\ntake\npour\n")
    with pytest.raises(LabelFileError, match=r"v.txt:3: unknown label 'pour'"):
        read_ground_truth(gt).to_ids({"take": 0})
    res = tmp_path / "v"
    res.write_text(RESULTS_HEADER + "\ntake pour\n")
    with pytest.raises(LabelFileError, match=r"v:2 \(label 2\): unknown label 'pour'"):
        read_results(res).to_ids({"take": 0})


def test_malformed_files_name_the_line(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("take\n\ntake\n")
    with pytest.raises(LabelFileError, match=r"g.txt:2: expected one label per line, got blank line"):
        read_ground_truth(p)
    p.write_text("take\ntake open\n")
    with pytest.raises(LabelFileError, match=r"g.txt:2: .*2 words"):
        read_ground_truth(p)
    p.write_text("\n\n")
    with pytest.raises(LabelFileError, match=r"g.txt:1: no labels"):
        read_ground_truth(p)
    r = tmp_path / "r"
    r.write_text("### wrong ###\ntake\n")
    with pytest.raises(LabelFileError, match=r"r:1: expected the header"):
        read_results(r)
    r.write_text(RESULTS_HEADER + "\n")
    with pytest.raises(LabelFileError, match=r"r:2: no labels"):
        read_results(r)
    r.write_text(RESULTS_HEADER + "\ntake\nmore\n")
    with pytest.raises(LabelFileError, match=r"r:3: unexpected content"):
        read_results(r)


def test_trailing_blank_lines_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "g.txt"
    p.write_bytes(b"take\r\nopen\r\n\r\n")
    assert read_ground_truth(p).names == ["take", "open"]


def test_unwritable_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_results(tmp_path / "x", ["pour milk"])
    with pytest.raises(ValueError, match="0..2"):
        write_results(tmp_path / "x", np.array([3]), NAMES)
