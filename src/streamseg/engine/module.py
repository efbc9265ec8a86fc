"""The one LightningModule for temporal action segmentation, offline and streaming.

It receives the network (any model that follows the streaming contract in docs/architecture.md), the
loss, and optimiser/scheduler factories. Per batch (offline features):

    x (B, D, T) at the sample rate, labels (B, T) with -100 padding, mask (B, T)
      -> net, whole video (chunk_size == 0 or an offline model) or chunk by chunk with the state carried
      -> logits (S, B, K, T) -> loss (per valid frame)

Chunked training is truncated back-propagation through time: the state is detached every `tbptt_chunks`
chunks, so gradients reach at most that many chunks back; the optimiser steps once per batch of videos.

Evaluation upsamples last-stage predictions back to the original frame rate (each label repeated
`sample_rate` times, cut to the ground-truth length), gathers (video, prediction, ground truth) from all
ranks, keeps one copy per video (DistributedSampler pads with duplicates), and scores them with
`streamseg.metrics`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..metrics import SegmentationMetrics, upsample
from ..metrics.io import write_results
from .datamodule import DatasetInfo

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class SegmentationModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        info: DatasetInfo,
        loss: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, dict]],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        chunk_size: int = 0,
        tbptt_chunks: int = 1,
        scheduler_monitor: str | None = None,
    ):
        super().__init__()
        self.net, self.info, self.loss_fn = net, info, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_monitor = scheduler_monitor
        if chunk_size < 0 or tbptt_chunks < 1:
            raise ValueError(f"train.chunk_size must be >= 0 and train.tbptt_chunks >= 1, got {chunk_size}, {tbptt_chunks}")
        self.chunk_size, self.tbptt_chunks = chunk_size, tbptt_chunks
        self.predictions_dir: Path | None = None  # set by the runner before testing
        self.test_results: dict[str, Any] | None = None
        self._outputs: list[tuple[str, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------ forward
    @property
    def streaming(self) -> bool:
        return self.chunk_size > 0 and getattr(self.net, "lookahead", None) is not None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, T[, H, W]), mask (B, T) -> logits (S, B, K, T)."""
        m = mask.unsqueeze(1)
        state = self.net.init_state(x.shape[0], x.device)
        if not self.streaming:
            return self.net(x, state, m)[0]
        outs = []
        for i, start in enumerate(range(0, x.shape[2], self.chunk_size)):
            if i % self.tbptt_chunks == 0:
                state = tuple(s.detach() for s in state)
            sl = slice(start, start + self.chunk_size)
            logits, state = self.net(x[:, :, sl], state, m[:, :, sl])
            outs.append(logits)
        return torch.cat(outs, dim=-1)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self(batch["features"], batch["mask"])
        loss, parts = self.loss_fn(logits, batch["labels"], batch["mask"])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.global_step}, videos {batch['names']}"
            )
        bs = len(batch["names"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            if torch.is_tensor(v) and v.ndim == 0 and k != "frames":
                self.log(f"train/{k}", v, batch_size=bs, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        cfg = {"scheduler": sched, "interval": "epoch"}
        if self.scheduler_monitor:
            cfg["monitor"] = self.scheduler_monitor
        return {"optimizer": opt, "lr_scheduler": cfg}

    # ------------------------------------------------------------------ evaluation
    def _collect(self, batch: dict) -> None:
        logits = self(batch["features"], batch["mask"])
        pred = logits[-1].argmax(dim=1).cpu().numpy()  # (B, T) at the sample rate
        for b, name in enumerate(batch["names"]):
            n = int(batch["lengths"][b])
            gt = batch["full_labels"][b].cpu().numpy()
            full = upsample(pred[b, :n], self.info.sample_rate, len(gt))
            self._outputs.append((name, full, gt))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def _gathered(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        outputs = self._outputs
        self._outputs = []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, outputs)
            outputs = [o for part in parts for o in part]
        unique: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for o in outputs:
            unique.setdefault(o[0], o)  # DistributedSampler padding repeats videos: score each once
        return [unique[k] for k in sorted(unique)]

    def _score(self, videos: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
        m = SegmentationMetrics(self.info.num_classes, self.info.bg_ids, self.info.class_names)
        for name, pred, gt in videos:
            m.update(pred, gt, name)
        return m.compute() | {"confusion": m.confusion_matrix().tolist()}

    def on_validation_epoch_end(self) -> None:
        videos = self._gathered()
        if self.trainer.sanity_checking or not videos:
            return
        results = self._score(videos)
        for key in ("acc", "edit", "f1@10", "f1@25", "f1@50"):
            # every rank computed the same numbers from the same gathered videos: no reduction needed
            self.log(f"val/{key}", float(results[key]), prog_bar=key in ("acc", "f1@50"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        videos = self._gathered()
        self.test_results = self._score(videos) if videos else None
        if self.test_results is not None:
            self.test_results["videos"] = [v[0] for v in videos]
        if self.predictions_dir is not None and self.trainer.is_global_zero:
            self.predictions_dir.mkdir(parents=True, exist_ok=True)
            for name, pred, _ in videos:
                write_results(self.predictions_dir / name, pred, self.info.class_names)
        self._test_videos = videos

    # ------------------------------------------------------------------ resume: RNG state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = {
            "python": random.getstate(),
            # plain types only, so the checkpoint loads with torch.load(weights_only=True)
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng")
        if not rng:
            return
        random.setstate(rng["python"])
        np.random.set_state(_numpy_state_from_plain(rng["numpy"]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def _numpy_state_to_plain(state: tuple) -> list:
    kind, keys, pos, has_gauss, cached = state
    return [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_plain(state: list) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
