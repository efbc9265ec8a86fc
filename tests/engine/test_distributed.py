"""Real multi-process runs on CPU (gloo): torchrun via the launch scripts, 2 processes, 2 'nodes'."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from ..conftest import REPO, TINY, streamseg

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(root: Path, data: Path) -> list[str]:
    return ["-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(root), "-o", f"data.root={data}", *TINY]


def _env() -> dict[str, str]:
    # one thread per process: 2 processes on 2 cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": os.environ.get("PYTHON", "python3")}


def test_singlenode_two_processes_match_single_process_scoring(tmp_path, synth_root):
    env = _env()
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    out = subprocess.run(["bash", "tools/run_singlenode.sh", "train", "2", *_args(tmp_path, synth_root)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "sync_dist" not in out.stdout + out.stderr  # epoch values are equal on every rank (engine/quiet.py)
    run = tmp_path / "synth" / "mstcn_quick" / "version_0"
    ddp = json.loads((run / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # both ranks used one directory
    # every test video scored exactly once: the DDP gather equals one process scoring the same checkpoint
    single = streamseg("test", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path), "--ckpt", "best")
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((run / "metrics.json").read_text())
    assert one["num_videos"] == ddp["num_videos"]
    for key in ("acc", "edit", "f1@10", "f1@25", "f1@50"):
        assert one[key] == pytest.approx(ddp[key], abs=1e-9), key


def test_a_data_error_under_torchrun_is_printed_once_with_the_exit_code(tmp_path, synth_root):
    broken = tmp_path / "broken"
    shutil.copytree(synth_root, broken, ignore=shutil.ignore_patterns("Videos"))
    gt = sorted((broken / "groundTruth").glob("*.txt"))[0]
    gt.write_text(gt.read_text().replace("\n", "\njuggle\n", 1))  # an unknown label on line 2
    env = _env()
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    out = subprocess.run(["bash", "tools/run_singlenode.sh", "train", "2", *_args(tmp_path / "exp", broken)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 1, out.stderr[-4000:]
    assert out.stderr.count("unknown label 'juggle'") == 1, out.stderr[-4000:]
    assert "-o data.root=" in out.stderr
    assert "ChildFailedError" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-4000:]


def test_multinode_script_two_nodes_on_loopback(tmp_path, synth_root):
    env = _env()
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    port = str(_free_port())
    procs = [
        subprocess.Popen(["bash", "tools/run_multinode.sh", "train", "1", "2", str(rank), "127.0.0.1", port,
                          *_args(tmp_path, synth_root)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    metrics = json.loads((tmp_path / "synth" / "mstcn_quick" / "version_0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2


def test_launch_scripts_reject_bad_arguments():
    bad = [
        ["tools/run_singlenode.sh", "fly", "1"],
        ["tools/run_singlenode.sh", "train", "zero"],
        ["tools/run_multinode.sh", "train", "1", "2", "5", "127.0.0.1", "29500"],
    ]
    for cmd in bad:
        out = subprocess.run(["bash", *cmd], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr, cmd


def test_slurm_environment_two_tasks(tmp_path, synth_root):
    """What `srun` sets for 2 tasks on one node: streamseg takes ranks from SLURM, no torchrun involved."""
    job_id = str(_free_port())  # Lightning derives the rendezvous port from the job id's last digits
    procs = []
    for rank in (0, 1):
        env = {**_env(), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
               "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "streamseg"}
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
            env.pop(var, None)
        cmd = [os.sys.executable, "-m", "streamseg.cli.main", "train", "--devices", "2", *_args(tmp_path, synth_root)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    metrics = json.loads((tmp_path / "synth" / "mstcn_quick" / "version_0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
