"""SegmentationLoss against a literal transcription of the official MS-TCN loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamseg.models import SegmentationLoss, SVTASStreamLoss

K = 6


def _official_loss(predictions, batch_target, mask, num_classes):
    """yabufarha/ms-tcn model.py Trainer.train, verbatim but for names; mask is (B, K, T)."""
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    mse = nn.MSELoss(reduction="none")
    loss = 0
    for p in predictions:
        loss += ce(p.transpose(2, 1).contiguous().view(-1, num_classes), batch_target.view(-1))
        loss += 0.15 * torch.mean(
            torch.clamp(
                mse(F.log_softmax(p[:, :, 1:], dim=1), F.log_softmax(p.detach()[:, :, :-1], dim=1)), min=0, max=16
            )
            * mask[:, :, 1:]
        )
    return loss


def _batch(lengths: list[int], stages: int = 3, seed: int = 0):
    """Padded logits (S, B, K, T) scaled so the clamp engages, labels (B, T) with -100 pad, mask (B, T)."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    logits = 6 * torch.randn(stages, batch, K, length, generator=gen)
    labels = torch.randint(0, K, (batch, length), generator=gen)
    mask = torch.zeros(batch, length)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        labels[b, n:] = -100
    return logits, labels, mask


@pytest.mark.parametrize("lengths", [[40], [40, 25, 9]], ids=["one_video", "padded_batch"])
def test_mean_matches_official_loss_and_gradient(lengths: list[int]) -> None:
    logits, labels, mask = _batch(lengths)
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    loss, parts = SegmentationLoss(K)(ours_in, labels, mask)
    expected = _official_loss(ref_in, labels, mask[:, None].expand(-1, K, -1), K)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert parts["frames"].item() == sum(lengths)
    torch.testing.assert_close(parts["ce"] + parts["smooth"], loss.detach())
    clamped = SegmentationLoss(K, smooth_clamp=1e9)(logits, labels, mask)[1]["smooth"]
    assert clamped > parts["smooth"]  # the test data do reach the clamp


def test_mask_may_carry_the_channel_dim_and_masked_labels_are_ignored() -> None:
    logits, labels, mask = _batch([30, 20])
    loss_fn = SegmentationLoss(K)
    loss, _ = loss_fn(logits, labels, mask)
    torch.testing.assert_close(loss_fn(logits, labels, mask[:, None])[0], loss)
    real_labels = labels.clone()
    real_labels[1, 20:] = 0  # a label under a mask of 0 must not count
    torch.testing.assert_close(loss_fn(logits, real_labels, mask)[0], loss)


def test_sum_reduction_adds_up_over_chunks() -> None:
    """Chunk sums add to the whole video's; divided by the frames they give the mean-mode terms."""
    logits, labels, mask = _batch([37, 30], stages=2, seed=1)
    mean_parts = SegmentationLoss(K)(logits, labels, mask)[1]
    summed = SegmentationLoss(K, reduction="sum")
    whole, whole_parts = summed(logits, labels, mask)
    ce, frames = 0.0, 0
    for start in range(0, 37, 8):
        _, p = summed(logits[..., start : start + 8], labels[:, start : start + 8], mask[:, start : start + 8])
        ce, frames = ce + p["ce"], frames + p["frames"]
    torch.testing.assert_close(ce, whole_parts["ce"])
    assert frames == whole_parts["frames"] == 67
    torch.testing.assert_close(whole_parts["ce"] / 67, mean_parts["ce"])
    # The official smoothing mean divides by B * K * (T - 1); the sum mode averages over K only.
    torch.testing.assert_close(whole_parts["smooth"] / (2 * 36), mean_parts["smooth"])
    torch.testing.assert_close(whole, whole_parts["ce"] + whole_parts["smooth"])


def test_all_ignored_chunk_gives_zero_cross_entropy_not_nan() -> None:
    logits, labels, mask = _batch([10])
    mask[:] = 0
    loss, parts = SegmentationLoss(K)(logits.requires_grad_(True), labels, mask)
    assert parts["frames"] == 0 and parts["ce"] == 0 and torch.isfinite(loss)
    loss.backward()


def test_shapes_and_reduction_are_checked() -> None:
    logits, labels, mask = _batch([10])
    with pytest.raises(ValueError, match=r"logits \(S, B, 5, T\)"):
        SegmentationLoss(5)(logits, labels, mask)
    with pytest.raises(ValueError, match=r"labels and mask of shape \(B, T\)"):
        SegmentationLoss(K)(logits, labels[:, :5], mask)
    with pytest.raises(ValueError, match="reduction"):
        SegmentationLoss(K, reduction="frames")  # type: ignore[arg-type]


