"""The MS-TCN segmentation loss: per-stage cross-entropy plus a truncated temporal smoothing term.

For stage logits y (B, K, T), labels (B, T) and mask (B, T), summed over the S stages:

    CE(y, labels)  +  smooth_weight * mean_{b,k,t>=1}( clamp((log_softmax(y)_t - log_softmax(y)_{t-1}.detach())**2,
                                                          0, smooth_clamp) * mask_t )

This is the official MS-TCN loss (yabufarha/ms-tcn ``model.py``, Trainer.train), including its
denominator: the smoothing mean divides by B * K * (T - 1), padding frames included, so a padded
batch smooths less than its valid frames alone would. T is the batch's longest video (the last frame any
mask keeps), so padding beyond it (length buckets, `train.length_bucket`) leaves the loss unchanged.
Defaults: weight 0.15, clamp 16 (= tau**2, tau 4).
Frames whose label is ``ignore_index`` or whose mask is 0 take no part in the cross-entropy.

``reduction="sum"`` is for normalising over chunks of a stream: it returns sums instead of means, so the
engine can divide by the valid frames of the whole video (``parts["frames"]``, summed over chunks):
    loss = sum_stages( sum_{valid t} CE_t  +  smooth_weight * sum_{b, t>=1} mask_t * mean_k(clamped sq. diff) )
(for a single unpadded video, ``loss / frames`` equals the mean loss up to the smoothing denominator,
T rather than T - 1). In both modes the smoothing only sees transitions inside the call: the step from
the previous chunk's last frame to this chunk's first is not penalised.

``smooth_window = W > 0`` (C2F-TCN, dipika-singhania/C2F-TCN ``train.py`` CriterionClass with the samples of
``dataset.py``): each video is cut into windows of W frames, the last zero-padded, as the official loader
makes its samples; the smoothing sees transitions inside a window only and its mean divides by
(windows) * K * (W - 1), padding included (length-bucket padding too). (The official smoothing takes no
log_softmax of its input, the log of the ensemble's probabilities; for such an input log_softmax only
subtracts log(1 + K * 1e-10), the same at every frame.)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SVTASStreamLoss", "SegmentationLoss"]


class SegmentationLoss:
    """Cross-entropy + truncated MSE smoothing, summed over stages.

    Args:
        num_classes: K; the logits' class dimension is checked against it.
        smooth_weight: lambda of the smoothing term (MS-TCN: 0.15).
        smooth_clamp: upper clamp of the squared log-probability difference (MS-TCN: 16 = 4**2).
        ignore_index: label value that takes no part in the cross-entropy (padding: -100).
        reduction: "mean" (the official loss, per call) or "sum" (sums; see the module docstring).
        smooth_window: 0, or the window length W of C2F-TCN's smoothing (module docstring; "mean" only).

    Call: ``(logits (S, B, K, T), labels (B, T) int64, mask (B, T) or (B, 1, T) float) -> (loss, parts)``,
    where ``loss`` is a scalar with gradient and ``parts`` holds detached scalars: ``"ce"`` and
    ``"smooth"`` (the two terms as added into ``loss``, summed over stages; ``smooth`` already weighted),
    ``"frames"`` (the number of frames that count in the cross-entropy, over the batch).
    """

    def __init__(
        self,
        num_classes: int,
        smooth_weight: float = 0.15,
        smooth_clamp: float = 16.0,
        ignore_index: int = -100,
        reduction: Literal["mean", "sum"] = "mean",
        smooth_window: int = 0,
    ) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"SegmentationLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        if smooth_window < 0 or smooth_window == 1 or (smooth_window and reduction != "mean"):
            raise ValueError(f"SegmentationLoss: smooth_window must be 0 or >= 2 with reduction 'mean', got "
                             f"{smooth_window} with {reduction!r}")
        self.smooth_window = smooth_window
        self.num_classes = num_classes
        self.smooth_weight = smooth_weight
        self.smooth_clamp = smooth_clamp
        self.ignore_index = ignore_index
        self.reduction = reduction

    def __call__(self, logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if logits.dim() != 4 or logits.shape[2] != self.num_classes:
            raise ValueError(
                f"SegmentationLoss: expected logits (S, B, {self.num_classes}, T), got {tuple(logits.shape)}"
            )
        _, batch, _, length = logits.shape
        if mask.dim() == 3 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if labels.shape != (batch, length) or mask.shape != (batch, length):
            raise ValueError(
                f"SegmentationLoss: expected labels and mask of shape (B, T) = {(batch, length)}, "
                f"got {tuple(labels.shape)} and {tuple(mask.shape)}"
            )
        mask = mask.to(logits.dtype)
        # Masked frames are ignored even if a label is there (padding labels are -100 anyway).
        targets = torch.where(mask > 0, labels, torch.full_like(labels, self.ignore_index))
        valid = targets != self.ignore_index
        frames = valid.sum()

        ce_total = logits.new_zeros(())
        smooth_total = logits.new_zeros(())
        # official denominator B * K * (T - 1) with T the longest video (masks are prefixes), on the device
        smooth_count = (mask.amax(dim=0) > 0).sum().sub(1).clamp(min=1) * batch * self.num_classes
        for stage_logits in logits:  # (B, K, T)
            ce_sum = F.cross_entropy(stage_logits, targets, ignore_index=self.ignore_index, reduction="sum")
            log_p = F.log_softmax(stage_logits, dim=1)
            smooth_mask = mask
            if self.smooth_window:
                log_p, smooth_mask = _windows(log_p, self.smooth_window), _windows(mask[:, None], self.smooth_window)[:, 0]
            # The previous frame is detached, as in the official code: only y_t is pulled towards y_{t-1}.
            sq = (log_p[:, :, 1:] - log_p.detach()[:, :, :-1]) ** 2
            sq = torch.clamp(sq, min=0, max=self.smooth_clamp) * smooth_mask[:, None, 1:]  # (B, K, T - 1)
            if self.reduction == "mean":
                # An all-ignored batch gives 0, not the 0/0 = NaN of the official code.
                ce_total = ce_total + ce_sum / frames.clamp(min=1)
                smooth_total = smooth_total + (sq.mean() if self.smooth_window else sq.sum() / smooth_count)
            else:
                ce_total = ce_total + ce_sum
                smooth_total = smooth_total + sq.mean(dim=1).sum()
        smooth_total = self.smooth_weight * smooth_total
        loss = ce_total + smooth_total
        parts = {"ce": ce_total.detach(), "smooth": smooth_total.detach(), "frames": frames.detach()}
        return loss, parts


def _windows(x: Tensor, window: int) -> Tensor:
    """(B, C, T) -> (B * n, C, window), n = ceil(T / window), zero-padded at the end of each video."""
    batch, channels, length = x.shape
    n = -(-length // window)
    x = F.pad(x, (0, n * window - length))
    return x.reshape(batch, channels, n, window).permute(0, 2, 1, 3).reshape(batch * n, channels, window)


class SVTASStreamLoss:
    """SVTAS's streaming segmentation loss, per chunk (Thinksky5124/SVTAS ``svtas/model/losses/segmentation_loss.py``
    ``SegmentationLoss``), and with ``reward="dice"`` SVTAS-RL's reward-weighted loss (arXiv 2309.15683;
    ``svtas/model/losses/rl_dpg_loss.py`` ``RLPGSegmentationLoss``).

    For one chunk of B streams, stage logits y (B, K, T), labels (B, T) (-100 = none), mask (B, T) and n_b =
    the number of chunks of stream b's video (SVTAS's ``precise_sliding_num``), summed over stages:

        CE = sum_b ( sum_t CE_{b,t} / n_b ) / #(labels != -100 in the chunk)
        SMOOTH = mean_b ( mean_{k, t>=1}( clamp((log_softmax y_t - log_softmax y_{t-1}.detach())^2, 0, 16) * mask_t ) / n_b )
        loss = sum_stages( CE + smooth_weight * SMOOTH )

    so that summed over a video's chunks each term is a per-video mean. ``reward="dice"`` multiplies the loss
    by a reward computed without gradient from the last stage: ``reward_base ** dice - reward_offset`` with
    the official defaults 4 and -1 (so 4^dice + 1), where dice is the batch mean of each stream's mean over
    classes of the soft Dice coefficient, as the official computes it:
    (2 sum_t p_{k,t} y_{k,t} m_t + s) / (sum_t (p_{k,t}^2 + y_{k,t}^2) + s), p the softmax, y the one-hot of
    the labels with -100 clamped to class 0, m = valid labels x mask, s = 1e-5; the denominator runs over
    every frame of the chunk, padding included (the official's). A higher Dice (a better chunk) weighs
    the chunk more.

    Call: ``(logits (S, B, K, T), labels (B, T), mask (B, T) | (B, 1, T), chunks (B,)) -> (loss, parts)``;
    ``parts["frames"]`` is 1: the loss is already normalised, so the engine's division by the window's
    frames (`SegmentationModule`, stream batches) leaves a window of one chunk (``train.tbptt_chunks=1``,
    SVTAS's SETE) as it is, and averages over a longer window's chunks.
    """

    def __init__(self, num_classes: int, smooth_weight: float = 0.15, smooth_clamp: float = 16.0,
                 ignore_index: int = -100, reward: Literal["none", "dice"] = "none", reward_base: float = 4.0,
                 reward_offset: float = -1.0, dice_smooth: float = 1e-5, dice_exponent: float = 2.0) -> None:
        if reward not in ("none", "dice"):
            raise ValueError(f"SVTASStreamLoss: reward must be 'none' or 'dice', got {reward!r}")
        self.num_classes, self.smooth_weight, self.smooth_clamp = num_classes, smooth_weight, smooth_clamp
        self.ignore_index, self.reward = ignore_index, reward
        self.reward_base, self.reward_offset = reward_base, reward_offset
        self.dice_smooth, self.dice_exponent = dice_smooth, dice_exponent

    def dice(self, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """The official soft Dice coefficient of one stage (B, K, T), averaged over classes and the batch."""
        p = F.softmax(logits, dim=1)
        y = F.one_hot(labels.clamp(0, self.num_classes - 1), self.num_classes).permute(0, 2, 1).to(p.dtype)
        m = ((labels != self.ignore_index) & (mask > 0)).to(p.dtype)[:, None]
        num = 2 * (p * y * m).sum(dim=2) + self.dice_smooth
        den = (p.pow(self.dice_exponent) + y.pow(self.dice_exponent)).sum(dim=2) + self.dice_smooth
        return (num / den).mean(dim=1).mean()

    def __call__(self, logits: Tensor, labels: Tensor, mask: Tensor, chunks: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if logits.dim() != 4 or logits.shape[2] != self.num_classes:
            raise ValueError(f"SVTASStreamLoss: expected logits (S, B, {self.num_classes}, T), got {tuple(logits.shape)}")
        _, batch, _, length = logits.shape
        if mask.dim() == 3:
            mask = mask[:, 0]
        mask = mask.to(logits.dtype)
        targets = torch.where(mask > 0, labels, torch.full_like(labels, self.ignore_index))
        n = chunks.to(logits.device, logits.dtype).clamp(min=1)  # (B,)
        valid = (targets != self.ignore_index).sum().clamp(min=1)
        ce_total = logits.new_zeros(())
        smooth_total = logits.new_zeros(())
        for stage in logits:  # (B, K, T)
            ce = F.cross_entropy(stage, targets, ignore_index=self.ignore_index, reduction="none")  # (B, T)
            ce_total = ce_total + (ce.sum(dim=1) / n).sum() / valid
            if length > 1:
                log_p = F.log_softmax(stage, dim=1)
                sq = torch.clamp((log_p[:, :, 1:] - log_p.detach()[:, :, :-1]) ** 2, 0, self.smooth_clamp)
                per_video = (sq * mask[:, None, 1:]).reshape(batch, -1).mean(dim=1)  # (B,)
                smooth_total = smooth_total + (per_video / n).mean()
        smooth_total = self.smooth_weight * smooth_total
        loss = ce_total + smooth_total
        parts = {"ce": ce_total.detach(), "smooth": smooth_total.detach(), "frames": loss.new_ones(())}
        if self.reward == "dice":
            with torch.no_grad():
                reward = self.reward_base ** self.dice(logits[-1], targets, mask) - self.reward_offset
            loss = loss * reward
            parts["reward"] = reward
        return loss, parts
