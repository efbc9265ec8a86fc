"""torchvision video backbones (R(2+1)D-18, S3D, MViTv2-S, Swin3D-T) as streaming frame encoders.

These are clip models: every output feature mixes frames before and after it. To stream them with an
honest look-ahead, :class:`VideoEncoder` cuts the stream into clips of ``clip_len`` frames, aligned to the
start of each ``forward`` call, and runs the backbone once per clip on a *window* of
``context + clip_len`` frames: the ``context`` frames just before the clip (carried in the state across
calls, zeros at the start of a video) followed by the clip itself::

    call:     | clip 0 (L) | clip 1 (L) | clip 2 (L) |
    window 1:   [ context C | clip 1 ]                   -> backbone -> (D, T') -> nearest-upsampled to
                                                            C + L steps, the last L kept: one per frame

A feature at frame t therefore reads frames up to the end of its clip and nothing later:
``lookahead = clip_len - 1`` (``clip_len = 1``: causal, one backbone run per frame). Calls whose length
is a multiple of ``clip_len`` give exactly the features of one pass over the same frames; a call of
another length pads its last, partial clip with zero frames (so that clip sees fewer frames and the
next call starts a new partition). Masked (padding) frames are zeroed before they enter any window.

Output: the last feature map averaged over space, (B, D, T); D = 512 (R(2+1)D-18), 1024 (S3D),
768 (MViTv2-S, Swin3D-T). Frames arrive normalised as the data pipeline makes them; (H, W) is fixed at
construction (the state holds frames). Sizes each backbone accepts, per window of W = C + L frames:

* ``r2plus1d_18``: any W >= 1 and any frame size (time is downsampled 8x, space 16x).
* ``s3d``: W >= 8 and H, W >= 17. The architecture takes W >= 5 (its unpadded last max-pool needs 2
  positions after 4x temporal and 16x spatial downsampling), but on torch 2.14's CPU (oneDNN) the
  weight gradient of its first temporal conv (kernel 7, stride 2, padding 3) is garbage for inputs of
  5-7 frames (with 5, memory is also corrupted), so windows shorter than 8 frames are refused.
* ``mvit_v2_s``: W even and H, W multiples of 32 (patches of 2x4x4, then three 2x spatial poolings);
  the model is built for exactly that W x H x W (relative positions depend on it), so the Kinetics
  weights fit only W = 16, 224 x 224.
* ``swin3d_t``: any sizes (inputs are padded to whole 2x4x4 patches and windows).

``weights``: a local file with the state dict of the *torchvision* model (classifier included, e.g. the
Kinetics-400 checkpoint torchvision itself downloads), read with ``torch.load(weights_only=True)`` and
loaded strictly before the classifier is dropped; a file that does not fit is a :class:`WeightsError`
naming it and the keys. Nothing is ever downloaded. BatchNorm layers (R(2+1)D, S3D) see the windows of
all clips of a batch together in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.video import r2plus1d_18, s3d, swin3d_t
from torchvision.models.video.mvit import MViT, MSBlockConfig

from streamseg.models.checkpoint import WeightsError, load_weights

__all__ = [
    "VideoEncoder",
    "r2plus1d_18_encoder",
    "s3d_encoder",
    "mvit_v2_s_encoder",
    "swin3d_t_encoder",
]


# ----------------------------------------------------------------------------------------------- trunks
# A trunk maps windows (N, 3, W, H, W) to features (N, D, W') (space averaged, time downsampled) and
# says which window and frame sizes it accepts.


class _Trunk(nn.Module):
    out_channels: int

    def size_problem(self, window: int, frame_size: tuple[int, int]) -> str | None:
        """None if the trunk accepts windows of ``window`` frames of ``frame_size``, else what it expects."""
        return None


class _R2Plus1DTrunk(_Trunk):
    """torchvision ``VideoResNet`` (R(2+1)D-18) without its pooling and classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem, net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = net.fc.in_features  # 512

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return h.mean(dim=(3, 4))


