"""Find and import the three config modules behind `-D/-M/-E`, and build the run's parameters.

A name is looked up as `<root>/dataset_configs/<name>.py`, `<root>/model_configs/<name>.py` and
`<root>/exp_configs/<dataset>/<model>_<exp>.py` in each config root in order (a user's `--config-root`
first, then the repository's). A value ending in `.py` is a path. Config modules are ordinary Python
files imported with importlib: code runs, so only load configs you trust. Nothing is injected into them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Sequence

from .params import ConfigError, RunParams, TrainParams, apply_overrides, check_types

KINDS = ("dataset", "model", "exp")

# What each kind of config module must define (name -> what it is).
REQUIRED = {
    "dataset": {"Params": "a dataclass of dataset parameters", "build_datamodule": "function(params, train)"},
    "model": {"Params": "a dataclass of model parameters",
              "build_model": "function(params, in_channels, num_classes[, class_names])"},
    "exp": {"configure": "function(params: RunParams) -> None"},
}

# What a config module may define besides (name -> what it is). `derive` computes values from others after
# the `-o` overrides (so `-o train.chunk_size=16` reaches a value that follows it), filling only what is
# still unset (None): an explicit value, from `configure` or `-o`, is kept. The model config's runs first.
OPTIONAL = {
    "model": {"derive": "function(params: RunParams) -> None, run after the overrides",
              "TAKES_CLASS_NAMES": "True: build_model also takes class_names=list[str], the dataset's classes"},
    "exp": {"build_module": "function(net, params, info) -> SegmentationModule (engine/recipes)",
            "derive": "function(params: RunParams) -> None, run after the overrides"},
}


def optional(module: ModuleType, kind: str, name: str, default=None):
    """What a `kind` config module defines for the optional ``name`` (one declared in `OPTIONAL`), else
    ``default``. The one way the engine reads an optional config name, so every such name is listed."""
    if name not in OPTIONAL[kind]:
        raise KeyError(f"{name!r} is not an optional {kind} config name ({', '.join(OPTIONAL[kind])})")
    return vars(module).get(name, default)


def repo_config_root() -> Path | None:
    """The source checkout's root if streamseg runs from one (configs live beside `src/`)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "dataset_configs").is_dir() else None


def default_roots(config_root: str | Path | None) -> list[Path]:
    roots = []
    if config_root is not None:
        roots.append(Path(config_root).resolve())
    cwd = Path.cwd().resolve()
    if (cwd / "dataset_configs").is_dir():
        roots.append(cwd)
    repo = repo_config_root()
    if repo is not None:
        roots.append(repo)
    return list(dict.fromkeys(roots))


@dataclass
class ConfigSet:
    """The three resolved config modules of a run and their names."""

    dataset: ModuleType
    model: ModuleType
    exp: ModuleType
    dataset_name: str
    model_name: str
    exp_name: str

    def paths(self) -> dict[str, Path]:
        return {k: Path(getattr(self, k).__file__) for k in KINDS}

    def default_params(self) -> RunParams:
        return RunParams(data=self.dataset.Params(), model=self.model.Params(), train=TrainParams())


def _is_path(value: str) -> bool:
    return value.endswith(".py")


def _candidates(kind: str, value: str, dataset: str, model: str, roots: Sequence[Path]) -> list[Path]:
    if _is_path(value):
        return [Path(value).resolve()]
    rel = {
        "dataset": Path("dataset_configs") / f"{value}.py",
        "model": Path("model_configs") / f"{value}.py",
        "exp": Path("exp_configs") / dataset / f"{model}_{value}.py",
    }[kind]
    return [root / rel for root in roots]


