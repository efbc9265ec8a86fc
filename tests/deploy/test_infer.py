"""`infer`: segment events emitted online concatenate to the offline (whole-video) prediction, and the
CLI chain train -> export onnx -> infer gives the same labels as the PyTorch run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streamseg.data.streams import upsample_to_full
from streamseg.data.video import VideoFileSource, probe
from streamseg.deploy.infer import infer_video
from streamseg.deploy.runtime import DeployMeta, TorchStreamer
from streamseg.models import tsm_memtcn_mobilenet_v2

from ..conftest import TINY_STREAM, streamseg
from .test_sources import http_dir, remux_to_mpegts  # noqa: F401 (http_dir is a fixture)

K, SIZE, SR = 4, (16, 16), 2
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _net(x: torch.Tensor):
    """Random weights, BatchNorm statistics measured on the video ``x`` so that labels vary over time."""
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(K, num_layers=3, num_maps=8, frame_size=SIZE)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    with torch.no_grad():
        net.train()(x, net.init_state(1, "cpu"), None)
    return net.eval()


def tiny_meta(**changes) -> DeployMeta:
    fields = dict(class_names=[f"c{k}" for k in range(K)], fps=15.0, sample_rate=SR, input_kind="frames",
                  sample_shape=[3, *SIZE], lookahead=0, state_shapes=[], mean=MEAN, std=STD, bg_classes=["c0"])
    return DeployMeta(**{**fields, **changes})


def varying_streamer(video) -> TorchStreamer:
    """A tiny causal TSM + MemoryTCN (random weights) whose labels vary over ``video``."""
    meta = tiny_meta()
    with VideoFileSource(video, SR, SIZE) as src:
        x = meta.preprocess(src.read(100_000))
    return TorchStreamer(_net(torch.from_numpy(x)), meta)


def test_events_concatenate_to_the_offline_prediction(synth_video_root) -> None:
    meta = tiny_meta()
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    num_frames = probe(video)[0]
    with VideoFileSource(video, SR, SIZE) as src:
        x = meta.preprocess(src.read(100_000))
    net = _net(torch.from_numpy(x))
    emitted: list[dict] = []
    result = infer_video(TorchStreamer(net, meta), video, chunk=5, emit=emitted.append)

    with torch.no_grad():  # offline: the whole video in one call
        logits, _ = net(torch.from_numpy(x), net.init_state(1, "cpu"))
    offline = upsample_to_full(logits[-1, 0].argmax(0).numpy(), SR, num_frames)

    assert emitted == result.events and len(emitted) > 2  # labels vary: several segments
    assert emitted[0]["start"] == 0 and emitted[-1]["end"] == num_frames
    from_events = np.concatenate([np.full(e["end"] - e["start"], e["label_id"]) for e in emitted])
    np.testing.assert_array_equal(from_events, offline)
    np.testing.assert_array_equal(result.labels, offline)
    for a, b in zip(emitted, emitted[1:]):
        assert a["end"] == b["start"] and a["label_id"] != b["label_id"]
    for e in emitted:
        # emitted once the chunk holding the next segment's first frame (or the video's end) was labelled
        assert e["end"] <= e["emitted_at_frame"] <= e["end"] + 5 * SR
        assert 0 < e["confidence"] <= 1 and e["label"] == f"c{e['label_id']}"


def test_a_stream_url_gives_the_labels_of_its_file(synth_video_root, http_dir) -> None:
    """A real HTTP server streams the video as MPEG-TS; labelled as it arrives, chunk by chunk, with no
    known length, it gets exactly the labels and events of the file itself."""
    folder, base = http_dir
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    remux_to_mpegts(video, folder / "cam.ts")
    streamer = varying_streamer(video)
    from_file = infer_video(streamer, video, chunk=6)
    live_events: list[dict] = []
    live = infer_video(streamer, f"{base}/cam.ts", chunk=6, emit=live_events.append)
    assert live.name == "cam" and len(live.labels) == probe(video)[0] and len(set(live.labels.tolist())) > 1
    np.testing.assert_array_equal(live.labels, from_file.labels)
    strip = ("video", "latency_s")
    assert [{k: v for k, v in e.items() if k not in strip} for e in live_events] == \
        [{k: v for k, v in e.items() if k not in strip} for e in from_file.events]
    assert from_file.realtime is None  # a file, not paced: no lag report
    assert live.realtime is not None and not live.realtime["paced"] and live.realtime["chunks"] > 1


class _Brightness:
    """A stand-in streaming model: each frame's class is its brightness bin; sleeps ``delay_s`` per step."""

    def __init__(self, meta: DeployMeta, delay_s: float = 0.0) -> None:
        self.meta, self.delay_s = meta, delay_s

    def init_state(self, batch: int) -> list:
        return []

    def step(self, x: np.ndarray, state: list):
        time.sleep(self.delay_s)
        brightness = x.mean(axis=(1, 3, 4))  # (1, T)
        logits = -np.abs(brightness[:, None, :] - np.linspace(-2, 2, K)[None, :, None])
        return logits.astype(np.float32), state


