"""ASRF with the official recipe (yiskw713/asrf libs/config.py, train.py): Adam 5e-4, weight decay 1e-4,
50 epochs, one video per step, seed 0; loss: per stage CE + smoothing, averaged over stages, plus 0.1 x
the boundary BCE. Evaluated on the boundary-refined prediction (the model's
`refine`). Differences: unweighted CE and MS-TCN's 0.15 T-MSE instead of the official class-weighted CE
and Gaussian-similarity T-MSE (weight 1); BCE without the dataset's positive weight; trained on the
training split (the official trains on train + its held-out val).

    streamseg train -D breakfast -M asrf -E paper -o data.split=1   # then the other splits and average
"""

from functools import partial

import torch
from torch import nn

from streamseg.config import RunParams
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.models import ASRF, ASRFLoss


def configure(params: RunParams) -> None:
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-4
    params.train.seed = 0  # train.py --seed default


def build_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam (lr, weight decay 1e-4) and ASRF's own loss: class stages CE + 0.15 T-MSE, boundary BCE x 0.1."""
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
