"""Real Optuna studies on the tiny synthetic data, run in this process: pruning, the cost constraint, and
the best trial's printed command reproducing its validation score."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from optuna.trial import TrialState

from streamseg.config import load_configs
from streamseg.engine.runner import Hardware
from streamseg.search import Objective, SearchSpec, StudyConfig, best_trials, open_storage, open_study, run_worker
from streamseg.search.report import save_plots

from ..conftest import REPO, streamseg

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))
GOOD = {"train.lr": 3e-2, "model.num_maps": 8}  # ~26 % val accuracy after 3 epochs
BAD = {"train.lr": 1e-5, "model.num_maps": 8}  # learns nothing in 3 epochs: 0 % val accuracy


def _study(tmp: Path, data: Path, name: str, *, cost=None, max_cost=None, pruner="median"):
    configs = load_configs("synth", "mstcn", TINY_EXP)
    fixed = [f"data.root={data}", "train.monitor=acc"]
    study_dir = tmp / "study"
    storage, _ = open_storage(None, study_dir)
    directions = ["maximize", "minimize"] if cost and max_cost is None else ["maximize"]
    study = open_study(storage, StudyConfig(name, directions, {"objective": "acc"}, seed=0, pruner=pruner,
                                            max_cost=max_cost))
    spec = SearchSpec("synth", "mstcn", TINY_EXP, None, fixed, study_dir, str(tmp / "rerun"), Hardware("cpu", 1, 1),
                      cost=cost, multi_objective=len(directions) > 1, max_cost=max_cost, prune=len(directions) == 1)
    return study, Objective(spec, configs), study_dir


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory, synth_root):
    tmp = tmp_path_factory.mktemp("search")
    study, objective, study_dir = _study(tmp, synth_root, "prune")
    for params in (GOOD, GOOD, BAD):
        study.enqueue_trial(params)
    assert run_worker(study, objective, n_trials=3) == 3
    return study, study_dir, tmp


@pytest.mark.slow  # the shared study: 3 trials, ~40 s on 2 cores
def test_a_bad_trial_is_pruned_from_its_validation_epochs(pruned_study):
    study, study_dir, _ = pruned_study
    t = study.trials
    assert [x.state for x in t] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    # the pruned trial stopped before its last epoch (epochs 0..2) and never reached the test phase
    assert max(t[2].intermediate_values) < 2
    assert not (Path(t[2].user_attrs.get("run_dir", study_dir / "none")) / "metrics.json").exists()
    assert sorted(t[0].intermediate_values) == [0, 1, 2]
    assert t[0].value == max(t[0].intermediate_values.values()) > 0  # best epoch's val score is the value
    for x in t:
        assert x.user_attrs["seed"] == 0 and "train.seed=0" in x.user_attrs["command"]
        assert x.user_attrs["overrides"] == [f"train.lr={x.params['train.lr']!r}", "model.num_maps=8"]
    plots = save_plots(study, study_dir / "plots", "acc", None)
    assert (study_dir / "plots" / "history.png") in plots and (study_dir / "plots" / "history.png").stat().st_size > 0


@pytest.mark.slow
def test_best_trials_printed_command_reproduces_its_validation_score(pruned_study):
    study, _, tmp = pruned_study
    best = best_trials(study)[0]
    argv = shlex.split(best.user_attrs["command"])
    assert argv[:2] == ["streamseg", "train"]
    out = streamseg(*argv[1:], cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(next((tmp / "rerun").glob("synth/mstcn_tiny/version_*/metrics.json")).read_text())
    assert metrics["best_val"] == pytest.approx(best.value, abs=1e-6)


def test_cost_budget_skips_trials_over_it(tmp_path, synth_root):
    from streamseg.flops import count_params
    from streamseg.models import MSTCN

    # the same tiny MS-TCN with 4 or 8 maps: a budget between them admits only the 4-map trials
    small, large = (count_params(MSTCN(64, 11, 2, 3, m, 0.5)) for m in (4, 8))
    study, objective, _ = _study(tmp_path, synth_root, "budget", cost="params", max_cost=(small + large) / 2,
                                 pruner="none")
    for maps in (8, 4):
        study.enqueue_trial({"train.lr": 3e-2, "model.num_maps": maps})
    run_worker(study, objective, n_trials=2)
    over, under = study.trials
    assert over.state == TrialState.PRUNED and "budget" in over.user_attrs["skipped"]
    assert not over.intermediate_values  # never trained
    assert under.state == TrialState.COMPLETE and under.user_attrs["cost"] <= (small + large) / 2
    assert best_trials(study) == [under]


def test_workers_racing_to_create_a_sqlite_study_retry_the_schema_row(tmp_path, monkeypatch):
    """Two workers opening a fresh SQLite storage at once both write Optuna's schema version row; the
    loser gets SQLite's UNIQUE-constraint error (seen in test_concurrent_workers_share_one_study_and_its_budget
    on a loaded machine) and must retry, not stop the worker."""
    import sqlalchemy.exc

    import streamseg.search.storage as storage_mod

    real, calls = storage_mod.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {},
                                                Exception("UNIQUE constraint failed: alembic_version.version_num"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_mod, "RDBStorage", racing)
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    storage, url = storage_mod.open_storage(None, tmp_path / "study")
    assert len(calls) == 2 and url.startswith("sqlite:")
