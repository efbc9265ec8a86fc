"""The experiment's `search_space(trial)` recorded and translated to NNI's format, and NNI's values replayed
into checked `-o` items (pure Python: NNI is not needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamseg.config import ConfigError, load_configs
from streamseg.search import sample_overrides
from streamseg.search.nni_space import ReplayTrial, nni_search_space, record_space

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))


def _exp(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mstcn_space.py"
    path.write_text("def configure(params):\n    pass\n\n\ndef search_space(trial):\n" + body)
    return path


ALL_KINDS = """    return {
        "train.lr": trial.suggest_float("train.lr", 1e-4, 1e-1, log=True),
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5, step=0.1),
        "train.weight_decay": trial.suggest_float("train.weight_decay", 0.0, 0.01),
        "model.num_layers": trial.suggest_int("model.num_layers", 2, 8),
        "model.num_stages": trial.suggest_int("model.num_stages", 1, 5, step=2),
        "train.batch_size": trial.suggest_int("train.batch_size", 1, 16, log=True),
        "model.num_maps": trial.suggest_categorical("model.num_maps", [8, 16, 32]),
    }
"""


def test_every_suggest_kind_becomes_nni_format(tmp_path):
    configs = load_configs("synth", "mstcn", str(_exp(tmp_path, ALL_KINDS)))
    space = nni_search_space(record_space(configs.exp))
    assert space == {
        "train.lr": {"_type": "loguniform", "_value": [1e-4, 1e-1]},
        "model.dropout": {"_type": "quniform", "_value": [0.0, 0.5, 0.1]},
        "train.weight_decay": {"_type": "uniform", "_value": [0.0, 0.01]},
        "model.num_layers": {"_type": "randint", "_value": [2, 9]},  # NNI's upper bound is exclusive
        "model.num_stages": {"_type": "choice", "_value": [1, 3, 5]},
        "train.batch_size": {"_type": "qloguniform", "_value": [1, 16, 1]},
        "model.num_maps": {"_type": "choice", "_value": [8, 16, 32]},
    }


def test_replayed_values_are_typed_snapped_and_applied(tmp_path):
    configs = load_configs("synth", "mstcn", str(_exp(tmp_path, ALL_KINDS)))
    space = record_space(configs.exp)
    # as NNI sends them: floats for q-types, quniform rounded from 0 (0.30000000000000004), JSON numbers
    values = {"train.lr": 0.003, "model.dropout": 0.30000000000000004, "train.weight_decay": 0.005,
              "model.num_layers": 5, "model.num_stages": 3, "train.batch_size": 4.0, "model.num_maps": 16}
    overrides, params, _ = sample_overrides(configs, ReplayTrial(values, space), [])
    assert overrides == {"train.lr": 0.003, "model.dropout": 0.3, "train.weight_decay": 0.005, "model.num_layers": 5,
                         "model.num_stages": 3, "train.batch_size": 4, "model.num_maps": 16}
    assert type(overrides["train.batch_size"]) is int and params.train.batch_size == 4
    assert params.model.dropout == 0.3 and params.model.num_maps == 16


@pytest.mark.parametrize("name, value, match", [
    ("model.num_maps", 12, r"'model.num_maps' = 12: expected one of \[8, 16, 32\]"),
    ("model.num_layers", 9, r"'model.num_layers' = 9: outside \[2, 8\]"),
    ("model.num_stages", 2, r"'model.num_stages' = 2: not on the grid"),
    ("train.lr", "x", r"'train.lr' = 'x': expected a finite number"),
])
def test_bad_values_are_refused_with_the_parameter_named(tmp_path, name, value, match):
    configs = load_configs("synth", "mstcn", str(_exp(tmp_path, ALL_KINDS)))
    space = record_space(configs.exp)
    values = {"train.lr": 0.003, "model.dropout": 0.3, "train.weight_decay": 0.0, "model.num_layers": 5,
              "model.num_stages": 3, "train.batch_size": 4, "model.num_maps": 16, name: value}
    with pytest.raises(ConfigError, match=match):
        sample_overrides(configs, ReplayTrial(values, space), [])


def test_a_conditional_space_records_one_branch_and_refuses_the_other(tmp_path):
    body = """    out = {"model.num_stages": trial.suggest_int("model.num_stages", 1, 2)}
    if out["model.num_stages"] > 1:  # only asked when the first answer is not its default (1)
        out["model.num_maps"] = trial.suggest_categorical("model.num_maps", [8, 16])
    return out
"""
    configs = load_configs("synth", "mstcn", str(_exp(tmp_path, body)))
    space = record_space(configs.exp)
    assert list(space) == ["model.num_stages"]
    overrides, _, _ = sample_overrides(configs, ReplayTrial({"model.num_stages": 1}, space), [])
    assert overrides == {"model.num_stages": 1}
    with pytest.raises(ConfigError, match=r"asks for 'model.num_maps'.*conditional search spaces are not supported"):
        sample_overrides(configs, ReplayTrial({"model.num_stages": 2}, space), [])


def test_unsupported_trial_methods_are_named(tmp_path):
    configs = load_configs("synth", "mstcn", str(_exp(tmp_path, '    return {"train.lr": trial.suggest_uniform("train.lr", 0, 1)}\n')))
    with pytest.raises(ConfigError, match=r"trial.suggest_uniform: with the NNI backend .* suggest_float"):
        record_space(configs.exp)


def test_repository_tiny_space_records():
    space = record_space(load_configs("synth", "mstcn", TINY_EXP).exp)
    assert nni_search_space(space) == {"train.lr": {"_type": "loguniform", "_value": [1e-5, 1e-1]},
                                       "model.num_maps": {"_type": "choice", "_value": [4, 8]}}
