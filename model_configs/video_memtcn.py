"""A video backbone (torchvision's R(2+1)D-18, S3D, MViTv2-S or Swin3D-T; PySlowFast's X3D-XS/S/M or
SlowFast R50 8x8) + MemoryTCN, trained end to end on RGB frames. The backbone runs clip by clip on
`context` past frames + `clip_len` frames (`streamseg.models.video_backbones`), so a prediction looks
`clip_len - 1` frames ahead; chunks whose length is a multiple of `clip_len` stream exactly (chunked ==
one pass).

Sizes each backbone accepts (window = context + clip_len): r2plus1d_18 any; s3d window >= 8 and frames
>= 17x17; mvit_v2_s an even window and frame sides multiple of 32 (Kinetics weights: window 16, 224x224);
swin3d_t and x3d_* any; slowfast_r50 a window that is a multiple of 4 (Kinetics: 32 frames of 224x224).
`weights`: a torchvision state dict, or for x3d_* / slowfast_r50 a PySlowFast checkpoint (`.pyth`).
"""

from dataclasses import dataclass
from typing import Literal

from streamseg.models import (
    EncoderHead,
    MemoryTCN,
    mvit_v2_s_encoder,
    r2plus1d_18_encoder,
    s3d_encoder,
    slowfast_r50_encoder,
    swin3d_t_encoder,
    x3d_m_encoder,
    x3d_s_encoder,
    x3d_xs_encoder,
)

ENCODERS = {
    "r2plus1d_18": r2plus1d_18_encoder,
    "s3d": s3d_encoder,
    "mvit_v2_s": mvit_v2_s_encoder,
    "swin3d_t": swin3d_t_encoder,
    "x3d_xs": x3d_xs_encoder,
    "x3d_s": x3d_s_encoder,
    "x3d_m": x3d_m_encoder,
    "slowfast_r50": slowfast_r50_encoder,
}


@dataclass
class Params:
    backbone: Literal["r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t", "x3d_xs", "x3d_s", "x3d_m", "slowfast_r50"] = (
        "r2plus1d_18")
    clip_len: int = 8  # frames per clip; lookahead = clip_len - 1
    context: int = 8  # past frames prepended to each clip (8 + 8 = the 16-frame clips of the Kinetics weights)
    weights: str | None = None  # local weights of `backbone` (torchvision state dict / PySlowFast checkpoint); no downloads
    frame_size: tuple[int, ...] = (112, 112)  # must equal data.frame_size; R(2+1)D's Kinetics size
    num_stages: int = 1
    num_layers: int = 4  # the MemoryTCN head of SVTAS's TSM model: 1 stage x 4 layers x 64 maps
    num_maps: int = 64
    dropout: float = 0.5


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(clip_len=4, context=4, frame_size=(16, 16), num_layers=2, num_maps=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> EncoderHead:
    encoder = ENCODERS[p.backbone](clip_len=p.clip_len, context=p.context, frame_size=tuple(p.frame_size),
                                   weights=p.weights)
    head = MemoryTCN(encoder.out_channels, num_classes, p.num_stages, p.num_layers, p.num_maps, p.dropout)
    return EncoderHead(encoder, head)
