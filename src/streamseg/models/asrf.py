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
generic losses and the evaluation use them. The boundary logits of the same call, (S_b, B, 1, T), and
its input features (B, D, T) are kept in ``model.boundary_logits`` and ``model.input_features`` for
:class:`ASRFLoss` (built with the model). With
``refine_in_eval`` (default) and the model in eval mode, the last stage is replaced by the one-hot of the
boundary-refined prediction, so whatever takes ``argmax`` of the last stage scores the refined output
(the paper's numbers); :meth:`ASRF.branches` gives the raw outputs.

Differences from the official code: every layer's output is multiplied by the mask (as in
:mod:`streamseg.models.mstcn`; identical on an unpadded video); the official residual layers call their
1x1 conv ``conv_in`` and stages call theirs ``conv_in`` too, here ``conv_1x1`` (:func:`official_key`
renames). The loss is documented on :class:`ASRFLoss`; its dataset statistics (the official
``libs/class_weight.py``) are :func:`class_weights` and :func:`boundary_pos_weight`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mstcn import DilatedResidualLayer, SingleStageTCN, check_input

__all__ = [
    "ASRF",
    "ASRFLoss",
    "boundary_pos_weight",
    "boundary_targets",
    "class_weights",
    "gaussian_similarity_tmse",
    "refine_with_boundaries",
    "official_key",
]


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
    sets ``self.boundary_logits`` (num_stages_brb, B, 1, T) and ``self.input_features`` (x itself, for the
    loss's Gaussian-similarity smoothing).
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
        tie_rule: Literal["probability", "official"] = "probability",
    ) -> None:
        super().__init__()
        if tie_rule not in TIE_RULES:
            raise ValueError(f"ASRF: tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
        self.tie_rule = tie_rule
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
        self.input_features: Tensor | None = None  # x of the last forward call, for ASRFLoss (GS-TMSE)

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
        self.boundary_logits, self.input_features = bounds, x
        if self.refine_in_eval and not self.training:
            m = None if mask is None else mask[:, 0]
            refined = refine_with_boundaries(classes[-1], bounds[-1], m, self.boundary_threshold, self.tie_rule)
            onehot = F.one_hot(refined, self.num_classes).permute(0, 2, 1).to(classes.dtype)
            if m is not None:
                onehot = onehot * m[:, None].to(classes.dtype)
            classes = torch.cat([classes[:-1], onehot[None]])
        return classes, ()


TIE_RULES = ("probability", "official")


def refine_with_boundaries(
    class_logits: Tensor, boundary_logits: Tensor, mask: Tensor | None = None, threshold: float = 0.5,
    tie_rule: Literal["probability", "official"] = "probability",
) -> Tensor:
    """ASRF's boundary refinement: a segment per boundary peak, each frame relabelled with its segment's majority.

    Args:
        class_logits: (B, K, T). boundary_logits: (B, 1, T) or (B, T). mask: (B, T), valid frames first
            (a padded batch), or None for all valid.
        threshold: boundary probabilities below it are set to 0 before peak picking.

    Peaks, as the official ``argrelmax``: the first frame, and every frame whose (thresholded) probability
    is strictly greater than both neighbours' (never the last valid frame). Ties in the majority vote
    (``tie_rule``):

    * ``"probability"``: the tied class with the larger summed softmax probability over the segment;
    * ``"official"`` (yiskw713/asrf ``libs/postprocess.py::_refinement_with_boundary``): the tied classes in
      increasing id order, each replacing the choice when its *raw logit* sum over the segment (float32) is
      strictly greater than the best so far, which starts at 0; when no sum is positive the segment keeps
      the label of the segment before it (the official's leftover loop variable). For a first segment
      with no positive sum the official code fails (its variable is unset); here the smallest tied id.

    Returns labels (B, T) int64; padding frames get label 0.
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
    if tie_rule == "official":
        mode = _official_ties(mode, counts.view(batch, length, k), peak, valid, class_logits)
    refined = torch.gather(mode, 1, segment)
    return torch.where(valid, refined, torch.zeros_like(refined))


def _official_ties(mode: Tensor, counts: Tensor, peak: Tensor, valid: Tensor, class_logits: Tensor) -> Tensor:
    """`refine_with_boundaries`' "official" tie rule applied to the segments whose vote is tied."""
    mode = mode.clone()
    logits = class_logits.detach().float().cpu().numpy()
    for b in range(mode.shape[0]):
        n = int(valid[b].sum())
        starts = torch.nonzero(peak[b, :n]).flatten().tolist() + [n]
        for s in range(len(starts) - 1):
            top = counts[b, s].max()
            tied = torch.nonzero(counts[b, s] == top).flatten().tolist()
            if len(tied) < 2:
                continue
            best, best_sum = None, 0.0
            for m in tied:
                total = logits[b, m, starts[s]:starts[s + 1]].sum()  # numpy float32, as the official
                if best_sum < total:
                    best, best_sum = m, total
            mode[b, s] = best if best is not None else (mode[b, s - 1] if s > 0 else tied[0])
    return mode


def boundary_targets(labels: Tensor, mask: Tensor) -> Tensor:
    """Boundary ground truth (B, T) float: 1 at the first frame and where the label changes (official
    ``generate_boundary_array``), computed on the labels as the model sees them (after subsampling; the
    official subsamples its full-rate boundary array instead, moving a boundary at frame i to i // rate)."""
    target = torch.zeros_like(labels, dtype=torch.float32)
    target[:, 0] = 1.0
    target[:, 1:] = (labels[:, 1:] != labels[:, :-1]).float()
    return target * (mask > 0).float()


def _label_arrays(labels: Iterable[np.ndarray | Tensor], what: str, num_classes: int | None = None) -> list[Tensor]:
    out = []
    for i, arr in enumerate(labels):
        t = torch.as_tensor(np.asarray(arr)).reshape(-1).long()
        if num_classes is not None and t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{what}: labels of video {i} must lie in [0, {num_classes}), "
                             f"got values in [{int(t.min())}, {int(t.max())}]")
        out.append(t)
    if not any(t.numel() for t in out):
        raise ValueError(f"{what}: no labelled frames (got {len(out)} videos)")
    return out


