"""`streamseg data synth` and `streamseg data check` from the command line."""

from __future__ import annotations

import shutil

from ..conftest import streamseg


def test_check_passes_on_synth_and_reports_every_problem_at_once(tmp_path, synth_root):
    ok = streamseg("data", "check", str(synth_root))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no problems" in ok.stdout

    broken = tmp_path / "broken"
    shutil.copytree(synth_root, broken)
    names = sorted(p.stem for p in (broken / "groundTruth").glob("*.txt"))
    (broken / "groundTruth" / f"{names[0]}.txt").unlink()  # missing label file
    gt = broken / "groundTruth" / f"{names[1]}.txt"
    lines = gt.read_text().splitlines()
    lines[4] = "juggle"  # unknown label on line 5
    gt.write_text("\n".join(lines) + "\n")
    out = streamseg("data", "check", str(broken))
    assert out.returncode == 1
    text = " ".join(out.stdout.split())  # rich may wrap long paths
    assert names[0] in text
    assert f"{names[1]}.txt" in text and "juggle" in text and ":5" in text
    assert text.count("problem(s)") == 1, out.stdout  # one header, naming the folder
    assert f"2 problem(s) found in {broken}" in text


def test_synth_command_generates_a_dataset(tmp_path):
    out = streamseg("data", "synth", "--root", str(tmp_path / "s"), "--num-videos", "6", "--no-videos")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "s" / "mapping.txt").is_file()
    check = streamseg("data", "check", str(tmp_path / "s"))
    assert check.returncode == 0, check.stdout
