"""The one LightningModule for temporal action segmentation, offline and streaming: the generic training step.

It receives the network (any model that follows the streaming contract in docs/architecture.md), the
loss, and optimiser/scheduler factories, and reads the batch kind the DataModule declared
(``info.batch_kind``, engine/batches.py). Per batch of whole videos (automatic optimisation):

    x (B, D, T) at the sample rate, labels (B, T) with -100 padding, mask (B, T)
      -> net, whole video (chunk_size == 0 or an offline model) or chunk by chunk with the state carried
      -> logits (S, B, K, T) -> loss (per valid frame) -> one optimiser step per batch of videos

Stream batches (manual optimisation): one chunk of B parallel streams per step, the state carried across
steps, the backward pass and optimiser step once per truncation window of `tbptt_chunks` chunks.

The parts live beside it: `streaming` (chunked forward, carried state, truncation windows, teacher
forcing), `nonfinite` (`train.nonfinite`), `evaluation` (collect, gather, score: an `EvalResult`; a test
pass's `test_step` returns the videos each batch completed, which `evaluation.TestPass`, a callback of the
caller's, scores) and `rng` (generator states in checkpoints).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ..models import PostProcesses, SeedsPerVideo
from .accumulate import CrossEpochAccumulation
from .compiling import mark_time_dynamic
from .datamodule import DatasetInfo
from .evaluation import Evaluation, Video
from .nonfinite import NONFINITE_POLICIES, NonFiniteLossWarning, NonFinitePolicy, Where
from .rng import restore_rng, rng_state
from .schedules import METRIC_KEYS
from .streaming import StreamState, TBPTTWindow, chunked_forward, video_chunks

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

__all__ = ["NONFINITE_POLICIES", "NonFiniteLossWarning", "SegmentationModule"]


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
        grad_clip: float = 0.0,
        nonfinite: str = "stop",
        loss_takes_chunks: bool = False,
        epoch_schedule: Callable[[torch.optim.Optimizer], Any] | None = None,
    ):
        super().__init__()
        self.nonfinite = nonfinite  # the runner sets it from train.nonfinite, whatever build_module passed
        self._epoch_loss: Tensor | None = None
        self._epoch_items = self._train_batches = 0
        self._window_good = 0  # batches with a finite loss since the last optimiser step (skip mode)
        self.dynamic_length = False  # set by engine.compiling.compile_net
        # Stream batches (info.batch_kind, declared by the DataModule: engine/batches.py) carry the state
        # from one training step to the next, so the backward pass runs every `tbptt_chunks` steps:
        # manual optimisation. `loss` must then sum (SegmentationLoss(reduction="sum")); the module
        # divides by the valid frames of the whole truncation window.
        self.stream_batches = info.streams
        # stream batches: the loss also gets each slot's video length in chunks (SVTASStreamLoss)
        self.loss_takes_chunks = loss_takes_chunks
        if loss_takes_chunks and not self.stream_batches:
            raise ValueError("loss_takes_chunks needs stream batches (data.input='video' with train.chunk_size)")
        self.automatic_optimization = not self.stream_batches
        self.grad_clip = grad_clip
        if chunk_size < 0 or tbptt_chunks < 1:
            raise ValueError(f"train.chunk_size must be >= 0 and train.tbptt_chunks >= 1, got {chunk_size}, {tbptt_chunks}")
        self.chunk_size, self.tbptt_chunks = chunk_size, tbptt_chunks
        self._train_stream, self._eval_stream = StreamState(), StreamState()
        self._window = TBPTTWindow(tbptt_chunks)
        self.net, self.info, self.loss_fn = net, info, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_monitor = scheduler_monitor
        # engine/schedules.EpochSchedule: stepped here once per epoch (offline and streams alike), its state
        # saved in checkpoints; `_schedule_state` holds a resumed one until configure_optimizers builds it
        self.epoch_schedule_factory, self.epoch_schedule = epoch_schedule, None
        self._schedule_state: dict | None = None
        self._val_results: tuple[int, dict] | None = None  # (epoch, validation scores) of the last validation
        self._evaluation = Evaluation(info)
        # train.accumulate_across_epochs (DiffAct's loop): set by the runner; None = Lightning's accumulation
        self.accumulator: CrossEpochAccumulation | None = None

    # ------------------------------------------------------------------ the non-finite policy
    @property
    def nonfinite(self) -> str:
        return self.nonfinite_policy.policy

    @nonfinite.setter
    def nonfinite(self, policy: str) -> None:
        skipped = getattr(self, "nonfinite_policy", None)
        self.nonfinite_policy = NonFinitePolicy(policy)
        if skipped is not None:
            self.nonfinite_policy.skipped = skipped.skipped

    @property
    def skipped_steps(self) -> int:
        return self.nonfinite_policy.skipped

    def _where(self, batch_idx: int, names: list) -> Where:
        return Where(self.current_epoch, batch_idx, self.global_step, list(names))

    def _nonfinite(self, loss: Tensor, names: list, batch_idx: int) -> bool:
        """True when this step must be skipped ("skip"); "stop" raises FloatingPointError, at once or one
        step late (`nonfinite.NonFinitePolicy.watch`)."""
        policy = self.nonfinite_policy
        if not policy.skip:
            policy.watch(loss, self._where(batch_idx, names))
            return False
        reduce = lambda bad: self.trainer.strategy.reduce_boolean_decision(bad, all=False)  # noqa: E731
        return policy.decide_skip(loss, self._where(batch_idx, names), reduce, self.net)

    # ------------------------------------------------------------------ forward
    @property
    def streaming(self) -> bool:
        """Predictions are made online, chunk by chunk (for latency reporting)."""
        return self.stream_batches or (self.chunk_size > 0 and getattr(self.net, "lookahead", None) is not None)

    def forward(self, x: Tensor, mask: Tensor, labels: Tensor | None = None) -> Tensor:
        """x (B, C, T[, H, W]), mask (B, T) -> logits (S, B, K, T). With `labels` (B, T) (training), a net
        that feeds its predictions back gets each chunk's ground truth instead (`streaming.teacher_force`)."""
        m = mask.unsqueeze(1)
        if not self.streaming:
            if self.dynamic_length:  # train.compile, train.length_bucket=0 (engine/compiling.py)
                mark_time_dynamic(x, m)
            return self.net(x, self.net.init_state(x.shape[0], x.device), m)[0]
        return chunked_forward(self.net, x, m, self.chunk_size, self.tbptt_chunks, labels)

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.nonfinite_policy.settle()  # the previous step's deferred finiteness flag

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if self.stream_batches:
            return self._stream_training_step(batch, batch_idx)
        self.nonfinite_policy.snapshot_buffers(self.net)
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

    def _stream_training_step(self, batch: dict, batch_idx: int) -> None:
        """One chunk of stream batches; the optimiser steps when the truncation window closes."""
        window, stream = self._window, self._train_stream
        if window.empty:
            self.nonfinite_policy.snapshot_buffers(self.net)
        logits = stream.forward(self.net, batch)
        stream.teacher_force(self.net, batch)
        if self.loss_takes_chunks:
            chunks = video_chunks(batch, self.info.sample_rate)
            loss_sum, parts = self.loss_fn(logits, batch["labels"], batch["mask"], chunks)
        else:
            loss_sum, parts = self.loss_fn(logits, batch["labels"], batch["mask"])
        window.add(loss_sum, parts["frames"], batch["names"])
        if not window.closes(self.trainer.is_last_batch):
            return
        loss, names = window.mean(), window.names
        window.clear()
        if self._nonfinite(loss, names, batch_idx):
            stream.drop_if_nonfinite()  # no backward, no step
            return
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        if self.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        stream.truncate()
        self._log_train(loss.detach(), {}, len(batch["names"]))

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
        if self._train_batches > 1 and not self.stream_batches and not lightning_writes_logs_now(self.trainer):
            return
        # not prog_bar: Lightning converts prog_bar values with .item() after every step (a device sync);
        # the run's bar shows it from callback_metrics at most every few seconds (quiet.RunProgressBar)
        self.log("train/loss", loss, batch_size=batch_size, sync_dist=True)
        for k, v in parts.items():
            if torch.is_tensor(v) and v.ndim == 0 and k != "frames":
                self.log(f"train/{k}", v, batch_size=batch_size, sync_dist=True)

    def on_train_epoch_start(self) -> None:
        self._train_stream.reset()
        self._window.clear()
        self._epoch_loss, self._epoch_items, self._train_batches = None, 0, 0

    def on_train_epoch_end(self) -> None:
        # before the epoch's checkpoints (ModelCheckpoint's on_train_epoch_end runs after this hook)
        self.nonfinite_policy.settle()
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
        if not self.nonfinite_policy.skip or optimizer_closure is None:
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
        evaluation = self._evaluation
        if self.stream_batches:
            evaluation.add_chunk(batch, self._eval_stream.forward(self.net, batch))
            return
        seeds = self.net if isinstance(self.net, SeedsPerVideo) else None  # sampling seeded per video
        before = (lambda b: seeds.set_video_indices(batch["indices"][b:b + 1])) if seeds else (lambda b: None)
        if "offset_features" in batch:  # the mean over offsets is post-processed, not each offset's output
            raw = self.net.raw_outputs() if isinstance(self.net, PostProcesses) else nullcontext()
            with raw as post:
                evaluation.add_offsets(batch, self, self.device, before,
                                       post and (lambda lg: post(lg, torch.ones_like(lg[:, 0]) > 0)))
            return
        if "rate_features" in batch:
            evaluation.add_rates(batch, self, self.device, before)
            return
        if seeds is not None:
            seeds.set_video_indices(batch.get("indices"))
        evaluation.add_videos(batch, self(batch["features"], batch["mask"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> list[Video]:
        """The videos this batch completed (a stream batch completes those whose last chunk it holds): the
        caller scores them (`evaluation.TestPass`, which `checkpoint_eval.evaluate` attaches)."""
        self._collect(batch)
        return self._evaluation.take()

    def on_validation_start(self) -> None:
        self.nonfinite_policy.settle()  # never score weights a non-finite step updated

    def on_validation_epoch_start(self) -> None:
        # a streams DataModule's ground truth at the original frame rate (batches.StreamLabels)
        labels_of = self.trainer.datamodule.full_labels if self.stream_batches else None
        self._evaluation = Evaluation(self.info, labels_of)
        self._eval_stream.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        result = self._evaluation.finish(score=not self.trainer.sanity_checking)  # a collective: every rank
        if result.scores is None:
            return
        self._val_results = (self.current_epoch, result.scores)
        for key in METRIC_KEYS:
            # every rank computed the same numbers from the same gathered videos: no reduction needed
            self.log(f"val/{key}", float(result.scores[key]), prog_bar=key in ("acc", "f1@50"), sync_dist=False)

    # ------------------------------------------------------------------ checkpoints: RNG and counters
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # runs before the file is written: weights a non-finite step updated are never saved
        self.nonfinite_policy.settle()
        checkpoint["rng"] = rng_state()
        checkpoint["skipped_steps"] = self.skipped_steps
        if self.epoch_schedule is not None:
            checkpoint["epoch_schedule"] = self.epoch_schedule.state_dict()
        if self.accumulator is not None:
            checkpoint["accumulation"] = self.accumulator.state_dict(self.net)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.nonfinite_policy.skipped = int(checkpoint.get("skipped_steps", 0))
        self._schedule_state = checkpoint.get("epoch_schedule")
        if self.accumulator is not None and "accumulation" in checkpoint:
            self.accumulator.load_state_dict(checkpoint["accumulation"])
        restore_rng(checkpoint.get("rng"))


def lightning_writes_logs_now(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes `self.log` values to its loggers at this step (every ``log_every_n_steps``).

    Lightning exposes no public way to ask: this reads its private ``_logger_connector.should_update_logs``
    (pytorch_lightning 2.x), here only, and answers True when that is missing (a Lightning that moved it),
    so a change costs only the logging saving, never a logged value."""
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))
