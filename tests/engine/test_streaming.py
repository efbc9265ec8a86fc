"""End-to-end streaming from raw video: online evaluation equals whole-video inference per video (state
carried across chunks, reset per slot, never leaked), each file opened once, CLI and DDP runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from streamseg.data.video import VideoFileSource
from streamseg.engine import SegmentationModule, VideoStreamDataModule
from streamseg.engine.streaming import StreamState
from streamseg.models import SegmentationLoss, tsm_memtcn_mobilenet_v2

from ..conftest import REPO, TINY_STREAM, streamseg


def _calibrated_net(num_classes: int, frame_size=(16, 16)):
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(num_classes, num_layers=3, num_maps=8, frame_size=frame_size)
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics so eval logits vary
        for _ in range(3):
            x = torch.randn(2, 3, 6, *frame_size)
            net(x, net.init_state(2, "cpu"), None)
    return net.eval()


def test_online_evaluation_equals_whole_video_inference(synth_video_root):
    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=5, frame_size=(16, 16), batch_size=2,
                               bg_classes=("background",))
    dm.setup()
    info = dm.info
    net = _calibrated_net(info.num_classes)
    module = SegmentationModule(net, info, SegmentationLoss(info.num_classes, reduction="sum"),
                                optimizer=torch.optim.Adam)
    names = dm.names["train"] + dm.names["test"]
    dm.names["test"] = names  # more videos than slots: slots must take new videos and reset state
    VideoFileSource.opens.clear()

    logits_by_video: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    stream = StreamState()  # what the module's evaluation carries
    with torch.no_grad():
        for batch in dm.test_dataloader():
            assert batch["x"].shape[1:] == (3, 5, 16, 16) and batch["x"].dtype == torch.uint8
            batch = dm.on_after_batch_transfer(batch, 0)  # what Lightning calls: normalised on the device
            logits = stream.forward(module.net, batch)
            for b, name in enumerate(batch["names"]):
                if name is not None:
                    n = int(batch["mask"][b].sum())
                    logits_by_video[name].append(logits[:, b, :, :n])

    # each video decoded through exactly one open file
    opened = {Path(p).stem: c for p, c in VideoFileSource.opens.items()}
    assert opened == {n: 1 for n in names}

    for name in names:
        streamed = torch.cat(logits_by_video[name], dim=-1)
        with VideoFileSource(synth_video_root / "Videos" / f"{name}.mp4", 1, (16, 16)) as src:
            frames = src.read(10_000)  # (T, 3, H, W) uint8
        x = (frames.float() / 255 - torch.tensor(dm.mean).view(1, 3, 1, 1)) / torch.tensor(dm.std).view(1, 3, 1, 1)
        x = x.permute(1, 0, 2, 3).unsqueeze(0)  # (1, 3, T, H, W)
        with torch.no_grad():
            whole, _ = net(x, net.init_state(1, "cpu"), None)
        assert streamed.shape == whole[:, 0].shape, name
        torch.testing.assert_close(streamed, whole[:, 0], atol=1e-4, rtol=1e-4, msg=name)


def test_stream_training_through_the_cli(tmp_path, synth_video_root):
    # mixed precision and gradient clipping on the manual-optimisation (TBPTT) path; fp32 is covered by
    # the two-process test below
    out = streamseg("train", "-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "-R", str(tmp_path),
                    "-o", f"data.root={synth_video_root}", *TINY_STREAM,
                    "-o", "train.precision=bf16-mixed", "-o", "train.grad_clip=1.0")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "synth" / "tsm_memtcn_chunk32" / "version_0" / "metrics.json").read_text())
    test_names = (synth_video_root / "splits" / "test.split1.bundle").read_text().split()
    assert metrics["num_videos"] == len(test_names)
    # latency: a frame waits for the rest of its chunk (8 - 1 sampled frames, x sample rate 2); no look-ahead
    assert metrics["latency"] == {"online": True, "frames": 14, "seconds": round(14 / 15, 3)}
    for name in test_names:
        header, labels = (tmp_path / "synth" / "tsm_memtcn_chunk32" / "version_0" / "predictions"
                          / name.removesuffix(".txt")).read_text().splitlines()
        gt = (synth_video_root / "groundTruth" / name).read_text().split()
        assert len(labels.split()) == len(gt)


@pytest.mark.slow
def test_two_process_stream_run_scores_every_video_once(tmp_path, synth_video_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    args = ["-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "-R", str(tmp_path),
            "-o", f"data.root={synth_video_root}", *TINY_STREAM]
    out = subprocess.run(["bash", "tools/run_singlenode.sh", "train", "2", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    run = tmp_path / "synth" / "tsm_memtcn_chunk32" / "version_0"
    ddp = json.loads((run / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    single = streamseg("test", *args[:-len(TINY_STREAM)], "--ckpt", "last", *TINY_STREAM)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((run / "metrics.json").read_text())
    assert one["num_videos"] == ddp["num_videos"]
    for key in ("acc", "edit", "f1@10", "f1@25", "f1@50"):
        assert one[key] == pytest.approx(ddp[key], abs=1e-9), key


@pytest.mark.parametrize("order, packed", [("packed", True), ("shuffled", False)])
def test_stream_order_key_reaches_the_training_batcher_only(synth_video_root, order, packed):
    from streamseg.config import load_configs, resolve_params  # the typed config: train.stream_order

    params, _ = resolve_params(load_configs("synth", "tsm_memtcn", "chunk32"),
                               [f"data.root={synth_video_root}", f"train.stream_order={order}"])
    dm = VideoStreamDataModule.from_params(params.data, params.train, "synth")
    dm.setup()
    assert dm.train_dataloader().sampler.pack is packed
    assert dm.test_dataloader().sampler.pack is False  # evaluation: longest first, never shuffled