@pytest.mark.parametrize("window, windows, counted", [(0, 0, 2), (2, 2, 1), (4, 1, 2)])
def test_smooth_window_averages_over_whole_windows(window: int, windows: int, counted: int) -> None:
    """C2F-TCN's smoothing: transitions inside windows of W frames only, divided by windows * K * (W - 1).

    Logits (K = 2) per frame: (0, 0), (ln 3, 0), (0, 0) -> log-probabilities (ln 1/2, ln 1/2), (ln 3/4,
    ln 1/4), (ln 1/2, ln 1/2). Each of the two transitions costs ln(3/2)^2 + ln(1/2)^2 (squared, the
    signs do not matter). W = 0 (MS-TCN): both, / (B K (T - 1)) = 4; W = 2: windows [0, 1], [2, pad]:
    only the first transition, / (2 * 2 * 1) = 4; W = 4: one padded window with both, / (1 * 2 * 3) = 6.
    """
    step = math.log(1.5) ** 2 + math.log(0.5) ** 2
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 0.0]])[None, None]  # (1, 1, 2, 3)
    labels, mask = torch.tensor([[0, 0, 1]]), torch.ones(1, 3)
    _, parts = SegmentationLoss(2, smooth_window=window)(logits, labels, mask)
    denominator = 4 if window == 0 else windows * 2 * (window - 1)
    assert parts["smooth"].item() == pytest.approx(0.15 * counted * step / denominator, rel=1e-6)
    # cross-entropy unchanged: mean of -ln 1/2, -ln 3/4, -ln 1/2
    assert parts["ce"].item() == pytest.approx((2 * math.log(2) - math.log(0.75)) / 3, rel=1e-6)


def test_svtas_stream_loss_normalises_per_video_and_weighs_by_the_dice_reward() -> None:
    """Two streams, K = 2, a chunk of T = 2 frames; video 0 has n = 2 chunks, video 1 n = 1.
    Logits: v0 (0, 0), (ln 3, 0) -> p (1/2, 1/2), (3/4, 1/4); v1 (0, 0), (0, 0). Labels v0 (0, 0), v1 (1, pad).

    CE = (v0: (ln 2 + ln 4/3) / 2 + v1: ln 2 / 1) / 3 valid labels.
    SMOOTH: v0's one step costs ln(3/2)^2 + ln(1/2)^2 over K (T - 1) = 2 entries, / n = 2; v1's costs 0;
    mean over the 2 streams -> (ln(3/2)^2 + ln(1/2)^2) / 8, times 0.15.
    Dice (s = 1e-5), y = one-hot with the padding label clamped to class 0, m = valid labels:
      v0 class 0: (2 (1/2 + 3/4) + s) / (1/4 + 9/16 + 2 + s); class 1: s / (1/4 + 1/16 + s)
      v1 class 0: s / (1/2 + 1 + s);  class 1: (2 * 1/2 + s) / (1/2 + 1 + s)
    dice = mean over streams of the class means; reward = 4 ** dice + 1 (SVTAS-RL's 4^dice - (-1)).
    """
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # (1, 2, 2, 2)
    labels, mask = torch.tensor([[0, 0], [1, -100]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    chunks = torch.tensor([2, 1])
    ce = ((math.log(2) + math.log(4 / 3)) / 2 + math.log(2)) / 3
    smooth = 0.15 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 8
    loss, parts = SVTASStreamLoss(2)(logits, labels, mask, chunks)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert parts["smooth"].item() == pytest.approx(smooth, rel=1e-6)
    assert loss.item() == pytest.approx(ce + smooth, rel=1e-6) and parts["frames"].item() == 1
    s = 1e-5
    v0 = ((2 * 1.25 + s) / (0.8125 + 2 + s) + s / (0.3125 + s)) / 2
    v1 = (s / (1.5 + s) + (1 + s) / (1.5 + s)) / 2
    reward = 4 ** ((v0 + v1) / 2) + 1
    rl_loss, rl_parts = SVTASStreamLoss(2, reward="dice")(logits, labels, mask, chunks)
    assert rl_parts["reward"].item() == pytest.approx(reward, rel=1e-6)
    assert rl_loss.item() == pytest.approx((ce + smooth) * reward, rel=1e-6)
