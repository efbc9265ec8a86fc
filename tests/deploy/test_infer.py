"""`infer`: segment events emitted online concatenate to the offline (whole-video) prediction, and the
CLI chain train -> export onnx -> infer gives the same labels as the PyTorch run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamseg.data.streams import upsample_to_full
from streamseg.data.video import VideoFileSource, probe
from streamseg.deploy.infer import infer_video
from streamseg.deploy.runtime import DeployMeta, TorchStreamer
from streamseg.models import tsm_memtcn_mobilenet_v2

from ..conftest import TINY_STREAM, streamseg

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


def test_events_concatenate_to_the_offline_prediction(synth_video_root) -> None:
    meta = DeployMeta(class_names=[f"c{k}" for k in range(K)], fps=15.0, sample_rate=SR, input_kind="frames",
                      sample_shape=[3, *SIZE], lookahead=0, state_shapes=[], mean=MEAN, std=STD)
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


@pytest.mark.slow
def test_train_export_infer_through_the_cli(tmp_path, synth_video_root) -> None:
    pytest.importorskip("onnxruntime")
    train = streamseg("train", "-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "-R", str(tmp_path),
                      "-o", f"data.root={synth_video_root}", *TINY_STREAM)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tmp_path / "synth" / "tsm_memtcn_chunk32" / "version_0"
    export = streamseg("export", "onnx", str(run), "--out", str(tmp_path / "m.onnx"))
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
