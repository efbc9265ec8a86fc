"""MS-TCN (Farha & Gall, CVPR 2019): the offline multi-stage temporal convolutional network.

Layer for layer the official model (yabufarha/ms-tcn, ``model.py``): every stage is a 1x1 conv in,
``num_layers`` dilated residual layers (kernel 3, dilation ``2**i``, 'same' padding) and a 1x1 conv out;
stage s > 1 reads ``softmax(stage s-1 logits) * mask``. Parameter names and counts match the official
``MultiStageModel`` (796,780 parameters for 2048-d input and 11 classes).

One deliberate difference: the output of each stage's input 1x1 conv is multiplied by the mask.
The official code leaves it unmasked, so in a padded batch the conv bias at padding frames leaks into
the last valid frames through the first dilated conv. On an unpadded video (the official batch size 1)
the two are identical; with the mask, padding never changes a valid frame's logits.

The model needs the whole video (``lookahead = None``) and keeps no state between calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DilatedResidualLayer", "SingleStageTCN", "MSTCN"]


def _full_mask(x: Tensor) -> Tensor:
    """A mask of ones, (B, 1, T), for a call without one."""
    return x.new_ones(x.shape[0], 1, x.shape[-1])


def check_input(x: Tensor, mask: Tensor | None, in_channels: int, where: str) -> Tensor:
    """Check ``x`` (B, C, T) and ``mask`` (B, 1, T); return the mask (ones when None)."""
    if x.dim() != 3 or x.shape[1] != in_channels:
        raise ValueError(f"{where}: expected x of shape (B, {in_channels}, T), got {tuple(x.shape)}")
    if mask is None:
        return _full_mask(x)
    if mask.shape != (x.shape[0], 1, x.shape[2]):
        raise ValueError(
            f"{where}: expected mask of shape (B, 1, T) = {(x.shape[0], 1, x.shape[2])}, got {tuple(mask.shape)}"
        )
    return mask.to(x.dtype)


class DilatedResidualLayer(nn.Module):
    """relu(dilated conv k=3) -> 1x1 conv -> dropout, added to the input, times the mask.

    Shapes: ``x`` (B, C, T), ``mask`` (B, 1, T) -> (B, C, T). Receptive field grows by ``2 * dilation``.
    """

    def __init__(self, dilation: int, channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        # padding = dilation keeps T for kernel 3: one tap `dilation` frames back, one forward.
        self.conv_dilated = nn.Conv1d(channels, channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.conv_1x1 = nn.Conv1d(channels, channels, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out = self.dropout(self.conv_1x1(F.relu(self.conv_dilated(x))))
        return (x + out) * mask


class SingleStageTCN(nn.Module):
    """One MS-TCN stage: (B, in_channels, T) -> logits (B, num_classes, T), zero at masked frames."""

    def __init__(self, in_channels: int, num_classes: int, num_layers: int, num_maps: int, dropout: float) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv1d(in_channels, num_maps, kernel_size=1)
        self.layers = nn.ModuleList(DilatedResidualLayer(2**i, num_maps, dropout) for i in range(num_layers))
        self.conv_out = nn.Conv1d(num_maps, num_classes, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out = self.conv_1x1(x) * mask  # masked here (not in the official code): see the module docstring
        for layer in self.layers:
            out = layer(out, mask)
        return self.conv_out(out) * mask


class MSTCN(nn.Module):
    """Multi-stage TCN over a whole video.

    Args:
        in_channels: feature dimension D of the input (2048 for the I3D features of the MS-TCN bundle).
        num_classes: K.
        num_stages: S, stages in the cascade (paper: 4).
        num_layers: dilated residual layers per stage (paper: 10, dilations 1..512, receptive field
            ``1 + 2 * (2**num_layers - 1)`` = 2047 frames per stage).
        num_maps: channels inside a stage (paper: 64).
        dropout: dropout probability after each layer's 1x1 conv (paper: 0.5).

    ``forward(x (B, D, T), state=(), mask (B, 1, T) float | None) -> (logits (S, B, K, T), ())``.
    """

    lookahead: int | None = None  # every output frame sees the whole video

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_stages: int = 4,
        num_layers: int = 10,
        num_maps: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_stages < 1 or num_layers < 1:
            raise ValueError(f"MSTCN: num_stages and num_layers must be >= 1, got {num_stages}, {num_layers}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stage1 = SingleStageTCN(in_channels, num_classes, num_layers, num_maps, dropout)
        self.stages = nn.ModuleList(
            SingleStageTCN(num_classes, num_classes, num_layers, num_maps, dropout) for _ in range(num_stages - 1)
        )

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "MSTCN.forward")
        out = self.stage1(x, mask)
        outputs = [out]
        for stage in self.stages:
            out = stage(F.softmax(out, dim=1) * mask, mask)
            outputs.append(out)
        return torch.stack(outputs, dim=0), ()
