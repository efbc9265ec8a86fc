"""ASFormer on the synthetic dataset's features, sized to train in a couple of minutes on a 2-core CPU,
with the paper's optimiser and plateau scheduler (see exp_configs/gtea/asformer_paper.py).

    streamseg train -D synth -M asformer -E quick

Encoder + 1 decoder x 6 blocks (windows 1..32) x 32 maps instead of 1 + 3 x 10 x 64; the sliding-window
attention makes a block ~2.5x an MS-TCN layer of the same width on a CPU, so this is ~1.7x synth/mstcn_quick
per epoch, and trains 25 epochs instead of 30.
"""

from functools import partial

import torch
from torch import nn

from streamseg.config import RunParams
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.models.losses import SegmentationLoss


def configure(params: RunParams) -> None:
    params.model.num_decoders = 1
    params.model.num_layers = 6
    params.model.num_maps = 32
    params.train.epochs = 25
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.weight_decay = 1e-5
    params.train.seed = 0


def build_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam with weight decay and ReduceLROnPlateau(0.5, patience 3) on `train/loss`, as the paper recipe."""
    t = params.train
    return SegmentationModule(
        net,
        info,
        loss=SegmentationLoss(info.num_classes),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.5, patience=3),
        scheduler_monitor="train/loss",
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
    )
