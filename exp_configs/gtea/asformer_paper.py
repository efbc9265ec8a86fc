"""ASFormer with the official recipe (ChinaYi/ASFormer main.py, model.py): Adam 5e-4 with weight decay
1e-5, ReduceLROnPlateau (0.5, patience 3), 120 epochs, one video per step, CE + 0.15 truncated MSE on
every stage, input channel masking 0.5, seed 19980125. The last epoch's weights are tested
(the official script tests a chosen epoch; no test-set selection here).

    streamseg train -D gtea -M asformer -E paper -o data.split=1   # then the other splits and average
"""

from functools import partial

import torch
from torch import nn

from streamseg.config import RunParams
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.models.losses import SegmentationLoss


def configure(params: RunParams) -> None:
    params.train.epochs = 120
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-5
    params.train.seed = 19980125  # the official main.py's seed
    params.model.channel_masking_rate = 0.5  # official: larger dropout against GTEA's over-fitting


def build_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam with weight decay 1e-5 and ReduceLROnPlateau(factor 0.5, patience 3) on the training loss.

    The official code steps the plateau scheduler on the epoch's summed training loss; the engine logs
    `train/loss` per step, so the scheduler sees the epoch's last step's loss (noisier, same direction).
    """
    t = params.train
    return SegmentationModule(
        net,
        info,
        loss=SegmentationLoss(info.num_classes),  # CE + 0.15 truncated MSE on every stage, as official
        optimizer=partial(torch.optim.Adam, lr=t.lr, weight_decay=t.weight_decay),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.5, patience=3),
        scheduler_monitor="train/loss",
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
    )
