"""A search worker: join (or create) the study, run trials until the study's trial budget is done.

Any number of workers, on any number of machines, run the same command against the same storage.
The budget `n_trials` counts COMPLETE and PRUNED trials of the whole study (Optuna's `n_trials` is per
process). Trial numbers are handed out by the storage, one at a time, so a trial knows how many trials
were started before it: it trains only if fewer than `n_trials` of those are finished (complete or
pruned), running or queued; otherwise the budget is claimed and the trial is marked FAIL with
`skipped = "trial budget reached"`. Failed trials (a crash, a dead worker) do not count, so a re-run
of the command tops the study up to `n_trials`.

Before each trial the worker looks at the study (`wait_for_room`): when the budget is claimed but not
done because other workers' trials are still RUNNING, it does not quit: it waits, polling every
heartbeat interval and failing stale trials (a dead worker's trial goes stale `grace` seconds after
its last heartbeat, and is queued again with the same parameters), until those trials finish (the
study is done) or one fails (there is room again, and this worker runs the re-queued trial or a new
one). So one surviving worker finishes a study whose other workers were killed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import optuna
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from .objective import ATTR_COST, ATTR_SKIPPED, Objective
from .storage import quiet_experimental

# states that hold a place in the budget: done, or on their way to be done
CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
BUDGET_REACHED = "trial budget reached"

# study user attributes that define the study; a worker with other ones would mix incompatible trials
DEFINING = ("objective", "cost", "max_cost", "fixed_overrides", "configs")


class BudgetReached(Exception):
    """Raised in a trial started after the study's budget was claimed (it is then marked FAIL)."""


@dataclass
class StudyConfig:
    """name: the study's name in the storage. directions: "maximize" for the score, then "minimize" for
    a cost objective. defining: the study user attributes a joining worker must match (see DEFINING).
    sampler: "tpe" | "random" | "nsga2"; seed: the sampler's seed (None: random; workers sharing a study
    should not share a seed, or they propose the same first trials). pruner: "median" | "hyperband" |
    "none". max_cost: the constraint's budget (single objective), else None."""

    name: str
    directions: list[str]
    defining: dict[str, Any]
    sampler: str = "tpe"
    seed: int | None = None
    pruner: str = "median"
    max_cost: float | None = None


def make_sampler(kind: str, seed: int | None, max_cost: float | None) -> optuna.samplers.BaseSampler:
    # Optuna >= 5 reads constraints the objective sets with `trial.set_constraint` (see objective.py);
    # Optuna 4 needs the sampler's `constraints_func` (deprecated in 5)
    legacy = max_cost is not None and not hasattr(optuna.trial.Trial, "set_constraint")
    constraints = _cost_constraint(max_cost) if legacy else None
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    raise ValueError(f"unknown sampler {kind!r}: expected tpe, random or nsga2")


def _cost_constraint(max_cost: float) -> Callable[[FrozenTrial], Sequence[float]]:
    def constraint(trial: FrozenTrial) -> Sequence[float]:
        # Optuna's convention: a value <= 0 is feasible
        cost = trial.user_attrs.get(ATTR_COST)
        return [float("inf") if cost is None else float(cost) - max_cost]

    return constraint


def make_pruner(kind: str, multi_objective: bool) -> optuna.pruners.BasePruner:
    if multi_objective or kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        # prune a trial whose best score so far is below the median of earlier trials at the same epoch,
        # once 2 trials have finished (fewer give a meaningless median)
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ValueError(f"unknown pruner {kind!r}: expected median, hyperband or none")


