"""Hyper-parameter and architecture search with Optuna (an optional extra: `pip install streamseg[search]`).

The search space is `search_space(trial) -> {dotted key: value}` in the experiment config (`space`);
each trial trains with the engine and is scored on the validation split (`objective`), pruned per
epoch (`pruning`); studies live in SQLite, PostgreSQL or a journal file shared by any number of workers
(`storage`, `study`); `report` prints and plots the results. Entry point: `streamseg search`.

`ddp` runs a trial as a multi-process child. The NNI backend (`pip install streamseg[nni]`) lives in
`nni_space` (the space in NNI's format), `nni_hpo` and `nni_trial` (HPO through NNI's manager) and
`nni_nas` (architecture search); they are imported only by `streamseg search --backend nni`.
"""

from .objective import Objective, SearchSpec
from .pruning import PruningCallback
from .report import best_summary, best_trials, print_report, save_plots
from .space import format_value, override_args, sample_overrides, space_function, train_command
from .storage import HeartbeatJournalStorage, open_storage
from .study import StudyConfig, open_study, run_worker

__all__ = [
    "HeartbeatJournalStorage",
    "Objective",
    "PruningCallback",
    "SearchSpec",
    "StudyConfig",
    "best_summary",
    "best_trials",
    "format_value",
    "open_storage",
    "open_study",
    "override_args",
    "print_report",
    "run_worker",
    "sample_overrides",
    "save_plots",
    "space_function",
    "train_command",
]
