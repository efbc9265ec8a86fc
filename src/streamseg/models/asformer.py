"""ASFormer (Yi, Wen & Jiang, BMVC 2021): a transformer encoder and decoders for action segmentation.

Layer for layer the official model (ChinaYi/ASFormer, ``model.py``, ``MyTransformer``):

* encoder: channel masking (whole input channels dropped, rate 0.3; 0.5 on GTEA), a 1x1 conv in,
  ``num_layers`` blocks, a 1x1 conv out;
* ``num_decoders`` decoders reading ``softmax(previous logits)``, whose attention takes its values from
  the previous encoder/decoder's features; decoder s weighs its attention by ``alpha = exp(-3 s)``;
* block i (dilation and attention window ``bl = 2**i``): a dilated k=3 conv + ReLU (the "feed-forward"),
  instance norm, sliding-window attention with queries/keys/values reduced by r1 = r2 = 2, added
  (times alpha) to the feed-forward output, a 1x1 conv, dropout 0.5, plus the block's input.

Sliding-window attention: frames are cut into blocks of ``bl``; block j's queries attend to the keys
in ``[j*bl - bl//2, (j+1)*bl + bl//2)``, zero-padded at the ends, with padded/masked keys weighed
``log(1e-6)`` before the softmax and zeroed after it (no renormalisation), as in the official code.

**The official window mask is kept as it is** (the ASFormer README says so too: the released checkpoints
were trained with it). It was meant to be a band (query q of a block sees keys q..q+bl of its window),
but it sets whole columns, so every query of a block sees *all* ``bl + 2*(bl//2)`` keys of its window
except the last one. :func:`official_window_mask` builds it exactly as the official code does.

Parameter names are the official ones, so ``load_state_dict`` takes an official checkpoint as it is.
Parameter count for 2048-d input, 64 maps, 10 layers, 3 decoders, r1 = r2 = 2, K classes:

    block: feed-forward 64*64*3 + 64 = 12,352; q, k, v 3 * (64*32 + 32) = 6,240; attention out
           32*64 + 64 = 2,112; 1x1 conv 64*64 + 64 = 4,160 -> 24,864; 10 blocks: 248,640
    encoder: 2048*64 + 64 = 131,136 + 248,640 + conv_out 64*K + K
    decoder: K*64 + 64 + 248,640 + 64*K + K
    K = 11: 131,136 + 248,640 + 715 + 3 * (768 + 248,640 + 715) = 1,130,860 (19: 1,134,476; 48: 1,147,584)

Deliberate differences, each invisible on an unpadded video (the official batch size is 1, and its
sliding attention asserts it), each needed so that padding never changes a valid frame's logits:
the 1x1 conv in's output is multiplied by the mask; instance norm statistics are taken over valid
frames only; keys at masked frames are zeroed (so they score exactly as the official zero padding).
Any batch size works. The unused ``PositionalEncoding``, ``MultiHeadAttLayer`` and block/normal attention
variants of the official file are not reproduced (the paper model uses none of them).

The model needs the whole video (``lookahead = None``) and keeps no state between calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mstcn import check_input

__all__ = ["ASFormer", "official_window_mask", "masked_instance_norm"]


def official_window_mask(bl: int, device: torch.device | str | None = None) -> Tensor:
    """The official sliding-window mask, (bl, bl + 2 * (bl // 2)), with its known defect kept.

    The official loop ``for i in range(bl): window_mask[:, :, i:i+bl] = 1`` writes whole columns, so
    every row is the same: ones in columns ``[0, 2*bl - 1)`` (clipped to the window width).
    """
    width = bl + 2 * (bl // 2)
    mask = torch.zeros(bl, width, device=device)
    for i in range(bl):
        mask[:, i : i + bl] = 1  # the official code, as is: columns, not the band mask[i, i:i+bl]
    return mask


def masked_instance_norm(x: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """Instance norm over time using valid frames only: x (B, C, T), mask (B, 1, T) -> (B, C, T).

    Equals ``nn.InstanceNorm1d(C)`` (no affine, biased variance, eps 1e-5) when the mask is all ones.
    """
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (x * mask).sum(dim=-1, keepdim=True) / count
    var = (((x - mean) * mask) ** 2).sum(dim=-1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps)


class AttLayer(nn.Module):
    """Sliding-window attention with window ``bl``: queries/keys from x1, values from x2 (decoder) or x1.

    Shapes: x1 (B, C, T), x2 (B, C, T) | None, mask (B, 1, T) -> (B, C, T), zero at masked frames.
    """

    def __init__(self, channels: int, r1: int, r2: int, bl: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv1d(channels, channels // r1, kernel_size=1)
        self.key_conv = nn.Conv1d(channels, channels // r1, kernel_size=1)
        self.value_conv = nn.Conv1d(channels, channels // r2, kernel_size=1)
        self.conv_out = nn.Conv1d(channels // r2, channels, kernel_size=1)
        self.bl = bl

    def forward(self, x1: Tensor, x2: Tensor | None, mask: Tensor) -> Tensor:
        bl = self.bl
        q = self.query_conv(x1)
        k = self.key_conv(x1) * mask  # masked keys score 0, exactly like the zero padding
        v = self.value_conv(x1 if x2 is None else x2)
        batch, cq, length = q.shape
        nb = (length + bl - 1) // bl  # blocks of bl frames, the last one zero-padded
        pad = nb * bl - length
        half = bl // 2
        width = bl + 2 * half  # keys a block attends to: bl//2 either side of it
        # queries: (B * nb, cq, bl)
        q = F.pad(q, (0, pad)).reshape(batch, cq, nb, bl).permute(0, 2, 1, 3).reshape(batch * nb, cq, bl)

        def windows(t: Tensor) -> Tensor:  # (B, c, T) -> (B * nb, c, width)
            t = F.pad(t, (half, pad + half))
            t = t.unfold(2, width, bl)  # (B, c, nb, width)
            return t.permute(0, 2, 1, 3).reshape(batch * nb, t.shape[1], width)

        k, v, valid = windows(k), windows(v), windows(mask)
        final_mask = official_window_mask(bl, q.device).unsqueeze(0) * valid  # (B * nb, bl, width)
        energy = torch.bmm(q.transpose(1, 2), k) / math.sqrt(cq)  # (B * nb, bl, width)
        attention = F.softmax(energy + torch.log(final_mask + 1e-6), dim=-1) * final_mask
        out = torch.bmm(v, attention.transpose(1, 2))  # (B * nb, cv, bl)
        out = self.conv_out(F.relu(out))
        out = out.reshape(batch, nb, -1, bl).permute(0, 2, 1, 3).reshape(batch, -1, nb * bl)
        return out[:, :, :length] * mask


class ConvFeedForward(nn.Module):
    """Dilated k=3 conv + ReLU; ``layer`` is a Sequential for the official parameter names."""

    def __init__(self, dilation: int, channels: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class AttModule(nn.Module):
    """One ASFormer block: (B, C, T) -> (B, C, T), zero at masked frames."""

    def __init__(self, dilation: int, channels: int, r1: int, r2: int, alpha: float, dropout: float = 0.5) -> None:
        super().__init__()
        self.feed_forward = ConvFeedForward(dilation, channels)
        self.att_layer = AttLayer(channels, r1, r2, bl=dilation)
        self.conv_1x1 = nn.Conv1d(channels, channels, kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        self.alpha = alpha

    def forward(self, x: Tensor, f: Tensor | None, mask: Tensor) -> Tensor:
        out = self.feed_forward(x)
        out = self.alpha * self.att_layer(masked_instance_norm(out, mask), f, mask) + out
        out = self.dropout(self.conv_1x1(out))
        return (x + out) * mask


class Encoder(nn.Module):
    """Channel masking, 1x1 conv, blocks, 1x1 conv: (B, D, T) -> (logits (B, K, T), features (B, C, T))."""

    def __init__(
        self, in_channels: int, num_classes: int, num_layers: int, num_maps: int, r1: int, r2: int,
        channel_masking_rate: float,
    ) -> None:
        super().__init__()
        # Dropout1d on (B, D, T) zeroes whole input channels, like the official Dropout2d on (B, D, 1, T).
        self.channel_dropout = nn.Dropout1d(channel_masking_rate)
        self.conv_1x1 = nn.Conv1d(in_channels, num_maps, kernel_size=1)
        self.layers = nn.ModuleList(AttModule(2**i, num_maps, r1, r2, alpha=1.0) for i in range(num_layers))
        self.conv_out = nn.Conv1d(num_maps, num_classes, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.conv_1x1(self.channel_dropout(x)) * mask
        for layer in self.layers:
            feature = layer(feature, None, mask)
        return self.conv_out(feature) * mask, feature


class Decoder(nn.Module):
    """(probabilities (B, K, T), previous features (B, C, T)) -> (logits (B, K, T), features (B, C, T))."""

    def __init__(self, num_classes: int, num_layers: int, num_maps: int, r1: int, r2: int, alpha: float) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv1d(num_classes, num_maps, kernel_size=1)
        self.layers = nn.ModuleList(AttModule(2**i, num_maps, r1, r2, alpha) for i in range(num_layers))
        self.conv_out = nn.Conv1d(num_maps, num_classes, kernel_size=1)

    def forward(self, x: Tensor, f_prev: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.conv_1x1(x) * mask
        for layer in self.layers:
            feature = layer(feature, f_prev, mask)
        return self.conv_out(feature) * mask, feature


class ASFormer(nn.Module):
    """ASFormer over a whole video.

    Args:
        in_channels: feature dimension D (2048 for I3D).
        num_classes: K.
        num_decoders: decoders after the encoder (paper: 3); the output has ``1 + num_decoders`` stages.
        num_layers: blocks per encoder/decoder (paper: 10; windows and dilations 1..512).
        num_maps: channels (paper: 64).
        r1: query/key channel reduction (paper: 2). r2: value channel reduction (paper: 2).
        channel_masking_rate: share of input channels dropped in training (paper: 0.3; 0.5 on GTEA).

    ``forward(x (B, D, T), state=(), mask (B, 1, T) float | None) -> (logits (S, B, K, T), ())``.
    """

    lookahead: int | None = None  # every output frame sees the whole video

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_decoders: int = 3,
        num_layers: int = 10,
        num_maps: int = 64,
        r1: int = 2,
        r2: int = 2,
        channel_masking_rate: float = 0.3,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_decoders < 0:
            raise ValueError(f"ASFormer: num_layers must be >= 1 and num_decoders >= 0, got {num_layers}, {num_decoders}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = Encoder(in_channels, num_classes, num_layers, num_maps, r1, r2, channel_masking_rate)
        # alpha = exp(-3 s): later decoders lean less on attention (official `exponential_descrease`)
        self.decoders = nn.ModuleList(
            Decoder(num_classes, num_layers, num_maps, r1, r2, alpha=math.exp(-3 * s)) for s in range(num_decoders)
        )

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "ASFormer.forward")
        out, feature = self.encoder(x, mask)
        outputs = [out]
        for decoder in self.decoders:
            out, feature = decoder(F.softmax(out, dim=1) * mask, feature * mask, mask)
            outputs.append(out)
        return torch.stack(outputs, dim=0), ()
