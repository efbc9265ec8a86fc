"""Benchmarks: model-only timing bookkeeping, end-to-end decoding of every frame of every video once
through S slots, and the CLI's JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from streamseg.data.video import probe
from streamseg.deploy.bench import bench_end_to_end, bench_model, bench_onnx_model
from streamseg.deploy.runtime import DeployMeta, OnnxStreamer
from streamseg.models import MemoryTCN, tsm_framewise_mobilenet_v2, tsm_memtcn_mobilenet_v2

from ..conftest import TINY, TINY_STREAM, streamseg


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


def test_end_to_end_stops_after_max_steps_and_reports_progress(synth_video_root) -> None:
    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))
    net = tsm_framewise_mobilenet_v2(4, frame_size=(16, 16)).eval()
    seen = []
    r = bench_end_to_end(net, videos, frame_size=(16, 16), sample_rate=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                         streams=2, chunk=4, max_frames=None, max_steps=3, progress=lambda *a: seen.append(a))
    assert r["steps"] == 3 and r["frames"] == 3 * 2 * 4  # the videos are far longer than 3 chunks
    assert seen == [("end-to-end", i, 3) for i in (1, 2, 3)]


def test_bench_cli_bounds_end_to_end_by_steps(tmp_path, synth_video_root) -> None:
    """The end-to-end part obeys --steps/--repeats (it once played 2,000 frames whatever they said)."""
    out = tmp_path / "b.json"
    res = streamseg("bench", "-D", "synth", "-M", "mobilenet_framewise", "-E", "chunk32",
                    "-o", f"data.root={synth_video_root}", *TINY_STREAM, "--chunk", "4", "--warmup", "1", "--steps", "1", "--repeats", "1", "--threads", "1",
                    "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    e2e = json.loads(out.read_text())["end_to_end"]
    assert e2e["steps"] == 2 and e2e["frames"] <= 2 * 4
    assert "end-to-end steps" in res.stderr and "model steps" in res.stderr


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


def _export(net, meta: DeployMeta, path) -> OnnxStreamer:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from streamseg.deploy.onnx_export import export_onnx

    meta.state_shapes = [list(t.shape[1:]) for t in net.init_state(1, "cpu")]
    export_onnx(net, meta, path)
    return OnnxStreamer(path, threads=1)


def test_onnxruntime_model_only_and_end_to_end(tmp_path, synth_video_root) -> None:
    torch.manual_seed(0)
    tcn = MemoryTCN(6, 5, num_stages=1, num_layers=3, num_maps=8).eval()
    meta = DeployMeta(class_names=list("abcde"), fps=15.0, sample_rate=1, input_kind="features",
                      sample_shape=[6], lookahead=0, state_shapes=[])
    r = bench_onnx_model(_export(tcn, meta, tmp_path / "tcn.onnx"), streams=3, chunk=4, warmup=1, steps=4, repeats=2)
    assert r["steps"] == 8 and len(r["frames_per_s_runs"]) == 2 and r["peak_rss_mb"] > 0
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:3]
    net = tsm_memtcn_mobilenet_v2(4, num_layers=2, num_maps=8, frame_size=(16, 16), num_blocks=2).eval()
    meta = DeployMeta(class_names=list("abcd"), fps=15.0, sample_rate=2, input_kind="frames",
                      sample_shape=[3, 16, 16], lookahead=0, state_shapes=[], mean=[0.5] * 3, std=[0.25] * 3)
    streamer = _export(net, meta, tmp_path / "frames.onnx")
    e2e = bench_end_to_end(streamer, videos, frame_size=(16, 16), sample_rate=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                           streams=2, chunk=8, max_frames=None)
    assert e2e["videos"] == 3 and e2e["frames"] == sum(math.ceil(probe(v)[0] / 2) for v in videos)
    assert e2e["decode_s"] + e2e["model_s"] <= e2e["wall_s"]


def test_bench_cli_onnxruntime_backend(tmp_path, synth_root) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "b.json"
    res = streamseg("bench", "-D", "synth", "-M", "memtcn", "-E", "quick", "-o", f"data.root={synth_root}", *TINY,
                    "--streams", "2", "--chunk", "8", "--steps", "2", "--repeats", "1", "--threads", "1",
                    "--backend", "onnxruntime", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["settings"]["backend"] == "onnxruntime" and r["model_only"]["steps"] == 2
    assert r["onnx"]["exported"] and r["onnx"]["opset"] and r["onnx"]["parity"]["max_abs_diff"] < 1e-3
    assert r["environment"]["onnxruntime"] and r["environment"]["ort_intra_op_threads"] == 1
    assert r["environment"]["ort_providers"][0] == "CPUExecutionProvider" and r["cost"]["params"] > 0
    assert "onnxruntime" in res.stdout


def test_onnxruntime_backend_refuses_low_precision_and_unknown_backends() -> None:
    from streamseg.deploy.bench import run_benchmark

    with pytest.raises(ValueError, match="--precision bf16 is torch only"):
        run_benchmark(None, None, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        run_benchmark(None, None, backend="tensorrt")
