"""Segmentation networks (pure ``torch.nn``) following the streaming contract.

Every model has ``init_state(batch_size, device) -> tuple[Tensor, ...]`` (batch on dim 0 of every
tensor), ``forward(x, state, mask (B, 1, T) | None) -> (logits (S, B, K, T), new_state)`` and
``lookahead: int | None`` (0 = causal, None = needs the whole video).
"""

from streamseg.models.asformer import ASFormer
from streamseg.models.asrf import ASRF, ASRFLoss, refine_with_boundaries
from streamseg.models.c2ftcn import C2FTCN
from streamseg.models.checkpoint import WeightsError, load_weights
from streamseg.models.framewise import FramewiseHead
from streamseg.models.losses import SegmentationLoss
from streamseg.models.memtcn import MemoryTCN
from streamseg.models.mstcn import MSTCN
from streamseg.models.mstcn2 import MSTCN2
from streamseg.models.tsm import TSMEncoder, tsm_mobilenet_v2, tsm_resnet50
from streamseg.models.tsm_memtcn import (
    TSMMemoryTCN,
    tsm_framewise_mobilenet_v2,
    tsm_memtcn_mobilenet_v2,
    tsm_memtcn_resnet50,
)

__all__ = [
    "MSTCN",
    "MSTCN2",
    "ASFormer",
    "ASRF",
    "ASRFLoss",
    "refine_with_boundaries",
    "C2FTCN",
    "load_weights",
    "WeightsError",
    "MemoryTCN",
    "FramewiseHead",
    "SegmentationLoss",
    "TSMEncoder",
    "TSMMemoryTCN",
    "tsm_mobilenet_v2",
    "tsm_resnet50",
    "tsm_memtcn_mobilenet_v2",
    "tsm_memtcn_resnet50",
    "tsm_framewise_mobilenet_v2",
]
