"""ASRF on the synthetic dataset's features with its boundary loss, sized for a couple of minutes on a
2-core CPU: trunk and stages of 8 layers x 32 maps, 3 class + 3 boundary stages.

    streamseg train -D synth -M asrf -E quick
"""

from functools import partial

import torch
from torch import nn

from streamseg.config import RunParams
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.models import ASRF, ASRFLoss


def configure(params: RunParams) -> None:
    params.model.num_layers = 8
    params.model.num_maps = 32
    params.model.num_stages_asb = 3
    params.model.num_stages_brb = 3
    params.train.epochs = 30
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.weight_decay = 1e-4
    params.train.seed = 0


def build_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam and ASRF's loss (class stages CE + 0.15 T-MSE, boundary BCE x 0.1), as the paper recipe."""
    if not isinstance(net, ASRF):
        raise TypeError(f"this experiment trains ASRF (-M asrf) with its boundary loss, got {type(net).__name__}")
    t = params.train
    return SegmentationModule(
        net,
        info,
        loss=ASRFLoss(net, info.num_classes),
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
    )
