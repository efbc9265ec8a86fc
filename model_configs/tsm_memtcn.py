"""SVTAS's "TSM + MemoryTCN", made causal: a temporal-shift MobileNetV2 frame encoder whose shifts only
look back (shift buffers in the state) and a MemoryTCN head (dilated causal convolutions with cached left
context). Chunk-by-chunk inference equals one pass; lookahead 0. `causal=False` gives the paper's
bidirectional shift (lookahead = 10 frames, one per shift layer, and no state across chunks)."""

from dataclasses import dataclass

from streamseg.models import TSMMemoryTCN, tsm_memtcn_mobilenet_v2


@dataclass
class Params:
    num_stages: int = 1
    num_layers: int = 4  # SVTAS: 1 stage x 4 layers x 64 maps
    num_maps: int = 64
    dropout: float = 0.5
    shift_div: int = 8  # 1/8 of the channels shifted per direction (TSM paper)
    causal: bool = True
    weights: str | None = None  # a local torchvision MobileNetV2 state dict (e.g. ImageNet); no downloads
    frame_size: tuple[int, ...] = (224, 224)  # must equal data.frame_size
    num_blocks: int | None = None  # MobileNetV2 feature blocks kept (None: all 19); 4 = a tiny CPU encoder


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_layers=3, num_maps=8, frame_size=(16, 16), num_blocks=4)


def build_model(p: Params, in_channels: int, num_classes: int) -> TSMMemoryTCN:
    return tsm_memtcn_mobilenet_v2(num_classes, p.num_stages, p.num_layers, p.num_maps, p.dropout,
                                   shift_div=p.shift_div, causal=p.causal, weights=p.weights,
                                   frame_size=tuple(p.frame_size), num_blocks=p.num_blocks)
