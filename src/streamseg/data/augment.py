"""Per-video augmentation for streams: ONE random crop / flip / brightness / contrast draw per video, applied
to every chunk of it (SVTAS drew them per frame, so a clip jittered frame to frame).

Two implementations of the same transform, fed by the same draw (`draw_video_augment`):

* CPU, the reference (`video_augment_factory`): the decode workers resize frames to the model's size,
  then crop, resize back, mirror and shift colour in ``uint8`` (rounded), and the device normalises.
* device (`augment_to_model`): the workers ship native-size ``uint8`` frames (RGB, or the decoder's I420
  planes) and the per-video draws (`video_augment_params`, a float64 row per slot); crop, resize to the
  model's size and mirror are one pair of interpolation matrices per stream and axis
  (``out = Wy @ frame @ Wx^T``: batched matrix products, no per-stream shapes, so ``torch.compile`` sees
  one graph), then colour, clamping and normalisation, elementwise, in float32 (no rounding).

The crop box is the same fraction of the frame in both (``side``, ``fx``, ``fy`` of the draw), computed
at the size each path crops at: the model's size on the CPU, the native size on the device; so the two
agree exactly (up to the CPU's uint8 rounding) when the video already has the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from streamseg.data.video import ycbcr_matrix

__all__ = [
    "AUGMENT_FIELDS",
    "IDENTITY",
    "VideoAugment",
    "augment_to_model",
    "draw_video_augment",
    "video_augment_factory",
    "video_augment_params",
]

Augment = Callable[[torch.Tensor], torch.Tensor]
AUGMENT_FIELDS = ("side", "fx", "fy", "mirror", "gain", "contrast")
"""Columns of the float64 parameter rows that `video_augment_params` makes and `augment_to_model` reads."""


@dataclass(frozen=True)
class VideoAugment:
    """One video's draw: a crop of side ``side`` (fraction of the frame's height and width) whose top-left
    corner sits at ``(fy, fx)`` of the free room, mirrored or not, then ``v -> (v gain - 128) contrast + 128``
    on the 0..255 scale, clamped."""

    side: float = 1.0
    fx: float = 0.0
    fy: float = 0.0
    mirror: bool = False
    gain: float = 1.0
    contrast: float = 1.0

    def crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``(y0, x0, ch, cw)`` in pixels of an ``h x w`` frame."""
        ch, cw = max(1, round(h * self.side)), max(1, round(w * self.side))
        return round(self.fy * (h - ch)), round(self.fx * (w - cw)), ch, cw

    def as_row(self) -> np.ndarray:
        """float64 ``(6,)`` in `AUGMENT_FIELDS` order."""
        return np.array([self.side, self.fx, self.fy, float(self.mirror), self.gain, self.contrast])


IDENTITY = VideoAugment()
"""No augmentation: the whole frame, resized (evaluation, and empty slots)."""


def draw_video_augment(
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.7, 1.0),
    flip: bool = True,
    brightness: float = 0.2,
    contrast: float = 0.0,
) -> VideoAugment:
    """Draw a video's augmentation: crop area share uniform in ``scale`` (side ``sqrt`` of it), place
    uniform, mirror with probability 1/2, gain ``1 + U(-brightness, brightness)``, contrast
    ``1 + U(-contrast, contrast)`` (drawn only when ``contrast > 0``, so earlier draws keep their values)."""
    side = float(np.sqrt(rng.uniform(*scale)))
    fx, fy = rng.uniform(0.0, 1.0, size=2)
    mirror = bool(flip and rng.uniform() < 0.5)
    gain = 1.0 + rng.uniform(-brightness, brightness)
    c = 1.0 + rng.uniform(-contrast, contrast) if contrast > 0 else 1.0
    return VideoAugment(side, float(fx), float(fy), mirror, float(gain), float(c))


def _colour(v: torch.Tensor, gain: float | torch.Tensor, contrast: float | torch.Tensor) -> torch.Tensor:
    """``(v gain - 128) contrast + 128``, clamped to 0..255 (float)."""
    return ((v * gain - 128.0) * contrast + 128.0).clamp(0.0, 255.0)


def apply_cpu(frames: torch.Tensor, aug: VideoAugment) -> torch.Tensor:
    """The CPU reference: uint8 ``(n, 3, H, W)`` -> uint8 ``(n, 3, H, W)``: crop, bilinear resize back to
    ``(H, W)`` (``align_corners=False``), mirror, colour, rounded."""
    n, _, h, w = frames.shape
    y0, x0, ch, cw = aug.crop_box(h, w)
    out = frames[:, :, y0 : y0 + ch, x0 : x0 + cw].float()
    if (ch, cw) != (h, w) and n:
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if aug.mirror:
        out = out.flip(-1)
    if aug.contrast == 1.0:  # the original brightness-only arithmetic, bit for bit
        return (out * aug.gain).clamp_(0, 255).round_().to(torch.uint8)
    return _colour(out, aug.gain, aug.contrast).round_().to(torch.uint8)


def video_augment_factory(
    scale: tuple[float, float] = (0.7, 1.0), flip: bool = True, brightness: float = 0.2, contrast: float = 0.0
) -> Callable[[np.random.Generator], Augment]:
    """`factory(rng) -> augment` for the CPU path: the draw (`draw_video_augment`) happens when the factory
    runs; ``augment`` maps uint8 frames (n, 3, H, W) to uint8 (n, 3, H, W) with `apply_cpu`."""

    def factory(rng: np.random.Generator) -> Augment:
        aug = draw_video_augment(rng, scale, flip, brightness, contrast)
        return lambda frames: apply_cpu(frames, aug)

    return factory


