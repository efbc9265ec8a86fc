"""Frame-wise baseline for end-to-end streaming: the same MobileNetV2 as `tsm_memtcn` but without the
temporal shift and with a per-frame head, so every frame is labelled from its own pixels (lookahead 0)."""

from dataclasses import dataclass

from streamseg.models import TSMMemoryTCN, tsm_framewise_mobilenet_v2


@dataclass
class Params:
    hidden_channels: int | None = None
    dropout: float = 0.5
    weights: str | None = None  # a local torchvision MobileNetV2 state dict; no downloads
    frame_size: tuple[int, ...] = (224, 224)  # must equal data.frame_size


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(hidden_channels=8, frame_size=(16, 16))


def build_model(p: Params, in_channels: int, num_classes: int) -> TSMMemoryTCN:
    return tsm_framewise_mobilenet_v2(num_classes, p.hidden_channels, p.dropout, weights=p.weights,
                                      frame_size=tuple(p.frame_size), shift=False)
