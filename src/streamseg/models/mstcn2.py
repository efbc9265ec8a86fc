"""MS-TCN++ (Li, Abu Farha, Liu, Cheng & Gall, TPAMI 2020): a dual-dilated prediction-generation stage
followed by MS-TCN refinement stages.

Layer for layer the official model (sj-li/MS-TCN2, ``model.py``, ``MS_TCN2``):

* prediction generation (``PG``): a 1x1 conv in, then ``num_layers_pg`` layers, each with two dilated
  k=3 convs read from the same input, one with dilation ``2**(L-1-i)`` (large first) and one with
  ``2**i`` (small first), concatenated and fused by a 1x1 conv, ReLU, dropout, plus the layer's input;
  a 1x1 conv out;
* ``num_refinements`` refinement stages (``Rs``), each an MS-TCN single stage (:class:`SingleStageTCN`)
  reading ``softmax(previous stage)``.

Parameter names are the official ones, so ``load_state_dict`` takes an official checkpoint as it is.
Parameter count for 2048-d input, 64 maps, PG 11 layers, 3 refinements x 10 layers, K classes:

    PG:  conv_1x1_in 2048*64 + 64 = 131,136
         per layer: 2 dilated convs 2 * (64*64*3 + 64) = 24,704 + fusion 128*64 + 64 = 8,256 -> 32,960
         11 layers: 362,560;  conv_out 64*K + K
    R:   conv_1x1 K*64 + 64;  10 layers * (64*64*3 + 64 + 64*64 + 64 = 16,512) = 165,120;  conv_out 64*K + K
    K = 11: 131,136 + 362,560 + 715 + 3 * (768 + 165,120 + 715) = 994,220 (19: 997,836; 48: 1,010,944)

One deliberate difference, as in :mod:`streamseg.models.mstcn`: the official code does not use the
mask at all (it trains with batch size 1); here every layer's output is multiplied by the mask, so
padding never changes a valid frame's logits. On an unpadded video the two are identical.

The model needs the whole video (``lookahead = None``) and keeps no state between calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mstcn import SingleStageTCN, check_input

__all__ = ["PredictionGeneration", "MSTCN2"]


class PredictionGeneration(nn.Module):
    """The MS-TCN++ first stage: (B, in_channels, T) -> logits (B, num_classes, T), zero at masked frames.

    Layer i sees dilations ``2**(num_layers-1-i)`` and ``2**i`` at once, so every layer mixes a short and
    a long temporal context (the receptive field is that of the 2**i branch, 2 * (2**L - 1) + 1 frames).
    """

    def __init__(self, in_channels: int, num_classes: int, num_layers: int, num_maps: int, dropout: float) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.conv_1x1_in = nn.Conv1d(in_channels, num_maps, kernel_size=1)
        # padding = dilation keeps T for kernel 3
        self.conv_dilated_1 = nn.ModuleList(
            nn.Conv1d(num_maps, num_maps, 3, padding=2 ** (num_layers - 1 - i), dilation=2 ** (num_layers - 1 - i))
            for i in range(num_layers)
        )
        self.conv_dilated_2 = nn.ModuleList(
            nn.Conv1d(num_maps, num_maps, 3, padding=2**i, dilation=2**i) for i in range(num_layers)
        )
        self.conv_fusion = nn.ModuleList(nn.Conv1d(2 * num_maps, num_maps, kernel_size=1) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv1d(num_maps, num_classes, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        f = self.conv_1x1_in(x) * mask
        for d1, d2, fuse in zip(self.conv_dilated_1, self.conv_dilated_2, self.conv_fusion):
            out = self.dropout(F.relu(fuse(torch.cat([d1(f), d2(f)], dim=1))))
            f = (f + out) * mask
        return self.conv_out(f) * mask


class MSTCN2(nn.Module):
    """MS-TCN++ over a whole video.

    Args:
        in_channels: feature dimension D (2048 for the I3D features of the MS-TCN bundle).
        num_classes: K.
        num_layers_pg: layers of the prediction-generation stage (paper: 11).
        num_layers_r: dilated residual layers per refinement stage (paper: 10).
        num_refinements: refinement stages (paper: 3); the output has ``1 + num_refinements`` stages.
        num_maps: channels inside every stage (paper: 64).
        dropout: dropout probability after each layer (paper: 0.5).

    ``forward(x (B, D, T), state=(), mask (B, 1, T) float | None) -> (logits (S, B, K, T), ())``.
    """

    lookahead: int | None = None  # every output frame sees the whole video

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_layers_pg: int = 11,
        num_layers_r: int = 10,
        num_refinements: int = 3,
        num_maps: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_layers_pg < 1 or num_layers_r < 1 or num_refinements < 0:
            raise ValueError(
                "MSTCN2: num_layers_pg and num_layers_r must be >= 1 and num_refinements >= 0, "
                f"got {num_layers_pg}, {num_layers_r}, {num_refinements}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.PG = PredictionGeneration(in_channels, num_classes, num_layers_pg, num_maps, dropout)
        self.Rs = nn.ModuleList(
            SingleStageTCN(num_classes, num_classes, num_layers_r, num_maps, dropout) for _ in range(num_refinements)
        )

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "MSTCN2.forward")
        out = self.PG(x, mask)
        outputs = [out]
        for stage in self.Rs:
            out = stage(F.softmax(out, dim=1) * mask, mask)
            outputs.append(out)
        return torch.stack(outputs, dim=0), ()
