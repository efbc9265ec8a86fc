"""Architecture search with NNI's NAS (`streamseg search --backend nni --nas`).

The model space is the experiment's model config with the `model.*` parameters of its `search_space`
turned into NNI mutables (`ConfigModelSpace`: a choice for categorical and integer parameters, a
(log-)uniform for floats), e.g. MemoryTCN's depth (`model.num_layers`) and width (`model.num_maps`).
NNI's multi-trial `Random` strategy samples architectures (no repeats; it stops early once every
architecture of a small space was tried); a `FunctionalEvaluator` (`evaluate`) trains each
with the engine exactly as `streamseg train -o model.num_layers=.. ...` would (after checking that the
engine's network has the sampled architecture's parameter count), reports every validation epoch to NNI
and the best value as the trial's metric. Trials run one after another in this process (NNI's
"sequential" execution engine): no NNI manager, no web server, no open port.

Parameters of `search_space` not named `model.*` (e.g. `train.lr`) keep their config values, or `-o`.
NNI's one-shot strategies (DARTS, ENAS, ...) need a supernet of NNI's mixed layers, which have no Conv1d
(see docs/search.md); they are not offered.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nni
import torch
from nni.mutable import ensure_frozen

with warnings.catch_warnings():
    # NNI 3.0 inspects torch.nn's classes and warns about ones newer than itself (harmless: layers we do not use)
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
    from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import model_context

from ..config import ConfigError, ConfigSet, apply_overrides, resolve_params
from ..engine.runner import build_net
from .nni_space import Param, record_space
from .nni_trial import NNISpec, TrialPlan, plan_trial, run_trial
from .space import format_value, override_args

MODEL_PREFIX = "model."


def nni_mutable(p: Param) -> Any:
    """The NNI mutable for one recorded parameter, labelled with its name (the dotted key)."""
    if p.kind == "categorical":
        return nni.choice(p.name, list(p.choices))
    if p.kind == "int":
        return nni.choice(p.name, list(range(int(p.low), int(p.high) + 1, int(p.step))))
    if p.log:
        return nni.loguniform(p.name, p.low, p.high)
    if p.step is not None:
        return nni.quniform(p.name, p.low, p.high, p.step)
    return nni.uniform(p.name, p.low, p.high)


def architecture_params(exp_module: Any) -> dict[str, Param]:
    """The `model.*` parameters of the experiment's `search_space`, or a ConfigError naming the file."""
    arch = {name: p for name, p in record_space(exp_module).items() if name.startswith(MODEL_PREFIX)}
    if not arch:
        raise ConfigError(f"{exp_module.__file__}: search_space() has no parameter named model.* to search "
                          "with --nas (name each parameter as its dotted key, e.g. "
                          'trial.suggest_int("model.num_layers", 4, 10))')
    return arch


class NetBuilder:
    """Builds the model config's network for an architecture sample: base params plus `model.*` values."""

    def __init__(self, configs: ConfigSet, base: Any, info: Any) -> None:
        self.configs, self.base, self.info = configs, base, info

    def __call__(self, sample: dict[str, Any]) -> torch.nn.Module:
        params = copy.deepcopy(self.base)
        apply_overrides(params, [f"{k}={format_value(v)}" for k, v in sample.items()])
        return build_net(self.configs.model, params.model, self.info)


class ConfigModelSpace(ModelSpace):
    """An NNI model space over a streamseg model config: one mutable per architecture parameter; `net` is
    the plain network of the current (dry-run default, or frozen) architecture.

    Args:
        build: sample {dotted key: value} -> `nn.Module` (a `NetBuilder`).
        arch: the architecture parameters (`architecture_params`).
    """

    def __init__(self, build: NetBuilder, arch: dict[str, Param]) -> None:
        super().__init__()
        sample = {name: ensure_frozen(self.add_mutable(nni_mutable(p))) for name, p in arch.items()}
        self.net = build(sample)

    def freeze(self, sample: dict[str, Any]) -> torch.nn.Module:
        """The plain network of architecture `sample` (a streamseg model following the streaming contract)."""
        with model_context(sample):
            return ConfigModelSpace(*self.trace_args, **self.trace_kwargs).net

    def forward(self, x: torch.Tensor, state: Any = None, mask: torch.Tensor | None = None) -> Any:
        if state is None:
            state = self.net.init_state(x.shape[0], x.device)
        return self.net(x, state, mask)


