"""Config module resolution: names, paths, user config roots, and the errors for missing pieces."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamseg.config import ConfigError, load_configs, load_experiment, resolve_params

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


DATASET = """
    from dataclasses import dataclass
    @dataclass
    class Params:
        root: str = "data/toy"
        split: int = 1
    def build_datamodule(params, train):
        raise NotImplementedError
"""
MODEL = """
    from dataclasses import dataclass
    @dataclass
    class Params:
        width: int = 8
    def build_model(params, in_channels, num_classes):
        raise NotImplementedError
"""
EXP = """
    def configure(params):
        params.train.epochs = 3
        params.model.width = 16
"""


@pytest.fixture
def user_root(tmp_path: Path) -> Path:
    write(tmp_path / "dataset_configs" / "toy.py", DATASET)
    write(tmp_path / "model_configs" / "tiny.py", MODEL)
    write(tmp_path / "exp_configs" / "toy" / "tiny_fast.py", EXP)
    return tmp_path


def test_every_repo_experiment_resolves_with_required_keys():
    exps = sorted((REPO / "exp_configs").glob("*/*.py"))
    assert len(exps) >= 5
    models = sorted((p.stem for p in (REPO / "model_configs").glob("*.py")), key=len, reverse=True)
    for exp in exps:
        dataset = exp.parent.name
        # <model>_<exp>: model names may hold underscores, so take the longest model that prefixes the stem
        model = next(m for m in models if exp.stem.startswith(m + "_"))
        name = exp.stem[len(model) + 1 :]
        configs = load_configs(dataset, model, name, None)
        params, _ = resolve_params(configs)
        for key in ("data.root", "data.split", "train.epochs", "train.batch_size", "train.lr", "train.seed"):
            node = params
            for part in key.split("."):
                node = getattr(node, part)
        assert configs.exp_name == name and configs.model_name == model


def test_names_resolve_in_user_root_and_configure_runs(user_root):
    configs = load_configs("toy", "tiny", "fast", user_root)
    params, applied = resolve_params(configs, ["train.lr=0.01"])
    assert params.train.epochs == 3 and params.model.width == 16 and params.train.lr == 0.01
    assert applied == {"train.lr": 0.01}
    assert configs.paths()["exp"] == user_root / "exp_configs" / "toy" / "tiny_fast.py"


def test_paths_are_accepted(user_root):
    configs = load_configs(
        str(user_root / "dataset_configs" / "toy.py"),
        str(user_root / "model_configs" / "tiny.py"),
        str(user_root / "exp_configs" / "toy" / "tiny_fast.py"),
    )
    assert (configs.dataset_name, configs.model_name, configs.exp_name) == ("toy", "tiny", "fast")


def test_missing_experiment_lists_available(user_root):
    with pytest.raises(ConfigError) as e:
        load_configs("toy", "tiny", "slow", user_root)
    msg = str(e.value)
    assert "no exp config 'slow'" in msg and "tiny_slow.py" in msg and "Available: fast" in msg


def test_module_without_required_function_is_named(user_root):
    write(user_root / "model_configs" / "broken.py", "from dataclasses import dataclass\n@dataclass\nclass Params:\n    a: int = 1\n")
    write(user_root / "exp_configs" / "toy" / "broken_x.py", EXP)
    with pytest.raises(ConfigError) as e:
        load_configs("toy", "broken", "x", user_root)
    assert "broken.py" in str(e.value) and "build_model" in str(e.value)


def test_configure_with_wrong_type_names_the_file(user_root):
    write(user_root / "exp_configs" / "toy" / "tiny_bad.py", "def configure(p):\n    p.train.epochs = 'many'\n")
    configs = load_configs("toy", "tiny", "bad", user_root)
    with pytest.raises(ConfigError) as e:
        resolve_params(configs)
    assert "tiny_bad.py" in str(e.value) and "train.epochs" in str(e.value)


def test_dataset_params_must_have_root_and_split(user_root):
    write(user_root / "dataset_configs" / "noroot.py", DATASET.replace('root: str = "data/toy"', "path: str = 'x'"))
    write(user_root / "exp_configs" / "noroot" / "tiny_fast.py", EXP)
    with pytest.raises(ConfigError, match="root"):
        load_configs("noroot", "tiny", "fast", user_root)


@pytest.mark.parametrize("dataset", ["gtea", "50salads", "breakfast", "synth"])
def test_derived_values_follow_the_overrides(dataset):
    """Transeger's feedback delay follows the chunk given with -o (it was copied before the overrides)."""
    configs = load_configs(dataset, "transeger", "chunk32")
    assert resolve_params(configs)[0].model.feedback_delay == 32
    params, _ = resolve_params(configs, ["train.chunk_size=16"])
    assert (params.train.chunk_size, params.model.feedback_delay) == (16, 16)
    params, _ = resolve_params(configs, ["train.chunk_size=16", "model.feedback_delay=64"])  # explicit: kept
    assert (params.train.chunk_size, params.model.feedback_delay) == (16, 64)


def test_derive_runs_after_the_overrides_and_is_type_checked(user_root):
    write(user_root / "exp_configs" / "toy" / "tiny_derived.py", EXP + """
    def derive(params):
        params.model.width = params.train.epochs * 2
    """)
    configs = load_configs("toy", "tiny", "derived", user_root)
    assert resolve_params(configs, ["train.epochs=5"])[0].model.width == 10
    write(user_root / "exp_configs" / "toy" / "tiny_badderive.py", EXP + "    def derive(p):\n        p.model.width = 'wide'\n")
    with pytest.raises(ConfigError, match=r"tiny_badderive.py: derive\(\) set model.width"):
        resolve_params(load_configs("toy", "tiny", "badderive", user_root))


def test_an_experiment_builds_on_another_through_load_experiment():
    """tests/search/mstcn_tiny.py is exp_configs/synth/mstcn_quick.py shrunk: what the tiny one does not
    set (the batch of 4 videos, the seed) comes from the real one."""
    repo = Path(__file__).resolve().parents[2]
    quick = load_experiment("synth", "mstcn", "quick")
    assert Path(quick.__file__) == repo / "exp_configs" / "synth" / "mstcn_quick.py"
    tiny = load_configs("synth", "mstcn", str(repo / "tests" / "search" / "mstcn_tiny.py"))
    assert Path(tiny.exp.quick.__file__) == Path(quick.__file__)
    params, _ = resolve_params(tiny)
    assert params.train.batch_size == 4 and params.model.num_stages == 2
    with pytest.raises(ConfigError, match=r"no exp config synth/mstcn_nope\.py\. Available: .*quick"):
        load_experiment("synth", "mstcn", "nope")
