"""`streamseg search` as users run it: concurrent workers sharing one study (SQLite, journal file, a real
PostgreSQL server on 127.0.0.1), a worker killed mid-trial, two objectives with a Pareto front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from streamseg.search.storage import RetryStale

from ..conftest import REPO, streamseg
from .pg_server import postgres_server  # noqa: F401  (fixture)

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _args(root: Path, data: Path, *extra: str) -> list[str]:
    return ["search", "-D", "synth", "-M", "mstcn", "-E", TINY_EXP, "-R", str(root), "-o", f"data.root={data}",
            "-o", "train.epochs=2", "--study", "s", *extra]


def _popen(args: list[str], log: Path) -> subprocess.Popen:
    """A worker writing to `log` (a file, not a pipe: a full pipe would block a worker nobody reads)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "streamseg.cli.main", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _storage_url(kind: str, tmp: Path, pg_url: str | None = None) -> str | None:
    return {"sqlite": None, "journal": f"journal:{tmp / 'study.journal'}", "postgresql": pg_url}[kind]


def _load(kind: str, url: str | None, root: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if kind == "journal":
        storage = JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    elif kind == "postgresql":  # the driver installed with the test dependencies
        storage = url.replace("postgresql://", "postgresql+psycopg2://")
    else:
        storage = url or f"sqlite:///{root / 'synth' / 'mstcn_tiny' / 'search' / 's' / 'study.db'}"
    return optuna.load_study(study_name="s", storage=storage)


def _run_workers(n: int, args: list[str], tmp: Path) -> list[str]:
    logs = [tmp / f"worker{i}.log" for i in range(n)]
    procs = [_popen(args, log) for log in logs]
    outs = []
    for p, log in zip(procs, logs):
        p.wait(timeout=600)
        outs.append(log.read_text())
        assert p.returncode == 0, outs[-1][-4000:]
    return outs


def _check_budget(study: optuna.Study, n_trials: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert len(study.get_trials(deepcopy=False, states=DONE)) == n_trials
    assert len({t.number for t in trials}) == len(trials)
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        assert t.user_attrs.get("skipped") == "trial budget reached"  # only surplus trials failed


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_concurrent_workers_share_one_study_and_its_budget(kind, tmp_path, synth_root):
    url = _storage_url(kind, tmp_path)
    args = _args(tmp_path, synth_root, "--trials", "4", "--pruner", "none", *(["--storage", url] if url else []))
    outs = _run_workers(3, args, tmp_path)
    study = _load(kind, url, tmp_path)
    _check_budget(study, 4)
    # each worker reports the whole study and the best trial's re-run command
    for out in outs:
        assert "re-run: streamseg train -D synth -M mstcn" in out
    ran = [int(out.split("this worker ran ")[1].split()[0]) for out in outs]
    assert sum(ran) == 4
    study_dir = tmp_path / "synth" / "mstcn_tiny" / "search" / "s"
    best = json.loads((study_dir / "best.json").read_text())
    assert best[0]["number"] == study.best_trial.number
    assert (study_dir / "plots" / "history.png").is_file()
    # 4 complete trials whose parameters vary (TPE's random start-up trials): Optuna's importances work
    assert (study_dir / "plots" / "importances.png").is_file()
    # a worker joining a finished study runs nothing
    again = streamseg(*args)
    assert again.returncode == 0 and "this worker ran 0 trial(s)" in again.stdout, again.stderr[-3000:]


def _first_validated_trial(kind: str, url: str | None, root: Path, deadline: float) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial that has reported a validation epoch (polled until `deadline`)."""
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            trials = _load(kind, url, root).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # the study does not exist yet
            continue
        running = next((t for t in trials if t.intermediate_values), None)
        if running is not None:
            return running
    raise AssertionError("no trial reached its first validation")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_worker_leaves_the_study_usable_and_a_rerun_continues_it(kind, tmp_path, synth_root):
    url = _storage_url(kind, tmp_path)
    args = _args(tmp_path, synth_root, "--trials", "2", "--pruner", "none", "--heartbeat", "1", "--grace", "3",
                 "-o", "train.epochs=10", *(["--storage", url] if url else []))
    worker = _popen(args, tmp_path / "killed.log")
    running = _first_validated_trial(kind, url, tmp_path, time.time() + 300)  # trial 0, one epoch validated
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert _load(kind, url, tmp_path).trials[running.number].state == TrialState.RUNNING  # left behind
    time.sleep(4)  # past the grace period: the trial's heartbeat is stale
    out = streamseg(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = _load(kind, url, tmp_path)
    assert study.trials[running.number].state == TrialState.FAIL
    retried = [t for t in study.trials if RetryStale.retried_trial_number(t) == running.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == running.params  # the same parameters, run again
    assert len(study.get_trials(deepcopy=False, states=DONE)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_surviving_worker_finishes_the_study_of_a_killed_one(kind, tmp_path, synth_root):
    """Two workers, one SIGKILLed mid-trial: the other runs its own trial, finds the budget claimed by the
    dead worker's RUNNING trial, waits until that trial goes stale (--grace), then runs its retry."""
    url = _storage_url(kind, tmp_path)
    grace = 30  # longer than the survivor's start-up and first trial (~20 s on 2 busy cores), see below
    args = _args(tmp_path, synth_root, "--trials", "2", "--pruner", "none", "--heartbeat", "1", "--grace",
                 str(grace), "-o", "train.epochs=10", *(["--storage", url] if url else []))
    victim = _popen(args, tmp_path / "victim.log")
    deadline = time.time() + 300
    while time.time() < deadline:  # the victim owns trial 0: the survivor starts after it was created
        time.sleep(0.3)
        try:
            if _load(kind, url, tmp_path).trials:
                break
        except Exception:
            continue
    survivor = _popen(args, tmp_path / "survivor.log")
    try:
        dead = _first_validated_trial(kind, url, tmp_path, deadline)
        assert dead.number == 0
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        survivor.wait(timeout=600)
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
    out = (tmp_path / "survivor.log").read_text()
    assert survivor.returncode == 0, out[-4000:]
    study = _load(kind, url, tmp_path)
    done = study.get_trials(deepcopy=False, states=DONE)
    assert len(done) == 2, out[-4000:]
    assert study.trials[0].state == TrialState.FAIL and "skipped" not in study.trials[0].user_attrs
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    # the survivor finished its own trial while the dead one still claimed the budget (the case an early
    # exit got wrong), and then ran the dead trial's retry with the same parameters
    own = study.trials[1]
    assert own.state == TrialState.COMPLETE
    assert own.datetime_complete < study.trials[0].datetime_complete, (
        f"the dead trial went stale before the survivor's trial ended: --grace {grace} s is too short here")
    assert "waiting for them to finish or to go stale" in out
    retried = [t for t in done if RetryStale.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].params == dead.params
    assert "this worker ran 2 trial(s)" in out


def test_a_worker_ending_on_an_incomplete_study_exits_non_zero(tmp_path, synth_root):
    """Every trial crashes in training (a RuntimeError, e.g. out of memory): the worker gives up after
    --trials of them and says that the study is incomplete, with exit code 3 (docs/search.md)."""
    exp = tmp_path / "crash.py"
    exp.write_text(Path(TINY_EXP).read_text() + "\n\ndef build_module(*args, **kwargs):\n"
                   "    raise RuntimeError('simulated crash in training')\n")
    args = _args(tmp_path, synth_root, "--trials", "2", "--pruner", "none")
    args[args.index(TINY_EXP)] = str(exp)
    out = streamseg(*args)
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())  # rich may wrap the warning
    assert "study 's' is incomplete: 0 of 2 trials finished (complete or pruned; 2 fail)" in text, text[-3000:]
    assert "this worker ran 2 trial(s)" in text


@pytest.mark.slow
def test_postgresql_study_shared_by_two_workers(postgres_server, tmp_path, synth_root):
    args = _args(tmp_path, synth_root, "--trials", "3", "--pruner", "none", "--storage", postgres_server)
    _run_workers(2, args, tmp_path)
    _check_budget(_load("postgresql", postgres_server, tmp_path), 3)


@pytest.mark.slow
def test_two_objectives_print_and_plot_the_pareto_front(tmp_path, synth_root):
    out = streamseg(*_args(tmp_path, synth_root, "--trials", "3", "--cost", "flops", "--seed", "0",
                           "-o", "train.epochs=1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Pareto front" in out.stdout and "no pruning with two objectives" in out.stdout
    study_dir = tmp_path / "synth" / "mstcn_tiny" / "search" / "s"
    best = json.loads((study_dir / "best.json").read_text())
    # MS-TCN, 2 stages x 3 layers of m maps on 64-d features, K classes; FLOPs per frame (multiply-add = 2):
    # stage 1: 64m (in) + 3 x (3m^2 dilated + m^2 1x1) + mK (out); stage 2: Km (in) + 3 x 4m^2 + mK
    k = len((synth_root / "mapping.txt").read_text().splitlines())
    expected = {2.0 * (64 * m + 3 * 4 * m * m + m * k + k * m + 3 * 4 * m * m + m * k) for m in (4, 8)}
    assert best and all(b["cost"] in expected for b in best), (best, expected)
    assert (study_dir / "plots" / "pareto.png").is_file()
