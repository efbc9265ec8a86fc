"""ASRF (Ishikawa, Kasai, Aoki & Kataoka, WACV 2021): Action Segment Refinement Framework.

Layer for layer the official model (yiskw713/asrf, ``libs/models/tcn.py``,
``ActionSegmentRefinementFramework``): a shared MS-TCN-style trunk (1x1 conv in, ``num_layers``
dilated residual layers) feeds two branches,

* the action segmentation branch: a 1x1 conv to K class logits, then ``num_stages_asb - 1`` MS-TCN
  stages reading ``softmax(previous)``;
* the boundary regression branch: a 1x1 conv to 1 boundary logit, then ``num_stages_brb - 1`` stages
  reading ``sigmoid(previous)``.

At test time the class prediction is refined with the boundaries (:func:`refine_with_boundaries`):
frames between consecutive boundary peaks form a segment that takes its majority class.

Parameter count for 2048-d input, 64 maps, 10 layers, 4 + 4 stages, K classes:

    trunk: 2048*64 + 64 = 131,136 + 10 * 16,512 = 165,120;  conv_cls 64*K + K;  conv_bound 64 + 1 = 65
    class stage: K*64 + 64 + 165,120 + 64*K + K;  boundary stage: 64 + 64 + 165,120 + 64 + 1 = 165,313
    K = 11: 131,136 + 165,120 + 715 + 65 + 3 * 166,603 + 3 * 165,313 = 1,292,784
            (19: 1,296,400; 48: 1,309,508)

Interface. ``forward`` returns the class logits of every stage, (S, B, K, T), as every model does, so
generic losses and the evaluation use them. The boundary logits of the same call, (S_b, B, 1, T), are
kept in ``model.boundary_logits`` for :class:`ASRFLoss` (built with the model). With
``refine_in_eval`` (default) and the model in eval mode, the last stage is replaced by the one-hot of the
boundary-refined prediction, so whatever takes ``argmax`` of the last stage scores the refined output
(the paper's numbers); :meth:`ASRF.branches` gives the raw outputs.

Differences from the official code: every layer's output is multiplied by the mask (as in
:mod:`streamseg.models.mstcn`; identical on an unpadded video); the official residual layers call their
1x1 conv ``conv_in`` and stages call theirs ``conv_in`` too, here ``conv_1x1`` (:func:`official_key`
renames). The loss is documented on :class:`ASRFLoss`.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import SegmentationLoss
from .mstcn import DilatedResidualLayer, SingleStageTCN, check_input

__all__ = ["ASRF", "ASRFLoss", "boundary_targets", "refine_with_boundaries", "official_key"]


class ASRF(nn.Module):
    """ASRF over a whole video.

    Args:
        in_channels: feature dimension D. num_classes: K.
        num_layers: dilated residual layers of the trunk and of every stage (paper: 10).
        num_maps: channels (paper: 64).
        num_stages_asb: class stages, counting the trunk's 1x1 head (paper: 4).
        num_stages_brb: boundary stages, counting the trunk's 1x1 head (paper: 4).
        dropout: after each layer's 1x1 conv (paper: 0.5).
        refine_in_eval: in eval mode, replace the last stage by the one-hot boundary-refined prediction.
        boundary_threshold: boundary probability below which a peak is ignored (official config: 0.5).

    ``forward(x (B, D, T), state=(), mask (B, 1, T) | None) -> (logits (num_stages_asb, B, K, T), ())``;
    sets ``self.boundary_logits`` (num_stages_brb, B, 1, T).
    """

    lookahead: int | None = None  # every output frame sees the whole video

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_layers: int = 10,
        num_maps: int = 64,
        num_stages_asb: int = 4,
        num_stages_brb: int = 4,
        dropout: float = 0.5,
        refine_in_eval: bool = True,
        boundary_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_stages_asb < 1 or num_stages_brb < 1:
            raise ValueError(
                f"ASRF: num_layers, num_stages_asb, num_stages_brb must be >= 1, "
                f"got {num_layers}, {num_stages_asb}, {num_stages_brb}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.refine_in_eval = refine_in_eval
        self.boundary_threshold = boundary_threshold
        self.conv_in = nn.Conv1d(in_channels, num_maps, kernel_size=1)
        self.shared_layers = nn.ModuleList(DilatedResidualLayer(2**i, num_maps, dropout) for i in range(num_layers))
        self.conv_cls = nn.Conv1d(num_maps, num_classes, kernel_size=1)
        self.conv_bound = nn.Conv1d(num_maps, 1, kernel_size=1)
        self.asb = nn.ModuleList(
            SingleStageTCN(num_classes, num_classes, num_layers, num_maps, dropout) for _ in range(num_stages_asb - 1)
        )
        self.brb = nn.ModuleList(SingleStageTCN(1, 1, num_layers, num_maps, dropout) for _ in range(num_stages_brb - 1))
        self.boundary_logits: Tensor | None = None  # of the last forward call, for ASRFLoss

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    def branches(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Raw outputs: class logits (S_a, B, K, T) and boundary logits (S_b, B, 1, T), zero at masked frames."""
        mask = check_input(x, mask, self.in_channels, "ASRF.forward")
        out = self.conv_in(x) * mask
        for layer in self.shared_layers:
            out = layer(out, mask)
        cls = self.conv_cls(out) * mask
        bound = self.conv_bound(out) * mask
        classes, bounds = [cls], [bound]
        for stage in self.asb:
            cls = stage(F.softmax(cls, dim=1) * mask, mask)
            classes.append(cls)
        for stage in self.brb:
            bound = stage(torch.sigmoid(bound) * mask, mask)
            bounds.append(bound)
        return torch.stack(classes), torch.stack(bounds)

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        classes, bounds = self.branches(x, mask)
        self.boundary_logits = bounds
        if self.refine_in_eval and not self.training:
            m = None if mask is None else mask[:, 0]
            refined = refine_with_boundaries(classes[-1], bounds[-1], m, self.boundary_threshold)
            onehot = F.one_hot(refined, self.num_classes).permute(0, 2, 1).to(classes.dtype)
            if m is not None:
                onehot = onehot * m[:, None].to(classes.dtype)
            classes = torch.cat([classes[:-1], onehot[None]])
        return classes, ()


