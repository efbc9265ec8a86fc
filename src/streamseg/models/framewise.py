"""Frame-wise baseline head: classifies every frame on its own, with no temporal model.

Used as "the same backbone without a temporal model": on pre-extracted features directly, or behind a
frame encoder (see :func:`streamseg.models.tsm_memtcn.tsm_framewise_mobilenet_v2`).
Stateless and causal (``lookahead = 0``): chunked == whole trivially.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamseg.models.mstcn import check_input

__all__ = ["FramewiseHead"]


class FramewiseHead(nn.Module):
    """Per-frame linear classifier, or a one-hidden-layer MLP when ``hidden_channels`` is given.

    Args:
        in_channels: D.
        num_classes: K.
        hidden_channels: width of the hidden layer (ReLU); None for a single linear layer.
        dropout: dropout on the classifier's input.

    ``forward(x (B, D, T), state=(), mask (B, 1, T) | None) -> (logits (1, B, K, T), ())``;
    logits are zero at masked frames, as the MS-TCN heads'.
    """

    lookahead: int | None = 0

    def __init__(
        self, in_channels: int, num_classes: int, hidden_channels: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        if hidden_channels is not None:
            # 1x1 convs over (B, D, T) are per-frame linear layers.
            layers += [nn.Conv1d(in_channels, hidden_channels, kernel_size=1), nn.ReLU()]
            in_channels = hidden_channels
        layers += [nn.Dropout(dropout), nn.Conv1d(in_channels, num_classes, kernel_size=1)]
        self.net = nn.Sequential(*layers)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "FramewiseHead.forward")
        return (self.net(x) * mask).unsqueeze(0), ()
