"""Hyper-parameter search through NNI's experiment manager (`streamseg search --backend nni`).

The experiment config's `search_space(trial)` is recorded and translated to NNI's search-space format
(`nni_space`); an `nni.experiment.Experiment('local')` runs `python -m streamseg.search.nni_trial` for
each trial (`nni_trial`), with the TPE (or Random) tuner and, for `--pruner median`, NNI's Medianstop
assessor fed by the per-epoch validation values. At the end the trials are summarised like an Optuna
study: a table, the best trial and the `streamseg train ... -o ...` command that re-runs it, `best.json`.

NNI's manager is a Node.js web server that listens on every network interface, without authentication
(it has no host setting): `run_hpo` warns, and docs/search.md says how to keep it private. It also
writes `~/nni-experiments/.experiment` (a manifest) whatever its working directory; its own files go to
`<study folder>/nni/<experiment id>/` (trial logs under `trials/<trial id>/`).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config import ConfigError, ConfigSet
from .nni_space import nni_search_space, record_space
from .nni_trial import PARAMETERS_FILE, NNISpec, plan_trial
from .space import display_override, override_args

TUNERS = {"tpe": "TPE", "random": "Random"}
FINISHED = ("DONE", "STOPPED", "ERROR")
EXPOSED_WARNING = (
    "NNI's experiment manager (a web server with no authentication) listens on ALL network interfaces, "
    "port {port}: anyone who can reach this machine can read and stop the experiment. Keep the port "
    "firewalled or run inside a network namespace, and view it through an SSH tunnel (docs/search.md)."
)


@dataclass
class NNITrialResult:
    """One NNI trial as the summary shows it."""

    number: int  # NNI's sequence id
    trial_id: str
    status: str  # SUCCEEDED, FAILED, EARLY_STOPPED, USER_CANCELED, ...
    value: float | None  # final result (best validation value), or the best intermediate one
    epochs: int  # intermediate results reported
    parameters: dict[str, Any]
    overrides: list[str]
    seed: int | None
    command: str | None
    seconds: float | None
    log: str  # the trial's log folder


def free_port() -> int:
    """A TCP port free on every interface now (NNI's manager binds them all); another program may take it
    before NNI does, which makes the start fail with a clear error, not a hang."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run_hpo(spec: NNISpec, configs: ConfigSet, trials: int, *, tuner: str = "tpe", seed: int | None = None,
            pruner: str = "median", concurrency: int = 1, port: int | None = None,
            console: Console | None = None, poll: float = 1.0) -> list[NNITrialResult]:
    """Run an NNI HPO experiment of `trials` trials and return its trials (see the module docstring)."""
    from nni.experiment import Experiment

    console = console or Console()
    if tuner not in TUNERS:
        raise ConfigError(f"--sampler {tuner}: the NNI backend offers {sorted(TUNERS)}")
    if pruner not in ("median", "none"):
        raise ConfigError(f"--pruner {pruner}: the NNI backend offers median (NNI's Medianstop assessor) or none")
    space = nni_search_space(record_space(configs.exp))
    study_dir = Path(spec.study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    spec_path = study_dir / "nni_spec.json"
    spec.save(spec_path)

    exp = Experiment("local")
    c = exp.config
    c.experiment_name = study_dir.name
    c.search_space = space
    c.trial_command = shlex.join([sys.executable, "-m", "streamseg.search.nni_trial", str(spec_path.resolve())])
    c.trial_code_directory = os.getcwd()  # relative -E paths and data roots resolve as for this command
    c.trial_concurrency = concurrency
    c.max_trial_number = trials
    c.experiment_working_directory = str((study_dir / "nni").resolve())
    c.tuner.name = TUNERS[tuner]
    c.tuner.class_args = {"optimize_mode": "maximize", **({"seed": seed} if seed is not None else {})}
    if pruner == "median":
        # stop a trial whose best value so far is below the median of finished trials' running averages
        c.assessor.name = "Medianstop"
        c.assessor.class_args = {"optimize_mode": "maximize", "start_step": 1}
    if spec.hw.accelerator == "gpu":
        # NNI's scheduler hands each trial this many free GPUs (CUDA_VISIBLE_DEVICES); without it NNI
        # leaves the GPUs alone and concurrent trials would share them
        c.trial_gpu_number = spec.hw.devices
        c.training_service.use_active_gpu = True
    port = port or free_port()
    console.print(f"[bold yellow]warning:[/bold yellow] {EXPOSED_WARNING.format(port=port)}")
    console.print(f"NNI experiment {exp.id}: {trials} trials, tuner {TUNERS[tuner]}, files in "
                  f"{c.experiment_working_directory}/{exp.id}; web UI http://127.0.0.1:{port}")
    exp.start(port)
    try:
        status = _wait(exp, poll)
        results = collect(exp, spec, configs)
    finally:
        exp.stop()
    if status == "ERROR":
        log = Path(c.experiment_working_directory) / exp.id / "log"
        raise RuntimeError(f"NNI experiment {exp.id} ended in ERROR; see {log}")
    return results


def _wait(exp: Any, poll: float) -> str:
    while True:
        status = exp.get_status()
        if status in FINISHED:
            return status
        time.sleep(poll)


def collect(exp: Any, spec: NNISpec, configs: ConfigSet) -> list[NNITrialResult]:
    """The experiment's trials, each with the overrides and command its parameters replay to.

    A trial's parameters are the ones it received (`nni_trial` saves them), not NNI's record of the job:
    NNI 3.0's local training service gives each parameter set to whichever trial asks first, so with
    concurrent trials its record can pair a trial with another trial's parameters."""
    metrics = exp.get_job_metrics()
    out = []
    for job in sorted(exp.list_trial_jobs(), key=lambda j: j.sequenceId):
        received = Path(spec.study_dir) / "trials" / f"nni_{job.trialJobId}" / PARAMETERS_FILE
        parameters = json.loads(received.read_text()) if received.is_file() else {}  # {}: it never asked
        final = [m.data for m in metrics.get(job.trialJobId, []) if m.type == "FINAL"]
        curve = [m.data for m in metrics.get(job.trialJobId, []) if m.type == "PERIODICAL"]
        value = _number(final[-1]) if final else (max(map(_number, curve)) if curve else None)
        overrides, seed, command = [], None, None
        if parameters:
            try:
                plan = plan_trial(spec, configs, values=parameters)
                overrides, seed, command = override_args(plan.overrides), plan.params.train.seed, plan.command
            except ConfigError as e:  # shown in the table; the trial itself failed with the same error
                command = f"(cannot replay: {e})"
        seconds = (job.endTime - job.startTime) / 1000 if job.endTime and job.endTime > 0 and job.startTime else None
        out.append(NNITrialResult(job.sequenceId, job.trialJobId, job.status, value, len(curve), parameters,
                                  overrides, seed, command, seconds, _local_path(job.logPath)))
    return out


def _number(data: Any) -> float:
    return float(data["default"] if isinstance(data, dict) else data)


def _local_path(log_path: str) -> str:
    # NNI reports "file://localhost:/path" for local trials
    return log_path.split(":", 2)[-1] if log_path.startswith("file://") else log_path


def best_results(results: list[NNITrialResult]) -> list[NNITrialResult]:
    done = [r for r in results if r.status == "SUCCEEDED" and r.value is not None]
    return [max(done, key=lambda r: r.value)] if done else []


def summary(results: list[NNITrialResult]) -> list[dict[str, Any]]:
    """JSON-able best trial, as `best.json` of an Optuna study (number, values, cost, seed, overrides, command)."""
    return [{"number": r.number, "trial_id": r.trial_id, "values": [r.value], "cost": None, "seed": r.seed,
             "overrides": r.overrides, "command": r.command} for r in best_results(results)]


def print_results(console: Console, results: list[NNITrialResult], metric: str, title: str) -> list[dict[str, Any]]:
    """The table of trials, the best trial and its re-run command; returns `summary(results)`."""
    best = {r.trial_id for r in best_results(results)}
    table = Table(title=f"{title}: {len(results)} trials")
    for col in ("#", "trial", "state", f"val {metric}", "epochs", "seed", "overrides", "seconds"):
        if col == "overrides":  # folded, never cut: they are what a reader copies
            table.add_column(col, overflow="fold", ratio=1)
        else:
            table.add_column(col)
    for r in results:
        table.add_row(("* " if r.trial_id in best else "") + str(r.number), r.trial_id, r.status.lower(),
                      "-" if r.value is None else f"{r.value:.4g}", str(r.epochs), str(r.seed),
                      " ".join(map(display_override, r.overrides)), "-" if r.seconds is None else f"{r.seconds:.1f}")
    console.print(table)
    out = summary(results)
    if not out:
        console.print("no trial succeeded")
    failed = [r for r in results if r.status == "FAILED"]
    if failed:  # the error itself, so a broken setup is seen without opening NNI's folders
        stderr = Path(failed[0].log) / "trial.stderr"
        lines = [x for x in stderr.read_text().splitlines() if x.strip()] if stderr.is_file() else []
        console.print(f"{len(failed)} trial(s) failed; trial {failed[0].number}: "
                      f"{lines[-1] if lines else '(no error output)'} (see {stderr})", soft_wrap=True)
    for b in out:
        console.print(f"[bold]best trial[/bold]: trial {b['number']} ({b['trial_id']}), values {b['values']}")
        console.print(f"  re-run: {b['command']}", soft_wrap=True)
    return out


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
