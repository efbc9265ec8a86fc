"""Arguments and output shared by the commands."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config import ConfigSet, RunParams, load_configs, resolve_params


# Rich lays tables out for 80 columns when stdout is not a terminal, so a piped or logged table folds
# long values (a trial's overrides) across lines. Piped output gets this width unless COLUMNS says otherwise.
PIPED_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    """The commands' console: the terminal's width on a terminal, `COLUMNS` or `PIPED_WIDTH` when piped."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    return Console(stderr=stderr, width=width)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", "--dataset", required=True, help="dataset config: a name in dataset_configs/ or a .py path")
    p.add_argument("-M", "--model", required=True, help="model config: a name in model_configs/ or a .py path")
    p.add_argument("-E", "--exp", required=True, help="experiment: exp_configs/<dataset>/<model>_<exp>.py, or a .py path")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. -o train.epochs=10 (repeatable)")
    p.add_argument("-R", "--root", default="experiments", help="experiments root (default: ./experiments)")
    p.add_argument("--config-root", default=None,
                   help="a folder with your own dataset_configs/ model_configs/ exp_configs/, searched first")


def load_run_params(args: argparse.Namespace) -> tuple[ConfigSet, RunParams, dict[str, Any]]:
    configs = load_configs(args.dataset, args.model, args.exp, args.config_root)
    params, applied = resolve_params(configs, args.override)
    return configs, params, applied


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def print_metrics(console: Console, metrics: dict[str, Any], title: str) -> None:
    """The results table: Acc, Edit, F1@{10,25,50} in percent, and the algorithmic latency."""
    table = Table(title=title)
    for col in ("videos", "Acc", "Edit", "F1@10", "F1@25", "F1@50", "latency"):
        table.add_column(col, justify="right")
    lat = metrics.get("latency") or {}
    lat_s = f"{lat['frames']} fr / {lat['seconds']} s" if lat.get("online") else "offline"
    table.add_row(
        str(metrics.get("num_videos", "-")),
        *(_fmt(metrics.get(k)) for k in ("acc", "edit", "f1@10", "f1@25", "f1@50")),
        lat_s,
    )
    console.print(table)
