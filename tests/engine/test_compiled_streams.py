"""train.compile and train.activation_checkpointing on stream batches: one graph for all training chunks
(video ends and slot resets included: fixed shapes, resets are a `torch.where` outside the net), and
checkpointed blocks give the same gradients as stored activations."""

from __future__ import annotations

import itertools

import pytest
import torch

from streamseg.engine import SegmentationModule, VideoStreamDataModule
from streamseg.engine.streaming import StreamState
from streamseg.engine.throughput import compiled_graphs
from streamseg.models import SegmentationLoss, set_activation_checkpointing, tsm_memtcn_mobilenet_v2


def _net(num_classes: int, checkpointing: bool = False):
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(num_classes, num_layers=2, num_maps=8, frame_size=(16, 16), num_blocks=4)
    assert set_activation_checkpointing(net, checkpointing) == 1
    return net


# checkpointing=True compiles too (aot_eager, tbptt_chunks=1; inductor with 2-chunk windows on the GPU,
# docs/benchmarks.md), but costs another minute of CPU: not part of the suite
@pytest.mark.parametrize("checkpointing", [False])
def test_compiled_stream_training_compiles_one_graph_per_mode(synth_video_root, checkpointing):
    """Dynamo's guards decide recompilation whatever the backend, so a cheap backend counts the graphs
    that inductor would compile. Chunks cross video ends (slots reset and take new videos)."""
    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=24, frame_size=(16, 16), batch_size=2,
                               bg_classes=("background",), preprocess="device-rgb")
    dm.setup()
    net = _net(dm.info.num_classes, checkpointing)
    # aot_eager: inductor's autograd tracing minus code generation (checkpointed blocks need it; "eager" is
    # enough, and faster, without them)
    net.compile(backend="aot_eager" if checkpointing else "eager")
    module = SegmentationModule(net, dm.info, SegmentationLoss(dm.info.num_classes, reduction="sum"),
                                optimizer=torch.optim.Adam,
                                # aot_eager fails checkpointed BatchNorm over a 2-chunk window (a running
                                # statistic changed in place before the recomputation); inductor runs it
                                # (docs/benchmarks.md, 5,605 frames/s): one chunk per window here
                                tbptt_chunks=1 if checkpointing else 2)
    torch._dynamo.reset()
    before = compiled_graphs()
    stream, resets, window, counts = StreamState(), 0, [], []
    net.train()
    for batch in itertools.islice(dm.train_dataloader(), 8):
        batch = dm.on_after_batch_transfer(batch, 0)
        resets += int(batch["reset"].sum())
        logits = stream.forward(net, batch)
        window.append(module.loss_fn(logits, batch["labels"], batch["mask"])[0])
        if len(window) == module.tbptt_chunks:  # as the module: backward over the window, then truncate
            sum(window).backward()
            stream.truncate()
            window = []
        counts.append(compiled_graphs() - before)
    assert resets > 2  # slots started new videos mid-run
    train_graphs = counts[-1]
    assert counts[module.tbptt_chunks:] == [train_graphs] * (8 - module.tbptt_chunks)  # then nothing recompiles
    net.eval()
    with torch.no_grad():
        stream = StreamState()
        for batch in itertools.islice(dm.val_dataloader(), 2):
            stream.forward(net, dm.on_after_batch_transfer(batch, 0))
    # training: a window's first chunk (state without gradient) and, with 2-chunk windows, its second
    # (state carrying gradient) are one graph each; evaluation (no gradient, BatchNorm in eval mode) adds one
    assert train_graphs == module.tbptt_chunks and compiled_graphs() - before == train_graphs + 1


def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 3, 6, 16, 16)
    grads = []
    for checkpointing in (False, True):
        net = _net(5, checkpointing).train()
        logits, _ = net(x, net.init_state(2), None)
        logits.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert set_activation_checkpointing(torch.nn.Linear(2, 2)) == 0  # nothing to checkpoint: says so
