"""Segmentation networks (pure ``torch.nn``) following the streaming contract.

Every model has ``init_state(batch_size, device) -> tuple[Tensor, ...]`` (batch on dim 0 of every
tensor), ``forward(x, state, mask (B, 1, T) | None) -> (logits (S, B, K, T), new_state)`` and
``lookahead: int | None`` (0 = causal, None = needs the whole video).

Optional parts, declared by inheriting a base class of `streamseg.models.hooks`: `FeedsBackLabels`
(models that feed their own earlier predictions back, Transeger: ``feedback_delay: int`` and
``teacher_force(state, labels (B, T), mask (B, 1, T) | None) -> state``, which the engine calls in
training after each chunk to put that chunk's ground truth in the state) and `SeedsPerVideo`
(``set_video_indices``, DiffAct).
"""

from streamseg.models.asformer import ASFormer
from streamseg.models.asrf import ASRF, ASRFLoss, refine_with_boundaries
from streamseg.models.c2ftcn import C2FTCN
from streamseg.models.checkpoint import WeightsError, load_weights
from streamseg.models.diffact import DiffAct
from streamseg.models.diffact_loss import DiffActLoss
from streamseg.models.framewise import FramewiseHead
from streamseg.models.hooks import FeedsBackLabels, PostProcesses, SeedsPerVideo
from streamseg.models.losses import SegmentationLoss, SVTASStreamLoss
from streamseg.models.memtcn import MemoryTCN
from streamseg.models.mstcn import MSTCN
from streamseg.models.mstcn2 import MSTCN2
from streamseg.models.pyslowfast import (
    X3D,
    SlowFast,
    slowfast_r50_encoder,
    x3d_m_encoder,
    x3d_s_encoder,
    x3d_xs_encoder,
)
from streamseg.models.transeger import (
    ClassNameTokenizer,
    PromptTextEncoder,
    Transeger,
    transeger_features,
    transeger_mobilenet_v2,
)
from streamseg.models.tsm import TSMEncoder, set_activation_checkpointing, tsm_mobilenet_v2, tsm_resnet50
from streamseg.models.tsm_memtcn import (
    EncoderHead,
    TSMMemoryTCN,
    tsm_framewise_mobilenet_v2,
    tsm_memtcn_mobilenet_v2,
    tsm_memtcn_resnet50,
)
from streamseg.models.video_backbones import (
    VideoEncoder,
    mvit_v2_s_encoder,
    r2plus1d_18_encoder,
    s3d_encoder,
    swin3d_t_encoder,
)

__all__ = [
    "MSTCN",
    "MSTCN2",
    "ASFormer",
    "ASRF",
    "ASRFLoss",
    "FeedsBackLabels",
    "PostProcesses",
    "SeedsPerVideo",
    "refine_with_boundaries",
    "C2FTCN",
    "DiffAct",
    "DiffActLoss",
    "load_weights",
    "WeightsError",
    "MemoryTCN",
    "FramewiseHead",
    "SegmentationLoss",
    "SVTASStreamLoss",
    "TSMEncoder",
    "set_activation_checkpointing",
    "TSMMemoryTCN",
    "tsm_mobilenet_v2",
    "tsm_resnet50",
    "tsm_memtcn_mobilenet_v2",
    "tsm_memtcn_resnet50",
    "tsm_framewise_mobilenet_v2",
    "EncoderHead",
    "VideoEncoder",
    "r2plus1d_18_encoder",
    "s3d_encoder",
    "mvit_v2_s_encoder",
    "swin3d_t_encoder",
    "X3D",
    "SlowFast",
    "x3d_xs_encoder",
    "x3d_s_encoder",
    "x3d_m_encoder",
    "slowfast_r50_encoder",
    "Transeger",
    "PromptTextEncoder",
    "ClassNameTokenizer",
    "transeger_mobilenet_v2",
    "transeger_features",
]
