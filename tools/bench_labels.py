"""The cost of labelling one server step: `frame_labels` + `SegmentTracker.push` for every stream's chunk,
as `StreamPool`'s engine thread does after each model call, optionally against an older revision's code.

    python tools/bench_labels.py                          # 64 streams x 32 frames, 11 classes
    python tools/bench_labels.py --against 0584198        # the same, that commit's infer.py alternated with this one

Two label patterns: ``flicker`` (random logits: the label changes on most frames, as a random-weight
model's do, so a step closes ~2,000 segments) and ``smooth`` (one label for 5 chunks at a time, as a
trained model's). Each step's logits are the same for every implementation timed; with ``--against`` the
two alternate step by step (which goes first swaps each step), so a busy machine slows them alike, and
their events must be equal. Prints the median milliseconds per step.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def load_revision(rev: str) -> ModuleType:
    """``src/streamseg/deploy/infer.py`` as it was at git revision ``rev``, as its own module."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/streamseg/deploy/infer.py"],
                          check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench_labels_") as tmp:
        path = Path(tmp) / "infer_at_rev.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"streamseg.deploy.infer_at_{rev}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32, help="sampled frames per stream and step")
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--against", metavar="REV", help="also time infer.py of this git revision")
    args = ap.parse_args(argv)
    from streamseg.deploy import infer

    impls = {"this tree": infer}
    if args.against:
        impls[args.against] = load_revision(args.against)
    names = [str(k) for k in range(args.classes)]
    rng = np.random.default_rng(0)
    shape = (args.streams, args.classes, args.chunk)
    for pattern in ("flicker", "smooth"):
        trackers = {k: [m.SegmentTracker(f"s{i}", names, 30.0, lambda e: None) for i in range(args.streams)]
                    for k, m in impls.items()}
        seconds: dict[str, list[float]] = {k: [] for k in impls}
        for step in range(args.steps):
            if pattern == "flicker":
                logits = rng.normal(0, 1, shape).astype(np.float32)
            else:
                logits = rng.normal(0, 0.1, shape).astype(np.float32)
                logits[:, (step // 5) % args.classes] += 5
            order = list(impls.items())
            for key, module in order if step % 2 else order[::-1]:
                t = time.perf_counter()
                for row, tracker in zip(logits, trackers[key]):
                    tracker.push(*module.frame_labels(row, 1), t)
                seconds[key].append(time.perf_counter() - t)
        events = {k: [[(e["start"], e["end"], e["label_id"], e["confidence"]) for e in tr.events] for tr in trs]
                  for k, trs in trackers.items()}
        if len({repr(v) for v in events.values()}) != 1:
            raise SystemExit(f"{pattern}: the implementations' events differ")
        segments = sum(len(v) for v in next(iter(events.values())))
        print(f"{pattern}: {segments / args.steps:.0f} segments closed per step; ms per step (median of "
              f"{args.steps}): " + ", ".join(f"{k} {1e3 * float(np.median(v)):.2f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
