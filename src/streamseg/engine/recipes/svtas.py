"""SVTAS's streaming recipes (Thinksky5124/SVTAS), for any streaming model on video streams."""

from __future__ import annotations

from torch import nn

from ...config import ConfigError, RunParams
from ...models.losses import SVTASStreamLoss
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import segmentation_module


def svtas_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """SVTAS's streaming recipe (``segmentation_loss.py``): Adam (`train.lr`, `train.weight_decay`) on
    `SVTASStreamLoss`: per chunk CE + 0.15 smoothing, each normalised by the video's number of chunks. For
    video streams (`data.input="video"`, `train.chunk_size`); with `train.tbptt_chunks=1` a step per chunk
    and the state detached every chunk (SETE). A net that feeds its labels back (Transeger) keeps its chunk
    limit (`common.check_feedback_chunk`)."""
    return _svtas(net, params, info, reward="none")


def svtas_rl_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """SVTAS-RL's recipe (arXiv 2309.15683; SVTAS ``rl_dpg_loss.py`` ``RLPGSegmentationLoss``): `svtas_module`'s
    loss times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice score on the chunk."""
    return _svtas(net, params, info, reward="dice")


def _svtas(net: nn.Module, params: RunParams, info: DatasetInfo, reward: str) -> SegmentationModule:
    if not info.streams or params.train.chunk_size <= 0:
        raise ConfigError("the SVTAS recipes train on video streams: set data.input=video and train.chunk_size > 0 "
                          f"(got data.input={getattr(params.data, 'input', 'features')!r}, "
                          f"train.chunk_size={params.train.chunk_size})")
    return segmentation_module(net, params, info, SVTASStreamLoss(info.num_classes, reward=reward),
                               loss_takes_chunks=True)
