"""Per-video augmentation for streams: ONE random crop / flip / brightness draw per video, applied to
every chunk of it (SVTAS drew them per frame, so a clip jittered frame to frame)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor], torch.Tensor]


def video_augment_factory(
    scale: tuple[float, float] = (0.7, 1.0), flip: bool = True, brightness: float = 0.2
) -> Callable[[np.random.Generator], Augment]:
    """`factory(rng) -> augment`: the crop box, flip and brightness are drawn when the factory runs.

    The returned `augment` maps uint8 frames (n, 3, H, W) to uint8 (n, 3, H, W): a crop of side
    `sqrt(area share)` of the frame (area share uniform in `scale`) at a random place, resized back to
    (H, W) bilinearly, mirrored with probability 1/2, and scaled in brightness by 1 + U(-b, b).
    """

    def factory(rng: np.random.Generator) -> Augment:
        side = float(np.sqrt(rng.uniform(*scale)))
        fx, fy = rng.uniform(0.0, 1.0, size=2)
        mirror = flip and rng.uniform() < 0.5
        gain = 1.0 + rng.uniform(-brightness, brightness)

        def augment(frames: torch.Tensor) -> torch.Tensor:
            n, _, h, w = frames.shape
            ch, cw = max(1, round(h * side)), max(1, round(w * side))
            y0, x0 = round(fy * (h - ch)), round(fx * (w - cw))
            out = frames[:, :, y0 : y0 + ch, x0 : x0 + cw].float()
            if (ch, cw) != (h, w) and n:
                out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            if mirror:
                out = out.flip(-1)
            return (out * gain).clamp_(0, 255).round_().to(torch.uint8)

        return augment

    return factory