def class_weights(labels: Iterable[np.ndarray | Tensor], num_classes: int) -> Tensor:
    """ASRF's class weights for the cross-entropy (official ``libs/class_weight.py::get_class_weight``,
    median frequency balancing after Eigen & Fergus, ICCV'15), float32 (K,):

        freq_k = count_k / total,   w_k = median_k(freq) / freq_k

    over the frames of ``labels`` (one int array (T,) per training video, values in [0, K)). The median is
    ``torch.median``'s, taken over all K classes (absent ones count as frequency 0): for an even K the lower
    of the two middle values. A class absent from ``labels`` gets weight 0 where the official code gets
    inf: it is never a training target, so the weighted cross-entropy is the same. More than half of the
    classes absent makes the median 0 and every weight 0: refused.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for t in _label_arrays(labels, "class_weights", num_classes):
        counts += torch.bincount(t, minlength=num_classes).double()
    freq = counts / counts.sum()
    median = freq.sort().values[(num_classes - 1) // 2]  # torch.median: the lower middle value
    if median == 0:
        raise ValueError(f"class_weights: {int((counts == 0).sum())} of {num_classes} classes never occur in the "
                         "training labels, so the median class frequency is 0 and every weight would be 0")
    weights = torch.where(counts > 0, median / freq.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(freq))
    return weights.float()


def boundary_pos_weight(labels: Iterable[np.ndarray | Tensor]) -> float:
    """ASRF's positive weight of the boundary BCE (official ``libs/class_weight.py::get_pos_weight``): the
    reciprocal of the fraction of boundary frames, ``frames / boundary frames``, over ``labels`` (one int
    array (T,) per training video; a boundary frame is a video's first frame or a frame whose label differs
    from the previous one, as :func:`boundary_targets`). The official code counts them at the original
    frame rate, before any temporal subsampling."""
    frames = boundaries = 0
    for t in _label_arrays(labels, "boundary_pos_weight"):
        if t.numel():
            frames += t.numel()
            boundaries += 1 + int((t[1:] != t[:-1]).sum())
    return frames / boundaries


def gaussian_similarity_tmse(
    logits: Tensor, features: Tensor, valid: Tensor, sigma: float = 1.0, clamp: float = 16.0
) -> Tensor:
    """ASRF's Gaussian-similarity-weighted temporal MSE, as the official code computes it
    (``libs/loss_fn/tmse.py::GaussianSimilarityTMSE`` with ``gstmse_index="feature"``), averaged over the B videos:

        GS-TMSE_b = mean_{k, t} s_t * min((a_{k,t} - c_{k,t})^2, clamp),   t = 0 .. T_b - 2
        a = log_softmax over time of y[:, 1:],  c = log_softmax over time of y[:, :-1]
        s_t = exp(-||x_{t+1} - x_t||_2 / (2 sigma^2))

    over the video's valid frames only (taken in order, the others dropped; y the logits (K, T_b), x the
    input features). The official applies ``F.log_softmax(pred[:, 1:], dim=1)`` to each video's (K, T)
    tensor, so it normalises over the *time* axis of each shifted copy, not over classes; reproduced here.
    Unlike MS-TCN's smoothing, neither side is detached, and the mean is per video. Defaults: sigma 1,
    clamp 16 = 4**2 (official threshold 4). A video with fewer than 2 valid frames adds 0 (the official
    code gives NaN).

    Args: logits (B, K, T); features (B, D, T); valid (B, T) bool. Returns a scalar.
    """
    total = logits.new_zeros(())
    for b in range(logits.shape[0]):
        idx = torch.nonzero(valid[b], as_tuple=True)[0]
        if idx.numel() < 2:
            continue
        y = logits[b][:, idx]  # (K, T_b)
        later, earlier = F.log_softmax(y[:, 1:], dim=1), F.log_softmax(y[:, :-1], dim=1)  # over time
        x = features[b][:, idx].to(y.dtype)  # (D, T_b)
        similarity = torch.exp(-torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=0) / (2 * sigma**2))  # (T_b - 1,)
        sq = torch.clamp((later - earlier) ** 2, min=0, max=clamp)  # (K, T_b - 1)
        total = total + (similarity * sq).mean()
    return total / logits.shape[0]


SMOOTHINGS = ("mstcn", "gstmse")


@dataclass
class ASRFLossParams:
    """The loss settings of ASRF's recipe (`streamseg.engine.recipes.asrf.asrf_module`), official defaults
    (``libs/config.py``): a model config's `Params` subclasses this, so they are ``-o model.<field>`` keys.
    class_weight: median-frequency class weights in the CE (`class_weights` of the training labels).
    smoothing: "gstmse" (Gaussian-similarity T-MSE on the input features) or "mstcn" (MS-TCN's truncated
    MSE), times smooth_weight. boundary_weight: the boundary BCE's weight (``lambda_b``)."""

    class_weight: bool = True
    smoothing: Literal["gstmse", "mstcn"] = "gstmse"
    smooth_weight: float = 1.0
    boundary_weight: float = 0.1


