"""The dashboard of `streamseg serve` in a real headless Chromium (Debian's chromium-headless-shell): after
a stream has run, its row shows the status and last label, and its timeline bar, read from a screenshot,
is the stream's segments in order, each as wide as its share of the frames. The browser is driven over
its DevTools protocol (a WebSocket), so no WebDriver or Playwright download is needed."""

from __future__ import annotations

import base64
import colorsys
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from streamseg.client import Client
from streamseg.deploy.server import ServerOptions, ServerThread

from .test_infer import varying_streamer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
WIDTH, HEIGHT = 1000, 240


def _browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        if os.environ.get("STREAMSEG_REQUIRE_CHROMIUM"):
            pytest.fail(f"none of {BROWSERS} is installed (apt-get install chromium-headless-shell)")
        pytest.skip(f"needs a headless Chromium ({' or '.join(BROWSERS)}; Debian: chromium-headless-shell)")
    return found


class _Chromium:
    """A headless Chromium driven over the DevTools protocol (its WebSocket; no driver to download)."""

    def __init__(self, browser: str) -> None:
        self.proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)  # Debian's launcher is a script: kill its group
        for line in self.proc.stderr:  # it says where its DevTools endpoint listens
            if line.startswith("DevTools listening on "):
                port = line.split("127.0.0.1:", 1)[1].split("/", 1)[0]
                break
        else:
            raise RuntimeError(f"{browser} exited ({self.proc.wait()}) without a DevTools endpoint")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.calls = 0

    def call(self, method: str, **params):
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while (reply := json.loads(self.ws.recv(timeout=60))).get("id") != self.calls:
            pass  # an event, not our answer
        assert "error" not in reply, reply
        return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.stack.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the launcher script and the browser under it
        self.proc.wait()


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc)."""
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return [pid]
    return [pid] + [d for c in children for d in _descendants(int(c))]


def _running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _class_colours(k: int) -> np.ndarray:
    """The dashboard's colour of each class: hsl(k * 360 / K, 70%, 50%), as RGB 0-255."""
    return np.array([colorsys.hls_to_rgb(i / k, 0.5, 0.7) for i in range(k)]) * 255


def _bar_runs(shot: np.ndarray, colours: np.ndarray) -> list[tuple[int, int]]:
    """(class, width in pixels) runs along the screenshot row with the most class-coloured pixels (the bar)."""
    dist = np.linalg.norm(shot[:, :, None, :].astype(float) - colours[None, None], axis=-1)  # (H, W, K)
    cls = np.where(dist.min(-1) < 12, dist.argmin(-1), -1)
    row = cls[int(np.argmax((cls >= 0).sum(1)))]
    runs: list[list[int]] = []
    for c in row[row >= 0]:  # anti-aliased pixels between segments are skipped
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([int(c), 1])
    return [(c, n) for c, n in runs]


def test_dashboard_shows_each_streams_label_and_timeline(synth_video_root) -> None:
    browser = _browser()
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    streamer = varying_streamer(video)
    with ServerThread(streamer, ServerOptions(chunk=6)) as server, Client(server.url) as c:
        sid = c.add(str(video), name="cam")
        final = c.wait(sid)
        events = c.segments(sid)
        chromium = _Chromium(browser)
        try:
            chromium.call("Page.navigate", url=server.url + "/")
            deadline = time.monotonic() + 60
            while chromium.evaluate("Number(document.body?.dataset.polled || 0)") < 2:  # twice: all drawn
                assert time.monotonic() < deadline, "the dashboard never polled /streams"
                time.sleep(0.1)
            html = chromium.evaluate("document.documentElement.outerHTML")
            png = base64.b64decode(chromium.call("Page.captureScreenshot", format="png")["data"])
            family = _descendants(chromium.proc.pid)
            assert len(family) > 1  # the launcher and the browser's processes
        finally:
            chromium.close()
    deadline = time.monotonic() + 10  # the browser itself is gone, not only its launcher script
    while alive := [p for p in family if _running(p)]:
        assert time.monotonic() < deadline, f"browser processes left running: {alive}"
        time.sleep(0.1)
    assert 'id="s-cam"' in html and ">ended<" in html and f">{events[-1]['label']}<" in html
    assert html.count('class="timeline"') == 1 and html.count("<div title=") == len(events)

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    runs = _bar_runs(image, _class_colours(len(streamer.meta.class_names)))
    assert [c for c, _ in runs] == [e["label_id"] for e in events]  # the segments, in order
    px_per_frame = sum(n for _, n in runs) / final["frames"]
    for (_, width), e in zip(runs, events):
        assert abs(width - (e["end"] - e["start"]) * px_per_frame) <= 2  # as wide as its frames (±2 px)
