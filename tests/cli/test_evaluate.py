import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from streamseg.cli.evaluate import EvaluationInputError, add_parser, evaluate_dirs
from streamseg.metrics import SegmentationMetrics
from streamseg.metrics.io import RESULTS_HEADER, write_ground_truth, write_mapping, write_results

NAMES = ["take", "open", "pour", "background"]
BG = 3


def parse(argv):
    parser = argparse.ArgumentParser(prog="streamseg")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["evaluate", *argv])


@pytest.fixture
def dataset(tmp_path):
    """A tiny layout: mapping.txt, groundTruth/, predictions/ (three formats/lengths), splits/."""
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "groundTruth", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    write_mapping(tmp_path / "mapping.txt", NAMES)
    videos = {}
    for i, vid in enumerate(["vid_a", "vid_b", "vid_c"]):
        gt = np.repeat(rng.integers(0, 4, size=8), rng.integers(3, 12, size=8))
        pred = gt.copy()
        pred[rng.random(len(gt)) < 0.2] = 2
        write_ground_truth(gt_dir / f"{vid}.txt", gt, NAMES)
        if i == 0:
            write_results(pred_dir / vid, pred, NAMES)  # MS-TCN: no extension
        elif i == 1:
            write_ground_truth(pred_dir / f"{vid}.txt", pred, NAMES)  # ground-truth format
        else:
            write_results(pred_dir / f"{vid}.txt", np.concatenate((pred, [0, 0])), NAMES)  # 2 frames long
        videos[vid] = (pred, gt)
    (tmp_path / "test.split1.bundle").write_text("vid_a.txt\nvid_c.txt\n")
    return tmp_path, videos


def test_cli_scores_match_the_library_and_write_json(dataset, capsys):
    root, videos = dataset
    out_json = root / "out" / "metrics.json"
    args = parse(["--pred-dir", str(root / "pred"), "--gt-dir", str(root / "groundTruth"),
                  "--json", str(out_json), "--fps", "15"])
    assert args.func(args) == 0
    result = json.loads(out_json.read_text())
    m = SegmentationMetrics(4, [BG], NAMES)
    for vid in sorted(videos):
        m.update(*videos[vid], vid)
    expected = m.compute()
    for key in ("acc", "edit", "f1@10", "f1@25", "f1@50", "num_videos"):
        assert result[key] == pytest.approx(expected[key])
    assert result["per_class"]["pour"] == pytest.approx(expected["per_class"]["pour"])
    assert result["bg"] == ["background"]  # default, as MS-TCN eval.py
    assert result["truncated"] == ["vid_c"]
    assert result["mapping"].endswith("mapping.txt")
    assert "mean_s" in result["onset_delay"]
    printed = capsys.readouterr().out
    assert "F1@50" in printed and "pour" in printed and f"{expected['acc']:.2f}" in printed
    assert result["protocol"] == "mstcn"


def test_protocol_option_scores_and_records_the_asformer_end_index(tmp_path):
    """One video a a a b, predicted exactly: F1 100 under mstcn; under asformer the one-frame final b is an
    empty segment (FP + FN), F1 = 2 * (1/2 * 1/2) / 1 = 50; the protocol is recorded in the JSON."""
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        write_ground_truth(tmp_path / d / "v.txt", np.array([0, 0, 0, 1]), NAMES)
    scores = {}
    for protocol in ("mstcn", "asformer"):
        out = tmp_path / f"{protocol}.json"
        args = parse(["--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"), "--mapping",
                      str(_mapping(tmp_path)), "--json", str(out), "--protocol", protocol])
        assert args.func(args) == 0
        scores[protocol] = json.loads(out.read_text())
    assert scores["mstcn"]["f1@50"] == 100.0 and scores["asformer"]["f1@50"] == pytest.approx(50.0)
    assert [scores[p]["protocol"] for p in ("mstcn", "asformer")] == ["mstcn", "asformer"]


def _mapping(root):
    write_mapping(root / "mapping.txt", NAMES)
    return root / "mapping.txt"


def test_split_file_and_no_background(dataset):
    root, videos = dataset
    result = evaluate_dirs(root / "pred", root / "groundTruth", bg_names=[],
                           split_file=root / "test.split1.bundle")
    assert result["num_videos"] == 2 and [v["name"] for v in result["per_video"]] == ["vid_a", "vid_c"]
    m = SegmentationMetrics(4, [], NAMES)
    for vid in ("vid_a", "vid_c"):
        m.update(*videos[vid], vid)
    assert result["edit"] == pytest.approx(m.compute()["edit"])
    assert result["bg"] == []


