"""Every model config declares its `TINY` size (tests/configs.py), so the contract, export and config
sweeps build every model without a hand list: a model config without one fails here, naming it."""

from __future__ import annotations

import dataclasses

import pytest

from ..configs import model_config, model_names


@pytest.mark.parametrize("name", model_names())
def test_every_model_config_declares_a_tiny_size_of_its_params(name: str):
    module = model_config(name)
    assert isinstance(getattr(module, "TINY", None), dict), (
        f"model_configs/{name}.py has no TINY dict: declare the sizes that make it tiny for the sweeps "
        "(tests/configs.py)")
    fields = {f.name for f in dataclasses.fields(module.Params)}
    assert module.TINY and set(module.TINY) <= fields, f"model_configs/{name}.py TINY: not Params fields: " \
                                                      f"{sorted(set(module.TINY) - fields)}"
    tiny = dataclasses.replace(module.Params(), **module.TINY)
    assert tiny != module.Params()

