"""tools/bench_labels.py: times this tree's labelling against a git revision's, and refuses a comparison
whose implementations give different events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_labels  # noqa: E402

from streamseg.deploy import infer  # noqa: E402


def test_a_revision_is_timed_beside_this_tree(capsys) -> None:
    root = Path(bench_labels.ROOT)
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    bench_labels.main(["--streams", "3", "--steps", "4", "--against", "HEAD"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["flicker", "smooth"]
    assert all("this tree" in line and "HEAD" in line for line in lines)


def test_different_events_are_refused(monkeypatch) -> None:
    class Shifted(infer.SegmentTracker):  # a wrong implementation: every segment starts a frame late
        def _close(self, end, decoded, chunk_time):
            self._start += 1
            super()._close(end, decoded, chunk_time)

    wrong = type(sys)("wrong")
    wrong.SegmentTracker, wrong.frame_labels = Shifted, infer.frame_labels
    monkeypatch.setattr(bench_labels, "load_revision", lambda rev: wrong)
    with pytest.raises(SystemExit, match="flicker: the implementations' events differ"):
        bench_labels.main(["--streams", "2", "--steps", "2", "--against", "x"])
