"""A multi-process (DDP) trial: `streamseg train ... --devices N` in a child process, for both backends.

The trial's parameters travel on the child's command line (`-o key=value`), and torchrun starts every
rank with that same command line, so all ranks resolve the same params by construction; the engine
also checks it (`engine.runner.check_ranks_params`) and records each rank in the run's `ranks.json`.
The child's per-epoch validation scores are read back from its CSV log afterwards (`val_history`): a
DDP trial reports its learning curve when it ends, so it cannot be stopped early.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..engine.runner import Hardware


def launch_args(hw: Hardware) -> list[str]:
    """The `streamseg train` options that reproduce `hw` (none for one process: the default)."""
    if hw.devices * hw.num_nodes <= 1:
        return []
    out = ["--accelerator", hw.accelerator, "--devices", str(hw.devices)]
    return out + (["--num-nodes", str(hw.num_nodes)] if hw.num_nodes > 1 else [])


# Runs between the search worker and a DDP trial's `streamseg train` (Linux). The kernel sends it SIGTERM
# when the worker dies, however it dies (SIGKILL, the OOM killer: prctl PR_SET_PDEATHSIG); the training
# runs in its own process group (its ranks and their loader workers included), which it then kills, so a
# dead worker's trial does not train on, holding the GPUs, while the study retries it elsewhere. Ctrl-C
# (SIGINT to the worker's group) ends the group the same way. argv: worker pid, then the command.
_REAPER = """
import ctypes, os, signal, subprocess, sys
child = None
def stop(signum, frame):
    if child is not None:
        os.killpg(child.pid, signal.SIGKILL)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the worker died before the line above
    sys.exit(128 + signal.SIGTERM)
child = subprocess.Popen(sys.argv[2:], start_new_session=True)
sys.exit(child.wait())
"""


def train_in_child(dataset: str, model: str, exp: str, config_root: str | None, args: Sequence[str],
                   run_root: Path, hw: Hardware) -> tuple[dict[str, Any], Path]:
    """Run `streamseg train` with the `-o` items `args` as `hw` says, into `run_root`, as a fresh version.

    Returns (metrics.json, run directory). A failed child raises RuntimeError with its command."""
    if hw.num_nodes > 1:
        raise ValueError("a search trial runs on one node (--devices N); run one search worker per node instead")
    cmd = [sys.executable, "-m", "streamseg.cli.main", "train", "-D", dataset, "-M", model, "-E", exp,
           "-R", str(run_root), "--new", *launch_args(hw)]
    if config_root:
        cmd += ["--config-root", config_root]
    for item in args:
        cmd += ["-o", item]
    reaper = [sys.executable, "-c", _REAPER, str(os.getpid())] if sys.platform.startswith("linux") else []
    code = subprocess.call(reaper + cmd)
    if code != 0:
        raise RuntimeError(f"trial run failed (exit code {code}): {' '.join(cmd)}")
    found = sorted(run_root.glob("*/*/version_*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"trial run wrote no metrics.json under {run_root}")
    return json.loads(found[-1].read_text()), found[-1].parent


def val_history(run_dir: Path, monitor: str) -> dict[int, float]:
    """{epoch: val/<monitor>} from the run's `logs/csv/metrics.csv` (empty if it has none)."""
    path = run_dir / "logs" / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            value = row.get(f"val/{monitor}")
            if value not in (None, ""):
                out[int(row["epoch"])] = float(value)
    return out
