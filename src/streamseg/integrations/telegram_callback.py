"""`TelegramCallback`: Lightning hooks that report a run to Telegram, from rank 0 only.

    on_train_start           "started": run, host, fresh or resumed, config summary
    on_train_batch_start     once, at the first training batch of a run on frames: an animated preview of up
                             to `preview_chunks` chunks as the model gets them (augmented; normalisation
                             undone for display) with their labels (`preview=False` / --no-telegram-preview: off)
    on_train_epoch_end       every `every_n_epochs` epochs (and the last): best/last metrics, time per epoch,
                             ETA; then photos: training curves and the segmentation bars of one validation video
    on_exception             "crashed": exception, traceback tail, last metrics; flushes (bounded)
    on_test_start            "evaluating" (evaluation-only runs)
    on_test_end              "finished": test table, checkpoints, total time
    teardown("test")         flushes the queue (at most `flush_timeout` seconds)

Everything is handed to a `TelegramNotifier`, which sends from its own thread: a hook costs the training
thread the time to format a message (and, at report epochs, one extra forward pass over one validation
video for the segmentation plot). Plots are rendered in the sender's thread. Every hook is guarded: an
error while reporting is logged (once per hook) and training goes on.

Reads: the run directory `trainer.default_root_dir` (config/params.json, config/overrides.json),
`trainer.callback_metrics` each epoch, the CSV logger's metrics.csv on resume (earlier epochs),
the `EvalResult` of the Trainer's `engine.evaluation.TestPass` callback at the end of a test pass (attached by
`engine.checkpoint_eval.evaluate`), and `pl_module.info` (a `SegmentationModule`).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from ..engine.evaluation import TestPass
from . import telegram_report as report
from .telegram_sender import TelegramNotifier

log = logging.getLogger("streamseg.telegram")

# train keys worth seeing in the start message (the rest are in config/params.json)
SUMMARY_TRAIN_KEYS = ("epochs", "batch_size", "lr", "chunk_size", "tbptt_chunks", "seed", "precision")


def _rank_zero_guarded(hook: Callable) -> Callable:
    """Run `hook` on global rank 0 only, and never let it raise into training."""

    @functools.wraps(hook)
    def wrapper(self: "TelegramCallback", trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.is_global_zero:
            return
        try:
            hook(self, trainer, *args, **kwargs)
        except Exception as e:
            level = logging.DEBUG if hook.__name__ in self._failed_hooks else logging.WARNING
            self._failed_hooks.add(hook.__name__)
            log.log(level, "Telegram report skipped (%s: %s: %s); training goes on", hook.__name__,
                    type(e).__name__, self.notifier.redact(str(e)))

    return wrapper


def csv_history(trainer: pl.Trainer) -> dict[int, dict[str, float]]:
    """Epochs before a resume, from the CSV logger's metrics.csv (last value per epoch and column)."""
    from pytorch_lightning.loggers import CSVLogger

    paths = [Path(lg.log_dir) / "metrics.csv" for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    out: dict[int, dict[str, float]] = {}
    for path in (p for p in paths if p.is_file()):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"])) + 1
                for k, v in row.items():
                    if k not in ("epoch", "step") and v not in ("", None):
                        out.setdefault(epoch, {})[k] = float(v)
    return out


class TelegramCallback(pl.Callback):
    """Report training and evaluation progress to Telegram.

    Args:
        notifier: the background sender (see `telegram_notifier_from_cli` / `TelegramNotifier`).
        every_n_epochs: epochs between progress reports (the last epoch always reports).
        plots: send training curves and a validation video's segmentation bars with each report.
        flush_timeout: seconds queued messages get at the end of testing or after a crash.
        preview: send the input preview at the start of training (runs on frames only).
        preview_chunks: chunks (batch rows) in the preview.
    """

    def __init__(self, notifier: TelegramNotifier, every_n_epochs: int = 10, plots: bool = True,
                 flush_timeout: float = 10.0, preview: bool = True, preview_chunks: int = 4):
        if every_n_epochs < 1:
            raise ValueError(f"TelegramCallback: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.notifier = notifier
        self.every_n_epochs, self.plots, self.flush_timeout = every_n_epochs, plots, flush_timeout
        self._history: dict[int, dict[str, float]] = {}  # 1-based epoch -> metric -> value
        self._epoch_seconds: list[float] = []
        self._epoch_started: float | None = None
        self._started: float | None = None  # time.time() at the start of training (None: evaluation only)
        self._val_video: tuple[str, np.ndarray, np.ndarray] | None = None  # (name, pred, gt) at full frame rate
        self._failed_hooks: set[str] = set()
        self.preview, self.preview_chunks = preview, preview_chunks
        self._preview_pending = False

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _run_name(trainer: pl.Trainer) -> str:
        parts = Path(trainer.default_root_dir).resolve().parts
        return "/".join(parts[-3:])  # <dataset>/<model>_<exp>/version_<n>

    def _is_report_epoch(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs > 0
        return epoch % self.every_n_epochs == 0 or last or trainer.should_stop

    def _config_summary(self, trainer: pl.Trainer) -> dict[str, Any]:
        config = Path(trainer.default_root_dir) / "config"
        out: dict[str, Any] = {}
        overrides = config / "overrides.json"
        if overrides.is_file():
            o = json.loads(overrides.read_text())
            out["overrides"] = " ".join(f"{k}={v}" for k, v in o.items()) or "none"
        params = config / "params.json"
        if params.is_file():
            p = json.loads(params.read_text())
            train = p.get("train", {})
            out["train"] = " ".join(f"{k}={train[k]}" for k in SUMMARY_TRAIN_KEYS if k in train)
            model = p.get("model", {})
            out["model"] = " ".join(f"{k}={v}" for k, v in model.items())
            data = p.get("data", {})
            out["data"] = " ".join(f"{k}={data[k]}" for k in ("root", "split") if k in data)
        return out

    @staticmethod
    def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
        out = {}
        for k, v in metrics.items():
            if torch.is_tensor(v) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[k] = float(v)
        return out

    # ------------------------------------------------------------------ training
    @_rank_zero_guarded
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.time()
        self._preview_pending = self.preview
        self._epoch_seconds = []
        resumed = trainer.current_epoch if trainer.ckpt_path else None
        if resumed:
            self._history = {e: m for e, m in csv_history(trainer).items() if e <= resumed}
        self.notifier.send(report.start_message(
            self._run_name(trainer), platform.node(), resumed, trainer.max_epochs, trainer.world_size,
            self._config_summary(trainer)))

    @_rank_zero_guarded
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._preview_pending:
            return
        self._preview_pending = False
        x = batch.get("x") if isinstance(batch, dict) else None
        if not torch.is_tensor(x) or x.dim() != 5:  # features, not frames: nothing to look at
            return
        mask = batch["mask"].reshape(x.shape[0], -1) > 0
        rows = [i for i in range(x.shape[0]) if bool(mask[i].any())][: self.preview_chunks]  # live stream slots
        frames = x[rows].detach().float().cpu()  # (N, 3, T, H, W)
        labels = torch.where(mask[rows], batch["labels"][rows], -1).cpu().numpy()
        names = [str(batch["names"][i]) for i in rows] if "names" in batch else []
        dm = getattr(trainer, "datamodule", None)
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        info = pl_module.info
        n, _, t, h, w = frames.shape

        def render() -> bytes:
            pixels = frames
            if x.dtype != torch.uint8 and mean is not None and std is not None:  # undo (x / 255 - mean) / std
                pixels = (frames * torch.tensor(std).view(1, 3, 1, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1, 1)) * 255
            array = pixels.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()  # (N, T, H, W, 3)
            return report.render_input_preview(array, labels, info.class_names, info.bg_ids, names)

        self.notifier.animation(render, filename="input_preview.gif", caption=(
            f"input preview: {n} training chunks of {t} frames ({h}x{w}) as the model gets them (augmented), "
            "labels under each; --no-telegram-preview turns this off"))

    @_rank_zero_guarded
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    @_rank_zero_guarded
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        # one validation video's prediction for the report's segmentation plot: a second forward pass over
        # that video only, at report epochs only (validation runs in inference mode, the module in eval)
        if not self.plots or batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if trainer.state.fn != TrainerFn.FITTING or not self._is_report_epoch(trainer):
            return
        from ..metrics import upsample

        n = int(batch["lengths"][0])
        logits = pl_module(batch["features"][:1], batch["mask"][:1])  # (S, 1, K, T)
        pred = logits[-1, 0].argmax(dim=0)[:n].cpu().numpy()
        gt = batch["full_labels"][0].cpu().numpy()
        self._val_video = (str(batch["names"][0]), upsample(pred, pl_module.info.sample_rate, len(gt)), gt)

    @_rank_zero_guarded
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_started is not None:
            self._epoch_seconds.append(time.monotonic() - self._epoch_started)
        epoch = trainer.current_epoch + 1
        self._history[epoch] = self._scalars(dict(trainer.callback_metrics))
        if not self._is_report_epoch(trainer):
            return
        run, host = self._run_name(trainer), platform.node()
        self.notifier.send(report.epoch_message(run, host, epoch, trainer.max_epochs, self._history,
                                                self._epoch_seconds[-20:]))  # recent epochs: ETA follows speed-ups
        if not self.plots:
            return
        history = {e: dict(m) for e, m in self._history.items()}  # a snapshot: training goes on meanwhile
        self.notifier.photo(lambda: report.render_curves(history, f"{run} epoch {epoch}"),
                            caption=f"training curves, epoch {epoch}", filename="curves.png")
        if self._val_video is not None:
            name, pred, gt = self._val_video
            self._val_video = None
            info = pl_module.info
            title = f"{name} (validation, epoch {epoch})"
            self.notifier.photo(
                lambda: report.render_segmentation(name, pred, gt, info.class_names, info.bg_ids, info.fps, title),
                caption=f"validation video {name}, epoch {epoch}", filename="segmentation.png")

    # ------------------------------------------------------------------ failure
    @_rank_zero_guarded
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        elapsed = time.time() - self._started if self._started is not None else None
        last = self._history[max(self._history)] if self._history else {}
        self.notifier.send(report.crash_message(self._run_name(trainer), platform.node(), exception,
                                                trainer.current_epoch + 1, elapsed, last))
        self.notifier.close(self.flush_timeout)  # the process may be about to exit

    # ------------------------------------------------------------------ evaluation
    @_rank_zero_guarded
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is None:  # evaluation only: say what is being scored
            self.notifier.send(f"<b>evaluating</b> {report.escape(self._run_name(trainer))} on "
                               f"{report.escape(platform.node())}, checkpoint {report.escape(str(trainer.ckpt_path))}")

    @_rank_zero_guarded
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = None
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", ""):
                score = cb.best_model_score
                best = cb.best_model_path + (f" ({cb.monitor} = {float(score):.2f})" if score is not None else "")
        elapsed = time.time() - self._started if self._started is not None else None
        result = next((cb.result for cb in trainer.callbacks if isinstance(cb, TestPass)), None)
        self.notifier.send(report.end_message(
            self._run_name(trainer), platform.node(), None if result is None else result.scores,
            str(trainer.ckpt_path) if trainer.ckpt_path else None, best, elapsed, self._epoch_seconds,
            trained=self._started is not None))

    @_rank_zero_guarded
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # after testing, the run is over: deliver what is queued (bounded). After fit, testing usually
        # follows; a fit-only process flushes at exit (the notifier registers an atexit hook).
        if stage == "test":
            self.notifier.close(self.flush_timeout)
