"""The README's two quick-start commands: CI runs the test one verbatim, and the main job runs here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
    cmds = quick_start_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)


def test_ci_runs_the_readme_test_command():
    test_cmd = quick_start_commands()[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


@pytest.mark.slow
def test_readme_main_job_runs(tmp_path):
    """The `streamseg ...` part of quick-start command 1, shortened to 2 epochs, in a scratch root."""
    cmd = quick_start_commands()[0]
    job = cmd[cmd.index("streamseg ") :]
    argv = shlex.split(job)[1:]
    data = tmp_path / "synth"
    argv += ["-R", str(tmp_path / "exp"), "-o", "train.epochs=2", "-o", f"data.root={data}",
             "-o", "data.num_videos=12", "-o", "data.with_videos=false"]
    out = subprocess.run([sys.executable, "-m", "streamseg.cli.main", *argv], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "F1@50" in out.stdout and "Edit" in out.stdout
    assert list((tmp_path / "exp").glob("synth/mstcn_quick/version_0/metrics.json"))
