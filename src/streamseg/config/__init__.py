"""Config modules (`-D/-M/-E`), typed parameters and `-o` overrides."""

from .loader import ConfigSet, load_configs, load_experiment, resolve_params
from .params import (
    ConfigError,
    RunParams,
    TrainParams,
    apply_overrides,
    flatten,
    load_jsonable,
    parse_value,
    to_jsonable,
)
from .secrets import redact, redact_all, remember_secret

__all__ = [
    "ConfigError",
    "ConfigSet",
    "RunParams",
    "TrainParams",
    "apply_overrides",
    "flatten",
    "load_jsonable",
    "load_configs",
    "load_experiment",
    "parse_value",
    "redact",
    "redact_all",
    "remember_secret",
    "resolve_params",
    "to_jsonable",
]
