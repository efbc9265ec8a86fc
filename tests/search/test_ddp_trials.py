"""Multi-process trials: `streamseg search --devices 2` runs each trial as a 2-rank DDP run (gloo on CPU),
and every rank must train with the trial's parameters."""

from __future__ import annotations

import hashlib
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

from ..conftest import REPO, streamseg

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@pytest.mark.slow  # one trial of 2 processes: ~60 s on 2 busy cores
def test_a_ddp_trial_gives_every_rank_the_trial_params_and_is_recorded_once(tmp_path, synth_root):
    out = streamseg("search", "-D", "synth", "-M", "mstcn", "-E", TINY_EXP, "-R", str(tmp_path), "-o",
                    f"data.root={synth_root}", "-o", "train.epochs=2", "--study", "d", "--trials", "1",
                    "--pruner", "none", "--seed", "0", "--devices", "2", "--accelerator", "cpu",
                    env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    study_dir = tmp_path / "synth" / "mstcn_tiny" / "search" / "d"
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{study_dir / 'study.db'}")
    (trial,) = study.trials  # recorded once, although two processes trained it
    assert trial.state == TrialState.COMPLETE
    run = Path(trial.user_attrs["run_dir"])
    assert len(list(study_dir.glob("trials/*/*/*/version_*"))) == 1

    saved = json.loads((run / "config" / "params.json").read_text())
    assert saved["train"]["lr"] == trial.params["train.lr"] and saved["model"]["num_maps"] == trial.params["model.num_maps"]
    ranks = json.loads((run / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    # both ranks resolved exactly the params saved for the run, and ended with the same weights
    assert {r["params_sha256"] for r in ranks} == {_sha256(saved)}
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and trial.value == pytest.approx(metrics["best_val"])
    assert sorted(trial.intermediate_values) == [0, 1]  # the learning curve, read back from the run's log
    assert max(trial.intermediate_values.values()) == pytest.approx(trial.value)
    # the re-run command is a 2-process run too: per-rank batches are part of what ran
    assert "--accelerator cpu --devices 2" in trial.user_attrs["command"]


@pytest.mark.slow  # two processes that stop before training: ~25 s
def test_ranks_that_resolve_different_params_are_refused(tmp_path, synth_root):
    # a config that reads its rank (what configs must not do) gives each rank another seed
    exp = tmp_path / "mstcn_rankdep.py"
    exp.write_text("import os\n\n\ndef configure(params):\n    params.train.epochs = 1\n"
                   "    params.train.seed = int(os.environ.get('RANK', '0'))\n")
    out = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", str(exp), "-R", str(tmp_path), "-o",
                    f"data.root={synth_root}", "-o", "data.num_videos=8", "-o", "data.with_videos=false",
                    "--devices", "2", "--accelerator", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    assert "DDP rank 1 resolved other params than rank 0 (train.seed: 0 -> 1)" in out.stdout + out.stderr
    assert not list(tmp_path.glob("synth/*/version_*"))  # stopped before a run directory was made


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[-300:]
    except OSError:
        return "(gone)"


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (Linux /proc; zombies have none)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow  # a 2-process trial killed mid-training: ~30 s on 2 busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_killed_workers_ddp_trial_stops_instead_of_holding_its_devices(tmp_path, synth_root):
    """SIGKILL on a search worker whose trial is a DDP child (`streamseg train --devices 2`): the child and
    its second rank get SIGTERM from the kernel and end, instead of training on while the study retries
    the trial elsewhere."""
    args = [sys.executable, "-m", "streamseg.cli.main", "search", "-D", "synth", "-M", "mstcn", "-E", TINY_EXP,
            "-R", str(tmp_path), "-o", f"data.root={synth_root}", "-o", "train.epochs=100000", "--study", "k",
            "--trials", "1", "--pruner", "none", "--devices", "2", "--accelerator", "cpu"]
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    trials_dir = str(tmp_path / "synth" / "mstcn_tiny" / "search" / "k" / "trials")
    deadline = time.time() + 240
    while time.time() < deadline and len(_processes_mentioning(trials_dir)) < 2:  # the child and its rank 1
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(0.5)
    assert len(_processes_mentioning(trials_dir)) >= 2, "the DDP trial did not start its two ranks"
    time.sleep(3)  # the ranks are training now
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.time() + 45  # the trial has 100,000 epochs to go: only a signal ends it this soon
    while time.time() < deadline and _processes_mentioning(trials_dir):
        time.sleep(0.5)
    left = {pid: _cmdline(pid) for pid in _processes_mentioning(trials_dir)}
    for pid in left:  # do not leave them behind for the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"the trial's processes outlived the killed worker: {left}"