def test_all_problems_reported_with_file_and_line_before_scoring(dataset):
    root, _ = dataset
    (root / "pred" / "vid_a").unlink()
    (root / "pred" / "vid_b.txt").write_text("take\ntake\n")  # shorter than its GT
    (root / "pred" / "vid_c.txt").write_text("### wrong header ###\ntake\n")
    args = parse(["--pred-dir", str(root / "pred"), "--gt-dir", str(root / "groundTruth")])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    msg = str(exc.value)
    assert "3 problem(s)" in msg
    assert "vid_a: missing prediction for video 'vid_a'" in msg
    assert "vid_b.txt: 2 labels, but the ground truth" in msg
    assert "vid_c.txt:1: expected the header" in msg


def test_predictions_for_one_split_only_suggest_split_file(dataset):
    root, _ = dataset
    (root / "splits").mkdir()
    (root / "splits" / "test.split1.bundle").write_text("vid_a.txt\n")
    (root / "pred" / "vid_b.txt").unlink()
    (root / "pred" / "vid_c.txt").unlink()
    with pytest.raises(EvaluationInputError) as exc:
        evaluate_dirs(root / "pred", root / "groundTruth")
    first = str(exc.value).splitlines()[0]
    assert "predictions for 1 of the 3 videos" in first
    assert f"--split-file {root / 'splits' / 'test.split1.bundle'}" in first
    # with the split named, the same folders score
    assert evaluate_dirs(root / "pred", root / "groundTruth",
                         split_file=root / "splits" / "test.split1.bundle")["num_videos"] == 1


def test_unknown_label_names_file_and_line(dataset):
    root, _ = dataset
    path = root / "pred" / "vid_a"
    labels = path.read_text().split("\n")[1].split()
    labels[4] = "stir"
    path.write_text(RESULTS_HEADER + "\n" + " ".join(labels) + "\n")
    with pytest.raises(EvaluationInputError, match=r"vid_a:2 \(label 5\): unknown label 'stir'"):
        evaluate_dirs(root / "pred", root / "groundTruth")
    gt_path = root / "groundTruth" / "vid_b.txt"
    lines = gt_path.read_text().splitlines()
    lines[2] = "stir"
    gt_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvaluationInputError, match=r"vid_b.txt:3: unknown label 'stir'"):
        evaluate_dirs(root / "pred", root / "groundTruth", split_file=None, bg_names=["background"])


def test_unknown_background_and_missing_split_entries(dataset):
    root, _ = dataset
    with pytest.raises(EvaluationInputError, match=r"background label\(s\) \['SIL'\]"):
        evaluate_dirs(root / "pred", root / "groundTruth", bg_names=["SIL"])
    split = root / "bad.bundle"
    split.write_text("vid_a.txt\nvid_zz.txt\nvid_a.txt\n")
    with pytest.raises(EvaluationInputError, match=r"bad.bundle:3: video 'vid_a' already listed on line 1"):
        evaluate_dirs(root / "pred", root / "groundTruth", split_file=split)
    split.write_text("vid_zz.txt\n")
    with pytest.raises(EvaluationInputError, match=r"missing ground truth for video 'vid_zz'"):
        evaluate_dirs(root / "pred", root / "groundTruth", split_file=split)


def test_without_mapping_labels_come_from_the_files(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "p").mkdir()
    write_ground_truth(tmp_path / "gt" / "v.txt", ["x", "x", "y"])
    write_results(tmp_path / "p" / "v", ["x", "z", "y"])
    result = evaluate_dirs(tmp_path / "p", tmp_path / "gt")
    assert result["class_names"] == ["x", "y", "z"] and result["mapping"] is None
    assert result["acc"] == pytest.approx(200 / 3)


def test_plots_are_written(dataset):
    root, _ = dataset
    plots = root / "plots"
    evaluate_dirs(root / "pred", root / "groundTruth", split_file=root / "test.split1.bundle", plots_dir=plots)
    for rel in ("videos/vid_a.png", "videos/vid_c.png", "confusion_matrix.png", "per_class.png"):
        assert (plots / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel


def test_the_cli_parser_is_built_without_torch():
    """Every command (`streamseg --help` too) imports each subcommand's module to build the parser; the
    evaluate command's library reaches torch, so it is imported when used: `--help` stays instant."""
    code = ("import sys; from streamseg.cli.main import build_parser; build_parser(); "
            "print('torch' in sys.modules); from streamseg.cli.evaluate import read_split; print(callable(read_split))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]
