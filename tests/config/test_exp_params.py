"""Every experiment config resolves to the params recorded in `exp_params.json` (written from the configs
before they were rebuilt on shared bases), so a refactoring of the configs cannot change what any of
them runs. Keys added to the params since then are not in the record and are not compared.

After an intended change of a config's values, rewrite the record and review its diff:

    PYTHONPATH=src python tests/config/test_exp_params.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from streamseg.config import load_configs, resolve_params, to_jsonable

REPO = Path(__file__).resolve().parents[2]
RECORD = Path(__file__).with_name("exp_params.json")


def experiments(repo: Path) -> list[Path]:
    """Every experiment config: `exp_configs/<dataset>/*.py`, and the search tests' tiny synth experiments
    (`tests/search/<model>_tiny.py`, built on the real synth configs)."""
    return sorted([p for p in (repo / "exp_configs").glob("*/*.py")
                   if not p.name.startswith("_") and not p.parent.name.startswith("_")]
                  + list((repo / "tests" / "search").glob("*_tiny.py")))


def _dataset(exp: Path) -> str:
    return "synth" if exp.parent.name == "search" else exp.parent.name


def resolved(repo: Path, exp: Path) -> dict:
    """`exp_configs/<dataset>/<model>_<exp>.py` resolved without overrides, flattened and JSON-safe."""
    models = sorted((p.stem for p in (repo / "model_configs").glob("*.py")), key=len, reverse=True)
    model = next(m for m in models if exp.stem.startswith(m + "_"))
    configs = load_configs(str(repo / "dataset_configs" / f"{_dataset(exp)}.py"),
                           str(repo / "model_configs" / f"{model}.py"), str(exp))
    params, _ = resolve_params(configs)
    return flatten_json(to_jsonable(params))


def flatten_json(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten_json(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _name(exp: Path) -> str:
    return f"{exp.parent.name}/{exp.stem}"


@pytest.mark.parametrize("exp", experiments(REPO), ids=_name)
def test_experiment_config_resolves_to_its_recorded_params(exp: Path):
    record = json.loads(RECORD.read_text())
    assert _name(exp) in record, f"{exp} is not in {RECORD.name}: rewrite it (see this file's docstring)"
    got = resolved(REPO, exp)
    want = record[_name(exp)]
    assert {k: got.get(k, "<missing>") for k in want} == want


def test_every_recorded_config_still_exists():
    assert sorted(json.loads(RECORD.read_text())) == sorted(_name(p) for p in experiments(REPO))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    RECORD.write_text(json.dumps({_name(p): resolved(REPO, p) for p in experiments(REPO)}, indent=1,
                                 sort_keys=True) + "\n")
