"""`streamseg infer --live`: the rich view renders the label, speed, lag and last segments, and on a
console that is not a terminal it prints its final state once instead of redrawing."""

from __future__ import annotations

import io

from rich.console import Console

from streamseg.deploy.infer import Progress, infer_video
from streamseg.deploy.live_view import LiveView

from .test_infer import _Brightness, _ramp_video, tiny_meta


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=120, color_system=None)


def test_live_view_follows_an_inference_without_a_terminal(tmp_path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4", frames=24)
    console = _console()
    seen: list[Progress] = []
    with LiveView(console=console, max_events=3) as view:
        assert not console.is_terminal

        def progress(info: Progress) -> None:
            seen.append(info)
            view.progress(info)

        result = infer_video(_Brightness(tiny_meta(sample_rate=1, fps=30.0)), video, chunk=6, emit=view.event,
                             on_progress=progress, realtime=True)
        view.finished(result)
        assert console.file.getvalue() == ""  # not a terminal: nothing drawn while running
    out = console.file.getvalue()
    assert [p.frames for p in seen] == [6, 12, 18, 24] and seen[-1].num_frames == 24
    assert seen[-1].label == result.events[-1]["label"] and 0 < seen[-1].confidence <= 1
    assert f"ramp: frame 24 / 24" in out and "behind the source" in out and "keeping up" in out
    assert f"{result.events[-1]['label']}  {seen[-1].confidence:.2f}" in out
    assert "done" in out and f"{len(result.events)} segments" in out
    last = result.events[-3:]  # the view keeps the last max_events
    assert all(f"{e['start_s']:.1f}-{e['end_s']:.1f}" in out for e in last)
    if len(result.events) > 3:
        first = result.events[0]
        assert f"{first['start_s']:.1f}-{first['end_s']:.1f}" not in out
    assert out.count("last segments") == 1  # printed once, at the end


def test_live_view_shows_a_source_it_cannot_keep_up_with() -> None:
    console = _console()
    with LiveView(console=console) as view:
        view.progress(Progress("cam", 300, None, "pour_milk", 0.81, 9.5, 40.0, lag_s=3.25, late_chunks=4))
    out = console.file.getvalue()
    assert "cam: frame 300 (live)" in out and "pour_milk  0.81" in out and "9.5 sampled frames/s" in out
    assert "3.25 s behind the source, 4 chunks late" in out


def test_live_view_before_any_frame() -> None:
    console = _console()
    with LiveView(console=console):
        pass
    assert "waiting for frames" in console.file.getvalue()
