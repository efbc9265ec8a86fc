"""One trial: the experiment's search space -> params -> (cost) -> train on the train split -> best
validation value of `train.monitor` (never a test-split number).

A trial trains in this process with `engine.runner.train_and_test` into its own run root,
`<study folder>/trials/trial_<number>/`, as a fresh version, with a `PruningCallback`. With
`devices > 1` it runs `streamseg train ... --devices N` as a child process instead (torchrun under
the hood, `search.ddp`): the trial's parameters are on the command line, so every rank gets the same ones
by construction; such trials report their learning curve when they end and are not pruned per epoch
(see docs/search.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from ..config import ConfigError, ConfigSet
from ..engine.batches import BatchKind
from ..engine.runner import METRIC_KEYS, Hardware, build_net, train_and_test
from .cost import model_cost
from .ddp import launch_args, train_in_child, val_history
from .pruning import PruningCallback
from .space import override_args, sample_overrides, train_command

# user attributes every trial carries (read by the report and by optuna-dashboard)
ATTR_OVERRIDES = "overrides"  # the trial's searched -o items
ATTR_COMMAND = "command"  # `streamseg train ...` that re-runs it
ATTR_SEED = "seed"  # train.seed of the run
ATTR_COST = "cost"
ATTR_RUN = "run_dir"
ATTR_TEST = "test_metrics"  # shown for information only; never optimised
ATTR_SKIPPED = "skipped"  # why a trial did not train (over the cost budget, budget of trials reached)


@dataclass
class SearchSpec:
    """What every trial of a search shares.

    dataset / model / exp / config_root: as given to `-D/-M/-E/--config-root`. fixed: the command line's
    `-o` items (the objective's `train.monitor` included). study_dir: the study folder (trial runs go in
    `trials/`). root: the `-R` printed in re-run commands. cost: "params" | "flops" | "latency" | None;
    multi_objective: the cost is a second objective (else, with max_cost, a constraint). prune: report
    each validation epoch to the trial (learning curves in the study; the study's pruner decides whether
    to stop; Optuna cannot do this for multi-objective studies)."""

    dataset: str
    model: str
    exp: str
    config_root: str | None
    fixed: list[str]
    study_dir: Path
    root: str
    hw: Hardware = field(default_factory=Hardware)
    cost: str | None = None
    multi_objective: bool = False
    max_cost: float | None = None
    prune: bool = True


class Objective:
    """`objective(trial)` for `study.optimize`: the trial's validation score (and cost).

    before_trial(trial) runs first (the study's trial budget check; it may raise to skip the trial)."""

    def __init__(self, spec: SearchSpec, configs: ConfigSet,
                 before_trial: Callable[[optuna.Trial], None] | None = None) -> None:
        self.spec = spec
        self.configs = configs
        self.before_trial = before_trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        spec = self.spec
        if self.before_trial is not None:
            self.before_trial(trial)
        overrides, params, applied = sample_overrides(self.configs, trial, spec.fixed)
        args = [*spec.fixed, *override_args(overrides)]
        if "train.seed" not in applied:  # the seed is part of what ran: always in the re-run command
            args.append(f"train.seed={params.train.seed}")
        trial.set_user_attr(ATTR_OVERRIDES, override_args(overrides))
        trial.set_user_attr(ATTR_SEED, params.train.seed)
        trial.set_user_attr(ATTR_COMMAND, train_command(spec.dataset, spec.model, spec.exp, args, spec.root,
                                                        spec.config_root, launch_args(spec.hw)))
        cost = self._cost(params) if spec.cost else None
        if cost is not None:
            trial.set_user_attr(ATTR_COST, cost)
            if spec.max_cost is not None and hasattr(trial, "set_constraint"):  # Optuna >= 5; <= 0 is feasible
                trial.set_constraint(spec.cost, cost - spec.max_cost)
            if spec.max_cost is not None and cost > spec.max_cost:
                trial.set_user_attr(ATTR_SKIPPED, f"{spec.cost} {cost:.4g} > budget {spec.max_cost:.4g}")
                raise optuna.TrialPruned(f"over the {spec.cost} budget")
        run_root = spec.study_dir / "trials" / f"trial_{trial.number:04d}"
        if spec.hw.devices * spec.hw.num_nodes > 1:
            metrics = self._run_ddp(trial, args, run_root, params.train.monitor)
        else:
            metrics = self._run_here(trial, params, applied, run_root)
        trial.set_user_attr(ATTR_TEST, {k: metrics[k] for k in METRIC_KEYS if k in metrics})
        value = metrics.get("best_val")
        if value is None:
            raise ConfigError(
                f"trial {trial.number} has no validation score: the dataset has no validation split. "
                "Search needs one: a splits/val.split<k>.bundle, or -o data.val_fraction=0.2"
            )
        if not spec.multi_objective:
            return float(value)
        return float(value), float(cost)

    def _cost(self, params: Any) -> float:
        """The model's cost from its params (the data is prepared once to learn channels and classes)."""
        dm = self.configs.dataset.build_datamodule(params.data, params.train)
        if self.spec.cost == "flops" and dm.batch_kind is BatchKind.STREAMS:
            raise ConfigError("--cost flops is implemented for feature inputs only (this dataset streams video)")
        dm.prepare_data()
        info = dm.info
        net = build_net(self.configs.model, params.model, info)
        return model_cost(self.spec.cost, net, info.in_channels, params.train.chunk_size, info.sample_rate)

    def _run_here(self, trial: optuna.Trial, params: Any, applied: dict, run_root: Path) -> dict[str, Any]:
        callbacks = [PruningCallback(trial, params.train.monitor)] if self.spec.prune else []
        run, metrics = train_and_test(self.configs, params, applied, run_root, self.spec.hw, new=True,
                                      extra_callbacks=callbacks)
        trial.set_user_attr(ATTR_RUN, str(run.path))
        return metrics

    def _run_ddp(self, trial: optuna.Trial, args: list[str], run_root: Path, monitor: str) -> dict[str, Any]:
        spec = self.spec
        metrics, run_dir = train_in_child(spec.dataset, spec.model, spec.exp, spec.config_root, args, run_root,
                                          spec.hw)
        trial.set_user_attr(ATTR_RUN, str(run_dir))
        if not spec.multi_objective:  # Optuna keeps learning curves of single-objective trials only
            for epoch, value in sorted(val_history(run_dir, monitor).items()):  # reported after the fact
                trial.report(value, step=epoch)
        return metrics
