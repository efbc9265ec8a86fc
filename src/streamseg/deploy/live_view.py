"""A live terminal view of `streamseg infer --live` (rich): the current label and confidence, labelling
speed, how far behind a real-time source it is, and the last segment events.

On a terminal the panel redraws in place (a few times per second) while events and messages scroll
above it; when the console is not a terminal (a pipe, a file, CI) nothing is redrawn and the final
panel is printed once when the view closes, so logs stay readable.
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .infer import Progress, VideoResult

__all__ = ["LiveView"]

STYLES = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta", "bright_green",
          "bright_yellow", "bright_blue", "bright_red")  # one per class id, cycling


class LiveView:
    """Use as a context manager around `infer_stream`; feed it ``progress(Progress)`` after each chunk,
    ``event(dict)`` for each segment event and ``finished(VideoResult)`` per source.

    Args:
        console: where to draw (default: stderr, so that stdout stays free for JSON-lines events).
        max_events: how many of the last segment events to list.
        redirect_stdout: on a terminal, print what the program writes to stdout above the panel
            (rich's default); pass False when stdout is a pipe another program reads.
    """

    def __init__(self, console: Console | None = None, max_events: int = 8, refresh_per_second: float = 4,
                 redirect_stdout: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.progress_info: Progress | None = None
        self.done: list[VideoResult] = []
        self._live = Live(self.render(), console=self.console, refresh_per_second=refresh_per_second,
                          transient=False, redirect_stdout=redirect_stdout, redirect_stderr=False)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self.render())
        self._live.stop()  # a non-terminal console prints the final panel here

    def progress(self, info: Progress) -> None:
        self.progress_info = info
        self._live.update(self.render())

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._live.update(self.render())

    def finished(self, result: VideoResult) -> None:
        self.done.append(result)
        self._live.update(self.render())

    def print(self, *objects: Any) -> None:
        """A message above the panel (on a terminal) or in sequence (elsewhere)."""
        self._live.console.print(*objects)

    def render(self) -> RenderableType:
        """The panel: a status grid and the last events."""
        p = self.progress_info
        status = Table.grid(padding=(0, 2))
        status.add_column(style="bold")
        status.add_column()
        if p is None:
            status.add_row("source", "waiting for frames ...")
        else:
            total = f" / {p.num_frames}" if p.num_frames else " (live)"
            status.add_row("source", f"{p.video}: frame {p.frames}{total}, {p.elapsed_s:.1f} s")
            status.add_row("label", Text(f"{p.label}  {p.confidence:.2f}", style=f"bold {self._style(p.label)}"))
            status.add_row("speed", f"{p.fps:.1f} sampled frames/s")
            if p.lag_s is None:
                status.add_row("lag", "- (not real time)")
            else:
                late = f", {p.late_chunks} chunks late" if p.late_chunks else ", keeping up"
                style = "red" if p.late_chunks else "green"
                status.add_row("lag", Text(f"{p.lag_s:.2f} s behind the source{late}", style=style))
        if self.done:
            status.add_row("done", f"{len(self.done)} source(s), {sum(len(r.labels) for r in self.done)} frames, "
                                   f"{sum(len(r.events) for r in self.done)} segments")
        events = Table(title="last segments", title_justify="left", expand=False)
        for col, justify in (("video", "left"), ("label", "left"), ("start-end s", "right"), ("conf", "right"),
                             ("latency s", "right")):
            events.add_column(col, justify=justify)
        for e in self.events:
            timed = e.get("start_s") is not None  # None when the source's fps is unknown
            span = f"{e['start_s']:.1f}-{e['end_s']:.1f}" if timed else f"{e['start']}-{e['end']} fr"
            events.add_row(e["video"], Text(e["label"], style=self._style(e["label"])), span,
                           f"{e['confidence']:.2f}", f"{e['latency_s']:.3f}")
        return Group(status, events)

    def _style(self, label: str) -> str:
        return STYLES[zlib.crc32(label.encode()) % len(STYLES)]  # stable across runs, unlike hash()