def video_augment_params(
    scale: tuple[float, float] = (0.7, 1.0), flip: bool = True, brightness: float = 0.2, contrast: float = 0.0
) -> Callable[[np.random.Generator], np.ndarray]:
    """`params(rng) -> float64 (6,)` for the device path: the same draw as `video_augment_factory` with the
    same arguments and generator, as a row for `augment_to_model`."""
    return lambda rng: draw_video_augment(rng, scale, flip, brightness, contrast).as_row()


# ------------------------------------------------------------------------------------------ device path


def _axis_matrix(start: torch.Tensor, length: torch.Tensor, mirror: torch.Tensor, out: int, plane: int,
                 sub: int) -> torch.Tensor:
    """Bilinear interpolation weights ``(B, out, plane)`` that map ``plane`` source samples (luma pixels
    subsampled by ``sub``: 1 luma, 2 chroma) to ``out`` samples covering ``[start, start + length)`` luma
    pixels, reversed where ``mirror``; F.interpolate's ``align_corners=False`` rule (source coordinate
    clamped to the covered interval), so that for ``sub=1`` it equals interpolating the cropped frame."""
    i = torch.arange(out, dtype=torch.float64, device=start.device).expand(start.shape[0], out)
    i = torch.where(mirror[:, None], out - 1 - i, i)
    s, n = start[:, None], length[:, None]
    c = (s + (i + 0.5) * n / out) / sub - 0.5  # in source sample indices (sample k centred at k + 1/2)
    c = torch.minimum(torch.maximum(c, s / sub), (s + n) / sub - 1).clamp(0, plane - 1)
    i0 = c.floor()
    w1 = (c - i0).float()
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=plane - 1)
    return (1 - w1)[..., None] * F.one_hot(i0, plane) + w1[..., None] * F.one_hot(i1, plane)


def _resample(planes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float ``(B, T, C, H, W)`` -> ``(B, T, C, h, w)`` = ``rows @ planes @ cols^T`` per stream."""
    return rows[:, None, None] @ planes @ cols[:, None, None].transpose(-1, -2)


def augment_to_model(
    x: torch.Tensor,
    params: torch.Tensor | None,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    in_format: str = "rgb",
    colour: tuple[int, bool] = (2, False),
) -> torch.Tensor:
    """Native-size uint8 frames -> augmented, resized, normalised float32 ``(B, 3, T, h, w)``, on x's device.

    Args:
        x: ``uint8 (B, 3, T, H0, W0)`` RGB, or packed I420 ``uint8 (B, 1, T, H0*3/2, W0)`` (``in_format="i420"``,
            `streamseg.data.video.i420_frames`, H0 and W0 even).
        params: float64 ``(B, 6)`` draws in `AUGMENT_FIELDS` order (`video_augment_params`), or None (none).
        size: the model's ``(h, w)``. mean, std: per channel, on the [0, 1] scale.
        colour: I420 only: ``(FFmpeg colorspace id, full_range)``, `VideoFileSource.colour`.

    Crop box (pixels, rounded as `VideoAugment.crop_box` at the native size), resize (bilinear,
    ``align_corners=False``; I420 chroma sampled at its own positions) and mirror come from one
    interpolation matrix per stream and axis; then the colour matrix (I420), clamping to 0..255 as an
    rgb24 decode does, ``(v gain - 128) contrast + 128`` clamped, ``(v / 255 - mean) / std``. Runs in float32
    with autocast off; traceable by torch.compile (no host syncs, no data-dependent shapes).
    """
    b, _, t, hx, w0 = x.shape
    h0 = hx * 2 // 3 if in_format == "i420" else hx
    h, w = size
    if params is None:
        params = torch.as_tensor(IDENTITY.as_row(), device=x.device).expand(b, -1)
    p = params.to(x.device, torch.float64)
    side, fx, fy, mirror = p[:, 0], p[:, 1], p[:, 2], p[:, 3] > 0.5
    ch = torch.round(h0 * side).clamp(min=1)  # torch.round and Python's round both round half to even
    cw = torch.round(w0 * side).clamp(min=1)
    y0, x0 = torch.round(fy * (h0 - ch)), torch.round(fx * (w0 - cw))
    no = torch.zeros_like(mirror)
    with torch.autocast(x.device.type, enabled=False):
        if in_format == "i420":
            f = x.reshape(b, t, hx, w0)
            luma = _resample(f[:, :, None, :h0].float(), _axis_matrix(y0, ch, no, h, h0, 1),
                             _axis_matrix(x0, cw, mirror, w, w0, 1))
            uv = f[:, :, h0:].reshape(b, t, 2, h0 // 2, w0 // 2).float()
            uv = _resample(uv, _axis_matrix(y0, ch, no, h, h0 // 2, 2), _axis_matrix(x0, cw, mirror, w, w0 // 2, 2))
            m, o = ycbcr_matrix(*colour)
            m, o = m.to(x.device).view(3, 3, 1, 1), o.to(x.device).view(3, 1, 1)
            # as in ycbcr420_to_rgb_float (the resizes already ran): elementwise, so it fuses under compile
            rgb = m[:, 0] * luma + m[:, 1] * uv[:, :, :1] + m[:, 2] * uv[:, :, 1:] + o
            rgb = rgb.clamp(0.0, 255.0)
        else:
            rgb = _resample(x.transpose(1, 2).float(), _axis_matrix(y0, ch, no, h, h0, 1),
                            _axis_matrix(x0, cw, mirror, w, w0, 1))
        gain, contrast = (p[:, k].float().view(b, 1, 1, 1, 1) for k in (4, 5))
        v = _colour(rgb, gain, contrast)
        m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 1, 3, 1, 1) * 255.0
        s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 1, 3, 1, 1) * 255.0
        return ((v - m) / s).transpose(1, 2).contiguous()

