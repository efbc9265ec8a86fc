"""MemoryTCN: the causal, streaming MS-TCN (after SVTAS's ``MemoryTCNHead``, written afresh).

Same blocks as :mod:`streamseg.models.mstcn`, but every dilated conv is causal: output frame t sees input
frames t - 2d, t - d and t (kernel 3, dilation d), never the future. Each layer keeps the last ``2 * d``
frames of its input as state, so running a video chunk by chunk with the state carried gives the same
logits as running it whole (zeros before the first frame in both cases).

State: one tensor per layer per stage, in stage-major order, each (B, num_maps, 2 * 2**i) for layer i:
with 10 layers that is 2 * (2**10 - 1) = 2046 frames of 64 channels per stage. The batch is on dim 0,
so resetting one stream slot means writing row b of the :meth:`MemoryTCN.init_state` tensors (zeros).
The new state is *not* detached: truncated back-propagation is the engine's choice.

Differences from SVTAS: dilations grow ``2**i`` as in MS-TCN (SVTAS reverses them), dropout instead of
BatchNorm, several stages allowed, and padding frames masked as in MS-TCN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamseg.models.mstcn import check_input

__all__ = ["CausalDilatedResidualLayer", "CausalStageTCN", "MemoryTCN"]


class CausalDilatedResidualLayer(nn.Module):
    """Causal relu(dilated conv k=3) -> 1x1 -> dropout, plus the input, times the mask.

    ``forward(x (B, C, T), mask (B, 1, T), memory (B, C, 2 * dilation))`` ->
    ``(out (B, C, T), new_memory (B, C, 2 * dilation))``; ``memory`` holds the input frames just before x.
    """

    def __init__(self, dilation: int, channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dilation = dilation
        self.memory_frames = 2 * dilation  # kernel 3 reaches (3 - 1) * dilation frames back
        self.conv_dilated = nn.Conv1d(channels, channels, kernel_size=3, dilation=dilation)  # no padding
        self.conv_1x1 = nn.Conv1d(channels, channels, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        # Prepending the memory makes the unpadded conv return exactly T causal outputs.
        extended = torch.cat([memory.to(x.dtype), x], dim=-1)  # (B, C, 2d + T)
        out = self.dropout(self.conv_1x1(F.relu(self.conv_dilated(extended))))
        return (x + out) * mask, extended[..., -self.memory_frames :]


class CausalStageTCN(nn.Module):
    """One causal stage: (B, in_channels, T) -> logits (B, num_classes, T), zero at masked frames."""

    def __init__(self, in_channels: int, num_classes: int, num_layers: int, num_maps: int, dropout: float) -> None:
        super().__init__()
        self.num_maps = num_maps
        self.conv_1x1 = nn.Conv1d(in_channels, num_maps, kernel_size=1)
        self.layers = nn.ModuleList(CausalDilatedResidualLayer(2**i, num_maps, dropout) for i in range(num_layers))
        self.conv_out = nn.Conv1d(num_maps, num_classes, kernel_size=1)

    def init_state(self, batch_size: int, device: torch.device | str | None) -> list[Tensor]:
        return [torch.zeros(batch_size, self.num_maps, layer.memory_frames, device=device) for layer in self.layers]

    def forward(self, x: Tensor, mask: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        out = self.conv_1x1(x) * mask
        new_state = []
        for layer, memory in zip(self.layers, state):
            out, memory = layer(out, mask, memory)
            new_state.append(memory)
        return self.conv_out(out) * mask, new_state


class MemoryTCN(nn.Module):
    """Causal multi-stage TCN that streams chunk by chunk.

    Args:
        in_channels: feature dimension D of the input.
        num_classes: K.
        num_stages: S (SVTAS's streaming model uses 1).
        num_layers: causal dilated residual layers per stage (dilations 1, 2, ..., 2**(num_layers-1);
            a stage looks ``2 * (2**num_layers - 1)`` frames into the past).
        num_maps: channels inside a stage.
        dropout: dropout probability after each layer's 1x1 conv.

    ``forward(x (B, D, T), state, mask (B, 1, T) float | None) -> (logits (S, B, K, T), new_state)``.
    """

    lookahead: int | None = 0  # causal

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_stages: int = 1,
        num_layers: int = 10,
        num_maps: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_stages < 1 or num_layers < 1:
            raise ValueError(f"MemoryTCN: num_stages and num_layers must be >= 1, got {num_stages}, {num_layers}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.stages = nn.ModuleList(
            CausalStageTCN(in_channels if s == 0 else num_classes, num_classes, num_layers, num_maps, dropout)
            for s in range(num_stages)
        )

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Zeros: S * num_layers tensors, layer i of each stage (batch_size, num_maps, 2 * 2**i)."""
        return tuple(t for stage in self.stages for t in stage.init_state(batch_size, device))

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "MemoryTCN.forward")
        expected = len(self.stages) * self.num_layers
        if len(state) != expected:
            raise ValueError(
                f"MemoryTCN.forward: expected a state of {expected} tensors (from init_state), got {len(state)}"
            )
        outputs: list[Tensor] = []
        new_state: list[Tensor] = []
        out = x
        for s, stage in enumerate(self.stages):
            stage_in = out if s == 0 else F.softmax(out, dim=1) * mask
            out, stage_state = stage(stage_in, mask, list(state[s * self.num_layers : (s + 1) * self.num_layers]))
            outputs.append(out)
            new_state.extend(stage_state)
        return torch.stack(outputs, dim=0), tuple(new_state)
