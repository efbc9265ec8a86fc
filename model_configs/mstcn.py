"""MS-TCN (Farha & Gall, CVPR'19) on pre-extracted features: paper defaults (4 stages x 10 layers,
64 maps, dropout 0.5). Offline: every output frame sees the whole video (lookahead None)."""

from dataclasses import dataclass

from streamseg.models import MSTCN


@dataclass
class Params:
    num_stages: int = 4
    num_layers: int = 10
    num_maps: int = 64
    dropout: float = 0.5


def build_model(p: Params, in_channels: int, num_classes: int) -> MSTCN:
    return MSTCN(in_channels, num_classes, p.num_stages, p.num_layers, p.num_maps, p.dropout)
