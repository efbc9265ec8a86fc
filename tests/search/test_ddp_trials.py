"""Multi-process trials: `streamseg search --devices 2` runs each trial as a 2-rank DDP run (gloo on CPU),
and every rank must train with the trial's parameters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ..conftest import streamseg

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
