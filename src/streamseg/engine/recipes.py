"""Training recipes: `build_module(net, params, info)` functions that experiment configs use.

`default_module` is MS-TCN's recipe (Adam, CE + 0.15 truncated-MSE smoothing), used when an experiment
config defines no `build_module`. Others are imported by name in experiment configs, e.g.
`from streamseg.engine.recipes import asformer_module as build_module`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..config import RunParams
from ..models import ASRF, ASRFLoss
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


def asformer_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """ASFormer's recipe (ChinaYi/ASFormer main.py): Adam with `train.weight_decay`, ReduceLROnPlateau
    (factor 0.5, patience 3) stepped each epoch on the training loss (the epoch mean; the official code
    uses the epoch sum, which has the same minima), the MS-TCN loss on every stage."""
    t = params.train
    return SegmentationModule(
        net,
        info,
        loss=SegmentationLoss(info.num_classes),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.5, patience=3),
        scheduler_monitor="train/epoch_loss",
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
    )


def asrf_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """ASRF's loss (class stages CE + 0.15 T-MSE, boundary BCE x 0.1) with Adam (`train.lr`,
    `train.weight_decay`); the model must be ASRF (its boundary branch feeds the loss)."""
    if not isinstance(net, ASRF):
        raise TypeError(f"this experiment trains ASRF (-M asrf) with its boundary loss, got {type(net).__name__}")
    t = params.train
    return SegmentationModule(
        net,
        info,
        loss=ASRFLoss(net, info.num_classes, smooth_weight=0.15, boundary_weight=0.1),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
    )
