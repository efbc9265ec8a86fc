"""TSM + MemoryTCN: a frame encoder followed by a streaming head, trained end to end on RGB frames.

SVTAS's paper model is MobileNetV2-TSM -> average pool -> MemoryTCN (1 stage, 4 layers, 64 maps); the
variant functions below fill those defaults. With the causal TSM the whole model is causal and streams
chunk by chunk exactly; with the bidirectional TSM it looks ``encoder.lookahead`` frames ahead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamseg.models.framewise import FramewiseHead
from streamseg.models.memtcn import MemoryTCN
from streamseg.models.tsm import tsm_mobilenet_v2, tsm_resnet50

__all__ = ["TSMMemoryTCN", "EncoderHead", "tsm_memtcn_mobilenet_v2", "tsm_memtcn_resnet50", "tsm_framewise_mobilenet_v2"]


class TSMMemoryTCN(nn.Module):
    """``encoder`` (frames -> features) then ``head`` (features -> stage logits), one streaming model.

    Args:
        encoder: frames (B, 3, T, H, W) -> features (B, D, T) with attributes ``out_channels``, ``lookahead``,
            ``num_state_tensors`` and ``init_state`` (:class:`TSMEncoder`, :class:`VideoEncoder`, ...).
        head: any contract model on features with attributes ``in_channels`` (== ``encoder.out_channels``),
            ``num_classes`` and ``lookahead`` (:class:`MemoryTCN`, :class:`FramewiseHead`, ...).

    State: the encoder's tensors, then the head's, in one tuple. ``lookahead`` is the sum of the two
    (None if either is None). ``forward(x (B, 3, T, H, W), state, mask (B, 1, T) | None)`` ->
    ``(logits (S, B, K, T), new_state)``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        if head.in_channels != encoder.out_channels:
            raise ValueError(
                f"TSMMemoryTCN: head expects {head.in_channels} input channels, encoder gives {encoder.out_channels}"
            )
        self.encoder = encoder
        self.head = head
        self.num_classes = head.num_classes
        self.lookahead: int | None = (
            None if encoder.lookahead is None or head.lookahead is None else encoder.lookahead + head.lookahead
        )

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        return self.encoder.init_state(batch_size, device) + self.head.init_state(batch_size, device)

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        split = self.encoder.num_state_tensors
        features, encoder_state = self.encoder(x, tuple(state[:split]), mask)
        logits, head_state = self.head(features, tuple(state[split:]), mask)
        return logits, encoder_state + head_state


# The same composition under a name that fits any encoder (e.g. the video backbones of `video_backbones`).
EncoderHead = TSMMemoryTCN


def tsm_memtcn_mobilenet_v2(
    num_classes: int,
    num_stages: int = 1,
    num_layers: int = 4,
    num_maps: int = 64,
    dropout: float = 0.5,
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
    num_blocks: int | None = None,
) -> TSMMemoryTCN:
    """MobileNetV2-TSM (D = 1280) + MemoryTCN; defaults are SVTAS's paper model (1 stage, 4 layers, 64 maps).
    ``num_blocks``: the encoder keeps MobileNetV2's first N feature blocks only (see `tsm_mobilenet_v2`)."""
    encoder = tsm_mobilenet_v2(shift_div=shift_div, causal=causal, weights=weights, frame_size=frame_size,
                               num_blocks=num_blocks)
    head = MemoryTCN(encoder.out_channels, num_classes, num_stages, num_layers, num_maps, dropout)
    return TSMMemoryTCN(encoder, head)


def tsm_memtcn_resnet50(
    num_classes: int,
    num_stages: int = 1,
    num_layers: int = 4,
    num_maps: int = 64,
    dropout: float = 0.5,
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
) -> TSMMemoryTCN:
    """ResNet-50-TSM (D = 2048) + MemoryTCN."""
    encoder = tsm_resnet50(shift_div=shift_div, causal=causal, weights=weights, frame_size=frame_size)
    head = MemoryTCN(encoder.out_channels, num_classes, num_stages, num_layers, num_maps, dropout)
    return TSMMemoryTCN(encoder, head)


def tsm_framewise_mobilenet_v2(
    num_classes: int,
    hidden_channels: int | None = None,
    dropout: float = 0.5,
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
    shift: bool = True,
) -> TSMMemoryTCN:
    """MobileNetV2(-TSM) + a frame-wise head; with ``shift=False`` no temporal context at all (the
    frame-wise baseline of the same backbone)."""
    encoder = tsm_mobilenet_v2(shift_div=shift_div, causal=causal, weights=weights, frame_size=frame_size,
                               shift=shift)
    return TSMMemoryTCN(encoder, FramewiseHead(encoder.out_channels, num_classes, hidden_channels, dropout))
