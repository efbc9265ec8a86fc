"""The device augmentation path (`augment_to_model`) against the CPU reference (`video_augment_factory` +
normalisation): same seed -> same draw -> the same transform, run here on CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamseg.data.augment import (
    IDENTITY,
    VideoAugment,
    apply_cpu,
    augment_to_model,
    draw_video_augment,
    video_augment_factory,
    video_augment_params,
)
from streamseg.data.streams import normalize_frames
from streamseg.data.video import i420_frames, ycbcr420_to_rgb_float, ycbcr_matrix

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _frames(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 (B, 3, T, H, W): a low-resolution noise upsampled, so crops differ visibly."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b * t, 3, h // 4, w // 4, generator=g) * 255
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return up.round().to(torch.uint8).view(b, t, 3, h, w).transpose(1, 2).contiguous()


@pytest.mark.parametrize("contrast", [0.0, 0.3])
def test_same_seed_gives_the_same_draw_on_both_paths(contrast):
    for video in range(20):
        rng_cpu, rng_dev = (np.random.default_rng([3, 1, video]) for _ in range(2))
        expected = draw_video_augment(rng_cpu, contrast=contrast).as_row()
        assert np.array_equal(video_augment_params(contrast=contrast)(rng_dev), expected)
    # the brightness-only draw is unchanged by the contrast option (earlier draws keep their values)
    a = draw_video_augment(np.random.default_rng(5))
    b = draw_video_augment(np.random.default_rng(5), contrast=0.3)
    assert (a.side, a.fx, a.fy, a.mirror, a.gain) == (b.side, b.fx, b.fy, b.mirror, b.gain) and a.contrast == 1.0


@pytest.mark.parametrize("contrast", [0.0, 0.3])
def test_device_path_equals_cpu_reference_at_the_model_size(contrast):
    """Native size == model size: the CPU path (crop, resize back, mirror, colour, uint8 rounding, then
    normalise) and the device path apply the same transform; they differ by the CPU's rounding only."""
    b, t, h, w = 6, 3, 24, 32
    x = _frames(b, t, h, w)
    rows, expected = [], []
    for i in range(b):
        factory = video_augment_factory(contrast=contrast)
        augment = factory(np.random.default_rng([0, 0, i]))
        rows.append(video_augment_params(contrast=contrast)(np.random.default_rng([0, 0, i])))
        cpu = augment(x[i].transpose(0, 1))  # (T, 3, H, W) uint8
        expected.append(normalize_frames(cpu.transpose(0, 1)[None], MEAN, STD)[0])
    params = torch.tensor(np.stack(rows))
    assert params[:, 3].sum() not in (0, b)  # both mirrored and unmirrored videos among the draws
    out = augment_to_model(x, params, (h, w), MEAN, STD)
    assert out.shape == (b, 3, t, h, w) and out.dtype == torch.float32
    half_step = 0.5 / 255 / min(STD) + 1e-4  # the CPU path rounds to uint8
    assert (out - torch.stack(expected)).abs().max() <= half_step


def test_device_path_crops_the_same_fraction_of_a_larger_frame():
    """A native frame twice the model's size: the device path's crop is the same region of the scene as
    the CPU reference's crop of the frame resized first (compared at low frequency: one resize vs two)."""
    h, w = 24, 32
    x = _frames(1, 2, 2 * h, 2 * w, seed=1)
    aug = VideoAugment(side=0.75, fx=0.75, fy=0.5, mirror=True, gain=1.1)  # boxes at the same fractions
    small = F.interpolate(x[0].transpose(0, 1).float(), size=(h, w), mode="bilinear").round().to(torch.uint8)
    cpu = normalize_frames(apply_cpu(small, aug).transpose(0, 1)[None], MEAN, STD)
    dev = augment_to_model(x, torch.tensor(aug.as_row())[None], (h, w), MEAN, STD)
    assert (F.avg_pool2d(dev[0].transpose(0, 1), 4) - F.avg_pool2d(cpu[0].transpose(0, 1), 4)).abs().max() < 0.15
    # and a different crop place is far from it: the comparison can fail
    other = augment_to_model(x, torch.tensor(VideoAugment(0.75, 0.0, 0.9, True, 1.1).as_row())[None], (h, w), MEAN, STD)
    assert (F.avg_pool2d(other[0].transpose(0, 1), 4) - F.avg_pool2d(cpu[0].transpose(0, 1), 4)).abs().max() > 0.3


def test_identity_is_a_plain_resize_and_normalisation():
    x = _frames(2, 3, 30, 40)
    out = augment_to_model(x, None, (15, 20), MEAN, STD)
    ref = F.interpolate(x.transpose(1, 2).reshape(6, 3, 30, 40).float(), size=(15, 20), mode="bilinear",
                        align_corners=False)
    ref = normalize_frames(ref.view(2, 3, 3, 15, 20).transpose(1, 2) / 255.0, MEAN, STD)
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.allclose(augment_to_model(x, torch.tensor(IDENTITY.as_row()).expand(2, -1), (15, 20), MEAN, STD),
                          out)


def test_i420_identity_equals_the_inference_conversion():
    """Packed I420 planes, no augmentation: the same numbers as `ycbcr420_to_rgb_float` (what the
    inference step runs), clamped, then normalised."""
    import av

    rgb = _frames(1, 2, 24, 32)[0].transpose(0, 1).permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
    frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
              for f in rgb]
    packed = i420_frames(frames)  # (T, 1, 36, 32)
    x = packed.transpose(0, 1)[None]  # (1, 1, T, 36, 32)
    out = augment_to_model(x, None, (12, 16), MEAN, STD, in_format="i420", colour=(2, False))
    m, o = ycbcr_matrix(2, False)
    y, uv = packed[:, 0, :24], packed[:, 0, 24:].reshape(2, 2, 12, 16)
    ref = ycbcr420_to_rgb_float(y, uv, (12, 16), m, o).clamp(0, 255)
    ref = normalize_frames(ref.transpose(0, 1)[None] / 255.0, MEAN, STD)
    assert torch.allclose(out, ref, atol=1e-3)
    # mirrored: the mirror image of the unmirrored result (the crop is the whole frame)
    mirrored = augment_to_model(x, torch.tensor(VideoAugment(mirror=True).as_row())[None], (12, 16), MEAN, STD,
                                in_format="i420")
    assert torch.allclose(mirrored, out.flip(-1), atol=1e-3)
