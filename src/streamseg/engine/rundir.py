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
A finished newest version makes the next run a new version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, redact_all

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


def choose_run_dir(exp_dir: Path, params_json: dict, new: bool = False) -> RunDir:
    """Pick the version to run: resume the newest unfinished one, or start the next one."""
    existing = versions(exp_dir)
    if existing and not new:
        latest = exp_dir / f"version_{existing[-1]}"
        if not (latest / "DONE").exists():
            saved = _saved_params(latest)
            if saved is not None and saved != params_json:
                diff = _diff(saved, params_json)
                raise ConfigError(
                    f"{latest} is an unfinished run with different params ({diff}); "
                    "re-run with the same params to resume it, or pass --new for a fresh version"
                )
            last = latest / "checkpoints" / "last.ckpt"
            return RunDir(latest, existing[-1], last if last.is_file() else None)
    version = existing[-1] + 1 if existing else 0
    return RunDir(exp_dir / f"version_{version}", version, None)


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