def open_study(storage: BaseStorage, cfg: StudyConfig) -> optuna.Study:
    """Create the study or join it; a joining worker's directions and defining attributes must match."""
    sampler = make_sampler(cfg.sampler, cfg.seed, cfg.max_cost)
    pruner = make_pruner(cfg.pruner, len(cfg.directions) > 1)
    for attempt in range(5):
        try:
            study = optuna.create_study(storage=storage, study_name=cfg.name, directions=cfg.directions,
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
            break
        except Exception as e:  # two workers creating the tables at the same instant (SQLite)
            if attempt == 4 or "already exists" not in str(e).lower():
                raise
            time.sleep(1.0 + attempt)
    want = [optuna.study.StudyDirection[d.upper()] for d in cfg.directions]
    if list(study.directions) != want:
        raise ValueError(f"study {cfg.name!r} exists with directions {[d.name for d in study.directions]}, "
                         f"this command asks for {[d.name for d in want]}; use another --study name")
    existing = study.user_attrs
    for key, value in cfg.defining.items():
        if key in existing and existing[key] != value:
            raise ValueError(f"study {cfg.name!r} was created with {key} = {existing[key]!r}, this command "
                             f"has {value!r}; use the same settings to join it, or another --study name")
        if key not in existing:
            study.set_user_attr(key, value)
    return study


def count(study: optuna.Study, states: Sequence[TrialState], below: int | None = None) -> int:
    trials = study.get_trials(deepcopy=False, states=tuple(states))
    return sum(1 for t in trials if below is None or t.number < below)


def budget_check(study: optuna.Study, n_trials: int) -> Callable[[optuna.Trial], None]:
    """The check each trial runs first (see the module docstring): the storage's trial numbering decides
    which of several workers' racing trials trains, so the study never runs more than `n_trials`."""

    def check(trial: optuna.Trial) -> None:
        ahead = count(study, CLAIMED, below=trial.number)
        if ahead >= n_trials:
            trial.set_user_attr(ATTR_SKIPPED, BUDGET_REACHED)
            raise BudgetReached(f"trial {trial.number}: {ahead} trials already claim the budget of {n_trials}")

    return check


def wait_for_room(study: optuna.Study, n_trials: int, note: Callable[[str], None] | None = None,
                  poll: float | None = None) -> bool:
    """Wait until this worker should start a trial (True) or the study is done (False).

    True as soon as fewer than `n_trials` trials are claimed (finished, running or queued), or a queued
    (WAITING) trial is there to take, e.g. a dead worker's trial re-queued. While the budget is claimed
    by other workers' RUNNING trials it waits, every `poll` seconds (default: the storage's heartbeat
    interval), failing stale trials as Optuna does before each trial. Without heartbeats a dead worker's
    trial never goes stale, so it does not wait (False). Call it while this worker runs no trial."""
    storage = study._storage
    heartbeat = storage.get_heartbeat_interval() if is_heartbeat_enabled(storage) else None
    poll = poll if poll is not None else heartbeat
    told = None
    while True:
        if heartbeat is not None:
            with quiet_experimental():
                fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False, states=CLAIMED)
        done = sum(1 for t in trials if t.state in DONE)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        queued = sum(1 for t in trials if t.state == TrialState.WAITING)
        if done >= n_trials:
            return False
        if len(trials) < n_trials or queued:
            return True
        if not running or poll is None:  # cannot happen with heartbeats: claimed = done + running + queued
            return False
        if told != running and note is not None:
            grace = getattr(storage, "grace_period", None) or getattr(storage, "_grace", None)
            note(f"study {study.study_name!r}: {done} of {n_trials} trials finished, the rest claimed by running "
                 f"trial(s) {running} of other workers; waiting for them to finish or to go stale"
                 + (f" ({grace} s without a heartbeat)" if grace else ""))
            told = running
        time.sleep(poll)


def run_worker(study: optuna.Study, objective: Objective, n_trials: int,
               on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
               note: Callable[[str], None] | None = None) -> int:
    """Run trials until the study has `n_trials` finished trials, waiting for other workers' running
    trials when they claim the rest of the budget (see `wait_for_room`); `note` gets progress messages.

    Returns how many trials this worker ran (skipped ones not counted). A RuntimeError in a trial (a
    crash in training, e.g. out of memory) marks that trial FAIL and the worker goes on, for at most
    `n_trials` trials of its own; a ConfigError (ValueError) or Ctrl-C marks it FAIL and stops the worker.
    The study may end incomplete (trials that crashed): check `count(study, DONE)` afterwards."""
    objective.before_trial = budget_check(study, n_trials)
    ran = 0

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        if trial.user_attrs.get(ATTR_SKIPPED) != BUDGET_REACHED:
            ran += 1
        if on_trial_end is not None:
            on_trial_end(study, trial)

    # this worker never runs more than the whole budget, whatever happens to the others
    while ran < n_trials and wait_for_room(study, n_trials, note):
        study.optimize(objective, n_trials=1, callbacks=[after], catch=(BudgetReached, RuntimeError),
                       gc_after_trial=True)
    return ran
