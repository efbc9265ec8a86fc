"""`logs/csv/metrics.csv` across resumes: the rows before the checkpoint are kept, once, in order.

Lightning's `CSVLogger` deletes `metrics.csv` when its directory is not empty, so a resumed run lost
the history of its earlier epochs (which the Telegram report and `streamseg search` read back).
`ResumableCSVLogger` instead keeps the rows up to the epoch of the checkpoint the run resumes from
and drops the rows after it: those were logged by the interrupted attempt and are logged again as the
resumed run redoes that work. A fresh start (no checkpoint) begins an empty file, as before.

Checkpoints of `last.ckpt` are written at the end of a training epoch, so "up to the checkpoint" is
"rows whose `epoch` column is at most the checkpoint's `epoch`". Test-phase rows, logged after
training, carry the epoch count (one more than the last epoch) and are dropped too.

Lightning writes an epoch's end-of-epoch row (`train/epoch_loss`, `train/skipped_steps`, throughput)
just after that epoch's checkpoints. A run killed in between has a `last.ckpt` one row ahead of its
history: `checkpoint_with_history` then resumes from the generation before (`last.prev.ckpt`), so the
epoch is redone and its row written.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from .checkpoint_io import (
    CheckpointError,
    CheckpointFallbackWarning,
    checkpoint_epoch,
    previous_path,
    usable_checkpoint,
)

__all__ = ["ResumableCSVLogger", "checkpoint_with_history"]

# SegmentationModule logs it at the end of every training epoch: its row is the epoch's last
EPOCH_END_COLUMN = "train/skipped_steps"


def _rows_up_to_epoch(path: Path, epoch: int) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a metrics.csv, cut at the first row of an epoch after `epoch`. A row without an
    epoch (a metric logged with an explicit step) belongs with the row before it."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    for i, row in enumerate(rows):
        if row.get("epoch") and int(float(row["epoch"])) > epoch:
            return header, rows[:i]
    return header, rows


def checkpoint_with_history(ckpt: Path, metrics_csv: Path) -> Path | None:
    """`ckpt` (a usable checkpoint), or the generation before it when `metrics_csv` lacks the end-of-epoch
    row of `ckpt`'s epoch (killed between the two writes; a warning says so), or None (start afresh) when
    there is no usable generation before it."""
    ended: set[int] = set()
    if metrics_csv.is_file():
        with metrics_csv.open(newline="") as f:
            ended = {int(float(r["epoch"])) for r in csv.DictReader(f)
                     if r.get("epoch") and r.get(EPOCH_END_COLUMN)}
    epoch = checkpoint_epoch(ckpt)
    if epoch in ended:
        return ckpt
    prev = previous_path(ckpt)
    try:
        prev = usable_checkpoint(prev) if prev.is_file() else None
    except CheckpointError:
        prev = None
    if prev is not None and checkpoint_epoch(prev) not in ended:
        prev = None
    then = f"resuming from {prev} (epoch {checkpoint_epoch(prev)})" if prev else "starting the version afresh"
    warnings.warn(f"{metrics_csv} has no end-of-epoch row for epoch {epoch} of {ckpt} (killed just after that "
                  f"checkpoint was written): {then}, so that the history has every epoch",
                  CheckpointFallbackWarning, stacklevel=2)
    return prev


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resumed_epoch: int | None) -> None:
        self._resumed_epoch = resumed_epoch
        self._kept_header: list[str] = []
        super().__init__(log_dir)
        self.metrics_keys = list(self._kept_header)  # new rows are appended under the same columns

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resumed_epoch is None:  # a fresh start: the rows of an earlier attempt belong to no checkpoint
            path.unlink()
            return
        header, rows = _rows_up_to_epoch(path, self._resumed_epoch)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._kept_header = header


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the rows up to `resume_from`'s epoch (a checkpoint path, or None for a fresh
    start, which empties metrics.csv as Lightning's does)."""

    def __init__(self, save_dir: str, name: str, version: str, resume_from: str | Path | None) -> None:
        super().__init__(save_dir, name=name, version=version)
        self._resume_from = resume_from

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            epoch = checkpoint_epoch(self._resume_from) if self._resume_from is not None else None
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, epoch)
        return self._experiment
