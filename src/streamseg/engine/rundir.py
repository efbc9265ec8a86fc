"""The run directory: `<root>/<dataset>/<model>_<exp>/version_<n>/`, its snapshot, and resume.

Layout::

    config/       dataset.py model.py exp.py (as run), params.json, overrides.json, run.json
    checkpoints/  last.ckpt, best.ckpt
    logs/         TensorBoard events, metrics.csv
    predictions/  <video> files in the MS-TCN results format
    plots/        PNGs
    metrics.json  test metrics (percent)
    ranks.json    DDP runs only: each rank's pid, host, params and weights hashes
    DONE          written when train+test finished

Resume rule: the newest version without `DONE` is continued (from `checkpoints/last.ckpt` when it exists)
if its saved params equal this run's params; otherwise a clear error tells the user to pass `--new`.
Keys the saved params lack (a key added to streamseg or to a config after the run started, such as
`train.cudnn_benchmark`) do not stop a resume: the run goes on with this run's values for them, with a
`ParamsAddedWarning` naming each key and value (the snapshot then records them), as `load_jsonable`
gives such keys their defaults when a finished run is loaded. Every other difference still refuses.
A finished newest version makes the next run a new version.

One process per version: the process that runs a version holds an exclusive `flock` on its `run.lock`
(`RunLock`) until it ends; the kernel drops the lock with the process, `kill -9` included, so a lock is
never stale. Versions are chosen one command at a time (a lock on the experiment's `.versions.lock`),
so two commands started together never pick the same version: when the newest unfinished version is
held, the next command starts a new version and says which process holds the other one.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, redact, redact_all
from .checkpoint_io import checkpoint_exists

_VERSION_RE = re.compile(r"^version_(\d+)$")


@dataclass
class RunDir:
    path: Path
    version: int
    resume_from: Path | None  # a checkpoint to continue from, or None for a fresh start

    @property
    def config(self) -> Path:
        return self.path / "config"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def done(self) -> Path:
        return self.path / "DONE"

    def make(self) -> None:
        for p in (self.config, self.checkpoints, self.logs, self.predictions, self.plots):
            p.mkdir(parents=True, exist_ok=True)


def experiment_dir(root: str | Path, dataset: str, model: str, exp: str) -> Path:
    return Path(root) / dataset / f"{model}_{exp}"


def versions(exp_dir: Path) -> list[int]:
    if not exp_dir.is_dir():
        return []
    found = [_VERSION_RE.match(p.name) for p in exp_dir.iterdir() if p.is_dir()]
    return sorted(int(m.group(1)) for m in found if m)


def _saved_params(version_dir: Path) -> dict | None:
    path = version_dir / "config" / "params.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class RunInUseWarning(UserWarning):
    """The newest unfinished version is held by a running process: a new version was started instead."""


# Descriptors of the locks this process holds. A forked child (a DataLoader worker) shares them, and a
# flock lives until every copy is closed: the child closes its copies, so the lock ends with this process.
_HELD_FDS: set[int] = set()


def _close_held_locks_in_child() -> None:
    for fd in _HELD_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunLock:
    """An exclusive `flock` on a version's `run.lock`, held by this process until `release()` or exit.

    The file names the holder (`pid <n> on <host>`) for the message another command prints. On NFS, Linux
    implements `flock` with the server's byte-range locks (NFSv4, or v3 with lockd)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd
        _HELD_FDS.add(fd)

    @classmethod
    def acquire(cls, path: Path) -> RunLock | None:
        """The lock, or None while another process (or another open of the file) holds it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            _HELD_FDS.discard(self._fd)
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def _one_at_a_time(exp_dir: Path):
    """Serialise choosing versions of `exp_dir` across processes (held for milliseconds)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(exp_dir / ".versions.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claim_run_dir(exp_dir: Path, params_json: dict, new: bool = False) -> tuple[RunDir, RunLock]:
    """Pick the version to run and lock it for this process: the newest unfinished one when no running
    process holds it (resumed), else the next one. Release the lock when the run ends."""
    with _one_at_a_time(exp_dir):
        existing = versions(exp_dir)
        if existing and not new:
            latest = exp_dir / f"version_{existing[-1]}"
            if not (latest / "DONE").exists():
                lock = RunLock.acquire(latest / "run.lock")
                if lock is None:
                    warnings.warn(f"{latest} is in use by {_holder(latest / 'run.lock')}: starting "
                                  f"version_{existing[-1] + 1} (to resume {latest.name} instead, re-run once "
                                  "that process has ended)", RunInUseWarning, stacklevel=2)
                else:
                    return _resume(latest, existing[-1], params_json, lock), lock
        version = existing[-1] + 1 if existing else 0
        path = exp_dir / f"version_{version}"
        path.mkdir()
        lock = RunLock.acquire(path / "run.lock")
        if lock is None:  # only a process that ignores .versions.lock could hold a version made just now
            raise RuntimeError(f"{path}: created by this process but locked by {_holder(path / 'run.lock')}")
        return RunDir(path, version, None), lock


class ParamsAddedWarning(UserWarning):
    """An unfinished run resumed with keys its saved params lack (added after it started)."""


def _resume(latest: Path, version: int, params_json: dict, lock: RunLock) -> RunDir:
    saved = _saved_params(latest)
    added = _added(saved, params_json) if saved is not None else {}
    if saved is not None and _without(params_json, added) != saved:
        lock.release()
        raise ConfigError(
            f"{latest} is an unfinished run with different params ({redact(_diff(saved, params_json))}); "
            "re-run with the same params to resume it, or pass --new for a fresh version"
        )
    if added:
        named = redact(", ".join(f"{k}={v!r}" for k, v in added.items()))  # e.g. a storage URL's password
        warnings.warn(f"{latest}: resuming a run whose saved params lack {named} (added since it started); "
                      "it goes on with these values", ParamsAddedWarning, stacklevel=3)
    # checkpoint writes of a killed holder (each process writes its own <name>.<pid>.partial)
    for partial in (latest / "checkpoints").glob("*.partial"):
        partial.unlink(missing_ok=True)
    last = latest / "checkpoints" / "last.ckpt"
    return RunDir(latest, version, last if checkpoint_exists(last) else None)  # a file, or DeepSpeed's folder


def _added(saved: dict, current: dict, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of the keys `current` has and `saved` lacks inside sections both have: a whole
    section missing (`train`, `data`, `model`: a damaged or foreign params.json) is a difference."""
    out: dict[str, Any] = {}
    for k, v in current.items():
        if k not in saved:
            if prefix:
                out[prefix + k] = v
        elif isinstance(v, dict) and isinstance(saved[k], dict):
            out.update(_added(saved[k], v, f"{prefix}{k}."))
    return out


def _without(params: dict, dotted: dict[str, Any]) -> dict:
    """A copy of `params` without the dotted keys."""
    out = copy.deepcopy(params)
    for key in dotted:
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node[part]
        del node[leaf]
    return out


def _diff(a: dict, b: dict, prefix: str = "") -> str:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = _diff(va, vb, f"{prefix}{k}.")
            if inner:
                keys.append(inner)
        elif va != vb:
            keys.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return "; ".join(keys)


def git_sha(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("streamseg", "torch", "torchvision", "pytorch-lightning", "numpy", "av", "rich"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_snapshot(run: RunDir, config_paths: dict[str, Path], params_json: dict, overrides: dict[str, Any]) -> None:
    """Save what ran: the three config files, params, overrides, git SHA, command and versions."""
    run.make()
    for kind, src in config_paths.items():
        shutil.copyfile(src, run.config / f"{kind}.py")
    _atomic_write_json(run.config / "params.json", params_json)
    _atomic_write_json(run.config / "overrides.json", {k: _jsonable(v) for k, v in overrides.items()})
    info = {
        "command": redact_all([Path(sys.argv[0]).name, *sys.argv[1:]]),  # e.g. a --storage URL's password
        "config_files": {k: str(v) for k, v in config_paths.items()},
        "git_sha": git_sha(Path(next(iter(config_paths.values()))).parent),
        "host": platform.node(),
        "versions": package_versions(),
    }
    _atomic_write_json(run.config / "run.json", info)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


write_json = _atomic_write_json
