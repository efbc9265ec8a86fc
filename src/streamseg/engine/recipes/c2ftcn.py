"""C2F-TCN's recipe (dipika-singhania/C2F-TCN train.py)."""

from __future__ import annotations

from torch import nn

from ...config import RunParams
from ...models import C2FTCN
from ...models.losses import SegmentationLoss
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import segmentation_module


def c2ftcn_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam (`train.lr`, `train.weight_decay`), CE + 0.15 truncated MSE on the log of the decoder ensemble
    (the model's output), the smoothing averaged over whole windows of `model.window` frames as the official
    loader's samples (`SegmentationLoss(smooth_window)`)."""
    if not isinstance(net, C2FTCN):
        raise TypeError(f"this experiment trains C2F-TCN (-M c2ftcn), got {type(net).__name__}")
    return segmentation_module(net, params, info, SegmentationLoss(info.num_classes, smooth_window=net.window))