@dataclass
class NasTrial:
    number: int
    sample: dict[str, Any]
    overrides: list[str]
    command: str
    value: float | None = None
    epochs: int = 0
    run_dir: str | None = None
    status: str = "running"
    error: str | None = None


@dataclass
class NasContext:
    """What the evaluator needs; it also collects one `NasTrial` per evaluated architecture."""

    spec: NNISpec
    configs: ConfigSet
    trials: list[NasTrial] = field(default_factory=list)


def evaluate(model: torch.nn.Module, ctx: NasContext) -> None:
    """NNI's FunctionalEvaluator: train the sampled architecture with the engine, report to NNI."""
    sample = dict(nni.get_current_parameter().sample)
    plan: TrialPlan = plan_trial(ctx.spec, ctx.configs, overrides=sample)
    trial = NasTrial(len(ctx.trials), sample, override_args(plan.overrides), plan.command)
    ctx.trials.append(trial)
    expected = sum(p.numel() for p in getattr(model, "net", model).parameters())
    run_root = Path(ctx.spec.study_dir) / "trials" / f"nas_{trial.number:04d}"

    def report(value: float) -> None:
        trial.epochs += 1
        nni.report_intermediate_result(value)

    try:
        _check_architecture(ctx, plan, expected)
        result = run_trial(ctx.spec, ctx.configs, plan, run_root, report)
    except Exception as e:
        trial.status, trial.error = "failed", f"{type(e).__name__}: {e}"
        raise
    trial.value, trial.run_dir, trial.status = result["best_val"], result["run_dir"], "complete"
    nni.report_final_result(result["best_val"])


def _check_architecture(ctx: NasContext, plan: TrialPlan, expected: int) -> None:
    """The engine builds the network from params; it must be the architecture NNI sampled."""
    dm = ctx.configs.dataset.build_datamodule(plan.params.data, plan.params.train)
    dm.prepare_data()
    net = build_net(ctx.configs.model, plan.params.model, dm.info)
    got = sum(p.numel() for p in net.parameters())
    if got != expected:
        raise RuntimeError(f"the engine's network has {got} parameters, the sampled architecture {expected}: "
                           f"the model config does not build what {plan.overrides} asks for")


def run_nas(spec: NNISpec, configs: ConfigSet, trials: int, seed: int | None = None) -> tuple[list[NasTrial], ConfigModelSpace]:
    """NNI's Random strategy over `ConfigModelSpace`, `trials` architectures; returns (trials, space)."""
    from nni.nas import strategy
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    arch = architecture_params(configs.exp)
    base, _ = resolve_params(configs, spec.fixed)
    clash = sorted({item.partition("=")[0].strip() for item in spec.fixed} & set(arch))
    if clash:
        raise ConfigError(f"--nas searches {clash}, which the command line also sets with -o; drop one of them")
    dm = configs.dataset.build_datamodule(base.data, base.train)
    dm.prepare_data()  # the data's channels and classes shape the networks of the space
    space = ConfigModelSpace(NetBuilder(configs, base, dm.info), arch)
    ctx = NasContext(spec, configs)
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = trials
    config.execution_engine.continue_on_failure = True  # a crashed trial is recorded; the search goes on
    config.experiment_working_directory = str((Path(spec.study_dir) / "nni").resolve())
    exp = NasExperiment(space, FunctionalEvaluator(evaluate, ctx=ctx), strategy.Random(seed=seed), config)
    logging.getLogger("nni").setLevel(logging.WARNING)
    exp.run()
    exp.stop()
    return ctx.trials, space


def best_trial(trials: list[NasTrial]) -> NasTrial | None:
    done = [t for t in trials if t.status == "complete" and t.value is not None]
    return max(done, key=lambda t: t.value) if done else None
