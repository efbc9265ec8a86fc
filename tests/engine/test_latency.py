"""Algorithmic latency (`engine.runner.latency`, `search.cost.latency_frames`): the chunk wait only.

A call returns the logits of its own frames, so a model's look-ahead is cut at the end of each chunk and
never adds to the wait. The clip backbone of `video_memtcn` (lookahead = clip_len - 1) used to be
counted on top of the chunk wait.
"""

from __future__ import annotations

import math

import pytest
import torch

from streamseg.config import load_configs, resolve_params
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.engine.batches import BatchKind
from streamseg.engine.runner import batch_kind, build_net, latency, latency_frames
from streamseg.models import EncoderHead, MemoryTCN, r2plus1d_18_encoder
from streamseg.search.cost import latency_frames as cost_latency_frames


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _module(net, chunk_size: int, stream_batches: bool) -> SegmentationModule:
    return SegmentationModule(net, _info(2, kind=BatchKind.STREAMS if stream_batches else BatchKind.VIDEOS),
                              loss=None, optimizer=None, chunk_size=chunk_size)


def _info(sample_rate: int, class_names=("background", "a", "b"), kind=BatchKind.VIDEOS) -> DatasetInfo:
    return DatasetInfo("t", list(class_names), [0], 3, 15.0, sample_rate, batch_kind=kind)


def test_clip_backbone_lookahead_is_not_added_to_the_chunk_wait() -> None:
    # clips of 4 frames (lookahead 3) in chunks of 8 at sample rate 2: frame 0 of a chunk waits 7 sampled
    # frames for its label, 14 original frames; the clip it belongs to ends inside the chunk
    net = EncoderHead(r2plus1d_18_encoder(clip_len=4, context=4, frame_size=(16, 16)),
                      MemoryTCN(512, 3, num_stages=1, num_layers=2, num_maps=8))
    assert net.lookahead == 3
    assert latency(_module(net, 8, True), _info(2)) == {"online": True, "frames": 14, "seconds": round(14 / 15, 3)}
    # the chunk's logits come out with the chunk, whatever the following frames: nothing waits beyond it
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16, 16)
    y = x.clone()
    y[:, :, 8:] = torch.randn(1, 3, 8, 16, 16)
    net.eval()
    with torch.no_grad():
        a, _ = net(x[:, :, :8], net.init_state(1, "cpu"))
        b, _ = net(y[:, :, :8], net.init_state(1, "cpu"))
    assert torch.equal(a, b)


def test_video_memtcn_synth_experiment_latency() -> None:
    """The shipped experiment: clips with a look-ahead of clip_len - 1 > 0, chunks of 16 sampled frames,
    sample rate 2 -> (16 - 1) x 2 = 30, whatever the look-ahead."""
    configs = load_configs("synth", "video_memtcn", "chunk16")
    params, _ = resolve_params(configs)
    from streamseg.data.synth import CLASSES

    info = _info(params.data.sample_rate, CLASSES)
    net = build_net(configs.model, params.model, info)
    assert net.lookahead == params.model.clip_len - 1 > 0
    assert (params.train.chunk_size, params.data.sample_rate) == (16, 2)
    module = _module(net, params.train.chunk_size, batch_kind(configs, params) is BatchKind.STREAMS)
    assert latency(module, info)["frames"] == (16 - 1) * 2  # was (16 - 1 + lookahead) * 2


@pytest.mark.parametrize("lookahead", [0, 1, 7, 10])
def test_latency_is_the_chunk_wait_for_any_lookahead(lookahead: int) -> None:
    assert latency_frames(lookahead, 32, 2) == 62
    assert latency_frames(lookahead, 1, 3) == 0  # one frame per call: its label comes with it
    assert cost_latency_frames(lookahead, 32, 2) == 62.0  # the search's cost agrees


def test_offline_models_have_no_latency() -> None:
    assert latency_frames(None, 32, 2) is None and latency_frames(0, 0, 1) is None
    assert cost_latency_frames(None, 32, 2) == math.inf and cost_latency_frames(3, 0, 1) == math.inf
    offline = SegmentationModule(torch.nn.Identity(), _info(1), loss=None, optimizer=None, chunk_size=0)
    assert latency(offline, _info(1)) == {"online": False, "frames": None, "seconds": None}