def _available(kind: str, dataset: str, model: str, roots: Sequence[Path]) -> list[str]:
    folder = {"dataset": "dataset_configs", "model": "model_configs", "exp": f"exp_configs/{dataset}"}[kind]
    names: set[str] = set()
    for root in roots:
        for p in (root / folder).glob("*.py"):
            if p.name.startswith("_"):
                continue
            if kind == "exp":
                if p.stem.startswith(model + "_"):
                    names.add(p.stem[len(model) + 1 :])
            else:
                names.add(p.stem)
    return sorted(names)


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file as `module_name` (registered in sys.modules so dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


def _module_name(kind: str, path: Path) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in str(path.with_suffix("")))
    return f"streamseg_configs.{kind}.{safe}"


def _check_module(kind: str, module: ModuleType, path: Path) -> None:
    for name, what in REQUIRED[kind].items():
        if not hasattr(module, name):
            raise ConfigError(f"{path}: a {kind} config must define `{name}` ({what})")
    if kind in ("dataset", "model") and not dataclasses.is_dataclass(module.Params):
        raise ConfigError(f"{path}: `Params` must be a dataclass")
    if kind == "dataset":
        names = {f.name for f in dataclasses.fields(module.Params)}
        missing = {"root", "split"} - names
        if missing:
            raise ConfigError(f"{path}: dataset `Params` must have fields {sorted(missing)}")


def load_configs(dataset: str, model: str, exp: str, config_root: str | Path | None = None) -> ConfigSet:
    """Resolve and import the dataset, model and experiment config modules."""
    roots = default_roots(config_root)
    dataset_name = Path(dataset).stem if _is_path(dataset) else dataset
    model_name = Path(model).stem if _is_path(model) else model
    modules = {}
    for kind, value in zip(KINDS, (dataset, model, exp)):
        candidates = _candidates(kind, value, dataset_name, model_name, roots)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            avail = _available(kind, dataset_name, model_name, roots)
            where = ", ".join(str(p) for p in candidates) or "(no config roots)"
            raise ConfigError(
                f"no {kind} config {value!r}: looked for {where}. Available: {', '.join(avail) or 'none'}"
            )
        module = import_file(path, _module_name(kind, path))
        _check_module(kind, module, path)
        modules[kind] = module
    exp_name = Path(exp).stem if _is_path(exp) else exp
    if _is_path(exp) and exp_name.startswith(model_name + "_"):
        exp_name = exp_name[len(model_name) + 1 :]
    return ConfigSet(modules["dataset"], modules["model"], modules["exp"], dataset_name, model_name, exp_name)


def load_experiment(dataset: str, model: str, exp: str, config_root: str | Path | None = None) -> ModuleType:
    """Only the experiment config module `exp_configs/<dataset>/<model>_<exp>.py`, found as `load_configs`
    finds it: for a config that builds on another experiment (`other.configure(params)`, then its delta)."""
    path = next((p for p in _candidates("exp", exp, dataset, model, default_roots(config_root)) if p.is_file()), None)
    if path is None:
        avail = _available("exp", dataset, model, default_roots(config_root))
        raise ConfigError(f"no exp config {dataset}/{model}_{exp}.py. Available: {', '.join(avail) or 'none'}")
    module = import_file(path, _module_name("exp", path))
    _check_module("exp", module, path)
    return module


def resolve_params(configs: ConfigSet, overrides: Sequence[str] = ()) -> tuple[RunParams, dict]:
    """Defaults, then the experiment's `configure`, then the overrides, then the optional `derive` of the
    model and experiment configs (`OPTIONAL`); returns (params, applied)."""
    params = configs.default_params()
    configs.exp.configure(params)
    try:
        check_types(params)
    except ConfigError as e:
        raise ConfigError(f"{configs.exp.__file__}: configure() set {e}") from None
    applied = apply_overrides(params, list(overrides))
    for kind in ("model", "exp"):
        module = getattr(configs, kind)
        derive = optional(module, kind, "derive")
        if derive is None:
            continue
        derive(params)
        try:
            check_types(params)
        except ConfigError as e:
            raise ConfigError(f"{module.__file__}: derive() set {e}") from None
    return params, applied
