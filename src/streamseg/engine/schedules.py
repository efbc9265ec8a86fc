"""The training options every recipe honours: optimiser, learning-rate schedule with linear warm-up, early
stopping, all from `train.*` keys (the `TrainParams` docstring lists them).

`check_train_options` refuses a bad value with the key's name before any work. The schedule is an
`EpochSchedule` that `SegmentationModule.on_train_epoch_end` steps once per training epoch, with automatic
(offline) and manual (streaming, truncated back-propagation) optimisation alike, before that epoch's
`last.ckpt` is written; its state travels in the checkpoint (`SegmentationModule.on_save_checkpoint`), so a
killed run resumes on the same learning rate. Early stopping is Lightning's `EarlyStopping` on a validation
metric (its state is saved in every checkpoint, so it resumes too).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from ..config import ConfigError, TrainParams

# validation metrics logged as val/<key> (SegmentationModule.on_validation_epoch_end) and written to metrics.json
METRIC_KEYS = ("acc", "edit", "f1@10", "f1@25", "f1@50")


def check_train_options(t: TrainParams) -> None:
    """ConfigError naming the `train.*` key whose value the optimiser, schedule or early stopping cannot use."""
    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"train.{key}={getattr(t, key)!r}: expected {expected}")

    need(t.lr >= 0, "lr", "a learning rate >= 0")
    need(t.weight_decay >= 0, "weight_decay", "a weight decay >= 0")
    need(0 <= t.momentum < 1, "momentum", "a momentum in [0, 1)")
    need(not t.nesterov or (t.optimizer == "sgd" and t.momentum > 0), "nesterov",
         "false unless train.optimizer=sgd with train.momentum > 0 (Nesterov momentum is SGD's)")
    need(t.warmup_epochs >= 0, "warmup_epochs", "a number of epochs >= 0")
    need(t.min_lr >= 0, "min_lr", "a learning rate >= 0")
    need(t.length_bucket >= 0, "length_bucket", "sampled frames >= 0 (0 = batches padded to their longest video)")
    need(bool(t.compile_cache), "compile_cache", "'auto', 'off' or a folder")
    need(t.accumulate >= 1, "accumulate", "batches >= 1 per optimiser step")
    need(not (t.cudnn_benchmark and t.deterministic), "cudnn_benchmark",
         "false with train.deterministic=true (cuDNN's timed choice of algorithm can differ between runs)")
    if t.schedule == "cosine_restarts":
        need(t.restart_epochs >= 1, "restart_epochs", "epochs >= 1 before the first restart (T_0)")
        need(t.restart_mult >= 1, "restart_mult", "an integer factor >= 1 (T_mult)")
    if t.schedule in ("step", "multistep", "plateau"):
        need(0 < t.gamma < 1, "gamma", "a factor in (0, 1) that multiplies the learning rate")
    if t.schedule == "step":
        need(t.step_size >= 1, "step_size", "epochs >= 1 between decays")
    if t.schedule == "multistep":
        ms = t.milestones
        need(len(ms) > 0 and ms[0] >= 1 and all(a < b for a, b in zip(ms, ms[1:])), "milestones",
             "strictly increasing epochs >= 1, e.g. -o train.milestones=30,60 (train.schedule=multistep)")
    if t.schedule == "plateau":
        need((t.plateau_metric or t.monitor) in METRIC_KEYS, "plateau_metric",
             f"a validation metric, one of {list(METRIC_KEYS)} ('' = train.monitor={t.monitor!r})")
        need(t.plateau_patience >= 0, "plateau_patience", "validations >= 0")
    if t.early_stop_metric:
        need(t.early_stop_metric in METRIC_KEYS, "early_stop_metric",
             f"'' (off) or a validation metric, one of {list(METRIC_KEYS)}")
        need(t.early_stop_patience >= 0, "early_stop_patience", "validations >= 0")
        need(t.early_stop_min_delta >= 0, "early_stop_min_delta", "a change >= 0")


def needs_validation(t: TrainParams) -> list[str]:
    """The options set that read a validation metric (for the error of a run without a validation split)."""
    return ([f"train.schedule={t.schedule}"] if t.schedule == "plateau" else []) + (
        [f"train.early_stop_metric={t.early_stop_metric}"] if t.early_stop_metric else [])


def build_optimizer(t: TrainParams) -> partial:
    """`train.optimizer` as a factory of the network's parameters: Adam / AdamW with `train.weight_decay`
    (AdamW's is decoupled), SGD with `train.momentum` and `train.nesterov`; learning rate `train.lr`."""
    if t.optimizer == "sgd":
        return partial(torch.optim.SGD, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                       weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return partial(cls, lr=t.lr, weight_decay=t.weight_decay)


def uses_epoch_schedule(t: TrainParams) -> bool:
    """`train.schedule` or `train.warmup_epochs` is set: the run's schedule replaces a recipe's own."""
    return t.schedule != "none" or t.warmup_epochs > 0


class EpochSchedule:
    """The learning rate of each epoch: `warmup_epochs` epochs rising linearly to `train.lr` (epoch e < W
    trains at lr x (e + 1) / (W + 1)), then the schedule from its own epoch 0 at `train.lr`:

    - none: constant;
    - cosine_restarts: `CosineAnnealingWarmRestarts(T_0=restart_epochs, T_mult=restart_mult, eta_min=min_lr)`;
    - step: x `gamma` every `step_size` epochs; multistep: x `gamma` at each of `milestones`;
    - plateau: `ReduceLROnPlateau(mode=plateau_mode, factor=gamma, patience=plateau_patience, min_lr=min_lr)`
      on the validation metric `plateau_metric`, stepped only after epochs that validated (like torch's, it
      ignores a reduction smaller than 1e-8).

    `step(metric)` ends an epoch; `metric` is that epoch's validation value of `self.metric` or None.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, t: TrainParams):
        self.optimizer = optimizer
        self.warmup = t.warmup_epochs
        self.metric = (t.plateau_metric or t.monitor) if t.schedule == "plateau" else None
        self.epoch = 0  # epochs ended
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        sched = torch.optim.lr_scheduler
        self.inner: Any = {
            "none": lambda: None,
            "cosine_restarts": lambda: sched.CosineAnnealingWarmRestarts(
                optimizer, T_0=t.restart_epochs, T_mult=t.restart_mult, eta_min=t.min_lr),
            "step": lambda: sched.StepLR(optimizer, step_size=t.step_size, gamma=t.gamma),
            "multistep": lambda: sched.MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.gamma),
            "plateau": lambda: sched.ReduceLROnPlateau(optimizer, mode=t.plateau_mode, factor=t.gamma,
                                                       patience=t.plateau_patience, min_lr=t.min_lr),
        }[t.schedule]()
        if self.warmup:
            self._set(1 / (self.warmup + 1))

    def _set(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self, metric: float | None = None) -> None:
        self.epoch += 1
        if self.epoch < self.warmup:
            self._set((self.epoch + 1) / (self.warmup + 1))
        elif self.epoch == self.warmup:
            self._set(1.0)  # the schedule's epoch 0
        elif self.metric is not None:
            if metric is not None:
                self.inner.step(metric)
        elif self.inner is not None:
            self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "base_lrs": list(self.base_lrs),
                "inner": None if self.inner is None else self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.base_lrs = int(state["epoch"]), list(state["base_lrs"])
        if self.inner is not None and state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])


def early_stopping(t: TrainParams) -> Any:
    """Lightning's `EarlyStopping` on `val/<train.early_stop_metric>` (None when that key is ''), checked after
    each validation: it stops when `early_stop_patience` validations in a row did not improve on the best by
    more than `early_stop_min_delta` in `early_stop_mode`."""
    if not t.early_stop_metric:
        return None
    from pytorch_lightning.callbacks import EarlyStopping

    return EarlyStopping(monitor=f"val/{t.early_stop_metric}", mode=t.early_stop_mode,
                         patience=t.early_stop_patience, min_delta=t.early_stop_min_delta,
                         check_on_train_epoch_end=False, strict=True)


def early_stopping_summary(callbacks: list, t: TrainParams) -> dict[str, Any] | None:
    """metrics.json's `early_stopping`: the condition, the 0-based epoch it stopped at (None: ran every
    `train.epochs`), Lightning's reason in words, and the best value seen."""
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason

    es = next((cb for cb in callbacks if isinstance(cb, EarlyStopping)), None)
    if es is None:
        return None
    stopped = es.stopping_reason != EarlyStoppingReason.NOT_STOPPED
    return {
        "metric": t.early_stop_metric, "mode": t.early_stop_mode, "patience": t.early_stop_patience,
        "min_delta": t.early_stop_min_delta,
        "stopped_epoch": es.stopped_epoch if stopped else None,
        "reason": es.stopping_reason_message if stopped else f"ran all {t.epochs} epochs",
        "best": float(es.best_score) if torch.isfinite(es.best_score) else None,
    }
