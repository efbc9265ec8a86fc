"""`streamseg data synth` (generate the built-in synthetic dataset) and `streamseg data check ROOT`."""

from __future__ import annotations

import argparse
import time

from rich.console import Console

console = Console()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    s = dsub.add_parser("synth", help="generate the built-in synthetic dataset (standard TAS layout)")
    s.add_argument("--root", default="data/synth", help="output folder (default: data/synth)")
    s.add_argument("--num-videos", type=int, default=None, help="number of videos (default: the spec's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-videos", action="store_true", help="features and labels only, no mp4 files")
    s.add_argument("--size", default=None, metavar="WxH",
                   help="video frame size, e.g. 320x240 or 1280x720 (default: the spec's 64x64)")
    s.add_argument("--camera", action="store_true",
                   help="camera-like videos: textured scene, panning camera, sensor noise, H.264 (same labels)")
    s.add_argument("--min-frames", type=int, default=None, help="shortest video (default: the spec's)")
    s.add_argument("--max-frames", type=int, default=None, help="longest video (default: the spec's)")
    s.add_argument("--jobs", type=int, default=1, help="processes that render videos")
    s.set_defaults(func=run_synth)

    c = dsub.add_parser("check", help="validate a dataset folder; reports every problem at once")
    c.add_argument("root", help="dataset folder with features/, groundTruth/, splits/, mapping.txt")
    c.add_argument("--split", type=int, action="append", default=None, help="only these split numbers")
    c.add_argument("--length-tolerance", type=int, default=None,
                   help="allowed |feature frames - label frames| (default: the checker's)")
    c.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synth import SynthSpec, ensure

    kwargs = {"seed": args.seed, "with_videos": not args.no_videos, "camera": args.camera}
    for key in ("num_videos", "min_frames", "max_frames"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.size is not None:
        w, _, h = args.size.lower().partition("x")
        if not (w.isdigit() and h.isdigit()):
            console.print(f"[red]--size {args.size!r}: expected WxH, e.g. 320x240[/red]")
            return 2
        kwargs["width"], kwargs["height"] = int(w), int(h)
    t0 = time.time()
    try:
        spec = SynthSpec(**kwargs)
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    path = ensure(args.root, spec, jobs=args.jobs)
    console.print(f"synthetic dataset ready at {path} ({time.time() - t0:.1f} s)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset, format_problems

    kwargs = {}
    if args.length_tolerance is not None:
        kwargs["length_tolerance"] = args.length_tolerance
    problems = check_dataset(args.root, splits=args.split, **kwargs)
    if problems:
        console.print(f"[red]{len(problems)} problem(s) in {args.root}:[/red]")
        console.print(format_problems(problems), markup=False, highlight=False, soft_wrap=True)
        return 1
    console.print(f"[green]{args.root}: no problems found[/green]")
    return 0