def refine_with_boundaries(
    class_logits: Tensor, boundary_logits: Tensor, mask: Tensor | None = None, threshold: float = 0.5
) -> Tensor:
    """ASRF's boundary refinement: a segment per boundary peak, each frame relabelled with its segment's majority.

    Args:
        class_logits: (B, K, T). boundary_logits: (B, 1, T) or (B, T). mask: (B, T), valid frames first
            (a padded batch), or None for all valid.
        threshold: boundary probabilities below it are set to 0 before peak picking.

    Peaks, as the official ``argrelmax``: the first frame, and every frame whose (thresholded) probability
    is strictly greater than both neighbours' (never the last valid frame). Ties in the majority vote go
    to the class with the larger summed probability over the segment (the official code sums raw logits
    from 0 and can leave a tie unresolved). Returns labels (B, T) int64; padding frames get label 0.
    """
    batch, k, length = class_logits.shape
    valid = torch.ones(batch, length, dtype=torch.bool, device=class_logits.device) if mask is None else mask > 0
    prob = torch.sigmoid(boundary_logits.reshape(batch, length).float())
    prob = torch.where((prob >= threshold) & valid, prob, torch.zeros_like(prob))
    peak = torch.zeros_like(valid)
    peak[:, 0] = True
    if length > 2:
        mid = prob[:, 1:-1]
        peak[:, 1:-1] = (mid > prob[:, :-2]) & (mid > prob[:, 2:]) & valid[:, 2:]
    segment = torch.cumsum(peak.long(), dim=1) - 1  # (B, T) segment index of every frame
    pred = class_logits.argmax(dim=1)  # (B, T)
    weight = valid.double()
    counts = torch.zeros(batch, length * k, dtype=torch.float64, device=class_logits.device)
    counts.scatter_add_(1, segment * k + pred, weight)
    probsum = torch.zeros(batch, length, k, dtype=torch.float64, device=class_logits.device)
    src = F.softmax(class_logits.double(), dim=1).permute(0, 2, 1) * weight[..., None]
    probsum.scatter_add_(1, segment[..., None].expand(-1, -1, k), src)
    # A segment's probability sum is at most its length < length + 1, so it only breaks count ties.
    score = counts.view(batch, length, k) * (length + 1) + probsum
    mode = score.argmax(dim=-1)  # (B, segments)
    refined = torch.gather(mode, 1, segment)
    return torch.where(valid, refined, torch.zeros_like(refined))


