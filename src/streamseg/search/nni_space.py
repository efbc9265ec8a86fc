"""The experiment's `search_space(trial)` in NNI's terms (this module does not import NNI).

NNI wants the whole space before the first trial (a JSON dict for its HPO tuners, mutables for NAS);
an Optuna-style define-by-run function shows it only while it runs. So `record_space` calls
`search_space` once with a `RecordingTrial`, whose `suggest_*` methods note each parameter (name, type,
range or choices) and answer with a default (the low end, or the first choice). Then

* `nni_search_space(space)` is NNI's HPO search-space dict, and
* `ReplayTrial(values, space)` answers the same `suggest_*` calls with the values an NNI tuner picked
  (cast to the asked type and checked against the recorded range), so `space.sample_overrides` turns them
  into `-o` items exactly as for an Optuna trial, and every NNI trial is re-run with `streamseg train -o ...`.

Limit, conditional spaces: only the branch taken with the default values is recorded. A parameter that
`search_space` asks for only on another branch is refused by `ReplayTrial` with an error naming it; use the
Optuna backend for such spaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

from ..config import ConfigError
from .space import SPACE_FUNCTION, space_function

SUPPORTED = ("suggest_float", "suggest_int", "suggest_categorical")


@dataclass(frozen=True)
class Param:
    """One recorded `suggest_*` call. kind: "float" | "int" | "categorical"; low/high inclusive."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple | None = None

    def default(self) -> Any:
        return self.choices[0] if self.kind == "categorical" else self.low


class _Trial:
    """The `suggest_*` surface of `optuna.Trial` that search spaces use; anything else is refused by name."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise ConfigError(f"{SPACE_FUNCTION}() called trial.{name}: with the NNI backend a search space may use "
                          f"only {', '.join(SUPPORTED)}")

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if step is not None and log:
            raise ConfigError(f"{SPACE_FUNCTION}(): {name!r} has both step and log (Optuna refuses this too)")
        return self._suggest(Param(name, "float", float(low), float(high), step, log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._suggest(Param(name, "int", int(low), int(high), int(step), log))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(Param(name, "categorical", choices=tuple(choices)))

    def _suggest(self, param: Param) -> Any:
        raise NotImplementedError


class RecordingTrial(_Trial):
    """Records every parameter `search_space` asks for; `space` maps name -> Param."""

    def __init__(self) -> None:
        self.space: dict[str, Param] = {}

    def _suggest(self, param: Param) -> Any:
        if param.kind != "categorical" and param.low > param.high:
            raise ConfigError(f"{SPACE_FUNCTION}(): {param.name!r} has low {param.low} > high {param.high}")
        if param.kind == "categorical" and not param.choices:
            raise ConfigError(f"{SPACE_FUNCTION}(): {param.name!r} has no choices")
        known = self.space.setdefault(param.name, param)
        if known != param:
            raise ConfigError(f"{SPACE_FUNCTION}(): {param.name!r} is asked for twice with different ranges "
                              f"({known} and {param})")
        return param.default()


def record_space(exp: ModuleType) -> dict[str, Param]:
    """The parameters of the experiment config's `search_space` (see the module docstring)."""
    trial = RecordingTrial()
    space_function(exp)(trial)
    if not trial.space:
        raise ConfigError(f"{exp.__file__}: {SPACE_FUNCTION}() asks for no parameter; nothing to search")
    return trial.space


def nni_search_space(space: dict[str, Param]) -> dict[str, dict[str, Any]]:
    """NNI's search-space dict (`{"name": {"_type": ..., "_value": [...]}}`) for the recorded parameters.

    randint's upper bound is exclusive in NNI (inclusive in Optuna); stepped ints become choices, so
    every value the tuner proposes is on the step grid."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in space.items():
        if p.kind == "categorical":
            spec = {"_type": "choice", "_value": list(p.choices)}
        elif p.kind == "int":
            if p.log:
                spec = {"_type": "qloguniform", "_value": [p.low, p.high, 1]}
            elif p.step != 1:
                spec = {"_type": "choice", "_value": list(range(int(p.low), int(p.high) + 1, int(p.step)))}
            else:
                spec = {"_type": "randint", "_value": [int(p.low), int(p.high) + 1]}
        elif p.log:
            spec = {"_type": "loguniform", "_value": [p.low, p.high]}
        elif p.step is not None:
            spec = {"_type": "quniform", "_value": [p.low, p.high, p.step]}
        else:
            spec = {"_type": "uniform", "_value": [p.low, p.high]}
        out[name] = spec
    return out


class ReplayTrial(_Trial):
    """Answers `search_space`'s calls with `values` (an NNI tuner's parameters, or an architecture sample)."""

    def __init__(self, values: dict[str, Any], space: dict[str, Param]) -> None:
        self.values = dict(values)
        self.space = space

    def _suggest(self, param: Param) -> Any:
        known = self.space.get(param.name)
        if known is None or param.name not in self.values:
            raise ConfigError(
                f"{SPACE_FUNCTION}() asks for {param.name!r}, which was not in the space recorded with default "
                f"values ({sorted(self.space)}): conditional search spaces are not supported by the NNI backend "
                "(use --backend optuna)"
            )
        if known != param:
            raise ConfigError(f"{SPACE_FUNCTION}(): {param.name!r} changed its range between calls "
                              f"({known} then {param})")
        return replay_value(param, self.values[param.name])


def replay_value(p: Param, value: Any) -> Any:
    """`value` as `suggest_*` would return it for `p`: a choice, an int on the step grid, or a float in range."""
    where = f"parameter {p.name!r} = {value!r}"
    if p.kind == "categorical":
        for choice in p.choices:
            if choice == value and (type(choice) is type(value) or _numbers(choice, value)):
                return choice
        raise ConfigError(f"{where}: expected one of {list(p.choices)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number")
    if p.kind == "int":
        out: int | float = int(round(value))
        if (out - p.low) % p.step:
            raise ConfigError(f"{where}: not on the grid {p.low}, {p.low + p.step}, ... (step {p.step})")
    else:
        out = float(value)
        if p.step is not None:  # NNI's quniform rounds to multiples of step from 0; Optuna's grid starts at low
            out = p.low + round((out - p.low) / p.step) * p.step
            out = float(f"{out:.12g}")  # 0.1 + 2 * 0.1 -> 0.3, not 0.30000000000000004
    tol = 1e-9 * max(1.0, abs(p.high))
    if not p.low - tol <= out <= p.high + tol:
        raise ConfigError(f"{where}: outside [{p.low}, {p.high}]")
    return min(max(out, p.low), p.high) if p.kind == "float" else out


def _numbers(a: Any, b: Any) -> bool:
    """1 and 1.0 are the same choice after JSON (NNI sends numbers as JSON); True and 1 are not."""
    return not isinstance(a, bool) and not isinstance(b, bool) and isinstance(a, (int, float)) and isinstance(b, (int, float))
