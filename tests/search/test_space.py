"""Search space plumbing: overrides returned by `search_space(trial)` become checked `-o` items."""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna
import pytest

from streamseg.config import ConfigError, load_configs, parse_value, resolve_params
from streamseg.search import format_value, override_args, sample_overrides, train_command
from streamseg.search.space import display_override

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))


@pytest.mark.parametrize("value, tp", [(0.1 + 0.2, float), (1e-5, float), (7, int), (True, bool), (False, bool),
                                       (None, int | None), ((16, 16), tuple[int, ...]), ("a b", str)])
def test_format_value_round_trips_through_the_override_parser(value, tp):
    assert parse_value(format_value(value), tp, "k") == value


def _trial(params: dict) -> optuna.Trial:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params)
    return study.ask()


def test_sampled_overrides_are_typed_and_applied():
    configs = load_configs("synth", "mstcn", TINY_EXP)
    overrides, params, applied = sample_overrides(configs, _trial({"train.lr": 0.003, "model.num_maps": 4}),
                                                  ["train.epochs=1"])
    assert overrides == {"train.lr": 0.003, "model.num_maps": 4}
    assert params.train.lr == 0.003 and params.model.num_maps == 4 and params.train.epochs == 1
    assert applied["train.epochs"] == 1
    # the printed command parses back to the same params
    cmd = train_command("synth", "mstcn", TINY_EXP, ["train.epochs=1", *override_args(overrides)], "exp dir")
    argv = shlex.split(cmd)
    assert argv[:3] == ["streamseg", "train", "-D"] and argv[argv.index("-R") + 1] == "exp dir"
    items = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    again, _ = resolve_params(configs, items)
    assert again == params


@pytest.mark.parametrize("item, shown", [("train.lr=0.30000000000000004", "train.lr=0.3"),
                                         ("train.lr=0.0012345678901234567", "train.lr=0.00123457"),
                                         ("model.num_maps=64", "model.num_maps=64"), ("data.name=a.b", "data.name=a.b"),
                                         ("train.lr=1e-05", "train.lr=1e-05")])
def test_tables_show_floats_rounded_and_the_rest_as_given(item, shown):
    assert display_override(item) == shown


def test_a_key_searched_and_fixed_is_an_error():
    configs = load_configs("synth", "mstcn", TINY_EXP)
    with pytest.raises(ConfigError, match=r"searches \['train.lr'\].*also sets with -o"):
        sample_overrides(configs, _trial({"train.lr": 0.003, "model.num_maps": 4}), ["train.lr=0.1"])


def test_unknown_key_and_missing_function_name_the_file(tmp_path):
    bad = tmp_path / "mstcn_bad.py"
    bad.write_text("def configure(params):\n    pass\n\n\ndef search_space(trial):\n    return {'train.lrr': 1.0}\n")
    configs = load_configs("synth", "mstcn", str(bad))
    with pytest.raises(ConfigError, match=r"(?s)mstcn_bad.py: search_space\(\).*unknown override key 'train.lrr'.*train.lr"):
        sample_overrides(configs, _trial({}), [])
    none = tmp_path / "mstcn_none.py"
    none.write_text("def configure(params):\n    pass\n")
    with pytest.raises(ConfigError, match=r"mstcn_none.py: `streamseg search` needs a function `search_space"):
        sample_overrides(load_configs("synth", "mstcn", str(none)), _trial({}), [])


@pytest.mark.parametrize("exp", ["quick"])
@pytest.mark.parametrize("model", ["mstcn", "memtcn"])
def test_repository_search_spaces_resolve(model, exp):
    configs = load_configs("synth", model, exp)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        overrides, params, _ = sample_overrides(configs, study.ask(), [])
        assert overrides and all(key.count(".") == 1 for key in overrides)
