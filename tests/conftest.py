"""Shared fixtures: a small synthetic dataset (features only) generated once per test session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tiny settings that keep a train+test run to seconds on 2 CPU cores.
TINY = [
    "-o", "train.epochs=2",
    "-o", "model.num_stages=2",
    "-o", "model.num_layers=3",
    "-o", "model.num_maps=8",
    "-o", "data.num_videos=8",
    "-o", "data.with_videos=false",
]


@contextlib.contextmanager
def _torch_threads(n: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Tiny models run faster on one thread; on a shared CPU, OpenMP's spinning threads stall them (~20x).
# A test file opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")` (or the module-scoped one).
@pytest.fixture
def one_torch_thread():
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_torch_thread_per_module():
    with _torch_threads(1):
        yield


@pytest.fixture(scope="session", autouse=True)
def private_video_scan_cache(tmp_path_factory):
    """Video scans (`streamseg.data.video_scan`) are cached under $XDG_CACHE_HOME: this session's own
    folder (inherited by the CLI subprocesses), never the user's ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from streamseg.data.synth import SynthSpec, ensure

    root = tmp_path_factory.mktemp("data") / "synth"
    ensure(root, SynthSpec(num_videos=8, with_videos=False))
    return root


def streamseg(*args: str, cwd: Path = REPO, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "streamseg.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def synth_video_root(tmp_path_factory) -> Path:
    """6 synthetic videos with mp4 files (64x64, 15 fps) for the streaming tests."""
    from streamseg.data.synth import SynthSpec, ensure

    root = tmp_path_factory.mktemp("data") / "synth_video"
    ensure(root, SynthSpec(num_videos=6, with_videos=True, min_frames=60, max_frames=140))
    return root


# Tiny end-to-end streaming settings: 16x16 frames, chunks of 8 sampled frames.
TINY_STREAM = [
    "-o", "train.epochs=1",
    "-o", "train.chunk_size=8",
    "-o", "data.num_videos=6",
    "-o", "data.frame_size=16,16",
    "-o", "model.frame_size=16,16",
    "-o", "data.min_frames=60",
    "-o", "data.max_frames=140",
]


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.gpu` tests run only where CUDA is available (CI has none; the GPU machine does)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
