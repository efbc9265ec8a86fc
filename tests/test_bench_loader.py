"""tools/bench_loader.py, the loader-alone benchmark behind docs/benchmarks.md "Loader CPU cost", run tiny on
the CPU: every epoch hands over the train split's frames, and the CPU per frame of the main process and of
the (persistent) workers is counted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamseg.engine.stream_datamodule import VideoStreamDataModule

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_loader_counts_every_frame_and_each_process_cpu(tmp_path, synth_video_root) -> None:
    out = tmp_path / "loader.json"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "bench_loader.py"), "--root", str(synth_video_root),
                          "--workers", "2", "--batch", "3", "--chunk", "8", "--epochs", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    epochs = json.loads(out.read_text())["epochs"]
    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=8, bg_classes=("background",))
    dm.setup()
    frames = sum(len(dm.full_labels(n)) for n in dm.names["train"])  # sample rate 1
    assert [e["frames"] for e in epochs] == [frames, frames]
    assert all(e["frames_per_s"] > 0 and e["main_us_per_frame"] >= 0 and e["workers_us_per_frame"] >= 0 for e in epochs)
    # CPU time comes in clock ticks (10 ms): over both epochs the workers (started in the first, counted
    # from /proc in both) and the main process have used some
    assert sum(e["workers_us_per_frame"] for e in epochs) > 0 and sum(e["main_us_per_frame"] for e in epochs) > 0
