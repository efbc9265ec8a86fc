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
    return SegmentationModule(
        net,
        info,
        loss=SegmentationLoss(info.num_classes),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
    )
