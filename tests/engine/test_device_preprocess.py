"""Device preprocessing of video streams (data.preprocess=device-rgb / device-i420): the workers ship
native-size uint8 frames and each slot's augmentation draw; the datamodule's batch hook crops, resizes,
mirrors, shifts colour and normalises. Against the CPU path (data.preprocess=cpu) on the same seed."""

from __future__ import annotations

import itertools


import numpy as np
import pytest
import torch

from streamseg.data.augment import AUGMENT_FIELDS, IDENTITY
from streamseg.data.errors import DataError
from streamseg.engine import VideoStreamDataModule

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _dm(root, preprocess: str, frame_size=(64, 64)) -> VideoStreamDataModule:
    dm = VideoStreamDataModule(str(root), 1, chunk_size=6, frame_size=frame_size, batch_size=2, seed=0,
                               bg_classes=("background",), preprocess=preprocess)
    dm.setup()
    return dm


def test_device_rgb_training_batches_match_the_cpu_path(synth_video_root):
    """Synth videos are 64x64: at frame_size 64x64 both paths crop the same box, so the normalised
    training frames agree to the CPU path's uint8 rounding, chunk by chunk, for every slot."""
    cpu, dev = _dm(synth_video_root, "cpu"), _dm(synth_video_root, "device-rgb")
    assert dev.native_size == (64, 64) and dev.sample_shape == (3, 64, 64)
    mirrored = set()
    for a, b in itertools.islice(zip(cpu.train_dataloader(), dev.train_dataloader()), 6):
        assert "aug" not in a and b["aug"].shape == (2, len(AUGMENT_FIELDS)) and b["aug"].dtype == torch.float64
        assert b["names"] == a["names"] and torch.equal(b["labels"], a["labels"])
        xa = cpu.on_after_batch_transfer(a, 0)["x"]
        xb = dev.on_after_batch_transfer(b, 0)["x"]
        valid = a["mask"].bool()[:, None, :, None, None].expand_as(xa)
        assert (xa - xb)[valid].abs().max() <= 0.5 / 255 / min(STD) + 1e-4
        mirrored |= {bool(m) for m, n in zip(b["aug"][:, 3], b["names"]) if n is not None}
        for row, name in zip(b["aug"], b["names"]):  # an empty slot carries the identity
            if name is None:
                assert np.array_equal(row.numpy(), IDENTITY.as_row())
    assert mirrored == {True, False}  # the comparison covered both kinds of draw (seed 0: the first two videos)


def test_device_i420_evaluation_batches_resize_on_the_device(synth_video_root):
    dm = _dm(synth_video_root, "device-i420", frame_size=(16, 16))
    assert dm.sample_shape == (1, 96, 64)
    ref = _dm(synth_video_root, "cpu", frame_size=(16, 16))
    for batch, other in zip(dm.test_dataloader(), ref.test_dataloader()):
        assert batch["x"].shape == (2, 1, 6, 96, 64) and batch["x"].dtype == torch.uint8 and "aug" not in batch
        x = dm.on_after_batch_transfer(batch, 0)["x"]
        xr = ref.on_after_batch_transfer(other, 0)["x"]
        assert x.shape == xr.shape == (2, 3, 6, 16, 16)
        valid = batch["mask"].bool()  # padding is zero Y'CbCr, not black: masked, as everywhere
        # swscale's rgb24 + uint8 resize vs the float conversion + resize of the planes: close, not equal
        assert (x - xr).transpose(1, 2)[valid].abs().mean() < 0.05


def test_device_preprocess_needs_one_native_size(synth_video_root, tmp_path):
    import shutil

    from streamseg.data.synth_render import encode_mp4

    root = tmp_path / "mixed"
    shutil.copytree(synth_video_root, root)
    odd = sorted((root / "Videos").iterdir())[-1]
    n = len(list(odd.with_suffix("").parent.parent.joinpath("groundTruth", odd.stem + ".txt").read_text().split()))
    encode_mp4(odd, np.zeros((n, 32, 48, 3), np.uint8), 15)
    with pytest.raises(DataError, match=r"32x48 frames.*one native frame size"):
        _dm(root, "device-rgb")
    _dm(root, "cpu")  # the CPU path resizes every video: fine
