"""Train + test end to end on tiny synthetic data: run directory, metrics, predictions, versions.

Kill -9 and resume (bit-equal weights and metrics) is in test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import TINY, streamseg


def _args(root: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(root), "-o", f"data.root={data}", *TINY, *extra]


def test_train_writes_the_run_directory(tmp_path, synth_root):
    out = streamseg(*_args(tmp_path, synth_root))
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "synth" / "mstcn_quick" / "version_0"
    for rel in ("config/dataset.py", "config/model.py", "config/exp.py", "config/params.json",
                "config/overrides.json", "config/run.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                "logs/csv/metrics.csv", "DONE"):
        assert (run / rel).is_file(), rel
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("acc", "edit", "f1@10", "f1@25", "f1@50"):
        assert 0.0 <= metrics[key] <= 100.0
    test_names = (synth_root / "splits" / "test.split1.bundle").read_text().split()
    assert metrics["num_videos"] == len(test_names)
    # predictions: MS-TCN results format, one per test video, at the ground truth's length
    for name in (n.removesuffix(".txt") for n in test_names):
        header, labels = (run / "predictions" / name).read_text().splitlines()
        assert header == "### Frame level recognition: ###"
        gt = (synth_root / "groundTruth" / f"{name}.txt").read_text().split()
        assert len(labels.split()) == len(gt)
    params = json.loads((run / "config" / "params.json").read_text())
    assert params["train"]["epochs"] == 2 and params["model"]["num_maps"] == 8
    assert json.loads((run / "config" / "overrides.json").read_text())["model.num_maps"] == 8
    run_info = json.loads((run / "config" / "run.json").read_text())
    assert "torch" in run_info["versions"] and run_info["command"][1] == "train"
    assert "F1@50" in out.stdout
    # nothing that is not the user's business (#23): Lightning's advert, its own deprecation warning,
    # the log-interval warning (epoch loss is logged anyway) and the logger's version in the bar
    said = out.stdout + out.stderr
    for noise in ("litlogger", "LeafSpec", "log_every_n_steps", "v_num"):
        assert noise not in said, noise

    # the same command again starts a new version (the first is finished); test re-scores the run
    again = streamseg(*_args(tmp_path, synth_root, "-o", "train.epochs=1"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "synth" / "mstcn_quick" / "version_1" / "DONE").is_file()
    rescored = streamseg("test", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path),
                         "--version", "0", "--ckpt", "best")
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    after = json.loads((run / "metrics.json").read_text())
    for key in ("acc", "edit", "f1@50"):
        assert abs(after[key] - metrics[key]) < 1e-9


def test_bad_override_fails_before_any_work(tmp_path, synth_root):
    out = streamseg(*_args(tmp_path, synth_root, "-o", "train.epoch=3"))
    assert out.returncode != 0
    assert "unknown override key 'train.epoch'" in out.stderr and "train.epochs" in out.stderr
    assert not (tmp_path / "synth").exists()


def test_unfinished_run_with_other_params_is_not_resumed(tmp_path, synth_root):
    run = tmp_path / "synth" / "mstcn_quick" / "version_0" / "config"
    run.mkdir(parents=True)
    (run / "params.json").write_text(json.dumps({"train": {"epochs": 99}}))
    out = streamseg(*_args(tmp_path, synth_root))
    assert out.returncode != 0 and "--new" in out.stderr and "different params" in out.stderr
    out = streamseg(*_args(tmp_path, synth_root, "--new", "-o", "train.epochs=1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "synth" / "mstcn_quick" / "version_1" / "DONE").is_file()
