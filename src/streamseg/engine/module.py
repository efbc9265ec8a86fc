"""The one LightningModule for temporal action segmentation, offline and streaming.

It receives the network (any model that follows the streaming contract in docs/architecture.md), the
loss, and optimiser/scheduler factories. Per batch (offline features):

    x (B, D, T) at the sample rate, labels (B, T) with -100 padding, mask (B, T)
      -> net, whole video (chunk_size == 0 or an offline model) or chunk by chunk with the state carried
      -> logits (S, B, K, T) -> loss (per valid frame)

Chunked training is truncated back-propagation through time: the state is detached every `tbptt_chunks`
chunks, so gradients reach at most that many chunks back; the optimiser steps once per batch of videos.
A net that feeds its own predictions back (optional `teacher_force`, e.g. Transeger) gets each training
chunk's ground truth in its state before the next chunk (offline chunked and stream batches alike);
evaluation keeps the net's own predictions.

Evaluation upsamples last-stage predictions back to the original frame rate (each label repeated
`sample_rate` times, cut to the ground-truth length), gathers (video, prediction, ground truth) from all
ranks, keeps one copy per video (DistributedSampler pads with duplicates), and scores them with
`streamseg.metrics`.

A non-finite training loss (NaN/inf) is never trained on. `nonfinite="stop"` raises `FloatingPointError`
naming the epoch, batch, optimiser step and videos; `"skip"` warns (`NonFiniteLossWarning`, same details),
contributes no gradient, makes no optimiser step for that batch (under DDP: for that step on every rank,
so the ranks' weights stay equal), restores the network's buffers (BatchNorm statistics) to their values
before the batch, restarts carried stream states that went non-finite, and counts the skips in
`train/skipped_steps` (saved in checkpoints).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.names import child_path
from ..metrics import SegmentationMetrics, upsample
from ..metrics.io import write_results
from .compiling import mark_time_dynamic
from .accumulate import CrossEpochAccumulation
from .datamodule import DatasetInfo
from .schedules import METRIC_KEYS

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteLossWarning(RuntimeWarning):
    """A training batch had a NaN/inf loss and was skipped (train.nonfinite="skip")."""


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
        stream_batches: bool = False,
        grad_clip: float = 0.0,
        nonfinite: str = "stop",
        loss_takes_chunks: bool = False,
        epoch_schedule: Callable[[torch.optim.Optimizer], Any] | None = None,
    ):
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self.nonfinite = nonfinite  # the runner sets it from train.nonfinite, whatever build_module passed
        self.skipped_steps = 0
        self.dynamic_length = False  # set by engine.compiling.compile_net
        self._epoch_loss: Tensor | None = None
        self._epoch_items = self._train_batches = 0
        self._window_good = 0  # batches with a finite loss since the last optimiser step (skip mode)
        self._buffer_snapshot: list[Tensor] = []  # skip mode: buffers before the current batch / window
        # Stream batches (chunks of B parallel streams, see engine/stream_datamodule.py) carry the state
        # from one training step to the next, so the backward pass runs every `tbptt_chunks` steps:
        # manual optimisation. `loss` must then sum (SegmentationLoss(reduction="sum")); the module
        # divides by the valid frames of the whole truncation window.
        self.stream_batches = stream_batches
        # stream batches: the loss also gets each slot's video length in chunks (SVTASStreamLoss)
        self.loss_takes_chunks = loss_takes_chunks
        if loss_takes_chunks and not stream_batches:
            raise ValueError("loss_takes_chunks needs stream batches (data.input='video' with train.chunk_size)")
        self.automatic_optimization = not stream_batches
        self.grad_clip = grad_clip
        self._train_state: tuple[Tensor, ...] | None = None
        self._eval_state: tuple[Tensor, ...] | None = None
        self._window: dict[str, Any] = {}
        self._partial: dict[str, list[np.ndarray]] = {}
        self.net, self.info, self.loss_fn = net, info, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_monitor = scheduler_monitor
        # engine/schedules.EpochSchedule: stepped here once per epoch (offline and streams alike), its state
        # saved in checkpoints; `_schedule_state` holds a resumed one until configure_optimizers builds it
        self.epoch_schedule_factory, self.epoch_schedule = epoch_schedule, None
        self._schedule_state: dict | None = None
        self._val_results: tuple[int, dict] | None = None  # (epoch, validation scores) of the last validation
        if chunk_size < 0 or tbptt_chunks < 1:
            raise ValueError(f"train.chunk_size must be >= 0 and train.tbptt_chunks >= 1, got {chunk_size}, {tbptt_chunks}")
        self.chunk_size, self.tbptt_chunks = chunk_size, tbptt_chunks
        self.predictions_dir: Path | None = None  # set by the runner before testing
        self.test_protocol = "mstcn"  # F1 protocol of the test scores (runner.test); validation: always mstcn
        self.test_results: dict[str, Any] | None = None
        self._outputs: list[tuple[str, np.ndarray, np.ndarray]] = []
        # train.accumulate_across_epochs (DiffAct's loop): set by the runner; None = Lightning's accumulation
        self.accumulator: CrossEpochAccumulation | None = None

    # ------------------------------------------------------------------ forward
    @property
    def streaming(self) -> bool:
        """Predictions are made online, chunk by chunk (for latency reporting)."""
        return self.stream_batches or (self.chunk_size > 0 and getattr(self.net, "lookahead", None) is not None)

    def forward(self, x: Tensor, mask: Tensor, labels: Tensor | None = None) -> Tensor:
        """x (B, C, T[, H, W]), mask (B, T) -> logits (S, B, K, T). With `labels` (B, T) (training), a net
        that feeds its predictions back gets each chunk's ground truth instead (`_teacher_force`)."""
        m = mask.unsqueeze(1)
        state = self.net.init_state(x.shape[0], x.device)
        if not self.streaming:
            if self.dynamic_length:  # train.compile, train.length_bucket=0 (engine/compiling.py)
                mark_time_dynamic(x, m)
            return self.net(x, state, m)[0]
        outs = []
        for i, start in enumerate(range(0, x.shape[2], self.chunk_size)):
            if i % self.tbptt_chunks == 0:
                state = tuple(s.detach() for s in state)
            sl = slice(start, start + self.chunk_size)
            logits, state = self.net(x[:, :, sl], state, m[:, :, sl])
            if labels is not None:
                state = self._teacher_force(state, labels[:, sl], m[:, :, sl])
            outs.append(logits)
        return torch.cat(outs, dim=-1)

    # ------------------------------------------------------------------ streams: state per slot
    def _slot_state(self, state: tuple[Tensor, ...] | None, batch: dict) -> tuple[Tensor, ...]:
        """`state` with the rows of slots that start a new video (batch["reset"]) set to the initial state."""
        x = batch["x"]
        init = self.net.init_state(x.shape[0], x.device)
        if state is None or len(state) != len(init) or any(s.shape != i.shape for s, i in zip(state, init)):
            return init
        reset = batch["reset"].to(x.device)
        return tuple(torch.where(reset.view(-1, *([1] * (s.dim() - 1))), i, s) for s, i in zip(state, init))

    def _teacher_force(self, state: tuple[Tensor, ...], labels: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        """The net's optional `teacher_force` (models/__init__.py: nets that feed their own predictions
        back, e.g. Transeger): in training the next chunk sees this chunk's ground truth, not predictions."""
        teacher_force = getattr(self.net, "teacher_force", None)
        return state if teacher_force is None else teacher_force(state, labels, mask)

    def _stream_forward(self, batch: dict, state: tuple[Tensor, ...] | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        state = self._slot_state(state, batch)
        return self.net(batch["x"], state, batch["mask"].unsqueeze(1))

    def _stream_training_step(self, batch: dict, batch_idx: int) -> None:
        if not self._window:
            self._snapshot_buffers()
        logits, state = self._stream_forward(batch, self._train_state)
        self._train_state = self._teacher_force(state, batch["labels"], batch["mask"].unsqueeze(1))
        if self.loss_takes_chunks:
            loss_sum, parts = self.loss_fn(logits, batch["labels"], batch["mask"], self._video_chunks(batch))
        else:
            loss_sum, parts = self.loss_fn(logits, batch["labels"], batch["mask"])
        w = self._window
        w["loss"] = w.get("loss", 0.0) + loss_sum
        w["frames"] = w.get("frames", 0) + parts["frames"]
        w["chunks"] = w.get("chunks", 0) + 1
        w.setdefault("names", []).extend(n for n in batch["names"] if n is not None and n not in w["names"])
        last_step = self.trainer.is_last_batch
        if w["chunks"] < self.tbptt_chunks and not last_step:
            return
        loss = w["loss"] / w["frames"].clamp(min=1)
        if self._nonfinite(loss, w["names"], batch_idx):
            # no backward, no step; a state that went non-finite would poison every later chunk of its
            # streams, so all slots restart from the initial state
            if any(not torch.isfinite(s).all() for s in self._train_state):
                self._train_state = None
            else:
                self._train_state = tuple(s.detach() for s in self._train_state)
            self._window = {}
            return
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        if self.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        # truncate: gradients never flow further back than this window
        self._train_state = tuple(s.detach() for s in self._train_state)
        self._window = {}
        self._log_train(loss.detach(), {}, len(batch["names"]))

    def _video_chunks(self, batch: dict) -> Tensor:
        """(B,) chunks of each slot's video: ceil(ceil(full_length / sample_rate) / chunk) (0 for an empty slot)."""
        sampled = -(-batch["full_length"] // self.info.sample_rate)
        return -(-sampled // batch["x"].shape[2])

    def _log_train(self, loss: Tensor, parts: dict, batch_size: int) -> None:
        """Step values (``train/loss``, the loss parts) go to `self.log` only on the steps Lightning writes to
        its loggers (every ``train.log_every``) and on the first; the epoch mean ``train/epoch_loss`` is summed
        here on the device and logged once, in `on_train_epoch_end`. Stream batches log every truncation
        window: Lightning writes the latest `self.log` value on each logged step, and a window need not close
        on one, so skipping windows would repeat an older window's loss on the logged steps that follow.

        A `self.log` call costs about 2 ms of host time (Lightning moves its result metric each time), and
        logging four values on every step made a small offline model's GPU steps host-bound.
        """
        weighted = loss.detach().float() * batch_size
        self._epoch_loss = weighted if self._epoch_loss is None else self._epoch_loss + weighted
        self._epoch_items += batch_size
        self._train_batches += 1
        connector = getattr(self.trainer, "_logger_connector", None)
        if self._train_batches > 1 and not self.stream_batches and not getattr(connector, "should_update_logs", True):
            return
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=True)
        for k, v in parts.items():
            if torch.is_tensor(v) and v.ndim == 0 and k != "frames":
                self.log(f"train/{k}", v, batch_size=batch_size, sync_dist=True)

    def on_train_epoch_start(self) -> None:
        self._train_state, self._window = None, {}
        self._epoch_loss, self._epoch_items, self._train_batches = None, 0, 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_loss is not None:  # the mean of the ranks' means (the same number of batches on each)
            self.log("train/epoch_loss", self._epoch_loss / self._epoch_items, sync_dist=True)
        # the same count on every rank (skip decisions are reduced), so no sync is needed
        self.log("train/skipped_steps", float(self.skipped_steps), sync_dist=False)
        if self.stream_batches and self.lr_schedulers() is not None:
            sched = self.lr_schedulers()
            if self.scheduler_monitor:
                value = self.trainer.callback_metrics.get(self.scheduler_monitor)
                if value is not None:
                    sched.step(value)
            else:
                sched.step()
        if self.epoch_schedule is not None:
            self.log("train/lr", float(self.epoch_schedule.optimizer.param_groups[0]["lr"]), sync_dist=False)
            metric = self.epoch_schedule.metric
            fresh = self._val_results is not None and self._val_results[0] == self.current_epoch
            self.epoch_schedule.step(float(self._val_results[1][metric]) if metric and fresh else None)

    def _stream_collect(self, batch: dict) -> None:
        logits, self._eval_state = self._stream_forward(batch, self._eval_state)
        pred = logits[-1].argmax(dim=1).cpu().numpy()  # (B, T)
        mask = batch["mask"].cpu().numpy() > 0
        for b, name in enumerate(batch["names"]):
            if name is None:
                continue
            if batch["reset"][b]:
                self._partial[name] = []
            self._partial[name].append(pred[b][mask[b]])
            if batch["last"][b]:
                gt = self.trainer.datamodule.full_labels(name)
                full = upsample(np.concatenate(self._partial.pop(name)), self.info.sample_rate, len(gt))
                self._outputs.append((name, full, gt))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if self.stream_batches:
            return self._stream_training_step(batch, batch_idx)
        self._snapshot_buffers()
        logits = self(batch["features"], batch["mask"], batch["labels"])
        loss, parts = self.loss_fn(logits, batch["labels"], batch["mask"])
        if self._nonfinite(loss, list(batch["names"]), batch_idx):
            # Returning None is not allowed under DDP, so return a zero that reaches every parameter: the
            # backward pass (and DDP's all-reduce) runs on every rank, adding zero gradients, and
            # optimizer_step leaves the weights alone when no batch since the last step was finite.
            return sum(p.sum() for p in self.net.parameters() if p.requires_grad) * 0.0
        self._window_good += 1
        # the epoch mean train/epoch_loss feeds schedulers stepped on the training loss (ReduceLROnPlateau in ASFormer)
        self._log_train(loss, parts, len(batch["names"]))
        return loss

    # ------------------------------------------------------------------ non-finite losses
    def _nonfinite(self, loss: Tensor, names: list, batch_idx: int) -> bool:
        """True when this step must be skipped (train.nonfinite="skip" and a loss on any rank is NaN/inf);
        raises FloatingPointError for "stop". The message names epoch, batch, step and videos."""
        bad = not bool(torch.isfinite(loss.detach()))
        where = (f"epoch {self.current_epoch}, batch {batch_idx}, optimizer step {self.global_step}, "
                 f"videos {[n for n in names if n is not None]}")
        if self.nonfinite == "stop":
            if bad:
                raise FloatingPointError(f"non-finite training loss {loss.item()} at {where} "
                                         "(set train.nonfinite=skip to skip such batches)")
            return False
        # every rank must take the same decision, or their optimiser steps (and weights) would differ
        skip = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if skip:
            self._restore_buffers()
            self.skipped_steps += 1
            what = f"non-finite training loss {loss.item()} at {where}" if bad else (
                f"a non-finite loss on another rank at {where}")
            warnings.warn(f"{what}: skipped ({self.skipped_steps} skipped so far)", NonFiniteLossWarning,
                          stacklevel=2)
        return skip

    def _snapshot_buffers(self) -> None:
        """Copy the float buffers (BatchNorm running statistics: per-channel vectors, a few KB) so that a
        skipped batch's forward pass cannot leave NaN in them; skip mode only."""
        if self.nonfinite == "skip":
            self._buffer_snapshot = [b.detach().clone() for b in self.net.buffers() if b.is_floating_point()]

    @torch.no_grad()
    def _restore_buffers(self) -> None:
        buffers = [b for b in self.net.buffers() if b.is_floating_point()]
        for b, saved in zip(buffers, self._buffer_snapshot):
            b.copy_(saved)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        super().backward(loss if self.accumulator is None else self.accumulator.scale(loss), *args, **kwargs)

    def on_validation_model_zero_grad(self) -> None:
        if self.accumulator is None:  # an unfinished accumulation window's gradients outlive validation
            super().on_validation_model_zero_grad()

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if self.accumulator is None:
            return super().optimizer_zero_grad(epoch, batch_idx, optimizer)
        self.accumulator.zero_grad(optimizer, self.net)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Lightning's step, except in skip mode: no step when every batch since the last one was skipped; with
        `accumulator`, a step only after every N-th batch of the run (`engine/accumulate.py`)."""
        if self.accumulator is not None and not self.accumulator.step_now(optimizer_closure):
            return None
        if self.nonfinite != "skip" or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        result = optimizer_closure()  # training_step + backward, as Lightning's own step would run them
        good, self._window_good = self._window_good, 0
        if good == 0:
            optimizer.zero_grad()
            return None
        # the closure already ran; precision plugins call this one, and clip gradients after it
        return optimizer.step(closure=lambda: result)

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.net.parameters())
        if self.epoch_schedule_factory is not None:
            self.epoch_schedule = self.epoch_schedule_factory(opt)
            if self._schedule_state is not None:
                self.epoch_schedule.load_state_dict(self._schedule_state)
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        cfg = {"scheduler": sched, "interval": "epoch"}
        if self.scheduler_monitor:
            cfg["monitor"] = self.scheduler_monitor
        return {"optimizer": opt, "lr_scheduler": cfg}

    # ------------------------------------------------------------------ evaluation
    def _collect(self, batch: dict) -> None:
        if self.stream_batches:
            return self._stream_collect(batch)
        set_indices = getattr(self.net, "set_video_indices", None)  # optional: nets whose sampling seeds per video
        if set_indices is not None:
            set_indices(batch.get("indices"))
        if "rate_features" in batch:
            return self._collect_rates(batch)
        logits = self(batch["features"], batch["mask"])
        pred = logits[-1].argmax(dim=1).cpu().numpy()  # (B, T) at the sample rate
        for b, name in enumerate(batch["names"]):
            n = int(batch["lengths"][b])
            gt = batch["full_labels"][b].cpu().numpy()
            full = upsample(pred[b, :n], self.info.sample_rate, len(gt))
            self._outputs.append((name, full, gt))

    def _collect_rates(self, batch: dict) -> None:
        """Test-time augmentation over sample rates (`DatasetInfo.test_rates`, C2F-TCN's eval.py and
        testtime_postprocess.py): per video and rate r, the last stage's softmax over classes on the features
        pooled at r, each column repeated r times and cut to the ground truth's length, averaged with the
        rate weights; the prediction is the argmax (ties: the first class)."""
        weights = self.info.test_rate_weights
        set_indices = getattr(self.net, "set_video_indices", None)
        for b, name in enumerate(batch["names"]):
            if set_indices is not None:
                set_indices(batch["indices"][b:b + 1])
            gt = batch["full_labels"][b].cpu().numpy()
            total = None
            for rate, w, x in zip(self.info.test_rates, weights, batch["rate_features"][b]):
                x = x.to(self.device)[None]
                prob = self(x, torch.ones(1, x.shape[-1], device=self.device))[-1, 0].softmax(dim=0)  # (K, T_r)
                prob = w * prob.repeat_interleave(rate, dim=1)[:, :len(gt)]
                total = prob if total is None else total + prob
            pred = (total / sum(weights)).argmax(dim=0).cpu().numpy()
            self._outputs.append((name, upsample(pred, 1, len(gt)), gt))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs, self._partial, self._eval_state = [], {}, None

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

    def _score(self, videos: list[tuple[str, np.ndarray, np.ndarray]], protocol: str = "mstcn") -> dict[str, Any]:
        m = SegmentationMetrics(self.info.num_classes, self.info.bg_ids, self.info.class_names, protocol=protocol)
        for name, pred, gt in videos:
            m.update(pred, gt, name)
        return m.compute() | {"confusion": m.confusion_matrix().tolist()}

    def on_validation_epoch_end(self) -> None:
        videos = self._gathered()
        if self.trainer.sanity_checking or not videos:
            return
        results = self._score(videos)
        self._val_results = (self.current_epoch, results)
        for key in METRIC_KEYS:
            # every rank computed the same numbers from the same gathered videos: no reduction needed
            self.log(f"val/{key}", float(results[key]), prog_bar=key in ("acc", "f1@50"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        videos = self._gathered()
        self.test_results = self._score(videos, self.test_protocol) if videos else None
        if self.test_results is not None:
            self.test_results["videos"] = [v[0] for v in videos]
        if self.predictions_dir is not None and self.trainer.is_global_zero:
            write_predictions(self.predictions_dir, videos, self.info.class_names)
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
        checkpoint["skipped_steps"] = self.skipped_steps
        if self.epoch_schedule is not None:
            checkpoint["epoch_schedule"] = self.epoch_schedule.state_dict()
        if self.accumulator is not None:
            checkpoint["accumulation"] = self.accumulator.state_dict(self.net)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self._schedule_state = checkpoint.get("epoch_schedule")
        if self.accumulator is not None and "accumulation" in checkpoint:
            self.accumulator.load_state_dict(checkpoint["accumulation"])
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


def write_predictions(directory: Path, videos: list[tuple[str, np.ndarray, np.ndarray]],
                      class_names: list[str]) -> None:
    """``directory/<video>`` in the MS-TCN results format for each ``(video, prediction, ground truth)``;
    a video name that is not a plain file name is refused (`DataError`) before anything is written."""
    paths = [child_path(directory, name) for name, _, _ in videos]
    directory.mkdir(parents=True, exist_ok=True)
    for path, (_, pred, _) in zip(paths, videos):
        write_results(path, pred, class_names)
