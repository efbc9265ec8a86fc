"""Frame-wise baseline: a per-frame MLP classifier with no temporal context (lookahead 0)."""

from dataclasses import dataclass

from streamseg.models import FramewiseHead


@dataclass
class Params:
    hidden_channels: int = 64
    dropout: float = 0.5


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(hidden_channels=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> FramewiseHead:
    return FramewiseHead(in_channels, num_classes, p.hidden_channels, p.dropout)
