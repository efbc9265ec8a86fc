"""X3D (XS, S, M) and SlowFast R50 8x8, PySlowFast's headline models, as streaming clip encoders.

Written from the papers' architecture tables; module names are ours, and PySlowFast's checkpoint keys are
mapped onto them (:func:`pyslowfast_key`).

**X3D** (Feichtenhofer, CVPR 2020, Table 1; the XS/S/M networks are one and the same, they differ only
in their input clips: XS 4 x 160^2, S 13 x 160^2, M 16 x 224^2): a stem of a 1x3x3 conv (24 channels,
spatial stride 2) then a 5x1x1 channel-wise temporal conv; four stages res2..res5 of 3, 5, 11, 7
bottleneck blocks ([1, 2, 5, 3] x the depth factor 2.2, rounded up) with widths 24, 48, 96, 192 and an
inner width of 2.25x (54, 108, 216, 432); each block is 1x1x1 conv, 3x3x3 channel-wise conv (spatial
stride 2 in a stage's first block), squeeze-excitation (ratio 1/16, every second block, from the first),
swish, 1x1x1 conv, plus the (projected) shortcut and a ReLU; then conv5 (1x1x1 to 432), a global pool,
a 1x1x1 conv to 2048 (no BatchNorm) with ReLU and the classifier. Time is never downsampled.

**SlowFast R50 8x8** (Feichtenhofer et al., ICCV 2019, Table 1; alpha = 4, beta = 1/8, 8 slow frames of
a 32-frame window): two ResNet-50 pathways. Slow: 1x7x7 stem conv (64) and 1x3x3 max-pool, stages of 3,
4, 6, 3 bottlenecks (inner 64..512, out 256..2048) whose first conv is 1x1x1 in res2-res3 and 3x1x1 in
res4-res5. Fast: the same with 1/8 of the channels (stem 8, out 32..256) on every frame, a 5x7x7 stem
and 3x1x1 first convs throughout. After the stem and res2-res4 a lateral 7x1x1 conv of stride 4 (2x
the fast channels, BatchNorm, ReLU) joins fast to slow by concatenation. Head: both pathways pooled
and concatenated (2048 + 256) into the classifier.

As encoders (:class:`~streamseg.models.video_backbones.VideoEncoder`): windows of context + clip_len
frames, one feature per frame, ``lookahead = clip_len - 1``, chunked == whole for calls of whole clips.
X3D gives D = 2048 per frame: conv5, averaged over space, then the 2048-d layer with its ReLU applied per
time step (the network applies it after pooling time too). SlowFast gives D = 2304: the slow features
(one per alpha frames) repeated alpha times, concatenated with the fast ones. The slow pathway reads
``window / alpha`` frames spread evenly over the window (``linspace``, as PySlowFast's data pipeline
picks them), so windows must be a multiple of alpha = 4.

**Checkpoints** (``weights``): a local PySlowFast file (``torch.save`` of ``{"model_state": ...}``, e.g.
the model zoo's ``x3d_m.pyth``), read with ``torch.load(weights_only=True)``; ``head.projection`` (the
Kinetics classifier) is dropped, every other key must fit. PySlowFast's Caffe2 ``.pkl`` files (the zoo's
SlowFast Kinetics models) are pickles of numpy arrays with Caffe2 names and are not read.

Published sizes (with the 400-class classifier): X3D-XS/S/M 3.79 M parameters (PySlowFast MODEL_ZOO.md:
3.8; PyTorchVideo's model zoo: 3.79), SlowFast R50 8x8 34.57 M (PyTorchVideo's model zoo);
tests/models/test_pyslowfast.py checks ours against them.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from streamseg.models.checkpoint import WeightsError, load_weights
from streamseg.models.video_backbones import VideoEncoder, _Trunk

__all__ = [
    "X3D",
    "SlowFast",
    "pyslowfast_key",
    "x3d_xs_encoder",
    "x3d_s_encoder",
    "x3d_m_encoder",
    "slowfast_r50_encoder",
]

KINETICS_CLASSES = 400


def _round_width(width: float, divisor: int = 8) -> int:
    """Channels rounded to the nearest multiple of ``divisor`` (at least ``divisor``), rounded up where
    rounding lost more than 10% (the X3D paper's channel rounding; e.g. 432 / 16 = 27 -> 32)."""
    out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * width else out


class _SqueezeExcite(nn.Module):
    """Channel gates from the clip's global average: x * sigmoid(fc2(relu(fc1(mean(x)))))."""

    def __init__(self, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        hidden = _round_width(channels * ratio)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class _Bottleneck(nn.Module):
    """a (kt_a x 1 x 1) -> b (kt_b x 3 x 3, ``groups``, spatial ``stride``) [-> SE] -> c (1x1x1), each
    conv followed by BatchNorm, a and b by ``activation`` (c after the sum with the shortcut by ReLU)."""

    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int, kt_a: int, kt_b: int,
                 groups: int = 1, squeeze_excite: bool = False, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.a = nn.Conv3d(in_channels, inner, (kt_a, 1, 1), padding=(kt_a // 2, 0, 0), bias=False)
        self.a_bn = nn.BatchNorm3d(inner)
        self.b = nn.Conv3d(inner, inner, (kt_b, 3, 3), stride=(1, stride, stride), padding=(kt_b // 2, 1, 1),
                           groups=groups, bias=False)
        self.b_bn = nn.BatchNorm3d(inner)
        self.se = _SqueezeExcite(inner) if squeeze_excite else None
        self.c = nn.Conv3d(inner, out_channels, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(out_channels)
        self.act = activation()
        self.shortcut = self.shortcut_bn = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)
            self.shortcut_bn = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.a_bn(self.a(x)))
        h = self.b_bn(self.b(h))
        if self.se is not None:
            h = self.se(h)
        h = self.c_bn(self.c(self.act(h)))
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        return torch.relu(skip + h)


def _stage(in_channels: int, inner: int, out_channels: int, depth: int, stride: int, **block) -> nn.Sequential:
    return nn.Sequential(*(
        _Bottleneck(in_channels if i == 0 else out_channels, inner, out_channels, stride if i == 0 else 1, **block)
        for i in range(depth)
    ))


# -------------------------------------------------------------------------------------------------- X3D


class X3D(nn.Module):
    """X3D-XS/S/M (one network; see the module docstring). ``forward(x (N, 3, T, H, W))`` -> features
    (N, 2048, T) (space averaged, the 2048-d layer applied per time step), or class logits (N, classes)
    averaged over T when built with ``num_classes`` (for parameter counts and checkpoints)."""

    WIDTHS = (24, 48, 96, 192)  # res2..res5
    DEPTHS = tuple(math.ceil(2.2 * d) for d in (1, 2, 5, 3))  # (3, 5, 11, 7)
    INNER = 2.25  # bottleneck expansion
    HEAD = 2048

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        stem = self.WIDTHS[0]
        self.stem_xy = nn.Conv3d(3, stem, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.stem_t = nn.Conv3d(stem, stem, (5, 1, 1), padding=(2, 0, 0), groups=stem, bias=False)
        self.stem_bn = nn.BatchNorm3d(stem)
        stages, channels = [], stem
        for width, depth in zip(self.WIDTHS, self.DEPTHS):
            inner = int(self.INNER * width)
            stage = _stage(channels, inner, width, depth, stride=2, kt_a=1, kt_b=3, groups=inner, activation=nn.SiLU)
            for i, block in enumerate(stage):
                if i % 2 == 0:  # squeeze-excitation in every second block, from the first
                    block.se = _SqueezeExcite(inner)
            stages.append(stage)
            channels = width
        self.stages = nn.ModuleList(stages)
        conv5 = int(self.INNER * channels)  # 432
        self.conv5 = nn.Conv3d(channels, conv5, 1, bias=False)
        self.conv5_bn = nn.BatchNorm3d(conv5)
        self.lin5 = nn.Conv3d(conv5, self.HEAD, 1, bias=False)
        self.fc = nn.Linear(self.HEAD, num_classes) if num_classes else None
        self.out_channels = self.HEAD

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem_bn(self.stem_t(self.stem_xy(x))))
        for stage in self.stages:
            h = stage(h)
        h = torch.relu(self.conv5_bn(self.conv5(h)))
        h = h.mean(dim=(3, 4), keepdim=True)  # (N, 432, T, 1, 1)
        h = torch.relu(self.lin5(h))[..., 0, 0]  # (N, 2048, T)
        return h if self.fc is None else self.fc(h.mean(dim=2))


class _X3DTrunk(_Trunk):
    def __init__(self, net: X3D) -> None:
        super().__init__()
        self.net = net
        self.out_channels = net.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------- SlowFast


class _Stem(nn.Module):
    """kt x 7 x 7 conv (spatial stride 2), BatchNorm, ReLU, 1x3x3 max-pool (spatial stride 2)."""

    def __init__(self, out_channels: int, kt: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, out_channels, (kt, 7, 7), stride=(1, 2, 2), padding=(kt // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class _Lateral(nn.Module):
    """Fast -> slow: 7x1x1 conv with temporal stride alpha to 2x the fast channels, BatchNorm, ReLU."""

    def __init__(self, fast_channels: int, alpha: int, kt: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv3d(fast_channels, 2 * fast_channels, (kt, 1, 1), stride=(alpha, 1, 1),
                              padding=(kt // 2, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(2 * fast_channels)

    def forward(self, fast: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(fast)))


class SlowFast(nn.Module):
    """SlowFast R50 (see the module docstring). ``forward(x (N, 3, W, H, W'))``, W a multiple of ``alpha``
    -> features (N, 2304, W) (slow features repeated ``alpha`` times, then the fast ones), or class logits
    (N, classes) when built with ``num_classes``."""

    DEPTHS = (3, 4, 6, 3)
    SLOW_INNER = (64, 128, 256, 512)
    SLOW_KT = (1, 1, 3, 3)  # temporal kernel of each slow stage's first conv (res2, res3: none)
    EXPANSION = 4  # bottleneck out = 4 x inner

    def __init__(self, num_classes: int | None = None, alpha: int = 4, beta_inv: int = 8) -> None:
        super().__init__()
        self.alpha = alpha
        slow_c, fast_c = self.SLOW_INNER[0], self.SLOW_INNER[0] // beta_inv  # stems: 64, 8
        self.slow_stem, self.fast_stem = _Stem(slow_c, kt=1), _Stem(fast_c, kt=5)
        self.laterals = nn.ModuleList([_Lateral(fast_c, alpha)])
        slow, fast = [], []
        for i, (depth, inner, kt) in enumerate(zip(self.DEPTHS, self.SLOW_INNER, self.SLOW_KT)):
            stride = 1 if i == 0 else 2
            slow_out, fast_inner = inner * self.EXPANSION, inner // beta_inv
            slow.append(_stage(slow_c + 2 * fast_c, inner, slow_out, depth, stride, kt_a=kt, kt_b=1))
            fast.append(_stage(fast_c, fast_inner, fast_inner * self.EXPANSION, depth, stride, kt_a=3, kt_b=1))
            slow_c, fast_c = slow_out, fast_inner * self.EXPANSION
            if i < len(self.DEPTHS) - 1:
                self.laterals.append(_Lateral(fast_c, alpha))
        self.slow_stages, self.fast_stages = nn.ModuleList(slow), nn.ModuleList(fast)
        self.out_channels = slow_c + fast_c  # 2048 + 256
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None

    def forward(self, x: Tensor) -> Tensor:
        window = x.shape[2]
        # the slow pathway's frames: window / alpha of them, spread evenly (PySlowFast's linspace)
        picks = torch.linspace(0, window - 1, window // self.alpha, device=x.device).long()
        slow, fast = self.slow_stem(x.index_select(2, picks)), self.fast_stem(x)
        for i, (slow_stage, fast_stage) in enumerate(zip(self.slow_stages, self.fast_stages)):
            slow = torch.cat([slow, self.laterals[i](fast)], dim=1)
            slow, fast = slow_stage(slow), fast_stage(fast)
        slow, fast = slow.mean(dim=(3, 4)), fast.mean(dim=(3, 4))  # (N, 2048, W / alpha), (N, 256, W)
        if self.fc is not None:
            return self.fc(torch.cat([slow.mean(dim=2), fast.mean(dim=2)], dim=1))
        return torch.cat([slow.repeat_interleave(self.alpha, dim=2), fast], dim=1)


class _SlowFastTrunk(_Trunk):
    def __init__(self, net: SlowFast) -> None:
        super().__init__()
        self.net = net
        self.out_channels = net.out_channels

    def size_problem(self, window: int, frame_size: tuple[int, int]) -> str | None:
        if window % self.net.alpha:
            return f"windows (context + clip_len) of a multiple of alpha = {self.net.alpha} frames"
        return None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------ PySlowFast's names

# PySlowFast names a block `s<stage>.pathway<p>_res<j>.{branch1,branch1_bn,branch2.<a|a_bn|b|b_bn|se|c|c_bn>}`
# (stage 2..5, pathway 0 = slow or X3D's only one), the stems `s1.pathway<p>_stem.{conv,bn}` (X3D: `conv_xy`
# then the temporal `conv`), the laterals `s<k>_fuse.{conv_f2s,bn}`, X3D's head `head.{conv_5,conv_5_bn,
# lin_5}` and the classifier `head.projection`.
_BLOCK = re.compile(r"s([2-5])\.pathway([01])_res(\d+)\.(.+)")
_BLOCK_PARTS = {"branch1.": "shortcut.", "branch1_bn.": "shortcut_bn.", "branch2.": ""}
_FIXED = {
    "s1.pathway0_stem.conv_xy.": "stem_xy.", "head.conv_5.": "conv5.", "head.conv_5_bn.": "conv5_bn.",
    "head.lin_5.": "lin5.", "head.projection.": "fc.",
}


def pyslowfast_key(key: str, two_pathways: bool) -> str:
    """PySlowFast's name of a parameter or buffer -> ours (:class:`X3D` for ``two_pathways=False``,
    :class:`SlowFast` otherwise); names it does not know are returned unchanged (and then fail to load)."""
    match = _BLOCK.fullmatch(key)
    if match:
        stage, pathway, block, rest = match.groups()
        for theirs, ours in _BLOCK_PARTS.items():
            if rest.startswith(theirs):
                rest = ours + rest[len(theirs):]
                break
        stages = ("slow_stages", "fast_stages")[int(pathway)] if two_pathways else "stages"
        return f"{stages}.{int(stage) - 2}.{block}.{rest}"
    fuse = re.fullmatch(r"s([1-4])_fuse\.(conv_f2s|bn)\.(.+)", key)
    if fuse:
        return f"laterals.{int(fuse.group(1)) - 1}.{'conv' if fuse.group(2) == 'conv_f2s' else 'bn'}.{fuse.group(3)}"
    stem = re.fullmatch(r"s1\.pathway([01])_stem\.(conv|bn)\.(.+)", key)
    if stem:
        pathway, layer, rest = stem.groups()
        if two_pathways:
            return f"{('slow_stem', 'fast_stem')[int(pathway)]}.{layer}.{rest}"
        return f"{'stem_t' if layer == 'conv' else 'stem_bn'}.{rest}"
    for theirs, ours in _FIXED.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def _load_pyslowfast(net: nn.Module, weights: str | None, two_pathways: bool) -> None:
    """Load a PySlowFast checkpoint into ``net`` (built without a classifier): keys mapped, the classifier
    (``head.projection``) dropped, everything else strict."""
    if weights is None:
        return
    try:
        load_weights(net, weights, lambda k: None if k.startswith("head.projection.") else pyslowfast_key(k, two_pathways))
    except WeightsError as err:
        raise WeightsError(f"{err}\n  (expected a PySlowFast checkpoint of {type(net).__name__}: keys such as "
                           "s2.pathway0_res0.branch2.a.weight)") from None


# ------------------------------------------------------------------------------------------------ variants


def _x3d_encoder(name: str, clip_len: int, context: int, frame_size: tuple[int, int], weights: str | None) -> VideoEncoder:
    net = X3D()
    _load_pyslowfast(net, weights, two_pathways=False)
    return VideoEncoder(_X3DTrunk(net), clip_len, context, frame_size, name)


def x3d_xs_encoder(clip_len: int = 2, context: int = 2, frame_size: tuple[int, int] = (160, 160),
                   weights: str | None = None) -> VideoEncoder:
    """X3D-XS (D = 2048): trained on 4-frame clips of 160 x 160 (defaults: 2 + 2 of context).

    ``weights``: a local PySlowFast checkpoint (e.g. ``x3d_xs.pyth``)."""
    return _x3d_encoder("x3d_xs", clip_len, context, frame_size, weights)


def x3d_s_encoder(clip_len: int = 7, context: int = 6, frame_size: tuple[int, int] = (160, 160),
                  weights: str | None = None) -> VideoEncoder:
    """X3D-S (D = 2048): trained on 13-frame clips of 160 x 160 (defaults: 7 + 6 of context).

    ``weights``: a local PySlowFast checkpoint (e.g. ``x3d_s.pyth``)."""
    return _x3d_encoder("x3d_s", clip_len, context, frame_size, weights)


def x3d_m_encoder(clip_len: int = 8, context: int = 8, frame_size: tuple[int, int] = (224, 224),
                  weights: str | None = None) -> VideoEncoder:
    """X3D-M (D = 2048): trained on 16-frame clips of 224 x 224 (defaults: 8 + 8 of context).

    ``weights``: a local PySlowFast checkpoint (e.g. ``x3d_m.pyth``)."""
    return _x3d_encoder("x3d_m", clip_len, context, frame_size, weights)


def slowfast_r50_encoder(clip_len: int = 16, context: int = 16, frame_size: tuple[int, int] = (224, 224),
                         weights: str | None = None) -> VideoEncoder:
    """SlowFast R50 8x8 (D = 2304): 32-frame windows of 224 x 224 (defaults: 16 + 16 of context); the
    window must be a multiple of alpha = 4.

    ``weights``: a local PySlowFast checkpoint of SLOWFAST_8x8_R50 in PyTorch format (not the zoo's
    Caffe2 ``.pkl``)."""
    net = SlowFast()
    _load_pyslowfast(net, weights, two_pathways=True)
    return VideoEncoder(_SlowFastTrunk(net), clip_len, context, frame_size, "slowfast_r50")