def boundary_targets(labels: Tensor, mask: Tensor) -> Tensor:
    """Boundary ground truth (B, T) float: 1 at the first frame and where the label changes (official
    ``generate_boundary_array``), computed on the labels as the model sees them (after subsampling)."""
    target = torch.zeros_like(labels, dtype=torch.float32)
    target[:, 0] = 1.0
    target[:, 1:] = (labels[:, 1:] != labels[:, :-1]).float()
    return target * (mask > 0).float()


class ASRFLoss:
    """ASRF training loss: class stages (CE + smoothing) and boundary stages (BCE), each averaged over stages.

        loss = mean_s( CE_s + smooth_weight * TMSE_s )  +  boundary_weight * mean_s( mean_b BCE_{s,b} )

    where CE/TMSE are :class:`SegmentationLoss`'s (MS-TCN's truncated MSE, tau 4) and BCE_{s,b} is the
    boundary BCE-with-logits of video b over its valid frames (the official ``BoundaryRegressionLoss``,
    a per-video mean then a batch mean). Averaging over stages and the 0.1 boundary weight are the
    official ``libs/helper.py::train``. The official class loss uses class-weighted CE and a
    Gaussian-similarity-weighted TMSE (weight 1) on the input features; here CE is unweighted and the
    smoothing is MS-TCN's (0.15), since the loss sees only logits, labels and mask. ``pos_weight`` is
    the official BCE positive weight (the official code derives it from the training set's boundary
    frequency; None = 1).

    Args:
        model: the :class:`ASRF` whose ``forward`` produced the logits (its ``boundary_logits`` are read).
        num_classes: K.

    Call: ``(logits (S, B, K, T), labels (B, T), mask (B, T) | (B, 1, T)) -> (loss, parts)`` with parts
    ``ce``, ``smooth``, ``boundary`` (weighted, as added into the loss) and ``frames``.
    """

    def __init__(
        self,
        model: ASRF,
        num_classes: int,
        smooth_weight: float = 0.15,
        boundary_weight: float = 0.1,
        pos_weight: float | None = None,
        ignore_index: int = -100,
    ) -> None:
        self.model = model
        self.classes = SegmentationLoss(num_classes, smooth_weight=smooth_weight, ignore_index=ignore_index)
        self.boundary_weight = boundary_weight
        self.pos_weight = pos_weight

    def __call__(self, logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        bounds = self.model.boundary_logits
        if mask.dim() == 3:
            mask = mask[:, 0]
        if bounds is None or bounds.shape[1] != labels.shape[0] or bounds.shape[-1] != labels.shape[-1]:
            raise RuntimeError(
                "ASRFLoss: the model's boundary_logits do not belong to these logits "
                f"(got {None if bounds is None else tuple(bounds.shape)} for labels {tuple(labels.shape)}); "
                "call the loss right after the model's forward"
            )
        stages = logits.shape[0]
        cls_loss, parts = self.classes(logits, labels, mask)
        valid = mask > 0
        target = boundary_targets(labels, mask)
        pos_weight = None if self.pos_weight is None else bounds.new_tensor(self.pos_weight)
        bce = bounds.new_zeros(())
        for stage in bounds:  # (B, 1, T)
            per_video = []
            for b in range(stage.shape[0]):
                if valid[b].any():
                    per_video.append(
                        F.binary_cross_entropy_with_logits(
                            stage[b, 0][valid[b]], target[b][valid[b]], pos_weight=pos_weight
                        )
                    )
            if per_video:
                bce = bce + torch.stack(per_video).sum() / stage.shape[0]
        boundary = self.boundary_weight * bce / bounds.shape[0]
        loss = cls_loss / stages + boundary
        out = {
            "ce": parts["ce"] / stages,
            "smooth": parts["smooth"] / stages,
            "boundary": boundary.detach(),
            "frames": parts["frames"],
        }
        return loss, out


_OFFICIAL_RENAMES = [
    # official residual layers and stages name their 1x1 convs `conv_in`; ours (MS-TCN's) `conv_1x1`
    (re.compile(r"^(shared_layers\.\d+|(?:asb|brb)\.\d+\.layers\.\d+)\.conv_in\."), r"\1.conv_1x1."),
    (re.compile(r"^((?:asb|brb)\.\d+)\.conv_in\."), r"\1.conv_1x1."),
]


def official_key(name: str) -> str:
    """Map a parameter name of the official ``ActionSegmentRefinementFramework`` to ours."""
    for pattern, repl in _OFFICIAL_RENAMES:
        name = pattern.sub(repl, name)
    return name
