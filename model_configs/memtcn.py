"""MemoryTCN: the causal streaming MS-TCN (SVTAS's memory TCN, made exact): causal dilated convolutions
that keep their left context in the state, so chunk-by-chunk inference equals one pass (lookahead 0)."""

from dataclasses import dataclass

from streamseg.models import MemoryTCN


@dataclass
class Params:
    num_stages: int = 2
    num_layers: int = 10
    num_maps: int = 64
    dropout: float = 0.5


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_stages=3, num_layers=4, num_maps=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> MemoryTCN:
    return MemoryTCN(in_channels, num_classes, p.num_stages, p.num_layers, p.num_maps, p.dropout)
