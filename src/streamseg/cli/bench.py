"""`streamseg bench -D DATASET -M MODEL -E EXP [--device cpu|cuda] [--streams S] [--chunk T]
[--precision fp32|bf16|fp16]`: parameters, FLOPs per frame and per forward (attention counted),
model-only throughput and per-chunk latency (p50/p99) for S concurrent streams, end-to-end throughput
from the dataset's videos (PyAV decode + resize + normalise + model), peak memory.

Printed as a table and written as JSON (default bench/<dataset>_<model>_<exp>_<device>_s<S>_t<T>_<precision>.json,
with _onnxruntime before .json for that backend) with the environment (versions, CPU, threads, GPU).
Warm-up steps first, then --repeats runs of --steps steps; throughput is the median run. The end-to-end
part runs at most as many steps (warm-up + steps x repeats) and at most --e2e-max-frames sampled frames.
Each phase shows a progress bar with the time left on stderr. The model is freshly initialised (speed does
not depend on weights).

--backend onnxruntime times the same model exported to ONNX (state as graph inputs/outputs, parity
checked against PyTorch; or --onnx, an existing export of this experiment's model) through ONNX Runtime,
model-only and end to end, fp32; --threads sets its intra-op threads. Needs the `export` extra.

    streamseg bench -D synth -M memtcn -E quick --streams 4 --chunk 32
    streamseg bench -D synth -M tsm_memtcn -E chunk32 --streams 4 --threads 2
    streamseg bench -D synth -M tsm_memtcn -E chunk32 --backend onnxruntime --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ..config import ConfigError
from .common import load_run_params, make_console

console = make_console()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="params, FLOPs, throughput and latency of a model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-D", "--dataset", default="synth", help="dataset config (input shape, classes, test videos)")
    p.add_argument("-M", "--model", required=True, help="model config: a name in model_configs/ or a .py path")
    p.add_argument("-E", "--exp", required=True, help="experiment config (chunk size, frame size, ...)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. -o data.num_videos=6 (repeatable)")
    p.add_argument("--config-root", default=None, help="a folder with your own config folders, searched first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--streams", type=int, default=1, help="concurrent streams S (the batch)")
    p.add_argument("--chunk", type=int, default=None, help="sampled frames per chunk T (default: train.chunk_size, or 32)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="eager PyTorch, or the ONNX export through ONNX Runtime (fp32)")
    p.add_argument("--onnx", default=None, help="with --backend onnxruntime: an existing .onnx export to time "
                                                "(default: export the experiment's model to a temporary folder)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (throughput: their median)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end (decode + model) benchmark")
    p.add_argument("--e2e-max-frames", type=int, default=2000, help="end to end: stop after this many sampled frames (or the steps above)")
    p.add_argument("--out", default=None, help="JSON output path")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..deploy.bench import run_benchmark

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        configs, params, _ = load_run_params(args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if args.streams < 1 or (args.chunk is not None and args.chunk < 1):
        raise SystemExit(f"error: --streams and --chunk must be >= 1, got {args.streams}, {args.chunk}")
    if args.onnx is not None and args.backend != "onnxruntime":
        raise SystemExit("error: --onnx needs --backend onnxruntime")
    if args.backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"error: --backend onnxruntime needs the export extra ({e.name} is missing): "
                             "pip install -e '.[export]'") from None
    from ..deploy.onnx_export import ExportError, ParityError

    try:
        with _ProgressBar() as progress:
            result = run_benchmark(configs, params, device=args.device, streams=args.streams, chunk=args.chunk,
                                   precision=args.precision, warmup=args.warmup, steps=args.steps,
                                   repeats=args.repeats, end_to_end=not args.no_e2e,
                                   e2e_max_frames=args.e2e_max_frames, backend=args.backend, onnx_path=args.onnx,
                                   threads=args.threads, progress=progress)
    except (ValueError, FileNotFoundError, ExportError, ParityError) as e:
        raise SystemExit(f"error: {e}") from None
    result["command"] = "streamseg bench " + " ".join(_argv(args))
    s = result["settings"]
    suffix = "" if s["backend"] == "torch" else f"_{s['backend']}"
    out = Path(args.out or f"bench/{configs.dataset_name}_{configs.model_name}_{configs.exp_name}_"
                           f"{s['device'].replace(':', '')}_s{s['streams']}_t{s['chunk']}_{s['precision']}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_bench(result)
    console.print(f"wrote {out}")
    return 0


class _ProgressBar:
    """`run_benchmark`'s progress as a rich bar per phase on stderr, with the time left; on a pipe, one
    line per phase when it ends (rich draws nothing live there)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("left"), TimeRemainingColumn(), console=make_console(stderr=True),
                             transient=False)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "_ProgressBar":
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self._tasks:
            self._tasks[phase] = self._bar.add_task(f"{phase} steps", total=total or None)
        self._bar.update(self._tasks[phase], completed=done)


def _argv(args: argparse.Namespace) -> list[str]:
    import sys

    return sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else []


def print_bench(r: dict) -> None:
    s, c, m, e = r["settings"], r["cost"], r["model_only"], r.get("end_to_end")
    table = Table(title=f"{r['dataset']} / {r['model']}_{r['exp']}: {s.get('backend', 'torch')}, {s['device']}, "
                        f"{s['precision']}, {s['streams']} streams x {s['chunk']} frames")
    for col in ("params", "GFLOPs/frame", "GFLOPs/forward", "model fps", "p50 ms", "p99 ms", "e2e fps", "peak MB"):
        table.add_column(col, justify="right")
    peak = m.get("peak_cuda_allocated_mb", m.get("peak_rss_mb"))
    table.add_row(f"{c['params'] / 1e6:.2f}M", f"{c['flops_per_frame'] / 1e9:.4f}", f"{c['flops_per_forward'] / 1e9:.3f}",
                  f"{m['frames_per_s']:.0f}", f"{m['latency_ms_p50']:.2f}", f"{m['latency_ms_p99']:.2f}",
                  f"{e['frames_per_s']:.0f}" if e else "-", f"{peak:.0f}")
    console.print(table)
