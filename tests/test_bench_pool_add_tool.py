"""tools/bench_pool_add.py: times adding streams to a pool, and the streams it adds are real ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_pool_add  # noqa: E402

from streamseg.deploy.batcher import StreamPool  # noqa: E402

from .deploy.test_infer import _ramp_video  # noqa: E402


def test_adds_are_timed_and_the_streams_reach_their_worker(tmp_path, capsys, monkeypatch) -> None:
    _ramp_video(tmp_path / "v.mp4", frames=12)
    added: list[str] = []
    add = StreamPool.add
    monkeypatch.setattr(StreamPool, "add", lambda self, *a, **k: added.append(add(self, *a, **k)) or added[-1])
    assert bench_pool_add.main(["--videos", str(tmp_path), "--streams", "3", "--decode-workers", "1",
                                "--size", "16", "16", "--chunk", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["streams"] == 3 and out["decode_workers"] == 1 and out["adds_s"] > 0
    assert abs(out["per_add_ms"] - 1e3 * out["adds_s"] / 3) < 0.05 and added == ["s0", "s1", "s2"]
    assert out["all_started_s"] >= out["adds_s"]
