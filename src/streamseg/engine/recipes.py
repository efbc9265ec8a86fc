"""Default training recipe: MS-TCN's (Adam, CE + 0.15 truncated-MSE smoothing), used when an experiment
config does not define its own `build_module(net, params, info)`."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..config import RunParams
from ..models.losses import SegmentationLoss
from .datamodule import DatasetInfo
from .module import SegmentationModule


def default_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    t = params.train
    streams = is_stream_input(params)
    return SegmentationModule(
        net,
        info,
        # streams: sums over chunks, divided by the valid frames of each truncation window
        loss=SegmentationLoss(info.num_classes, reduction="sum" if streams else "mean"),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        stream_batches=streams,
        grad_clip=t.grad_clip,
    )


def is_stream_input(params: RunParams) -> bool:
    """The dataset feeds chunk batches of parallel streams (raw video) rather than whole videos."""
    return getattr(params.data, "input", "features") == "video"
