"""Temporal Shift Module (Lin, Gan & Han, ICCV 2019) on torchvision MobileNetV2 and ResNet-50.

A 2D image backbone runs on every frame; before the residual branch of selected blocks, a few channel
groups of the branch input are moved along time ("residual shift"), so the 2D convs mix neighbouring
frames at zero extra FLOPs. With C channels and ``fold = C // shift_div``:

* bidirectional (``causal=False``, the paper's offline TSM): channels [0, fold) come from frame t+1 and
  [fold, 2*fold) from frame t-1, zeros past either end of the call. Each shift layer sees one frame
  further into the future, so ``lookahead`` = the number of shift layers (MobileNetV2: 10, ResNet-50: 16).
  It keeps no state: run chunk by chunk, every chunk edge is cut (SVTAS's streaming TSM).
* causal (``causal=True``): the same 2/8 of the channels, both from the past: [0, fold) from t-2 (in place
  of the future) and [fold, 2*fold) from t-1 (as in the paper), so ImageNet/TSM weights keep the meaning of
  the past group. ``lookahead = 0``. The state of each shift layer is the last two frames of its shifted
  channels, (B, 2, 2*fold, H', W'), zeros at the start of a video; chunked == whole.

Shifted blocks: MobileNetV2's inverted residuals with an identity shortcut (features 3, 5, 6, 8, 9, 10,
12, 13, 15, 16: 10 layers, as the official TSM code), ResNet-50's 16 bottlenecks (3 + 4 + 6 + 3).

Frames arrive normalised (ImageNet mean/std) as (B, 3, T, H, W); the output is the spatially averaged
last feature map, (B, D, T) with D = 1280 (MobileNetV2) or 2048 (ResNet-50). The frame size is fixed at
construction because the state shapes depend on it. Masked (padding) frames are zeroed before they are
shifted into their neighbours, so they never reach a valid frame through a shift.

``weights`` is a local file holding a state dict of the *torchvision* model (e.g. the ImageNet
checkpoint torchvision itself downloads), loaded with ``torch.load(weights_only=True)`` before the shift
layers are inserted; nothing is downloaded here. BatchNorm layers see padding frames in training mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models import mobilenet_v2, resnet50
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import Bottleneck

from streamseg.models.checkpoint import read_weights_file

__all__ = ["ShiftedResidual", "TSMEncoder", "set_activation_checkpointing", "tsm_mobilenet_v2", "tsm_resnet50"]

# A causal shift layer reaches 2 frames back (the [0, fold) group comes from t-2).
_CAUSAL_MEMORY_FRAMES = 2


class ShiftedResidual(nn.Module):
    """A residual block whose branch reads the time-shifted input: ``forward(x, shifted) -> (N, C', H', W')``."""

    in_channels: int

    def forward(self, x: Tensor, shifted: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _ShiftedInvertedResidual(ShiftedResidual):
    """torchvision ``InvertedResidual`` with an identity shortcut: ``x + conv(shifted)``."""

    def __init__(self, block: InvertedResidual) -> None:
        super().__init__()
        if not block.use_res_connect:
            raise ValueError("_ShiftedInvertedResidual: the block has no identity shortcut to keep unshifted")
        self.block = block
        self.in_channels = block.conv[0][0].in_channels  # first conv of the expansion Conv2dNormActivation

    def forward(self, x: Tensor, shifted: Tensor) -> Tensor:
        return x + self.block.conv(shifted)


class _ShiftedBottleneck(ShiftedResidual):
    """torchvision ``Bottleneck`` whose residual branch (conv1 .. bn3) reads the shifted input."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.block = block
        self.in_channels = block.conv1.in_channels

    def forward(self, x: Tensor, shifted: Tensor) -> Tensor:
        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.relu(b.bn1(b.conv1(shifted)))
        out = b.relu(b.bn2(b.conv2(out)))
        out = b.bn3(b.conv3(out))
        return b.relu(out + identity)


class TSMEncoder(nn.Module):
    """Frames (B, 3, T, H, W) -> features (B, out_channels, T), shifting channels along time.

    Args:
        blocks: the backbone as a sequence of per-frame modules; :class:`ShiftedResidual` ones get the
            temporal shift, any other module runs as is on (B*T, C, H', W').
        out_channels: D, channels of the last block's output.
        shift_div: 1/shift_div of a shifted block's input channels move per direction (paper: 8).
        causal: shift from the past only (see the module docstring).
        frame_size: (H, W) of the input frames; fixes the state shapes.

    ``forward(x, state, mask (B, 1, T) | None) -> (features (B, D, T), new_state)``; the state is one
    (B, 2, 2*fold, H', W') tensor per shift layer when causal, else empty.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        out_channels: int,
        shift_div: int = 8,
        causal: bool = True,
        frame_size: tuple[int, int] = (224, 224),
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = out_channels
        self.shift_div = shift_div
        self.causal = causal
        self.frame_size = tuple(frame_size)
        self.num_shift_layers = sum(isinstance(b, ShiftedResidual) for b in self.blocks)
        for i, block in enumerate(self.blocks):
            if isinstance(block, ShiftedResidual) and block.in_channels // shift_div < 1:
                raise ValueError(
                    f"TSMEncoder: block {i} has {block.in_channels} channels, too few to shift 1/{shift_div}"
                )
        self.lookahead: int | None = 0 if causal else self.num_shift_layers
        # set_activation_checkpointing: in training, keep only each block's input and recompute its
        # activations in the backward pass (one more forward pass of compute for a fraction of the memory)
        self.checkpoint_blocks = False
        self._memory_shapes = self._probe_memory_shapes() if causal else []

    @property
    def num_state_tensors(self) -> int:
        """How many tensors :meth:`init_state` returns (one per shift layer when causal)."""
        return len(self._memory_shapes)

    @torch.no_grad()
    def _probe_memory_shapes(self) -> list[tuple[int, ...]]:
        """Run one blank frame through the blocks to learn each shift layer's (2, 2*fold, H', W')."""
        was_training = self.training
        self.eval()  # BatchNorm in training mode would update its statistics (and fail on 1x1 maps)
        param = next(self.parameters(), None)
        h = torch.zeros(1, 3, *self.frame_size, device=None if param is None else param.device)
        shapes = []
        for block in self.blocks:
            if isinstance(block, ShiftedResidual):
                fold = h.shape[1] // self.shift_div
                shapes.append((_CAUSAL_MEMORY_FRAMES, 2 * fold, h.shape[2], h.shape[3]))
                h = block(h, h)
            else:
                h = block(h)
        self.train(was_training)
        return shapes

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Zeros, one (batch_size, 2, 2*fold, H', W') tensor per shift layer; () when bidirectional."""
        return tuple(torch.zeros(batch_size, *shape, device=device) for shape in self._memory_shapes)

    def _shift(
        self, h: Tensor, batch: int, length: int, memory: Tensor | None, frame_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Shift (B*T, C, H', W') along time; return it and the new memory (None when bidirectional)."""
        channels, height, width = h.shape[1:]
        fold = channels // self.shift_div
        v = h.view(batch, length, channels, height, width)
        moved = v[:, :, : 2 * fold] * frame_mask  # padding frames are zeroed before they move
        if self.causal:
            assert memory is not None
            ext = torch.cat([memory.to(h.dtype), moved], dim=1)  # (B, 2 + T, 2*fold, H', W'): t-2, t-1, t...
            from_past2 = ext[:, :length, :fold]  # output t reads ext[t] = frame t-2
            from_past1 = ext[:, 1 : length + 1, fold:]  # output t reads ext[t+1] = frame t-1
            new_memory = ext[:, -_CAUSAL_MEMORY_FRAMES:]
            out = torch.cat([from_past2, from_past1, v[:, :, 2 * fold :]], dim=2)
        else:
            zero = moved.new_zeros(batch, 1, fold, height, width)
            from_future = torch.cat([moved[:, 1:, :fold], zero], dim=1)
            from_past = torch.cat([zero, moved[:, :-1, fold:]], dim=1)
            new_memory = None
            out = torch.cat([from_future, from_past, v[:, :, 2 * fold :]], dim=2)
        return out.reshape(batch * length, channels, height, width), new_memory

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        if x.dim() != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != self.frame_size:
            raise ValueError(
                f"TSMEncoder.forward: expected frames of shape (B, 3, T, {self.frame_size[0]}, {self.frame_size[1]}) "
                f"(frame_size is fixed at construction), got {tuple(x.shape)}"
            )
        if len(state) != self.num_state_tensors:
            raise ValueError(
                f"TSMEncoder.forward: expected a state of {self.num_state_tensors} tensors (from init_state), "
                f"got {len(state)}"
            )
        batch, _, length = x.shape[:3]
        if mask is None:
            frame_mask = x.new_ones(batch, length, 1, 1, 1)
        else:
            frame_mask = mask.to(x.dtype).reshape(batch, length, 1, 1, 1)
        h = x.transpose(1, 2).reshape(batch * length, 3, *self.frame_size)
        new_state: list[Tensor] = []
        shift_index = 0
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            run = partial(checkpoint, block, use_reentrant=False) if recompute else block
            if isinstance(block, ShiftedResidual):
                memory = state[shift_index] if self.causal else None
                shifted, memory = self._shift(h, batch, length, memory, frame_mask)
                if memory is not None:
                    new_state.append(memory)
                h = run(h, shifted)
                shift_index += 1
            else:
                h = run(h)
        features = h.mean(dim=(2, 3)).view(batch, length, -1).transpose(1, 2)  # global average pool
        return features, tuple(new_state)


def set_activation_checkpointing(net: nn.Module, enabled: bool = True) -> int:
    """Turn activation checkpointing of the blocks of every `TSMEncoder` inside ``net`` on or off; returns
    how many encoders it reached (0: ``net`` has none, nothing changed).

    Training then stores each block's input only and recomputes the block in the backward pass. BatchNorm
    layers in training mode see each batch twice (forward and recomputation), so their running statistics
    move twice per step (momentum 0.1 acts like 0.19); the gradients are unchanged.
    """
    encoders = [m for m in net.modules() if isinstance(m, TSMEncoder)]
    for m in encoders:
        m.checkpoint_blocks = enabled
    return len(encoders)


def _load_weights(model: nn.Module, weights: str | None, where: str) -> None:
    """Load a torchvision state dict from a local file into ``model`` (strict)."""
    if weights is None:
        return
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: weights file {path} does not exist (a local path is expected)")
    state_dict = read_weights_file(path)  # WeightsError naming the file when damaged or unsafe
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{where}: {path} is not a state dict of torchvision's model: {err}") from err


def tsm_mobilenet_v2(
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
    shift: bool = True,
    num_blocks: int | None = None,
) -> TSMEncoder:
    """TSM on torchvision MobileNetV2 (width 1.0): 10 shift layers, D = 1280.

    ``weights``: local file with a ``torchvision.models.mobilenet_v2`` state dict (classifier included).
    ``shift=False``: the plain per-frame MobileNetV2 (no temporal shift, stateless): the frame-wise
    baseline with the same backbone. ``num_blocks``: keep only the first N of MobileNetV2's 19 feature
    blocks (None: all), a small encoder for CPU examples and tests: N = 4 gives 1 shift layer and
    D = 24 at stride 4, and exports to ONNX several times faster than the whole backbone.
    """
    net = mobilenet_v2(weights=None)
    _load_weights(net, weights, "tsm_mobilenet_v2")
    features = list(net.features)
    if num_blocks is not None and not 1 <= num_blocks <= len(features):
        raise ValueError(f"tsm_mobilenet_v2: num_blocks must be between 1 and {len(features)}, got {num_blocks}")
    features = features[:num_blocks]
    blocks: list[nn.Module] = [
        _ShiftedInvertedResidual(b) if shift and isinstance(b, InvertedResidual) and b.use_res_connect else b
        for b in features
    ]
    out_channels = net.last_channel if len(features) == len(net.features) else _out_channels(features[-1])
    return TSMEncoder(blocks, out_channels=out_channels, shift_div=shift_div, causal=causal, frame_size=frame_size)


def _out_channels(block: nn.Module) -> int:
    """Output channels of a MobileNetV2 feature block (an InvertedResidual or a Conv-BN-ReLU)."""
    if isinstance(block, InvertedResidual):
        return block.out_channels
    return next(m.out_channels for m in block.modules() if isinstance(m, nn.Conv2d))


def tsm_resnet50(
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
) -> TSMEncoder:
    """TSM on torchvision ResNet-50: every bottleneck shifted (16 shift layers), D = 2048.

    ``weights``: local file with a ``torchvision.models.resnet50`` state dict (fc included).
    """
    net = resnet50(weights=None)
    _load_weights(net, weights, "tsm_resnet50")
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    bottlenecks = [_ShiftedBottleneck(b) for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    return TSMEncoder(
        [stem, *bottlenecks], out_channels=net.fc.in_features, shift_div=shift_div, causal=causal, frame_size=frame_size
    )
