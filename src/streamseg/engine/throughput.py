"""Training throughput: frames per second of every training epoch, over all ranks.

`TrainThroughput` counts the valid (unpadded) frames of every training batch (``batch["mask"]``, on
the device, so counting adds no host synchronisation), times each epoch from its first batch to its
last (validation excluded; CUDA synchronised at both ends), sums the frames over ranks and logs
``train/frames_per_s`` and ``train/epoch_seconds``. The first epoch includes warm-up (cuDNN autotuning,
``torch.compile``, worker start), so `summary` reports the median over the later epochs. The per-epoch
history is kept in checkpoints, so a resumed run's summary covers the epochs before the resume too. With
``torch.compile`` each epoch also records how many graphs have been compiled so far in this process
(``compiled_graphs``: constant after the first epoch means nothing recompiled).
Each epoch's entry also holds the wall clock at its first batch (``start_time``) and at its end
(``end_time``, after validation), kept in checkpoints, not in the summary; ``first_batch_time`` is the
wall clock of this process's first training batch (what the start-up took: metrics.json
``startup_clock``). ``tools/bench_gpu.py offline`` reads them for time-to-accuracy.
These are the numbers docs/benchmarks.md compares across 1 and 2 GPUs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["TrainThroughput", "compiled_graphs"]


def compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has compiled in this process so far (recompilations included)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - dynamo ships with torch >= 2.0
        return 0
    return int(counters["stats"]["unique_graphs"])


def _sync(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class TrainThroughput(pl.Callback):
    """Logs ``train/frames_per_s`` (all ranks together) and ``train/epoch_seconds`` per epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._frames: torch.Tensor | None = None
        self._start: float | None = None
        self._end: float | None = None
        self._start_time: float | None = None
        self.first_batch_time: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._frames = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        self._start = self._end = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:  # from the first batch: the loader's start-up is not training
            _sync(pl_module)
            self._start = time.perf_counter()
            self._start_time = time.time()
            if self.first_batch_time is None:
                self.first_batch_time = self._start_time

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._frames is not None and isinstance(batch, dict) and "mask" in batch:
            self._frames += batch["mask"].to(pl_module.device).sum()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning validates inside the training epoch, before on_train_epoch_end: stop the clock here
        if trainer.training and self._start is not None and self._end is None:
            _sync(pl_module)
            self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None or self._frames is None:
            return
        if self._end is None:
            _sync(pl_module)
            self._end = time.perf_counter()
        seconds = self._end - self._start
        frames = float(trainer.strategy.reduce(self._frames, reduce_op="sum"))
        seconds = float(trainer.strategy.reduce(torch.tensor(seconds, device=pl_module.device), reduce_op="max"))
        # end_time: wall clock (Unix seconds) after the epoch's validation, for time-to-accuracy
        entry = {"epoch": trainer.current_epoch, "frames": frames, "seconds": seconds,
                 "frames_per_s": frames / seconds if seconds > 0 else 0.0, "start_time": self._start_time,
                 "end_time": time.time()}
        graphs = compiled_graphs()
        if graphs:
            entry["compiled_graphs"] = graphs
        if pl_module.device.type == "cuda":  # this rank's peak since the run started
            entry["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        self.history.append(entry)
        pl_module.log("train/frames_per_s", entry["frames_per_s"], rank_zero_only=True)
        pl_module.log("train/epoch_seconds", seconds, rank_zero_only=True)

    # the epochs before a resume, kept in checkpoints: `summary` covers the whole run
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(e) for e in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(e) for e in state_dict.get("history", [])]

    def summary(self) -> dict[str, Any]:
        """``{"epochs", "frames_per_s" (median after the first epoch, or the only one), "epoch_seconds"}``."""
        if not self.history:
            return {}
        later = self.history[1:] or self.history
        return {"epochs": len(self.history),
                "frames_per_s": statistics.median(e["frames_per_s"] for e in later),
                "epoch_seconds": statistics.median(e["seconds"] for e in later),
                "first_epoch_seconds": self.history[0]["seconds"],
                **({"peak_cuda_allocated_mb": max(e["peak_cuda_allocated_mb"] for e in self.history)}
                   if "peak_cuda_allocated_mb" in self.history[0] else {}),
                **({"compiled_graphs": [e.get("compiled_graphs", 0) for e in self.history]}
                   if any("compiled_graphs" in e for e in self.history) else {})}
