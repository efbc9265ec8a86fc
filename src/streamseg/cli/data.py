"""`streamseg data synth` (generate the built-in synthetic dataset), `streamseg data check ROOT` and
`streamseg data import --segments TABLE --videos DIR --root ROOT` (the layout from a table of segments)."""

from __future__ import annotations

import argparse
import time

from .common import make_console

console = make_console()


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
    c.add_argument("--features-dir", default="features",
                   help="folder under ROOT with the <video>.npy files (default: features)")
    c.add_argument("--length-tolerance", type=int, default=None,
                   help="allowed |feature frames - label frames| (default: the checker's)")
    c.set_defaults(func=run_check)

    i = dsub.add_parser("import", help="build a dataset folder from a CSV/TSV of segments and a folder of videos",
                        description="Rows: video, start, end, label (or a header naming these columns). Writes "
                                    "ROOT/Videos (links), groundTruth/, mapping.txt and splits/, then runs data "
                                    "check. Every problem of the table is listed with its line; nothing is "
                                    "written then. Features: streamseg extract ROOT ... afterwards.")
    i.add_argument("--segments", required=True, help="CSV (or .tsv) of segments: video, start, end, label")
    i.add_argument("--videos", required=True, help="folder of the videos (<video>.mp4 | .avi)")
    i.add_argument("--root", required=True, help="the new dataset folder")
    i.add_argument("--units", choices=("seconds", "frames"), default="seconds",
                   help="start/end in seconds (default) or 0-based frames, end exclusive")
    i.add_argument("--background", default="background", help="label of frames no segment covers")
    i.add_argument("--folds", type=int, default=4, help="k splits by video, each testing one fold (default 4)")
    i.add_argument("--train-list", default=None, help="instead of folds: a file of training video names")
    i.add_argument("--test-list", default=None, help="with --train-list: a file of test video names")
    i.add_argument("--copy", action="store_true", help="copy the videos instead of linking them")
    i.add_argument("--seed", type=int, default=0, help="shuffle of the videos into folds")
    i.set_defaults(func=run_import)


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
    notes: list[str] = []
    problems = check_dataset(args.root, splits=args.split, notes=notes, features_dir=args.features_dir, **kwargs)
    if notes:  # footage that is fine but decoded with care: rotated, interlaced, variable rate, trimmed
        console.print(f"{len(notes)} note(s):", markup=False, highlight=False)
        console.print("\n".join(f"  {n}" for n in notes), markup=False, highlight=False, soft_wrap=True)
    if problems:
        console.print(format_problems(problems, args.root), style="red", markup=False, highlight=False,
                      soft_wrap=True)
        return 1
    console.print(f"[green]{args.root}: no problems found[/green]")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.check import check_dataset, format_problems
    from ..data.errors import DataError
    from ..data.importer import import_segments

    lists = None
    if (args.train_list is None) != (args.test_list is None):
        console.print("[red]data import: give both --train-list and --test-list, or neither[/red]")
        return 2
    if args.train_list is not None:
        lists = tuple([ln.strip().removesuffix(".txt") for ln in Path(f).read_text().splitlines() if ln.strip()]
                      for f in (args.train_list, args.test_list))
    try:
        summary = import_segments(args.segments, args.videos, args.root, args.units, args.background, args.folds,
                                  lists, args.seed, args.copy)
    except (DataError, ValueError) as e:
        console.print(f"data import: {e}", markup=False, highlight=False, style="red", soft_wrap=True)
        return 1
    gaps = sum(summary.gaps.values())
    console.print(f"{args.root}: {len(summary.videos)} videos, {sum(summary.videos.values())} frames, "
                  f"{len(summary.classes)} classes, {summary.folds} split(s); {gaps} frames in "
                  f"{len(summary.gaps)} video(s) filled with {args.background!r}", markup=False, soft_wrap=True)
    # features come later (streamseg extract): check everything else now
    features = str(Path(args.root) / "features")
    problems = [p for p in check_dataset(args.root)
                if not (p.path == features or p.path.startswith(features + "/"))]
    if problems:
        console.print(format_problems(problems), markup=False, highlight=False, soft_wrap=True)
        return 1
    console.print(f"data check: no problems (features: run `streamseg extract {args.root} ...` next)",
                  markup=False, soft_wrap=True)
    return 0
