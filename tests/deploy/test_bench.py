"""Benchmarks: model-only timing bookkeeping, end-to-end decoding of every frame of every video once
through S slots, and the CLI's JSON."""

from __future__ import annotations

import json
import math

import torch

from streamseg.data.video import probe
from streamseg.deploy.bench import bench_end_to_end, bench_model
from streamseg.models import MemoryTCN, tsm_framewise_mobilenet_v2

from ..conftest import TINY, streamseg


def test_bench_model_times_every_step() -> None:
    net = MemoryTCN(6, 5, num_stages=1, num_layers=3, num_maps=8)
    r = bench_model(net, (6,), streams=3, chunk=4, warmup=1, steps=4, repeats=2)
    assert r["steps"] == 8 and len(r["frames_per_s_runs"]) == 2
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
    assert r["peak_rss_mb"] > 0


def test_end_to_end_labels_every_sampled_frame_of_every_video_once(synth_video_root) -> None:
    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:3]
    torch.manual_seed(0)
    net = tsm_framewise_mobilenet_v2(4, frame_size=(16, 16)).eval()
    r = bench_end_to_end(net, videos, frame_size=(16, 16), sample_rate=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                         streams=2, chunk=8, max_frames=None)
    assert r["videos"] == 3
    assert r["frames"] == sum(math.ceil(probe(v)[0] / 2) for v in videos)
    assert r["decode_s"] + r["model_s"] <= r["wall_s"]


def test_bench_cli_writes_json(tmp_path, synth_root) -> None:
    out = tmp_path / "b.json"
    res = streamseg("bench", "-D", "synth", "-M", "memtcn", "-E", "quick", "-o", f"data.root={synth_root}", *TINY,
                    "--streams", "2", "--chunk", "8", "--steps", "2", "--repeats", "1", "--threads", "1",
                    "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["settings"]["streams"] == 2 and r["settings"]["chunk"] == 8
    assert r["input"] == {"kind": "features", "sample_shape": [64], "sample_rate": 1, "fps": 15.0}
    assert r["cost"]["forward_frames"] == 8 and r["cost"]["params"] > 0
    assert r["end_to_end"] is None  # features: nothing to decode
    assert r["model_only"]["steps"] == 2 and "environment" in r and "torch" in r["environment"]