class ASRFLoss:
    """ASRF training loss: class stages (CE + smoothing) and boundary stages (BCE), each averaged over stages.

        loss = mean_s( CE_s + smooth_weight * SMOOTH_s )  +  boundary_weight * mean_s( mean_b BCE_{s,b} )

    * CE_s: cross-entropy over the batch's valid frames, weighted by ``class_weights`` if given (the weighted
      mean sum_i w_{y_i} CE_i / sum_i w_{y_i} of ``nn.CrossEntropyLoss(weight=...)``; official: the
      median-frequency weights of :func:`class_weights`).
    * SMOOTH_s: ``smoothing="gstmse"``: :func:`gaussian_similarity_tmse` on the model's input features
      (official, ``sigma``, clamp ``smooth_clamp``); ``"mstcn"``: MS-TCN's truncated MSE exactly as
      :class:`~streamseg.models.losses.SegmentationLoss` (previous frame detached, mean over B * K * (T - 1)).
    * BCE_{s,b}: boundary BCE-with-logits of video b over its valid frames, targets :func:`boundary_targets`,
      positives weighted by ``pos_weight`` (official ``BoundaryRegressionLoss``: a per-video mean, then a
      batch mean; official pos_weight: :func:`boundary_pos_weight` of the training labels; None = 1).

    Averaging over stages and the 0.1 boundary weight are the official ``libs/helper.py::train``. The
    official configuration (``libs/config.py`` defaults, as the shipped ``result/*/config.yaml``) is class
    weights, ``smoothing="gstmse"`` with ``smooth_weight=1``, ``boundary_weight=0.1`` and the dataset's
    pos_weight: what the recipe ``streamseg.engine.recipes.asrf.asrf_module`` builds. The defaults here (no class weights,
    MS-TCN's 0.15 smoothing, pos_weight 1) are this class's original behaviour, kept for compatibility.

    Args:
        model: the :class:`ASRF` whose ``forward`` produced the logits (its ``boundary_logits`` and
            ``input_features`` are read).
        num_classes: K.
        smooth_weight, boundary_weight: the weights above. pos_weight: BCE positive weight (None = 1).
        ignore_index: label value of frames that take no part (padding).
        class_weights: (K,) CE class weights, or None.
        smoothing: "mstcn" or "gstmse". sigma: GS-TMSE's sigma. smooth_clamp: clamp of the squared
            log-probability difference (both smoothings; 16 = 4**2).

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
        *,
        class_weights: Tensor | None = None,
        smoothing: Literal["mstcn", "gstmse"] = "mstcn",
        sigma: float = 1.0,
        smooth_clamp: float = 16.0,
    ) -> None:
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"ASRFLoss: smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if class_weights is not None and tuple(class_weights.shape) != (num_classes,):
            raise ValueError(
                f"ASRFLoss: class_weights must have shape ({num_classes},), got {tuple(class_weights.shape)}"
            )
        self.model = model
        self.num_classes = num_classes
        self.smooth_weight = smooth_weight
        self.boundary_weight = boundary_weight
        self.pos_weight = pos_weight
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else class_weights.detach().float()
        self.smoothing = smoothing
        self.sigma = sigma
        self.smooth_clamp = smooth_clamp

    def _outputs(self, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        bounds = self.model.boundary_logits
        if bounds is None or bounds.shape[1] != labels.shape[0] or bounds.shape[-1] != labels.shape[-1]:
            raise RuntimeError(
                "ASRFLoss: the model's boundary_logits do not belong to these logits "
                f"(got {None if bounds is None else tuple(bounds.shape)} for labels {tuple(labels.shape)}); "
                "call the loss right after the model's forward"
            )
        features = self.model.input_features if self.smoothing == "gstmse" else None
        if self.smoothing == "gstmse" and (
            features is None or features.shape[0] != labels.shape[0] or features.shape[-1] != labels.shape[-1]
        ):
            raise RuntimeError(
                "ASRFLoss: the model's input_features do not belong to these logits "
                f"(got {None if features is None else tuple(features.shape)} for labels {tuple(labels.shape)}); "
                "call the loss right after the model's forward"
            )
        return bounds, features

    def _mstcn_smooth(self, stage: Tensor, mask: Tensor) -> Tensor:
        """MS-TCN's truncated MSE of one stage (B, K, T), as SegmentationLoss(reduction="mean")."""
        log_p = F.log_softmax(stage, dim=1)
        sq = torch.clamp((log_p[:, :, 1:] - log_p.detach()[:, :, :-1]) ** 2, min=0, max=self.smooth_clamp)
        sq = sq * mask[:, None, 1:].to(sq.dtype)
        return sq.mean() if stage.shape[-1] > 1 else sq.sum()

    def __call__(self, logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if logits.dim() != 4 or logits.shape[2] != self.num_classes:
            raise ValueError(f"ASRFLoss: expected logits (S, B, {self.num_classes}, T), got {tuple(logits.shape)}")
        if mask.dim() == 3:
            mask = mask[:, 0]
        stages, batch, _, length = logits.shape
        if labels.shape != (batch, length) or mask.shape != (batch, length):
            raise ValueError(f"ASRFLoss: expected labels and mask of shape (B, T) = {(batch, length)}, "
                             f"got {tuple(labels.shape)} and {tuple(mask.shape)}")
        bounds, features = self._outputs(labels)
        valid = (mask > 0) & (labels != self.ignore_index)
        targets = torch.where(valid, labels, torch.full_like(labels, self.ignore_index))
        weights = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        # the CE's denominator: the valid frames, or their summed class weights (nn.CrossEntropyLoss's mean)
        if weights is None:
            denom = valid.sum().to(logits.dtype)
        else:
            denom = weights[targets[valid]].sum()
        denom = denom.clamp(min=1e-12)  # no valid frame: CE 0, not 0/0

        ce_total = logits.new_zeros(())
        smooth_total = logits.new_zeros(())
        for stage in logits:  # (B, K, T)
            ce_sum = F.cross_entropy(stage, targets, weight=weights, ignore_index=self.ignore_index, reduction="sum")
            ce_total = ce_total + ce_sum / denom
            if self.smoothing == "gstmse":
                smooth = gaussian_similarity_tmse(stage, features, valid, self.sigma, self.smooth_clamp)
            else:
                smooth = self._mstcn_smooth(stage, mask)
            smooth_total = smooth_total + smooth
        ce_total, smooth_total = ce_total / stages, self.smooth_weight * smooth_total / stages

        target = boundary_targets(labels, mask)
        pos_weight = None if self.pos_weight is None else bounds.new_tensor(self.pos_weight)
        bvalid = mask > 0
        bce = bounds.new_zeros(())
        for stage in bounds:  # (B, 1, T)
            per_video = [
                F.binary_cross_entropy_with_logits(stage[b, 0][bvalid[b]], target[b][bvalid[b]], pos_weight=pos_weight)
                for b in range(stage.shape[0])
                if bvalid[b].any()
            ]
            if per_video:
                bce = bce + torch.stack(per_video).sum() / stage.shape[0]
        boundary = self.boundary_weight * bce / bounds.shape[0]
        loss = ce_total + smooth_total + boundary
        out = {
            "ce": ce_total.detach(),
            "smooth": smooth_total.detach(),
            "boundary": boundary.detach(),
            "frames": valid.sum().detach(),
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
