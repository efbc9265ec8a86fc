"""Evaluation of one pass (validation or test): predictions in, an `EvalResult` out.

Last-stage predictions are upsampled back to the original frame rate (each label repeated `sample_rate`
times, cut to the ground-truth length); `Evaluation.finish` gathers ``(video, prediction, ground truth)``
from all ranks, keeps one copy per video (DistributedSampler pads with duplicates), scores them with
`streamseg.metrics` and returns the result. Writing it (`write_predictions`) and plotting it is the
caller's business (`engine.checkpoint_eval`).

Validation runs inside the module (its scores are logged). A test pass returns its result to the caller
instead: `SegmentationModule.test_step` returns the videos each batch completed, and `TestPass`, a
callback the caller attaches to the Trainer for `trainer.test` (Lightning's `trainer.test` returns only
logged scalars), collects and scores them::

    pass_ = TestPass("mstcn"); trainer.callbacks.append(pass_); trainer.test(module, ...) -> pass_.result
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

from ..data.names import child_path
from ..metrics import SegmentationMetrics, upsample, upsample_centred
from ..metrics.io import write_results
from .datamodule import DatasetInfo

Video = tuple[str, np.ndarray, np.ndarray]  # (name, prediction, ground truth), (L,) each, original frame rate
Forward = Callable[[Tensor, Tensor], Tensor]  # (x (B, C, T), mask (B, T)) -> logits (S, B, K, T)


@dataclass
class EvalResult:
    """What an evaluation pass returns. ``videos``: one `Video` per video, sorted by name. ``scores``: the
    `SegmentationMetrics` summary (acc, edit, f1@k, per_class, num_videos, ...) plus ``confusion`` and
    ``videos`` (their names); None when no video was evaluated. ``protocol``: the F1 protocol used."""

    videos: list[Video] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    protocol: str = "mstcn"


class Evaluation:
    """Collects the predictions of one pass over whole-video or stream batches (engine/batches.py).

    ``labels_of`` (stream batches): the ground truth of a video at the original frame rate, read when its
    last chunk arrives (the streams DataModule's `full_labels`, `batches.StreamLabels`)."""

    def __init__(self, info: DatasetInfo, labels_of: Callable[[str], np.ndarray] | None = None) -> None:
        self.info, self.labels_of = info, labels_of
        self.videos: list[Video] = []
        self._partial: dict[str, list[np.ndarray]] = {}  # stream batches: predictions of unfinished videos

    def add_videos(self, batch: dict, logits: Tensor) -> None:
        """A whole-video batch's logits (S, B, K, T) at the sample rate."""
        pred = logits[-1].argmax(dim=1).cpu().numpy()  # (B, T)
        for b, name in enumerate(batch["names"]):
            n = int(batch["lengths"][b])
            gt = batch["full_labels"][b].cpu().numpy()
            self.videos.append((name, upsample(pred[b, :n], self.info.sample_rate, len(gt)), gt))

    def add_rates(self, batch: dict, forward: Forward, device: torch.device,
                  before_video: Callable[[int], None] = lambda b: None) -> None:
        """Test-time augmentation over sample rates (`DatasetInfo.test_rates`, C2F-TCN's eval.py and
        testtime_postprocess.py): per video and rate r, the last stage's softmax over classes on the features
        pooled at r, each column repeated r times and cut to the ground truth's length, averaged with the
        rate weights; the prediction is the argmax (ties: the first class). ``before_video(b)`` runs before
        video b's forward passes."""
        weights = self.info.test_rate_weights
        for b, name in enumerate(batch["names"]):
            before_video(b)
            gt = batch["full_labels"][b].cpu().numpy()
            total = None
            for rate, w, x in zip(self.info.test_rates, weights, batch["rate_features"][b]):
                x = x.to(device)[None]
                prob = forward(x, torch.ones(1, x.shape[-1], device=device))[-1, 0].softmax(dim=0)  # (K, T_r)
                prob = w * prob.repeat_interleave(rate, dim=1)[:, :len(gt)]
                total = prob if total is None else total + prob
            pred = (total / sum(weights)).argmax(dim=0).cpu().numpy()
            self.videos.append((name, upsample(pred, 1, len(gt)), gt))

    def add_offsets(self, batch: dict, forward: Forward, device: torch.device,
                    before_video: Callable[[int], None] = lambda b: None,
                    post: Callable[[Tensor], Tensor] | None = None) -> None:
        """Test-time mean over the sample-rate offsets (`DatasetInfo.test_offsets`; Finspire13/DiffAct
        ``main.py`` ``test_single_video``, mode ``decoder-agg``): per video, the last stage's softmax over
        classes on the features subsampled at each offset o (``features[:, o::r]``), all cut to the shortest
        (floor(T / r) columns), averaged without weights; ``post`` (log of the mean (1, K, T') -> logits
        (1, K, T'), e.g. DiffAct's median filter) then runs on the mean; the argmax (ties: the first class)
        is brought back to the original rate by `upsample_centred` (column t placed at frame t*r + r // 2).
        ``before_video(b)`` runs before each of video b's forward passes (the official test re-seeds the
        sampler with the same seed before every offset)."""
        rate = self.info.sample_rate
        for b, name in enumerate(batch["names"]):
            gt = batch["full_labels"][b].cpu().numpy()
            if len(gt) < rate:
                raise ValueError(f"video {name}: {len(gt)} frames, fewer than data.sample_rate={rate}: "
                                 "the mean over offsets (data.test_offsets) needs one frame per offset")
            probs = []
            for x in batch["offset_features"][b]:
                before_video(b)
                x = x.to(device)[None]
                probs.append(forward(x, torch.ones(1, x.shape[-1], device=device))[-1, 0].float().softmax(dim=0))
            shortest = min(p.shape[1] for p in probs)
            mean = torch.stack([p[:, :shortest] for p in probs]).mean(dim=0)  # (K, T')
            scores = mean if post is None else post(torch.log(mean.clamp(min=1e-12))[None])[0]
            pred = scores.argmax(dim=0).cpu().numpy()
            self.videos.append((name, upsample_centred(pred, rate, len(gt)), gt))

    def add_chunk(self, batch: dict, logits: Tensor) -> None:
        """A stream batch's logits (S, B, K, T): each slot's valid frames appended to its video's
        predictions; a video is complete (and compared with its ground truth) at its last chunk."""
        pred = logits[-1].argmax(dim=1).cpu().numpy()  # (B, T)
        mask = batch["mask"].cpu().numpy() > 0
        for b, name in enumerate(batch["names"]):
            if name is None:
                continue
            if batch["reset"][b]:
                self._partial[name] = []
            self._partial[name].append(pred[b][mask[b]])
            if batch["last"][b]:
                assert self.labels_of is not None, "stream batches need labels_of (the DataModule's full_labels)"
                gt = self.labels_of(name)
                full = upsample(np.concatenate(self._partial.pop(name)), self.info.sample_rate, len(gt))
                self.videos.append((name, full, gt))

    def take(self) -> list[Video]:
        """The videos completed since the last call (those of unfinished streams stay)."""
        done, self.videos = self.videos, []
        return done

    def finish(self, protocol: str = "mstcn", score: bool = True) -> EvalResult:
        """Gather every rank's videos (a collective: every rank calls it), one per video, scored with the F1
        ``protocol`` (``score=False``: not scored)."""
        videos = gather_videos(self.videos)
        self.videos, self._partial = [], {}
        scores = score_videos(videos, self.info, protocol) if videos and score else None
        if scores is not None:
            scores["videos"] = [v[0] for v in videos]
        return EvalResult(videos, scores, protocol)


class TestPass(pl.Callback):
    """A test pass's result, for the caller that attached it: collects the videos each `test_step`
    returns (`SegmentationModule.test_step`) and, when the pass ends, gathers and scores them with the F1
    ``protocol`` (`Evaluation.finish`, a collective: every rank runs it). ``result``: the `EvalResult` of
    the last pass, None before one ended."""

    def __init__(self, protocol: str = "mstcn") -> None:
        self.protocol = protocol
        self.result: EvalResult | None = None
        self._evaluation: Evaluation | None = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result, self._evaluation = None, Evaluation(pl_module.info)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation.videos.extend(outputs or [])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result, self._evaluation = self._evaluation.finish(self.protocol), None


def gather_videos(videos: list[Video]) -> list[Video]:
    """Every rank's videos (a collective under DDP), one per video name, sorted by name."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, videos)
        videos = [o for part in parts for o in part]
    unique: dict[str, Video] = {}
    for o in videos:
        unique.setdefault(o[0], o)  # DistributedSampler padding repeats videos: score each once
    return [unique[k] for k in sorted(unique)]


def score_videos(videos: list[Video], info: DatasetInfo, protocol: str = "mstcn") -> dict[str, Any]:
    m = SegmentationMetrics(info.num_classes, info.bg_ids, info.class_names, protocol=protocol)
    for name, pred, gt in videos:
        m.update(pred, gt, name)
    return m.compute() | {"confusion": m.confusion_matrix().tolist()}


def write_predictions(directory: Path, videos: list[Video], class_names: list[str]) -> None:
    """``directory/<video>`` in the MS-TCN results format for each ``(video, prediction, ground truth)``;
    a video name that is not a plain file name is refused (`DataError`) before anything is written."""
    paths = [child_path(directory, name) for name, _, _ in videos]
    directory.mkdir(parents=True, exist_ok=True)
    for path, (_, pred, _) in zip(paths, videos):
        write_results(path, pred, class_names)