class _S3DTrunk(_Trunk):
    """torchvision ``S3D`` features without the classifier."""

    MIN_WINDOW = 8  # 5 would do, but torch's CPU conv3d backward is wrong for 5-7 frames (module docstring)
    MIN_SIDE = 17  # 4 halvings (ceil) must leave >= 2 positions for the unpadded 2x2x2 max-pool

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features
        self.out_channels = net.classifier[1].in_channels  # 1024

    def size_problem(self, window: int, frame_size: tuple[int, int]) -> str | None:
        if window < self.MIN_WINDOW or min(frame_size) < self.MIN_SIDE:
            return (f"windows of >= {self.MIN_WINDOW} frames (context + clip_len) of >= {self.MIN_SIDE}x"
                    f"{self.MIN_SIDE} pixels")
        return None

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(3, 4))


class _MViTTrunk(_Trunk):
    """torchvision ``MViT`` up to its final norm; the class token is dropped and the patch tokens are
    averaged over space. Built for one input size (``window`` x ``frame_size``)."""

    def __init__(self, net: MViT) -> None:
        super().__init__()
        self.conv_proj, self.pos_encoding = net.conv_proj, net.pos_encoding
        self.blocks, self.norm = net.blocks, net.norm
        self.out_channels = net.norm.normalized_shape[0]  # 768
        stride_t, stride_h, stride_w = self.conv_proj.stride
        self.input_size = (self.pos_encoding.temporal_size * stride_t,
                           self.pos_encoding.spatial_size[0] * stride_h, self.pos_encoding.spatial_size[1] * stride_w)

    def size_problem(self, window: int, frame_size: tuple[int, int]) -> str | None:
        if (window, *frame_size) != self.input_size:
            t, h, w = self.input_size
            return f"windows of exactly {t} frames (context + clip_len) of {h}x{w} pixels (fixed when built)"
        return None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, T'H'W', C)
        h = self.pos_encoding(h)  # prepends the class token
        thw = (self.pos_encoding.temporal_size, *self.pos_encoding.spatial_size)
        for block in self.blocks:
            h, thw = block(h, thw)
        h = self.norm(h)[:, 1:]  # patch tokens, (N, T'H'W', D)
        t, hh, ww = thw
        return h.reshape(h.shape[0], t, hh * ww, -1).mean(dim=2).transpose(1, 2)


