"""What a search shows: a table of trials, the best trial(s) with the command that re-runs each, a
`best.json`, and PNG plots in `<study folder>/plots/` (optimisation history, parameter importances,
Pareto front for two objectives). The study itself stays in its storage, so optuna-dashboard opens it.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from .objective import ATTR_COMMAND, ATTR_COST, ATTR_OVERRIDES, ATTR_SEED, ATTR_SKIPPED
from .space import display_override

log = logging.getLogger(__name__)


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (feasible under a cost constraint), or the Pareto front for two objectives."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)
    try:
        return [study.best_trial]
    except ValueError:  # no complete (feasible) trial yet
        return []


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _state(t: FrozenTrial) -> str:
    skipped = t.user_attrs.get(ATTR_SKIPPED)
    return f"{t.state.name.lower()} ({skipped})" if skipped else t.state.name.lower()


def trials_table(study: optuna.Study, metric: str, cost: str | None) -> Table:
    """One row per trial: number, state, score(s), cost, epochs reported, seed, searched overrides, time."""
    best = {t.number for t in best_trials(study)}
    table = Table(title=f"study {study.study_name}: {len(study.trials)} trials")
    for col in ("#", "state", f"val {metric}", cost or "", "epochs", "seed", "overrides", "seconds"):
        if col == "overrides":  # folded, never cut: they are what a reader copies
            table.add_column(col, overflow="fold", ratio=1)
        elif col:
            table.add_column(col, justify="left" if col == "state" else "right")
    for t in study.get_trials(deepcopy=False):
        score = t.values[0] if t.values else (max(t.intermediate_values.values()) if t.intermediate_values else None)
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        row = [("* " if t.number in best else "") + str(t.number), _state(t), _fmt(score)]
        if cost:
            row.append(_fmt(t.user_attrs.get(ATTR_COST)))
        row += [str(len(t.intermediate_values)), _fmt(t.user_attrs.get(ATTR_SEED)),
                " ".join(map(display_override, t.user_attrs.get(ATTR_OVERRIDES, []))), _fmt(seconds)]
        table.add_row(*row)
    return table


def best_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """JSON-able best trial(s): number, values, cost, overrides, the re-run command."""
    return [
        {"number": t.number, "values": t.values, "cost": t.user_attrs.get(ATTR_COST),
         "seed": t.user_attrs.get(ATTR_SEED), "overrides": t.user_attrs.get(ATTR_OVERRIDES, []),
         "command": t.user_attrs.get(ATTR_COMMAND)}
        for t in best_trials(study)
    ]


def print_report(console: Console, study: optuna.Study, metric: str, cost: str | None) -> list[dict[str, Any]]:
    """The table, then the best trial(s) and their commands; returns `best_summary(study)`."""
    console.print(trials_table(study, metric, cost))
    states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    console.print("trials: " + ", ".join(f"{n} {k}" for k, n in states.items() if n))
    best = best_summary(study)
    if not best:
        console.print("no complete trial yet")
    title = "Pareto front (best score for its cost)" if len(study.directions) > 1 else "best trial"
    for b in best:
        console.print(f"[bold]{title}[/bold]: trial {b['number']}, values {b['values']}"
                      + (f", {cost} {_fmt(b['cost'])}" if cost else ""))
        console.print(f"  re-run: {b['command']}", soft_wrap=True)
    return best


def _save(fig: Any, path: Path) -> None:
    """Write atomically: several workers may plot the same study at the same time."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def save_plots(study: optuna.Study, out_dir: Path, metric: str, cost: str | None) -> list[Path]:
    """PNG plots of the study into `out_dir`; a plot that cannot be drawn yet (too few trials) is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = [f"val {metric}"] + ([cost] if multi and cost else [])
    jobs = {
        "history.png": lambda: ovm.plot_optimization_history(
            study, target=(lambda t: t.values[0]) if multi else None, target_name=names[0]),
        "importances.png": lambda: ovm.plot_param_importances(
            study, target=(lambda t: t.values[0]) if multi else None, target_name=names[0]),
    }
    if multi:
        jobs["pareto.png"] = lambda: ovm.plot_pareto_front(study, target_names=names)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, draw in jobs.items():
            if name == "importances.png" and (len(complete) < 2 or not any(t.params for t in complete)):
                continue
            if not complete:
                continue
            try:
                ax = draw()
            except (ValueError, RuntimeError) as e:  # e.g. importances of a parameter that never varied
                log.warning("plot %s skipped: %s", name, e)
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            _save(fig, out_dir / name)
            plt.close(fig)
            written.append(out_dir / name)
    return written


def write_best(study: optuna.Study, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(best_summary(study), indent=2) + "\n")
    os.replace(tmp, path)
