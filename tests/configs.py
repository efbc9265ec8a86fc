"""The config folders, listed for the sweeps (timm's `list_models` model): every `model_configs/*.py` and
every `exp_configs/<dataset>/*.py` of the repository, so a config added there is swept without an edit to
any test. A model config declares `TINY`, a dict of its `Params` fields that make it tiny (CPU, seconds)
while keeping its structure (stages, refinements, decoders, both branches...); the contract sweep
(tests/models/test_contract.py), the ONNX export sweep (tests/deploy/test_onnx_parity.py) and the
experiment-config sweep (tests/engine/test_config_sweep.py) build it at that size, and
tests/models/test_model_configs.py fails for a model config without one."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from types import ModuleType

from streamseg.config.loader import import_file

REPO = Path(__file__).resolve().parents[1]


def model_config_paths() -> list[Path]:
    return sorted(p for p in (REPO / "model_configs").glob("*.py") if not p.name.startswith("_"))


@functools.cache
def model_config(name: str) -> ModuleType:
    """`model_configs/<name>.py`, imported as the loader imports it."""
    return import_file(REPO / "model_configs" / f"{name}.py", f"streamseg_configs.model.sweep_{name}")


def model_names() -> list[str]:
    return [p.stem for p in model_config_paths()]


def experiment_paths() -> list[Path]:
    """`exp_configs/<dataset>/<model>_<exp>.py`, every one."""
    return sorted(p for p in (REPO / "exp_configs").glob("*/*.py")
                  if not p.name.startswith("_") and not p.parent.name.startswith("_"))


def model_of(exp: Path) -> str | None:
    """The model config an experiment file's name starts with (the longest: mstcn2 before mstcn)."""
    return next((m for m in sorted(model_names(), key=len, reverse=True) if exp.stem.startswith(m + "_")), None)


def tiny_params(name: str) -> object:
    """The model config's `Params` at its `TINY` size."""
    module = model_config(name)
    return dataclasses.replace(module.Params(), **module.TINY)


def build_tiny(name: str, in_channels: int, class_names: list[str]) -> object:
    """`build_model` of the model config at its `TINY` size (class names for a `build_model` that takes
    them, as `streamseg.engine.runner.build_net` gives them)."""
    module = model_config(name)
    params = tiny_params(name)
    if "class_names" in inspect.signature(module.build_model).parameters:
        return module.build_model(params, in_channels, len(class_names), class_names=list(class_names))
    return module.build_model(params, in_channels, len(class_names))


def tiny_overrides(name: str, skip: tuple[str, ...] = ()) -> list[str]:
    """`TINY` as `-o model.<key>=<value>` overrides (the keys in ``skip`` left out)."""
    def text(v: object) -> str:
        if isinstance(v, (tuple, list)):
            return ",".join(text(x) for x in v)
        return str(v).lower() if isinstance(v, bool) or v is None else str(v)

    return [f"model.{k}={text(v)}" for k, v in model_config(name).TINY.items() if k not in skip]
