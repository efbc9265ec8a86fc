"""The search space: a function in the experiment config that returns dotted overrides.

An experiment config (`exp_configs/<dataset>/<model>_<exp>.py`) opts in by defining::

    def search_space(trial) -> dict[str, object]:
        return {
            "train.lr": trial.suggest_float("train.lr", 1e-4, 1e-2, log=True),
            "model.num_layers": trial.suggest_int("model.num_layers", 4, 10),
        }

`trial` is an `optuna.Trial` (only its `suggest_*` methods are needed). The returned keys are the same
dotted keys as `-o key=value`, so every trial is re-run exactly with `streamseg train ... -o key=value`;
they are type-checked like command-line overrides, and an unknown key is an error listing the valid keys.
"""

from __future__ import annotations


import shlex
from types import ModuleType
from typing import Any, Callable, Sequence

from ..config import ConfigError, ConfigSet, RunParams, resolve_params

SPACE_FUNCTION = "search_space"


def space_function(exp: ModuleType) -> Callable[[Any], dict[str, Any]]:
    """The experiment config's `search_space(trial)`, or a ConfigError naming the file."""
    fn = getattr(exp, SPACE_FUNCTION, None)
    if not callable(fn):
        raise ConfigError(
            f"{exp.__file__}: `streamseg search` needs a function `{SPACE_FUNCTION}(trial) -> dict` in the "
            "experiment config that returns dotted overrides, e.g. "
            '{"train.lr": trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)}'
        )
    return fn


def format_value(value: Any) -> str:
    """A value as the text of `-o key=<text>` that parses back to the same value.

    Floats use `repr` (shortest text that round-trips exactly); tuples and lists are comma-separated;
    None is `none`; bools are `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def display_override(item: str) -> str:
    """``key=value`` for a table: a float value rounded to 6 significant digits (a step grid's
    ``0.30000000000000004`` shows as ``0.3``). Display only: the re-run command and best.json keep the
    exact value that ran."""
    key, sep, value = item.partition("=")
    try:
        number = float(value)
    except ValueError:
        return item
    if not sep or "." not in value and "e" not in value.lower():
        return item  # ints and non-numbers as given
    return f"{key}={number:.6g}"


def override_args(overrides: dict[str, Any]) -> list[str]:
    """`{"train.lr": 0.001}` -> `["train.lr=0.001"]` (the `-o` items, in the dict's order)."""
    return [f"{key}={format_value(value)}" for key, value in overrides.items()]


def sample_overrides(configs: ConfigSet, trial: Any, fixed: Sequence[str] = ()) -> tuple[dict[str, Any], RunParams, dict[str, Any]]:
    """Ask the experiment's search space for this trial's overrides and resolve the run's params.

    `fixed` are the command line's `-o` items, applied first; a key both fixed and searched is an error
    (the trial would silently win or lose). Returns (trial overrides, params, every applied override)."""
    fn = space_function(configs.exp)
    overrides = fn(trial)
    where = f"{configs.exp.__file__}: {SPACE_FUNCTION}()"
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"{where} must return a dict of dotted keys to values, got {type(overrides).__name__}")
    fixed_keys = {item.partition("=")[0].strip() for item in fixed}
    clash = sorted(fixed_keys & set(overrides))
    if clash:
        raise ConfigError(f"{where} searches {clash}, which the command line also sets with -o; drop one of them")
    try:
        params, applied = resolve_params(configs, [*fixed, *override_args(overrides)])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    # the parsed values, so the stored overrides equal what ran (e.g. an int given for a float field)
    return {k: applied[k] for k in overrides}, params, applied


def train_command(dataset: str, model: str, exp: str, args: Sequence[str], root: str | None = None,
                  config_root: str | None = None, launch: Sequence[str] = ()) -> str:
    """The shell command that re-runs a trial: `streamseg train -D .. -M .. -E .. [launch] -o k=v ...`;
    `launch` are options such as `--devices 2` (a DDP trial is re-run as one: the per-rank batches and
    gradient averaging are part of what ran)."""
    parts = ["streamseg", "train", "-D", dataset, "-M", model, "-E", exp]
    if config_root:
        parts += ["--config-root", config_root]
    if root:
        parts += ["-R", root]
    parts += list(launch)
    for item in args:
        parts += ["-o", item]
    return shlex.join(parts)
