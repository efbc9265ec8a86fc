"""One NNI trial: parameters from NNI -> `-o` items -> train with the engine -> results back to NNI.

`python -m streamseg.search.nni_trial SPEC.json` is the trial command of an NNI HPO experiment
(`nni_hpo.run_hpo` writes SPEC.json): it asks NNI for the tuner's parameters (`nni.get_next_parameter`),
replays them through the experiment's `search_space` (`nni_space.ReplayTrial`), trains on the train split
into `<study folder>/trials/nni_<trial id>/`, reports the validation value of `train.monitor` after
every validation epoch (`nni.report_intermediate_result`) and its best value at the end
(`nni.report_final_result`). With `devices > 1` the training is a `streamseg train --devices N` child
(`search.ddp`), whose learning curve is reported when it ends. `run_trial` is shared with the NAS
evaluator (`nni_nas`).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl

from ..config import ConfigError, ConfigSet, load_configs, resolve_params
from ..engine.runner import METRIC_KEYS, Hardware, train_and_test
from .ddp import launch_args, train_in_child, val_history
from .nni_space import ReplayTrial, record_space
from .space import override_args, sample_overrides, train_command

PARAMETERS_FILE = "parameters.json"  # in a trial's run root: the parameters NNI gave it

@dataclass
class NNISpec:
    """What every NNI trial of one search shares (saved as JSON for the trial processes).

    dataset / model / exp / config_root: as given to `-D/-M/-E/--config-root` (relative paths resolve
    in the trial's working directory, the search's). fixed: the command line's `-o` items, the
    objective's `train.monitor` included. study_dir: the study folder. root: the `-R` printed in
    re-run commands. hw: the hardware of each trial."""

    dataset: str
    model: str
    exp: str
    config_root: str | None
    fixed: list[str]
    study_dir: str
    root: str
    hw: Hardware = field(default_factory=Hardware)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NNISpec:
        data = json.loads(Path(path).read_text())
        data["hw"] = Hardware(**data["hw"])
        return cls(**data)


@dataclass
class TrialPlan:
    """A trial's resolved parameters: the searched overrides, every `-o` item of its run, its command."""

    overrides: dict[str, Any]
    args: list[str]
    params: Any
    applied: dict[str, Any]
    command: str


def plan_trial(spec: NNISpec, configs: ConfigSet, overrides: dict[str, Any] | None = None,
               values: dict[str, Any] | None = None) -> TrialPlan:
    """The plan for searched `values` (replayed through `search_space`), or for ready `overrides` (NAS)."""
    if values is not None:
        overrides, params, applied = sample_overrides(configs, ReplayTrial(values, record_space(configs.exp)),
                                                      spec.fixed)
    else:
        clash = sorted({item.partition("=")[0].strip() for item in spec.fixed} & set(overrides))
        if clash:
            raise ConfigError(f"{clash} are searched and also set with -o; drop one of them")
        params, applied = resolve_params(configs, [*spec.fixed, *override_args(overrides)])
        overrides = {k: applied[k] for k in overrides}
    args = [*spec.fixed, *override_args(overrides)]
    if "train.seed" not in applied:  # the seed is part of what ran: always in the re-run command
        args.append(f"train.seed={params.train.seed}")
    command = train_command(spec.dataset, spec.model, spec.exp, args, spec.root, spec.config_root,
                            launch_args(spec.hw))
    return TrialPlan(overrides, args, params, applied, command)


class ReportCallback(pl.Callback):
    """Calls `report(value)` with `val/<monitor>` after every validation epoch (not the sanity check)."""

    def __init__(self, monitor: str, report: Callable[[float], None]) -> None:
        super().__init__()
        self.key = f"val/{monitor}"
        self.report = report

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.key)
        if value is None:
            raise KeyError(f"no {self.key!r} in the logged metrics ({sorted(trainer.callback_metrics)}); "
                           "train.monitor must be a validation metric key")
        self.report(float(value))


def run_trial(spec: NNISpec, configs: ConfigSet, plan: TrialPlan, run_root: Path,
              report: Callable[[float], None]) -> dict[str, Any]:
    """Train `plan` into `run_root` (here, or as a DDP child); `report` gets each epoch's validation value.

    Returns the run's metrics plus `run_dir`; raises ConfigError when there is no validation score."""
    monitor = plan.params.train.monitor
    if spec.hw.devices * spec.hw.num_nodes > 1:
        metrics, run_dir = train_in_child(spec.dataset, spec.model, spec.exp, spec.config_root, plan.args,
                                          run_root, spec.hw)
        for _, value in sorted(val_history(run_dir, monitor).items()):
            report(value)
    else:
        run, metrics = train_and_test(configs, plan.params, plan.applied, run_root, spec.hw, new=True,
                                      extra_callbacks=[ReportCallback(monitor, report)])
        run_dir = run.path
    if metrics.get("best_val") is None or math.isnan(metrics["best_val"]):
        raise ConfigError(f"the trial in {run_dir} has no validation score: search needs a validation split "
                          "(splits/val.split<k>.bundle, or -o data.val_fraction=0.2)")
    return {**{k: metrics[k] for k in (*METRIC_KEYS, "best_val") if k in metrics}, "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    import nni

    parser = argparse.ArgumentParser(description="one NNI trial of `streamseg search --backend nni`")
    parser.add_argument("spec", type=Path, help="the search's nni_spec.json")
    spec = NNISpec.load(parser.parse_args(argv).spec)
    values = nni.get_next_parameter()
    if values is None:
        raise SystemExit("error: no parameters from NNI: this command is started by `streamseg search --backend nni`")
    run_root = Path(spec.study_dir) / "trials" / f"nni_{nni.get_trial_id()}"
    run_root.mkdir(parents=True, exist_ok=True)
    # what this trial received: with concurrent trials NNI 3.0 hands each parameter set to whichever trial
    # asks first, so its own record of which trial got which parameters can be wrong (nni_hpo.collect)
    (run_root / PARAMETERS_FILE).write_text(json.dumps(values) + "\n")
    configs = load_configs(spec.dataset, spec.model, spec.exp, spec.config_root)
    plan = plan_trial(spec, configs, values=values)
    print(f"trial {nni.get_sequence_id()} ({nni.get_trial_id()}): {plan.command}", flush=True)
    result = run_trial(spec, configs, plan, run_root, nni.report_intermediate_result)
    (run_root / "trial.json").write_text(json.dumps({**result, "overrides": override_args(plan.overrides),
                                                     "seed": plan.params.train.seed, "command": plan.command},
                                                    indent=2) + "\n")
    nni.report_final_result(result["best_val"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
