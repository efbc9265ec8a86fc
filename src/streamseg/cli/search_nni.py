"""`streamseg search --backend nni [--nas]`: the NNI side of `streamseg search` (see cli/search.py).

    streamseg search -D synth -M mstcn  -E quick --trials 20 --backend nni          # HPO, NNI's manager + TPE
    streamseg search -D synth -M memtcn -E quick --trials 10 --backend nni --nas    # NAS, NNI's Random strategy

Study folder: <root>/<dataset>/<model>_<exp>/search/<study>/ (nni/ for NNI's files, trials/, best.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import ConfigError

# options of `streamseg search` that only the Optuna backend has: (attribute, flag, default)
OPTUNA_ONLY = (("storage", "--storage", None), ("cost", "--cost", None), ("max_cost", "--max-cost", None),
               ("report", "--report", False), ("telegram", "-B/--telegram", None))


def check_args(args: argparse.Namespace) -> None:
    given = [flag for attr, flag, default in OPTUNA_ONLY if getattr(args, attr, default) != default]
    if given:
        raise SystemExit(f"error: {', '.join(given)}: Optuna backend only (NNI keeps its own experiment store "
                         "and has no cost objectives); see docs/search.md")
    if args.nas and args.devices > 1:
        raise SystemExit("error: --nas runs its trials in this process; --devices > 1 needs the HPO path "
                         "(--backend nni without --nas, or the Optuna backend)")


def run_nni(args: argparse.Namespace, configs: Any, fixed: list[str], metric: str, console: Console) -> int:
    from ..engine.rundir import experiment_dir
    from ..engine.runner import Hardware
    from ..search.nni_trial import NNISpec
    from .train import _accelerator

    check_args(args)
    kind = "nas" if args.nas else "nni"
    name = args.study or f"{configs.dataset_name}-{configs.model_name}_{configs.exp_name}-{kind}"
    study_dir = experiment_dir(args.root, configs.dataset_name, configs.model_name, configs.exp_name) / "search" / name
    hw = Hardware(_accelerator(args.accelerator), args.devices, 1)
    spec = NNISpec(args.dataset, args.model, args.exp, args.config_root, fixed, str(study_dir), args.root, hw)
    try:
        best = _nas(args, spec, configs, metric, console) if args.nas else _hpo(args, spec, configs, metric, console)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    from ..search.nni_hpo import write_json

    write_json(study_dir / "best.json", best)
    console.print(f"study folder: {study_dir}")
    return 0 if best else 1


def _hpo(args: argparse.Namespace, spec: Any, configs: Any, metric: str, console: Console) -> list[dict]:
    from ..search.nni_hpo import print_results, run_hpo

    results = run_hpo(spec, configs, args.trials, tuner=args.sampler, seed=args.seed, pruner=args.pruner,
                      concurrency=args.concurrency, port=args.nni_port, console=console)
    return print_results(console, results, metric, f"NNI study {Path(spec.study_dir).name}")


def _nas(args: argparse.Namespace, spec: Any, configs: Any, metric: str, console: Console) -> list[dict]:
    from rich.table import Table

    from ..search.nni_nas import best_trial, run_nas

    trials, _ = run_nas(spec, configs, args.trials, seed=args.seed)
    table = Table(title=f"NNI NAS {Path(spec.study_dir).name} (Random strategy): {len(trials)} architectures")
    for col in ("#", "state", f"val {metric}", "epochs", "architecture"):
        table.add_column(col)
    best = best_trial(trials)
    for t in trials:
        table.add_row(("* " if t is best else "") + str(t.number), t.status if not t.error else f"failed ({t.error})",
                      "-" if t.value is None else f"{t.value:.4g}", str(t.epochs), " ".join(t.overrides))
    console.print(table)
    if best is None:
        console.print("no architecture trained successfully")
        return []
    console.print(f"[bold]best architecture[/bold]: {best.sample}, val {metric} {best.value:.4g}")
    console.print(f"  re-run: {best.command}", soft_wrap=True)
    return [{"number": best.number, "values": [best.value], "cost": None, "architecture": best.sample,
             "overrides": best.overrides, "command": best.command}]
