"""Config modules (`-D/-M/-E`), typed parameters and `-o` overrides."""

from .loader import ConfigSet, load_configs, resolve_params
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

__all__ = [
    "ConfigError",
    "ConfigSet",
    "RunParams",
    "TrainParams",
    "apply_overrides",
    "flatten",
    "load_jsonable",
    "load_configs",
    "parse_value",
    "resolve_params",
    "to_jsonable",
]
