"""ASFormer's recipe (ChinaYi/ASFormer main.py)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ...config import RunParams
from ...models.losses import SegmentationLoss
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import segmentation_module


def asformer_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam with `train.weight_decay`, ReduceLROnPlateau (factor 0.5, patience 3) stepped each epoch on the
    training loss (the epoch mean; the official code uses the epoch sum, which has the same minima), the
    MS-TCN loss on every stage."""
    return segmentation_module(
        net, params, info, SegmentationLoss(info.num_classes),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.5, patience=3),
        scheduler_monitor="train/epoch_loss",
    )
