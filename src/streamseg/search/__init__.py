"""Hyper-parameter and architecture search with Optuna (an optional extra: `pip install streamseg[search]`).

The search space is `search_space(trial) -> {dotted key: value}` in the experiment config (`space`);
each trial trains with the engine and is scored on the validation split (`objective`), pruned per
epoch (`pruning`); studies live in SQLite, PostgreSQL or a journal file shared by any number of workers
(`storage`, `study`); `report` prints and plots the results. Entry point: `streamseg search`.

`ddp` runs a trial as a multi-process child. The NNI backend (`pip install streamseg[nni]`) lives in
`nni_space` (the space in NNI's format), `nni_hpo` and `nni_trial` (HPO through NNI's manager) and
`nni_nas` (architecture search); they are imported only by `streamseg search --backend nni`.
"""

from importlib import import_module
from typing import Any

# names -> submodule, imported on first use: the CLI reads `defaults` (no Optuna) for every command's parser
_WHERE = {
    "Objective": "objective", "SearchSpec": "objective", "PruningCallback": "pruning",
    "best_summary": "report", "best_trials": "report", "print_report": "report", "save_plots": "report",
    "format_value": "space", "override_args": "space", "sample_overrides": "space", "space_function": "space",
    "train_command": "space", "HeartbeatJournalStorage": "storage", "open_storage": "storage",
    "StudyConfig": "study", "open_study": "study", "run_worker": "study",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


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
