"""A pruning callback for `pytorch_lightning` (optuna-integration's only supports `lightning.pytorch`).

After every validation epoch it reports `val/<monitor>` to the Optuna trial at step = epoch and asks the
study's pruner whether to stop. In one process it raises `optuna.TrialPruned` right there, which stops
`Trainer.fit` (Lightning re-raises callback exceptions after tearing down) and skips the test phase: a
pruned trial costs no more than the epochs it ran.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytorch_lightning as pl


class PruningCallback(pl.Callback):
    """Report `trainer.callback_metrics["val/" + monitor]` to `trial` each validation epoch; prune if told.

    Args:
        trial: the running `optuna.Trial`.
        monitor: a validation metric key without the `val/` prefix (e.g. "f1@50", percent).
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__()
        self.trial = trial
        self.key = f"val/{monitor}"
        self.reported: dict[int, float] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value: Any = trainer.callback_metrics.get(self.key)
        if value is None:
            raise KeyError(
                f"PruningCallback: no {self.key!r} in the logged metrics "
                f"({sorted(trainer.callback_metrics)}); train.monitor must be a validation metric key"
            )
        value = float(value)
        if math.isnan(value):
            # a diverged trial: NaN cannot be compared with the others, so it is pruned outright
            raise optuna.TrialPruned(f"{self.key} is NaN at epoch {trainer.current_epoch}")
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        self.reported[epoch] = value
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.key} = {value:.4g}")
