"""tools/bench_gpu.py offline: time-to-accuracy is the first evaluation at or above the target, timed from the
run's launch, read from a run directory (TrainThroughput's epoch ends in last.ckpt, scores in metrics.csv)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "tools" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, accs: list[float], start: float) -> None:
    run = root / "synth" / "mstcn_quick" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "logs" / "csv").mkdir(parents=True)
    history = [{"epoch": e, "seconds": 1.0, "end_time": start + 10.0 * (e + 1)} for e in range(len(accs))]
    torch.save({"callbacks": {"TrainThroughput": {"history": history}}}, run / "checkpoints" / "last.ckpt")
    keys = ("acc", "edit", "f1@10", "f1@25", "f1@50")
    lines = ["epoch,step,train/loss," + ",".join(f"val/{k}" for k in keys)]
    for e, acc in enumerate(accs):  # a training row, then the evaluation row, as Lightning's CSV logger writes
        lines += [f"{e},{e * 5},0.5,,,,,", f"{e},{e * 5 + 4},," + ",".join([str(acc)] * len(keys))]
    (run / "logs" / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_time_to_accuracy_is_the_first_evaluation_at_the_target(tmp_path, bench):
    _run(tmp_path, [50.0, 80.0, 78.0, 85.0], start=1000.0)
    history = bench._offline_history(tmp_path)
    assert [h["acc"] for h in history] == [50.0, 80.0, 78.0, 85.0]
    hit = bench._time_to(history, 995.0, target=79.0)
    assert hit == {"target_acc": 79.0, "reached": True, "epoch": 2, "seconds": 25.0,
                   "stays_at_or_above_target_at_the_end": True}
    miss = bench._time_to(history, 995.0, target=90.0)
    assert not miss["reached"] and miss["seconds"] is None and not miss["stays_at_or_above_target_at_the_end"]


def test_breakdown_splits_time_to_accuracy_at_the_first_training_batch(bench):
    clock = {"train_and_test": 104.0, "data_checked": 105.5, "built": 105.75, "fit": 106.0, "first_batch": 108.0,
             "fit_end": 130.0}
    out = bench._breakdown({"startup_clock": clock}, 100.0, {"seconds": 20.0})
    assert out == {"imports_and_config": 4.0, "data_check": 1.5, "model_build": 0.25, "run_dir_and_trainer": 0.25,
                   "fit_to_first_batch": 2.0, "launch_to_first_batch": 8.0, "first_batch_to_target": 12.0,
                   "startup_share": 0.4}
    assert "first_batch_to_target" not in bench._breakdown({"startup_clock": clock}, 100.0, {"seconds": None})
    assert bench._breakdown({}, 100.0, {"seconds": 20.0}) == {}  # a run from before startup_clock existed


def test_train_e2e_writes_no_videos_for_the_ceilings_alone_and_refuses_too_few(bench, monkeypatch, tmp_path, capsys):
    """`train-e2e --skip-train` without --loader-only times only the step ceilings, which read no videos: no
    dataset is written (a 1280x720 one takes minutes of a lent GPU). A dataset it does write needs >= 3 videos
    (train, val, test): refused with one line before any work, not after the ceilings' compile."""
    calls = []
    monkeypatch.setattr(bench, "_streamseg", lambda *a, **k: calls.append(a) or (0, ""))
    monkeypatch.setattr(bench, "environment", lambda device: {})
    argv = ["bench_gpu.py", "train-e2e", "--out", str(tmp_path), "--work", str(tmp_path), "--ceilings"]
    monkeypatch.setattr("sys.argv", [*argv, "--skip-train", "--num-videos", "2"])
    bench.main()
    assert calls == [] and (tmp_path / "train-e2e.json").exists()
    monkeypatch.setattr("sys.argv", [*argv, "--skip-train", "--loader-only", "--num-videos", "2"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--num-videos 2: train-e2e writes a dataset" in capsys.readouterr().err and calls == []
