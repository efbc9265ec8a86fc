"""Frame encoders for feature extraction: normalised frames of a video segment -> one feature per frame.

An encoder sees the sampled frames of a video through a sliding segment (`streamseg.extract.video`):
to compute the features of ``step`` consecutive frames ``[p, p + step)`` it gets the frames
``[p - left, p + step + right)`` (indices outside the video repeat its first or last frame), as
``float32 (left + step + right, C, H, W)``, normalised with its ``mean`` and ``std``, and returns
``(step, D)``. Every call has the same shape (the last segment of a video is padded the same way and
the extra rows dropped), so a GPU runs one kernel shape per video.

* `ClipEncoder`, a torchvision video model (S3D, R(2+1)D-18, Swin3D-T, MViTv2-S, the trunks of
  `streamseg.models.video_backbones`) in one of two modes:

  - ``window``: the literature's way (I3D features of GTEA, 50Salads, Breakfast): frame ``t`` gets the
    network's feature map, averaged over time, of a clip of ``W`` frames centred on it,
    ``[t - W // 2, t - W // 2 + W)``. One network run per frame: each frame is read ``W`` times.
  - ``dense``: the network runs once over ``overlap + chunk + overlap`` frames and its temporal feature
    map (``T' = T / 8`` steps for S3D) is linearly interpolated back to one step per frame; the middle
    ``chunk`` frames are kept. Each frame is read ``(chunk + 2 overlap) / chunk`` times; a frame's
    feature mixes a receptive field set by the network, not by ``W``. docs/extract.md measures how far
    the two modes' features are apart.

* `ImageEncoder`: a torchvision image model (ResNet-50, MobileNetV2) on each frame alone, globally
  average-pooled (``left = right = 0``); or ``thumbnail``, no network and no weights: the normalised frame
  average-pooled to a `THUMBNAIL_GRID` of cells (D = 3 x 8 x 8 = 192), the "tiny image" descriptor
  (Torralba, Fergus and Freeman, PAMI 2008), for CPU examples and footage where colour and layout tell
  the actions apart.
* `RunEncoder`: the frame encoder of a trained streamseg run (``net.encoder``, e.g. ``tsm_memtcn``'s
  TSM), streamed chunk by chunk with its state carried, exactly as the run trained and deploys.

Weights are local files only (``torch.load(weights_only=True)``, loaded strictly: a file that does not
fit is a `WeightsError` naming it and the keys, raised before any video is read). Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.checkpoint import load_weights
from ..models.video_backbones import mvit_v2_s_encoder, r2plus1d_18_encoder, s3d_encoder, swin3d_t_encoder

__all__ = [
    "CLIP_MODELS",
    "IMAGE_MODELS",
    "ClipEncoder",
    "EncoderSpec",
    "ImageEncoder",
    "RunEncoder",
    "build_encoder",
]

Mode = Literal["window", "dense"]

# Normalisation of torchvision's Kinetics-400 / ImageNet weights (their `transforms()` presets).
_KINETICS = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MVIT = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))

# name -> (builder of a `VideoEncoder` whose `.trunk` we use, frame size, normalisation, D)
CLIP_MODELS: dict[str, tuple[Callable, tuple[int, int], tuple, int]] = {
    "s3d": (s3d_encoder, (224, 224), _KINETICS, 1024),
    "r2plus1d_18": (r2plus1d_18_encoder, (112, 112), _KINETICS, 512),
    "swin3d_t": (swin3d_t_encoder, (224, 224), _IMAGENET, 768),
    "mvit_v2_s": (mvit_v2_s_encoder, (224, 224), _MVIT, 768),
}
IMAGE_MODELS = ("resnet50", "mobilenet_v2", "thumbnail")
THUMBNAIL_GRID = (8, 8)
"""``thumbnail``'s cells (rows, columns): each feature is one channel's mean over one cell of the frame."""


@dataclass(frozen=True)
class EncoderSpec:
    """What an extraction computes, as recorded in the manifest (features made differently do not mix).

    encoder: a `CLIP_MODELS` or `IMAGE_MODELS` name, or ``"run"`` (a trained run's encoder).
    weights: local weights file (None: random initialisation, for tests); for ``"run"``, the run
        directory or checkpoint. mode: ``"window"`` or ``"dense"`` (clip models only).
    window: W, frames per clip in window mode. chunk / overlap: dense mode's kept frames per network
        run and the extra frames on each side. batch: windows (or frames) per network run.
    size: frame ``(H, W)`` the encoder gets (None: the model's default).
    """

    encoder: str
    weights: str | None = None
    mode: Mode = "window"
    window: int = 16
    chunk: int = 64
    overlap: int = 16
    batch: int = 32
    size: tuple[int, int] | None = None


class _Encoder(nn.Module):
    """The common interface (module docstring): ``forward(segment) -> (step, D)``."""

    name: str
    dim: int
    left: int
    right: int
    step: int
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    in_channels: int = 3

    def reset(self) -> None:
        """Called at the start of every video (stateful encoders clear their state)."""

    def forward_batch(self, segments: Tensor) -> Tensor:
        """``(B, left + step + right, C, H, W)`` segments of stateless encoders -> ``(B, step, D)``; ``B = 1``
        is exactly ``forward`` (the same kernels, so the same bits). Subclasses run ``B > 1`` in one call."""
        if segments.shape[0] == 1:
            return self(segments[0])[None]
        return self._forward_many(segments)

    def _forward_many(self, segments: Tensor) -> Tensor:
        return torch.stack([self(s) for s in segments])


class ClipEncoder(_Encoder):
    """A video trunk (windows ``(N, C, W, H, W)`` -> ``(N, D, W')``) in window or dense mode.

    Args:
        trunk: a ``streamseg.models.video_backbones`` trunk (``VideoEncoder(...).trunk``).
        mode: ``"window"`` (``step = batch`` windows of ``window`` frames per run) or ``"dense"``
            (``step = chunk`` frames per run, ``overlap`` frames of context on each side).
    """

    def __init__(self, trunk: nn.Module, name: str, mode: Mode, window: int, chunk: int, overlap: int,
                 batch: int, size: tuple[int, int], norm: tuple) -> None:
        super().__init__()
        self.trunk, self.name, self.mode = trunk, name, mode
        self.dim = trunk.out_channels
        self.size, (self.mean, self.std) = size, norm
        if mode == "window":
            self.window, self.step = window, batch
            self.left, self.right = window // 2, window - 1 - window // 2
        else:
            self.step, self.left, self.right = chunk, overlap, overlap

    def forward(self, segment: Tensor) -> Tensor:
        """``(left + step + right, C, H, W)`` -> ``(step, D)``."""
        if self.mode == "window":
            # window k = segment frames [k, k + W): (step, C, H, W, W) by unfold, then (step, C, W, H, W)
            windows = segment.unfold(0, self.window, 1).permute(0, 1, 4, 2, 3)
            return self.trunk(windows.contiguous()).mean(dim=2)
        return self._dense(segment[None])[0]

    def _dense(self, segments: Tensor) -> Tensor:
        features = self.trunk(segments.transpose(1, 2))  # (B, D, T')
        features = F.interpolate(features, size=segments.shape[1], mode="linear", align_corners=False)
        return features[:, :, self.left : self.left + self.step].transpose(1, 2)

    def _forward_many(self, segments: Tensor) -> Tensor:
        return self._dense(segments) if self.mode == "dense" else super()._forward_many(segments)


class ImageEncoder(_Encoder):
    """A per-frame image network ``(N, C, H, W) -> (N, D)``; ``step = batch`` frames per run."""

    def __init__(self, net: nn.Module, name: str, dim: int, batch: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.net, self.name, self.dim = net, name, dim
        self.step, self.left, self.right = batch, 0, 0
        self.size, (self.mean, self.std) = size, _IMAGENET

    def forward(self, segment: Tensor) -> Tensor:
        return self.net(segment)

    def _forward_many(self, segments: Tensor) -> Tensor:
        return self.net(segments.flatten(0, 1)).unflatten(0, segments.shape[:2])


class RunEncoder(_Encoder):
    """A trained run's frame encoder (``(B, 3, T, H, W), state -> (B, D, T), state``), called on
    ``step = chunk`` frames at a time with its state carried, reset at each video's start."""

    def __init__(self, encoder: nn.Module, name: str, chunk: int, size: tuple[int, int], mean, std,
                 sample_rate: int) -> None:
        super().__init__()
        self.encoder, self.name, self.dim = encoder, name, int(encoder.out_channels)
        self.sample_rate = sample_rate  # the run's: its encoder learned motion at that frame rate
        self.step, self.left, self.right = chunk, 0, 0
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self._state: tuple[Tensor, ...] | None = None

    def reset(self) -> None:
        self._state = None

    def forward(self, segment: Tensor) -> Tensor:
        if self._state is None:
            self._state = self.encoder.init_state(1, segment.device)
        features, self._state = self.encoder(segment.transpose(0, 1)[None], self._state, None)
        return features[0].T


def _image_net(name: str, weights: str | None) -> tuple[nn.Module, int]:
    """torchvision ``resnet50`` / ``mobilenet_v2`` with local weights (classifier included, as torchvision
    saves them), then the classifier replaced by the identity: ``(N, 3, H, W) -> (N, D)``; ``thumbnail``:
    the average of each channel over each `THUMBNAIL_GRID` cell, flattened (channel, row, column)."""
    from torchvision.models import mobilenet_v2, resnet50

    if name == "thumbnail":
        if weights is not None:
            raise ValueError(f"{weights}: the thumbnail encoder has no weights; drop --weights")
        rows, cols = THUMBNAIL_GRID
        return nn.Sequential(nn.AdaptiveAvgPool2d(THUMBNAIL_GRID), nn.Flatten()), 3 * rows * cols
    net = resnet50(weights=None) if name == "resnet50" else mobilenet_v2(weights=None)
    if weights is not None:
        load_weights(net, weights)
    if name == "resnet50":
        dim, net.fc = net.fc.in_features, nn.Identity()
    else:
        dim, net.classifier = net.classifier[1].in_features, nn.Identity()
    return net, dim


def _run_encoder(spec: EncoderSpec) -> RunEncoder:
    from ..deploy.runtime import load_trained_model

    net, meta = load_trained_model(spec.weights)
    encoder = getattr(net, "encoder", None)
    if encoder is None or meta.input_kind != "frames":
        raise ValueError(f"{spec.weights}: this run's model ({type(net).__name__}, input {meta.input_kind}) has no "
                         "frame encoder; use a run of an end-to-end model on frames (e.g. -M tsm_memtcn)")
    size = tuple(meta.sample_shape[1:])
    if spec.size is not None and tuple(spec.size) != size:
        raise ValueError(f"{spec.weights}: the run's encoder takes {size[0]}x{size[1]} frames, got size {spec.size}")
    return RunEncoder(encoder, f"run:{Path(spec.weights).name}", meta.chunk_size or spec.chunk, size, meta.mean,
                      meta.std, meta.sample_rate)


def build_encoder(spec: EncoderSpec) -> _Encoder:
    """The encoder ``spec`` describes, in eval mode on the CPU. Raises ValueError (bad name, mode, sizes)
    or `WeightsError` (weights that do not fit) before any video is read."""
    if spec.batch < 1 or spec.chunk < 1 or spec.overlap < 0 or spec.window < 1:
        raise ValueError(f"extract: batch, chunk and window must be >= 1 and overlap >= 0, got {spec}")
    if spec.mode not in ("window", "dense"):
        raise ValueError(f"extract: mode must be 'window' or 'dense', got {spec.mode!r}")
    if spec.encoder == "run":
        if spec.weights is None:
            raise ValueError("extract: encoder 'run' needs the run directory (or checkpoint) as weights")
        return _run_encoder(spec).eval()
    if spec.encoder in IMAGE_MODELS:
        net, dim = _image_net(spec.encoder, spec.weights)
        default = (32, 32) if spec.encoder == "thumbnail" else (224, 224)
        return ImageEncoder(net, spec.encoder, dim, spec.batch, tuple(spec.size or default)).eval()
    if spec.encoder not in CLIP_MODELS:
        raise ValueError(f"extract: unknown encoder {spec.encoder!r}; choose one of "
                         f"{sorted(CLIP_MODELS) + list(IMAGE_MODELS) + ['run']}")
    builder, default_size, norm, _ = CLIP_MODELS[spec.encoder]
    size = tuple(spec.size or default_size)
    frames = spec.window if spec.mode == "window" else spec.chunk + 2 * spec.overlap
    # VideoEncoder checks the trunk's sizes (one clip of `frames` frames, no context) and loads the weights
    trunk = builder(clip_len=frames, context=0, frame_size=size, weights=spec.weights).trunk
    return ClipEncoder(trunk, spec.encoder, spec.mode, spec.window, spec.chunk, spec.overlap, spec.batch, size,
                       norm).eval()


FLOW_RANGE = 20.0
"""Optical flow is clipped to +-20 pixels and divided by 20, into [-1, 1], as I3D's flow stream
(Carreira and Zisserman, CVPR 2017, section 4) does with TV-L1 flow."""


def flow_encoder(rgb: ClipEncoder, weights: str | None = None) -> ClipEncoder:
    """The flow stream of a two-stream extraction: a copy of the clip encoder ``rgb`` whose first convolution
    takes 2 channels (x and y displacement, in [-1, 1]: `FLOW_RANGE`).

    Without ``weights`` its first convolution is TSN's cross-modality initialisation (Wang et al., ECCV
    2016, section 3.2) of ``rgb``'s: the RGB filters averaged over their input channels and repeated for
    both flow channels; the rest are ``rgb``'s weights. ``weights``: a state dict of the same torchvision
    model with a 2-channel first convolution (its classifier keys are ignored), loaded with
    ``weights_only=True``; every key of the trunk must be in it with its shape.
    """
    import copy

    if not isinstance(rgb, ClipEncoder):
        raise ValueError(f"extract: optical flow needs a video (clip) encoder, got {rgb.name!r}")
    flow = copy.deepcopy(rgb)
    _first_conv_to_flow(flow.trunk)
    if weights is not None:
        _load_trunk(flow.trunk, weights)
    flow.name, flow.in_channels = f"{rgb.name}+flow", 2
    flow.mean, flow.std = (0.0, 0.0), (1.0, 1.0)
    return flow.eval()


def _first_conv_to_flow(trunk: nn.Module) -> None:
    for parent in trunk.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv3d):
                conv = nn.Conv3d(2, child.out_channels, child.kernel_size, child.stride, child.padding,
                                 child.dilation, child.groups, child.bias is not None)
                with torch.no_grad():
                    conv.weight.copy_(child.weight.mean(dim=1, keepdim=True).expand_as(conv.weight))
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, child_name, conv)
                return
    raise ValueError(f"{type(trunk).__name__}: no Conv3d to adapt to 2 flow channels")


def _load_trunk(trunk: nn.Module, path: str) -> None:
    """Load the trunk's keys (torchvision names: the trunk keeps the model's module names) from ``path``."""
    from ..models.checkpoint import WeightsError, read_state_dict

    state, own = read_state_dict(path), trunk.state_dict()
    bad = sorted(k for k, v in own.items() if k not in state or state[k].shape != v.shape)
    if bad:
        raise WeightsError(f"{path} does not fit the {type(trunk).__name__} flow stream: {len(bad)} keys missing or "
                           f"of another shape, e.g. {bad[:5]}")
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)
