"""tools/bench_serve.py, the command behind the GPU serving benchmark, run tiny on the CPU: through the
real server, against `bench_pipeline` on the same videos, with its JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamseg.data.video import probe

from ..conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_serve_through_the_server_against_the_pipeline_writes_its_summary(tmp_path, synth_video_root) -> None:
    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:2]
    folder = tmp_path / "videos"
    folder.mkdir()
    for v in videos:
        (folder / v.name).symlink_to(v)
    out = tmp_path / "r" / "serve.json"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "bench_serve.py"), "--random-model", "16", "16",
                          "--device", "cpu", "--threads", "1", "--http", "--videos", str(folder), "--streams", "2",
                          "--chunk", "8", "--pipeline", "0", "--decode-workers", "1", "--fixed-batch", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    frames = sum(probe(v)[0] for v in videos)
    assert row["http"] and row["errors"] == [] and row["streams"] == 2 and row["frames"] == frames
    assert row["decode_workers"] == 1 and row["start_s"] > 0  # the sources were read by a worker process
    assert row["fixed_batch"]  # through the fixed-batch step
    assert row["pipeline"]["frames"] == frames  # sample rate 1: the same frames through both paths
    assert row["server_vs_pipeline"] == pytest.approx(row["frames_per_s"] / row["pipeline"]["frames_per_s"], rel=0.01)
    assert 0 < row["model_p50_ms"] <= row["step_p50_ms"] and row["added_over_model_p50_ms"] >= 0
    assert row["model_calls"] >= frames // (2 * 8)  # chunks of 8 frames, at most 2 streams per call