class _SwinTrunk(_Trunk):
    """torchvision ``SwinTransformer3d`` up to its final norm, averaged over space."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.patch_embed, self.pos_drop = net.patch_embed, net.pos_drop
        self.features, self.norm = net.features, net.norm
        self.out_channels = net.num_features  # 768

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.features(self.pos_drop(self.patch_embed(x))))  # (N, T', H', W', D)
        return h.mean(dim=(2, 3)).transpose(1, 2)


# ------------------------------------------------------------------------------------------- the encoder


class VideoEncoder(nn.Module):
    """Frames (B, 3, T, H, W) -> features (B, out_channels, T) from a clip model, clip by clip.

    Args:
        trunk: windows (N, 3, context + clip_len, H, W) -> features (N, D, T') (one of the ``_*Trunk``).
        clip_len: L, frames per clip; ``lookahead = L - 1``.
        context: C, past frames prepended to every clip (from the state across calls).
        frame_size: (H, W) of the input frames; fixes the state shape.
        name: the backbone's name, for error messages.

    ``forward(x, state, mask (B, 1, T) | None) -> (features (B, D, T), new_state)``; the state is one
    (B, 3, C, H, W) tensor of the last C frames seen (zeros at the start), or empty when C = 0. See the
    module docstring for the clip partition and what streams exactly.
    """

    def __init__(self, trunk: _Trunk, clip_len: int, context: int, frame_size: tuple[int, int], name: str) -> None:
        super().__init__()
        if clip_len < 1 or context < 0:
            raise ValueError(f"{name}: clip_len must be >= 1 and context >= 0, got clip_len={clip_len}, "
                             f"context={context}")
        frame_size = tuple(int(s) for s in frame_size)
        if len(frame_size) != 2:
            raise ValueError(f"{name}: frame_size must be (H, W), got {frame_size}")
        problem = trunk.size_problem(context + clip_len, frame_size)
        if problem is not None:
            raise ValueError(f"{name}: expects {problem}; got context {context} + clip_len {clip_len} = "
                             f"{context + clip_len} frames of {frame_size[0]}x{frame_size[1]}")
        self.trunk = trunk
        self.name = name
        self.clip_len = clip_len
        self.context = context
        self.frame_size = frame_size
        self.out_channels = trunk.out_channels
        self.lookahead: int | None = clip_len - 1

    @property
    def num_state_tensors(self) -> int:
        """How many tensors :meth:`init_state` returns (1, or 0 without context)."""
        return 1 if self.context else 0

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Zeros: (batch_size, 3, context, H, W), or () when context = 0."""
        if not self.context:
            return ()
        return (torch.zeros(batch_size, 3, self.context, *self.frame_size, device=device),)

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        if x.dim() != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != self.frame_size:
            raise ValueError(
                f"{self.name} VideoEncoder.forward: expected frames of shape (B, 3, T, {self.frame_size[0]}, "
                f"{self.frame_size[1]}) (frame_size is fixed at construction), got {tuple(x.shape)}"
            )
        if len(state) != self.num_state_tensors:
            raise ValueError(f"{self.name} VideoEncoder.forward: expected a state of {self.num_state_tensors} "
                             f"tensors (from init_state), got {len(state)}")
        batch, _, length = x.shape[:3]
        if mask is not None:
            x = x * mask.to(x.dtype).reshape(batch, 1, length, 1, 1)  # padding frames enter no window
        clip, ctx = self.clip_len, self.context
        clips = (length + clip - 1) // clip  # ceil, on non-negative ints (ONNX divides ints toward zero)
        pad = clips * clip - length
        seen = torch.cat([state[0].to(x.dtype), x], dim=2) if ctx else x  # (B, 3, C + T, H, W)
        # zero frames close the last clip; padded unconditionally (a pad of 0 is a no-op) so that an exported
        # graph keeps the padding for every chunk length, not only for the example's
        padded = F.pad(seen, (0, 0, 0, 0, 0, pad))
        # window k = frames [k L, k L + C + L) of `padded`: C frames of context, then clip k
        # (gathered by index, not `unfold`: reshaping an unfolded view makes torch.export guard on the number
        # of clips, so an exported graph would refuse chunks shorter than the example's)
        position = torch.arange(clips * (ctx + clip), device=x.device)  # built 1-D, again for torch.export
        index = position // (ctx + clip) * clip + position % (ctx + clip)
        windows = padded.transpose(1, 2).index_select(1, index)  # (B, clips (C + L), 3, H, W), contiguous
        windows = windows.reshape(batch * clips, ctx + clip, 3, *self.frame_size).transpose(1, 2)
        features = self.trunk(windows)  # (B * clips, D, T')
        # one feature per window frame (nearest: frame i reads output step floor(i T' / W)), keep the clip's
        features = F.interpolate(features, size=ctx + clip, mode="nearest")[..., ctx:]
        # (B * clips, D, L) -> (B, D, clips L), through a contiguous (B * clips, L, D) so that no reshape has to
        # decide between a view and a copy (torch.export would guard that decision on clips != 1)
        features = features.transpose(1, 2).contiguous().reshape(batch, clips * clip, -1)
        new_state = (seen[:, :, seen.shape[2] - ctx :],) if ctx else ()
        # the first `length` frames, by index (`narrow`/slicing would make torch.export prove T <= clips L, which it
        # cannot), then a contiguous (B, D, T) (`permute_copy`: `.contiguous()` would guard on T != 1)
        features = features.index_select(1, torch.arange(length, device=features.device))
        return torch.permute_copy(features, (0, 2, 1)), new_state


# ------------------------------------------------------------------------------------------ variants


def _load(net: nn.Module, weights: str | None, hint: str = "") -> None:
    if weights is None:
        return
    try:
        load_weights(net, weights)
    except WeightsError as err:
        raise WeightsError(f"{err}{hint}") from None


def r2plus1d_18_encoder(
    clip_len: int = 8, context: int = 8, frame_size: tuple[int, int] = (112, 112), weights: str | None = None
) -> VideoEncoder:
    """R(2+1)D-18 (D = 512); torchvision scores its Kinetics-400 weights on 16-frame clips of 112 x 112.

    ``weights``: local file with a ``torchvision.models.video.r2plus1d_18`` state dict."""
    net = r2plus1d_18(weights=None)
    _load(net, weights)
    return VideoEncoder(_R2Plus1DTrunk(net), clip_len, context, frame_size, "r2plus1d_18")


def s3d_encoder(
    clip_len: int = 8, context: int = 8, frame_size: tuple[int, int] = (224, 224), weights: str | None = None
) -> VideoEncoder:
    """S3D (D = 1024); needs windows of >= 8 frames of >= 17 x 17 (module docstring).

    ``weights``: local file with a ``torchvision.models.video.s3d`` state dict."""
    net = s3d(weights=None)
    _load(net, weights)
    return VideoEncoder(_S3DTrunk(net), clip_len, context, frame_size, "s3d")


def _mvit_v2_s_blocks() -> list[MSBlockConfig]:
    """MViTv2-S (Li et al., CVPR 2022, Table 1; torchvision ``mvit_v2_s``): 16 blocks. Blocks 1, 3 and 14
    start a stage: the query is pooled 2x in space, width and heads double, and the key/value pooling
    stride halves (8 -> 4 -> 2 -> 1), so keys and values stay at the same resolution."""
    settings, channels, heads, kv_stride = [], 96, 1, 8
    for i in range(16):
        stage_start = i in (1, 3, 14)
        if stage_start:
            heads, kv_stride = heads * 2, kv_stride // 2
        out = channels * 2 if stage_start else channels
        settings.append(MSBlockConfig(
            num_heads=heads, input_channels=channels, output_channels=out, kernel_q=[3, 3, 3],
            kernel_kv=[3, 3, 3], stride_q=[1, 2, 2] if stage_start else [1, 1, 1], stride_kv=[1, kv_stride, kv_stride],
        ))
        channels = out
    return settings


_MVIT_SIDE_MULTIPLE = 32  # 4x patch stride x 2^3 query poolings
_MVIT_TIME_MULTIPLE = 2  # the patch embedding's temporal stride


def mvit_v2_s_encoder(
    clip_len: int = 8, context: int = 8, frame_size: tuple[int, int] = (224, 224), weights: str | None = None
) -> VideoEncoder:
    """MViTv2-S (D = 768), built for windows of exactly ``context + clip_len`` frames of ``frame_size``
    (even, multiples of 32); torchvision's Kinetics-400 weights need 16 frames of 224 x 224.

    ``weights``: local file with a ``torchvision.models.video.mvit_v2_s`` state dict."""
    window, size = context + clip_len, tuple(int(s) for s in frame_size)
    bad_sides = len(size) != 2 or any(s < 1 or s % _MVIT_SIDE_MULTIPLE for s in size)
    if bad_sides or window < 1 or window % _MVIT_TIME_MULTIPLE:
        raise ValueError(
            f"mvit_v2_s: expects windows of an even number of frames (context + clip_len) of H x W multiples of "
            f"{_MVIT_SIDE_MULTIPLE} (Kinetics weights: 16 frames of 224x224); got context {context} + clip_len "
            f"{clip_len} = {window} frames of {'x'.join(map(str, size))}"
        )
    # torchvision's mvit_v2_s fixes the input at 16 x 224 x 224, so the same network is built here for any size
    net = MViT(spatial_size=size, temporal_size=window, block_setting=_mvit_v2_s_blocks(), residual_pool=True,
               residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, stochastic_depth_prob=0.2)
    _load(net, weights, f"\n  (mvit_v2_s is built for context + clip_len = {window} frames of {size[0]}x{size[1]}; "
                        "torchvision's Kinetics weights fit 16 frames of 224x224 only)")
    return VideoEncoder(_MViTTrunk(net), clip_len, context, size, "mvit_v2_s")


def swin3d_t_encoder(
    clip_len: int = 8, context: int = 8, frame_size: tuple[int, int] = (224, 224), weights: str | None = None
) -> VideoEncoder:
    """Swin3D-T (D = 768); any window and frame size (torchvision scores its Kinetics weights on 32-frame
    clips of 224 x 224).

    ``weights``: local file with a ``torchvision.models.video.swin3d_t`` state dict."""
    net = swin3d_t(weights=None)
    _load(net, weights)
    return VideoEncoder(_SwinTrunk(net), clip_len, context, frame_size, "swin3d_t")