def _ramp_video(path, frames: int = 36, fps: int = 30):
    """A clip that brightens over time (so that labels change), ``frames`` frames at ``fps``."""
    from streamseg.data.synth_render import encode_mp4

    ramp = np.linspace(20, 235, frames).astype(np.uint8)
    encode_mp4(path, np.broadcast_to(ramp[:, None, None, None], (frames, 16, 16, 3)).copy(), fps)
    return path


def test_realtime_paces_a_file_and_reports_no_lag_when_the_model_keeps_up(tmp_path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4")  # 36 frames at 30 fps: 1.2 s
    meta = tiny_meta(sample_rate=1, fps=30.0)
    started = time.perf_counter()
    result = infer_video(_Brightness(meta), video, chunk=12, realtime=True)  # a chunk every 0.4 s
    wall = time.perf_counter() - started
    rt = result.realtime
    assert wall >= 35 / 30  # played at its frame rate: the last frame is due 35/30 s after the first
    assert rt["paced"] and rt["chunks"] == 3 and rt["chunk_period_s"] == pytest.approx(0.4)
    assert rt["late_chunks"] == 0 and not rt["behind"] and rt["max_lag_s"] < 0.4
    assert rt["media_s"] == pytest.approx(35 / 30, abs=1e-3) and len(result.labels) == 36


def test_realtime_reports_a_model_that_falls_behind_and_drops_nothing(tmp_path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4")
    meta = tiny_meta(sample_rate=1, fps=30.0)
    fast = infer_video(_Brightness(meta), video, chunk=12)
    slow = infer_video(_Brightness(meta, delay_s=0.6), video, chunk=12, realtime=True)  # 0.6 s per 0.4 s chunk
    rt = slow.realtime
    assert rt["behind"] and rt["late_chunks"] == rt["chunks"] == 3
    assert rt["final_lag_s"] >= rt["max_lag_s"] - 1e-9  # the lag only grows ...
    assert rt["final_lag_s"] > 0.6 + 2 * 0.2 - 0.05  # ... by ~0.2 s a chunk (0.6 s of work per 0.4 s of video)
    assert rt["speed"] < 1
    np.testing.assert_array_equal(slow.labels, fast.labels)  # every frame labelled, none dropped
    assert len(set(slow.labels.tolist())) > 1


def test_whole_video_models_refuse_live_and_realtime(tmp_path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4", frames=8)
    offline = _Brightness(tiny_meta(sample_rate=1, lookahead=None))
    assert len(infer_video(offline, video).labels) == 8  # a file: the whole video in one call
    with pytest.raises(ValueError, match="no look-ahead bound .* cannot label a live source or run in real time"):
        infer_video(offline, video, realtime=True)


def test_ctrl_c_ends_a_live_source_cleanly() -> None:
    if "lavfi" not in av.formats_available:
        pytest.skip("this FFmpeg build has no lavfi input")

    class Interrupted(_Brightness):
        calls = 0

        def step(self, x, state):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return super().step(x, state)

    events: list[dict] = []
    result = infer_video(Interrupted(tiny_meta(sample_rate=1)), "lavfi:testsrc=size=16x16:rate=30", chunk=4,
                         emit=events.append)
    assert result.interrupted and len(result.labels) == 8  # two chunks labelled before Ctrl-C
    assert events and events[-1]["end"] == 8 and result.events == events


def split_folder(root: Path, split: str, tmp_path: Path) -> str:
    """A folder of links to the synthetic videos of ``split`` (for ``export --int8 / --int8-check``)."""
    folder = tmp_path / f"videos_{split}"
    folder.mkdir()
    for name in (root / "splits" / f"{split}.split1.bundle").read_text().split():
        stem = name.removesuffix(".txt")
        (folder / f"{stem}.mp4").symlink_to(root / "Videos" / f"{stem}.mp4")
    return str(folder)


@pytest.mark.slow
def test_train_export_infer_through_the_cli(tmp_path, synth_video_root) -> None:
    pytest.importorskip("onnxruntime")
    train = streamseg("train", "-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "-R", str(tmp_path),
                      "-o", f"data.root={synth_video_root}", *TINY_STREAM)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tmp_path / "synth" / "tsm_memtcn_chunk32" / "version_0"
    calib, check = split_folder(synth_video_root, "train", tmp_path), split_folder(synth_video_root, "test", tmp_path)
    export = streamseg("export", "onnx", str(run), "--out", str(tmp_path / "m.onnx"), "--int8", calib,
                       "--int8-check", check)  # INT8 calibrated on the training videos, checked on the test ones
    assert export.returncode == 0, export.stderr[-3000:]
    assert "parity: ONNX Runtime vs PyTorch max |diff|" in export.stdout
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["sample_shape"] == [3, 16, 16] and meta["sample_rate"] == 2 and meta["lookahead"] == 0
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    onnx_run = streamseg("infer", str(video), "--model", str(tmp_path / "m.onnx"), "--pred-dir", str(tmp_path / "o"))
    torch_run = streamseg("infer", str(video), "--model", str(run), "--pred-dir", str(tmp_path / "t"))
    assert onnx_run.returncode == 0 and torch_run.returncode == 0, onnx_run.stderr[-2000:] + torch_run.stderr[-2000:]
    events = [json.loads(line) for line in onnx_run.stdout.splitlines()]
    assert events and events[-1]["end"] == probe(video)[0]
    assert (tmp_path / "o" / video.stem).read_text() == (tmp_path / "t" / video.stem).read_text()
    int8 = json.loads((tmp_path / "m.int8.json").read_text())
    print("INT8 parity of the trained tiny run:", int8["parity"], "fp32 labels:", len(events), "segments")
    assert int8["quantization"] == "int8-static" and int8["parity"]["videos"] == len(list(Path(check).iterdir()))
    assert int8["parity"]["label_agreement"] >= 0.97
    search = int8["int8_search"]  # the nodes kept in float, chosen on the training videos alone
    assert search["min_agreement"] == 0.99 and search["agreement"] == search["tried"][str(len(search["float_nodes"]))]
    assert "INT8 nodes kept in float:" in export.stdout


@pytest.mark.slow
def test_infer_cli_on_a_stream_url_with_annotation_live_view_and_summary(tmp_path, synth_video_root, http_dir) -> None:
    """`streamseg infer URL`: a live HTTP stream gives the labels of the file run; stdout carries only the
    JSON events while the live view (stderr, not a terminal here) prints its final panel once."""
    pytest.importorskip("onnxruntime")
    from streamseg.deploy.onnx_export import export_onnx

    folder, base = http_dir
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    num_frames = probe(video)[0]
    streamer = varying_streamer(video)
    streamer.meta.state_shapes = [list(t.shape[1:]) for t in streamer.net.init_state(1, "cpu")]
    model, _ = export_onnx(streamer.net, streamer.meta, tmp_path / "m.onnx")
    remux_to_mpegts(video, folder / "cam.ts")

    common = ["--model", str(model), "--chunk", "6"]
    live = streamseg("infer", f"{base}/cam.ts", *common, "--pred-dir", str(tmp_path / "live"),
                     "--annotate", str(tmp_path / "ann.mp4"), "--live", "--summary", str(tmp_path / "summary.json"))
    from_file = streamseg("infer", str(video), *common, "--pred-dir", str(tmp_path / "file"))
    assert live.returncode == 0 and from_file.returncode == 0, live.stderr[-3000:] + from_file.stderr[-3000:]
    assert (tmp_path / "live" / "cam").read_text() == (tmp_path / "file" / video.stem).read_text()
    events = [json.loads(line) for line in live.stdout.splitlines()]  # stdout: events only
    assert events and events[0]["start"] == 0 and events[-1]["end"] == num_frames and events[0]["video"] == "cam"
    assert [e["label"] for e in events] == [json.loads(line)["label"] for line in from_file.stdout.splitlines()]
    view = " ".join(live.stderr.split())  # rich wraps lines at the 80 columns of a non-terminal
    assert view.count("last segments") == 1 and f"cam: frame {num_frames}" in view
    assert "kept up with the source" in view or "FELL BEHIND" in view
    (summary,) = json.loads((tmp_path / "summary.json").read_text())
    assert summary["video"] == "cam" and summary["frames"] == num_frames and summary["segments"] == len(events)
    rt = summary["realtime"]  # a live source is always measured (here faster than real time: not paced)
    assert rt["paced"] is False and rt["chunks"] == -(-num_frames // (6 * SR)) and rt["late_chunks"] >= 0
    with av.open(str(tmp_path / "ann.mp4")) as annotated:
        assert sum(1 for _ in annotated.decode(video=0)) == num_frames


def test_segment_events_are_the_runs_of_labels_whatever_the_chunking() -> None:
    """`SegmentTracker` closes one event per run of equal labels, with the run's mean confidence, however
    the frames are split into chunks (runs crossing chunks, one-frame runs, empty chunks)."""
    from streamseg.deploy.infer import SegmentTracker

    rng = np.random.default_rng(3)
    labels = np.repeat(rng.integers(0, 4, 60), rng.integers(1, 6, 60))  # runs of 1-5, some merge
    conf = rng.random(len(labels)).astype(np.float32)
    want = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            want.append((int(labels[start]), start, i, round(float(conf[start:i].astype(np.float64).mean()), 5)))
            start = i
    for cuts in ([], [1, 2, 2, 50, 51], list(range(1, len(labels))), sorted(rng.choice(len(labels), 20))):
        events: list[dict] = []
        tracker = SegmentTracker("v", ["a", "b", "c", "d"], 10.0, events.append)
        for part_labels, part_conf in zip(np.split(labels, cuts), np.split(conf, cuts)):
            tracker.push(part_labels, part_conf, time.perf_counter())
        tracker.finish(len(labels), time.perf_counter())
        got = [(e["label_id"], e["start"], e["end"], e["confidence"]) for e in events]
        assert got == want and events == tracker.events
        assert all(e["label"] == "abcd"[e["label_id"]] and e["end_s"] == e["end"] / 10.0 for e in events)
