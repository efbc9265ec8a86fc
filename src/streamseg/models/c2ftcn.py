"""C2F-TCN (Singhania, Rahaman & Yao, 2021): a coarse-to-fine temporal U-Net with an ensemble of its
decoder outputs.

Layer for layer the official model (dipika-singhania/C2F-TCN, ``model.py``, ``C2F_TCN``):

* encoder: a double conv (two k=5 convs, each with BatchNorm and ReLU) to ``wide`` = 256 channels, then
  six "down" blocks (max-pool by 2, double conv) to 256, 256, 128, 128, 128, 128 channels: T / 64;
* temporal pyramid pooling at the bottom: max-pools of 2, 3, 5 and 6, each through one shared 1x1 conv
  to 1 channel and linearly upsampled back, concatenated with the input (128 + 4 channels);
* decoder: six "up" blocks (linear upsampling by 2, zero-pad to the skip's length, concatenate the skip,
  double conv to 128), each but the last followed by a ReLU and a 1x1 conv to K (``outcc0..4``), the
  last by ``outcc`` (no ReLU);
* ensemble: ``softmax`` of the full-resolution output and of the decoder outputs linearly upsampled to
  T, weighted by ``ensemble_weights`` (official ``[1, 1, 1, 1, 0, 0]``: the final output and the three
  finest decoder outputs) and normalised. The model returns one stage: ``log(ensemble + 1e-10)``,
  exactly what the official loss feeds to its CE and T-MSE, so the generic MS-TCN loss trains it as
  the official code does.

Parameter count for 2048-d input (the 6 official unused ``weights`` count too), K classes:

    double conv (i -> o): i*o*5 + o + 2*o (BN) + o*o*5 + o + 2*o
    inc 2048->256: 2,950,656; down1, down2 256->256: 656,896 each; down3 256->128: 246,528;
    down4..6 128->128: 164,608 each; up 260->128: 249,088; up0, up1 256->128: 246,528 each;
    up2..4 384->128: 328,448 each; TPP conv 128 + 1 = 129; weights 6; 6 heads (128*K + K)
    K = 11: 6,732,294 + 6 * 1,419 + 129 = 6,740,937 (19: 6,747,129; 48: 6,769,575)

Input length. The official data loader zero-pads every sample to a fixed ``max_frames_per_video``
(1200 Breakfast, 600 GTEA, 960 50Salads) and cuts longer videos into windows of that length, each a
separate sample. This model does the same internally: it zeroes masked frames, pads the video to a
multiple of ``window`` and runs each window on its own, so the logits do not depend on the padding of
the batch (in eval mode; in training, BatchNorm sees the batch). ``window`` must be >= 384 = 64 * 6 so
the bottom level (T / 64) is long enough for the pyramid's largest pool (6).

The official input, each frame the maximum of the features over a group of 10 / 4 / 20 frames, is the
dataset's ``sample_rate`` with ``data.pooling = "max"``; a window of W pooled frames is then the official
window of W x sample_rate original frames. The official test-time augmentation over several group sizes is
``data.test_rates`` (engine, ``SegmentationModule``), its training-time zoom augmentation
``data.zoom_augment`` (``streamseg.data.zoom``).

The model needs the whole video (``lookahead = None``) and keeps no state between calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mstcn import check_input

__all__ = ["C2FTCN"]

_MIN_WINDOW = 64 * 6  # 6 halvings, then the pyramid's largest max-pool (6) needs 6 frames


class DoubleConv(nn.Module):
    """(k=5 conv, BatchNorm, ReLU) x 2: (B, i, T) -> (B, o, T). ``conv`` is a Sequential (official names)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=5, padding=2),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(),
            nn.Conv1d(out_channels, out_channels, kernel_size=5, padding=2),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class InConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Down(nn.Module):
    """Max-pool by 2 (floor), then a double conv: (B, i, T) -> (B, o, T // 2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.max_pool_conv = nn.Sequential(nn.MaxPool1d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.max_pool_conv(x)


class Up(nn.Module):
    """Upsample x1 by 2 (linear, align_corners), zero-pad it to the skip x2's length, concatenate
    ``[x2, x1]``, double conv: -> (B, o, T2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        x1 = F.interpolate(x1, scale_factor=2, mode="linear", align_corners=True)
        diff = x2.shape[-1] - x1.shape[-1]
        x1 = F.pad(x1, [diff // 2, diff - diff // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TPPBlock(nn.Module):
    """Temporal pyramid pooling: (B, C, T) -> (B, C + 4, T); T must be >= 6."""

    POOLS = (2, 3, 5, 6)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 1, kernel_size=1)  # shared by the four pools

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-1]
        levels = [
            F.interpolate(self.conv(F.max_pool1d(x, p, p)), size=t, mode="linear", align_corners=True)
            for p in self.POOLS
        ]
        return torch.cat([*levels, x], dim=1)


class C2FTCN(nn.Module):
    """C2F-TCN over a whole video, in windows of ``window`` frames.

    Args:
        in_channels: feature dimension D. num_classes: K.
        window: frames per window (official ``max_frames_per_video``: 1200 / 600 / 960), >= 384.
        ensemble_weights: weights of (final output, decoder outputs finest to coarsest), official
            (1, 1, 1, 1, 0, 0).
        wide, narrow: channel widths (official 256 and 128; smaller values for quick experiments).

    ``forward(x (B, D, T), state=(), mask (B, 1, T) | None) -> (log-probabilities (1, B, K, T), ())``,
    zero at masked frames.
    """

    lookahead: int | None = None  # every output frame sees its whole window

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        window: int = 1200,
        ensemble_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0),
        wide: int = 256,
        narrow: int = 128,
    ) -> None:
        super().__init__()
        if window < _MIN_WINDOW:
            raise ValueError(f"C2FTCN: window must be >= {_MIN_WINDOW} (64 * 6), got {window}")
        if len(ensemble_weights) != 6 or sum(ensemble_weights) <= 0:
            raise ValueError(f"C2FTCN: ensemble_weights must be 6 values with a positive sum, got {ensemble_weights}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.window = window
        self.ensemble_weights = tuple(float(w) for w in ensemble_weights)
        self.inc = InConv(in_channels, wide)
        self.down1 = Down(wide, wide)
        self.down2 = Down(wide, wide)
        self.down3 = Down(wide, narrow)
        self.down4 = Down(narrow, narrow)
        self.down5 = Down(narrow, narrow)
        self.down6 = Down(narrow, narrow)
        self.up = Up(narrow + narrow + len(TPPBlock.POOLS), narrow)  # skip + TPP output: 128 + 132 = 260
        self.outcc0 = OutConv(narrow, num_classes)
        self.up0 = Up(2 * narrow, narrow)
        self.outcc1 = OutConv(narrow, num_classes)
        self.up1 = Up(2 * narrow, narrow)
        self.outcc2 = OutConv(narrow, num_classes)
        self.up2 = Up(wide + narrow, narrow)  # skips from the 256-channel levels: 384
        self.outcc3 = OutConv(narrow, num_classes)
        self.up3 = Up(wide + narrow, narrow)
        self.outcc4 = OutConv(narrow, num_classes)
        self.up4 = Up(wide + narrow, narrow)
        self.outcc = OutConv(narrow, num_classes)
        self.tpp = TPPBlock(narrow)
        # Declared but never used by the official model; kept (frozen) for its state dict and count.
        self.weights = nn.Parameter(torch.ones(6), requires_grad=False)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def unet(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The official forward on one window batch: (N, D, W) -> (logits (N, K, W), decoder logits
        finest to coarsest [(N, K, W/2), (N, K, W/4), ..., (N, K, W/32)])."""
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        x7 = self.tpp(self.down6(x6))
        x = self.up(x7, x6)
        y1 = self.outcc0(F.relu(x))
        x = self.up0(x, x5)
        y2 = self.outcc1(F.relu(x))
        x = self.up1(x, x4)
        y3 = self.outcc2(F.relu(x))
        x = self.up2(x, x3)
        y4 = self.outcc3(F.relu(x))
        x = self.up3(x, x2)
        y5 = self.outcc4(F.relu(x))
        x = self.up4(x, x1)
        return self.outcc(x), [y5, y4, y3, y2, y1]

    def ensemble(self, y: Tensor, decoder_outputs: list[Tensor]) -> Tensor:
        """Weighted mean of the softmax of every output, upsampled to y's length: (N, K, W) probabilities."""
        total = sum(self.ensemble_weights)
        prob = F.softmax(y, dim=1) * (self.ensemble_weights[0] / total)
        for w, out in zip(self.ensemble_weights[1:], decoder_outputs):
            up = F.interpolate(out, size=y.shape[-1], mode="linear", align_corners=True)
            prob = prob + F.softmax(up, dim=1) * (w / total)
        return prob

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "C2FTCN.forward")
        batch, dim, length = x.shape
        n = (length + self.window - 1) // self.window  # windows per video
        w = self.window
        # Masked frames are zeros, as the official zero padding; every window is its own sample.
        xw = F.pad(x * mask, (0, n * w - length)).reshape(batch, dim, n, w).permute(0, 2, 1, 3).reshape(batch * n, dim, w)
        prob = self.ensemble(*self.unet(xw))  # (B * n, K, w)
        prob = prob.reshape(batch, n, -1, w).permute(0, 2, 1, 3).reshape(batch, -1, n * w)[:, :, :length]
        logits = torch.log(prob + 1e-10) * mask  # the official loss's input; argmax = the ensemble's
        return logits.unsqueeze(0), ()
