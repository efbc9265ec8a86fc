"""DiffAct's training loss and its targets (Finspire13/DiffAct ``model.py`` ``get_training_loss``,
``dataset.py`` ``get_boundary_seq``); the model is :mod:`streamseg.models.diffact`.

The Gaussian smoothing is scipy's ``gaussian_filter1d`` (reflect mode, truncate 4), written in torch so
that scipy is not a dependency; tests compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .diffact import DiffAct, reflect_index

__all__ = ["DiffActLoss", "DiffActLossParams", "gaussian_filter1d", "boundary_targets", "soft_targets"]


@dataclass
class DiffActLossParams:
    """The loss settings of DiffAct's recipe (`streamseg.engine.recipes.diffact.diffact_module`): the official
    ``loss_weights`` (``loss_*``), ``class_weighting``, ``soft_label`` and ``boundary_smooth`` (frames at the
    original frame rate; the recipe divides it by ``data.sample_rate``). A model config's `Params`
    subclasses this, so they are ``-o model.<field>`` keys."""

    loss_encoder_ce: float = 0.5
    loss_encoder_smooth: float = 0.1
    loss_decoder_ce: float = 0.5
    loss_decoder_smooth: float = 0.1
    loss_decoder_boundary: float = 0.1
    class_weighting: bool = True
    soft_label: float | None = 1.4
    boundary_smooth: float | None = 1.0


def gaussian_filter1d(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """``scipy.ndimage.gaussian_filter1d(x, sigma)`` along the last dimension (mode 'reflect')."""
    radius = int(truncate * float(sigma) + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * taps.square() / float(sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    n = x.shape[-1]
    padded = x[..., reflect_index(torch.arange(-radius, n + radius, device=x.device), n)]
    return (padded.unfold(-1, 2 * radius + 1, 1) * kernel).sum(-1)


def boundary_targets(labels: Tensor, sigma: float | None) -> Tensor:
    """The official ``get_boundary_seq`` for one video's labels (n,): 1 on both sides of every label change,
    Gaussian-smoothed (``sigma`` frames; None = not smoothed), capped at the peak of one smoothed boundary
    and scaled to a maximum of 1. A video with one segment gets zeros (the official code fails on it)."""
    n = labels.shape[0]
    seq = torch.zeros(n, dtype=torch.float64, device=labels.device)
    change = torch.nonzero(labels[1:] != labels[:-1]).flatten() + 1
    if change.numel() == 0:
        return seq.float()
    seq[change] = 1.0
    seq[change - 1] = 1.0
    if sigma is not None:
        seq = gaussian_filter1d(seq, sigma)
        one = torch.zeros(n, dtype=torch.float64, device=labels.device)
        one[n // 2] = 1.0
        one[n // 2 - 1] = 1.0
        seq = seq.clamp(max=float(gaussian_filter1d(one, sigma).max()))
        seq = seq / seq.max()
    return seq.float()


def soft_targets(labels: Tensor, num_classes: int, sigma: float) -> Tensor:
    """One video's one-hot labels (n,) -> (K, n), each class row Gaussian-smoothed along time (official
    ``soft_label``; rows still sum to 1). Labels < 0 give zero columns (they take no part in the loss)."""
    onehot = F.one_hot(labels.clamp(min=0), num_classes).T.double() * (labels >= 0).double()
    return gaussian_filter1d(onehot, sigma).float()


class DiffActLoss:
    """DiffAct's training loss: encoder terms on the forward's logits, decoder terms on a denoising pass.

    Per video (the official per-video means; the batch loss is their mean, as the official accumulation of
    ``batch_size`` single-video steps each divided by ``batch_size``)::

        encoder_ce * CE(enc) + encoder_smooth * TMSE(enc)
          + decoder_ce * CE(dec) + decoder_smooth * TMSE(dec) + decoder_boundary * BCE(1 - <p_t, p_{t-1}>, b_t)

    CE: class-weighted cross-entropy (``class_weights``, None = unweighted), or with ``soft_label`` = sigma
    the unweighted cross-entropy against Gaussian-smoothed one-hot targets; a mean over the video's frames.
    TMSE: mean over classes and frame pairs of clamp((log p_t - log p_{t-1}.detach())^2, 0, 16). The
    boundary term: the decoder's probability of a change between t - 1 and t (the t - 1 side detached)
    against :func:`boundary_targets` with sigma ``boundary_smooth`` (in frames at the model's sample rate),
    BCE averaged over frame pairs. The decoder pass (:meth:`DiffAct.training_decoder_logits`) noises the
    labels; the boundary targets also pick the hidden features of 'boundary0X-' conditions.

    Call: ``(logits (1, B, K, T), labels (B, T), mask (B, T) | (B, 1, T)) -> (loss, parts)``, parts (detached,
    weighted as added): ``encoder_ce``, ``encoder_smooth``, ``decoder_ce``, ``decoder_smooth``,
    ``decoder_boundary``, and ``frames`` (valid frames of the batch).
    """

    def __init__(
        self,
        model: DiffAct,
        num_classes: int,
        *,
        encoder_ce: float = 0.5,
        encoder_smooth: float = 0.1,
        decoder_ce: float = 0.5,
        decoder_smooth: float = 0.1,
        decoder_boundary: float = 0.1,
        class_weights: Tensor | None = None,
        soft_label: float | None = None,
        boundary_smooth: float | None = None,
        smooth_clamp: float = 16.0,
    ) -> None:
        if class_weights is not None and class_weights.shape != (num_classes,):
            raise ValueError(f"DiffActLoss: class_weights must have shape ({num_classes},), "
                             f"got {tuple(class_weights.shape)}")
        self.model, self.num_classes = model, num_classes
        self.weights = {"encoder_ce": encoder_ce, "encoder_smooth": encoder_smooth, "decoder_ce": decoder_ce,
                        "decoder_smooth": decoder_smooth, "decoder_boundary": decoder_boundary}
        self.class_weights = class_weights
        self.soft_label, self.boundary_smooth, self.smooth_clamp = soft_label, boundary_smooth, smooth_clamp

    def _targets(self, labels: Tensor, valid: Tensor) -> tuple[Tensor | None, Tensor]:
        """Soft targets (B, K, T) (None without soft_label) and boundary targets (B, T), per video."""
        batch, length = labels.shape
        soft = labels.new_zeros(batch, self.num_classes, length, dtype=torch.float32) if self.soft_label else None
        boundary = labels.new_zeros(batch, length, dtype=torch.float32)
        for b in range(batch):
            idx = torch.nonzero(valid[b]).flatten()
            if idx.numel() == 0:
                continue
            boundary[b, idx] = boundary_targets(labels[b, idx], self.boundary_smooth)
            if soft is not None:
                soft[b][:, idx] = soft_targets(labels[b, idx], self.num_classes, self.soft_label)
        return soft, boundary

    def _ce(self, logits: Tensor, labels: Tensor, soft: Tensor | None) -> Tensor:
        """Per-frame cross-entropy (B, T)."""
        if soft is not None:
            return -(soft * F.log_softmax(logits, dim=1)).sum(dim=1)
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=-100, reduction="none")

    def _smooth(self, logits: Tensor) -> Tensor:
        """Per-pair truncated MSE (B, T - 1), averaged over classes."""
        logp = F.log_softmax(logits, dim=1)
        return (logp[:, :, 1:] - logp.detach()[:, :, :-1]).square().clamp(0, self.smooth_clamp).mean(dim=1)

    def __call__(self, logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if mask.dim() == 3:
            mask = mask[:, 0]
        valid = mask > 0
        labels = torch.where(valid, labels, torch.full_like(labels, -100))
        soft, boundary = self._targets(labels, valid)
        frame_w = valid.float()
        pair_w = (valid[:, 1:] & valid[:, :-1]).float()
        frames = frame_w.sum(dim=1).clamp(min=1)
        pairs = pair_w.sum(dim=1).clamp(min=1)

        enc = logits[0]
        dec = self.model.training_decoder_logits(labels, boundary, mask)
        p = F.softmax(dec, dim=1)
        change = 1.0 - (p[:, :, 1:] * p.detach()[:, :, :-1]).sum(dim=1)  # P(label changes between t-1 and t)
        bce = F.binary_cross_entropy(change.clamp(0.0, 1.0), boundary[:, 1:], reduction="none")
        per_video = {
            "encoder_ce": (self._ce(enc, labels, soft) * frame_w).sum(1) / frames,
            "encoder_smooth": (self._smooth(enc) * pair_w).sum(1) / pairs,
            "decoder_ce": (self._ce(dec, labels, soft) * frame_w).sum(1) / frames,
            "decoder_smooth": (self._smooth(dec) * pair_w).sum(1) / pairs,
            "decoder_boundary": (bce * pair_w).sum(1) / pairs,
        }
        parts = {k: self.weights[k] * v.mean() for k, v in per_video.items()}
        loss = sum(parts.values())
        out = {k: v.detach() for k, v in parts.items()}
        out["frames"] = frame_w.sum()
        return loss, out
