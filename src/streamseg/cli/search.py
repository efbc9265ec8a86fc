"""`streamseg search`: hyper-parameter / architecture search over the experiment's `search_space(trial)`.

    streamseg search -D synth -M mstcn -E quick --trials 20                       # SQLite in the study folder
    streamseg search ... --trials 50 --storage postgresql://user:pw@db:5432/optuna   # run on every machine
    streamseg search ... --trials 50 --storage journal:/shared/optuna.journal        # shared filesystem
    streamseg search ... --objective f1@50 --cost flops                              # Pareto front
    streamseg search ... --objective f1@50 --cost params --max-cost 2e5              # budget as a constraint
    streamseg search ... --report                                                    # table and plots only
    streamseg search ... --trials 4 --devices 2                                      # each trial a 2-process DDP run
    streamseg search ... --trials 20 --backend nni                                   # NNI's manager, TPE tuner
    streamseg search -D synth -M memtcn -E quick --trials 10 --backend nni --nas     # NNI NAS, Random strategy

Every worker runs the same command; together they run `--trials` trials (complete or pruned). Each
trial trains on the train split and is scored on the validation split (never test); the best trial's
`streamseg train ... -o ...` command is printed. Study folder:
<root>/<dataset>/<model>_<exp>/search/<study>/ (study.db, trials/, plots/, best.json). See docs/search.md.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .common import make_console

from ..config import ConfigError, load_configs, redact, resolve_params

console = make_console()
METRICS = ("acc", "edit", "f1@10", "f1@25", "f1@50")
EXIT_INCOMPLETE = 3  # a worker ended with fewer finished trials in the study than --trials (docs/search.md)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..search.defaults import GRACE_S, HEARTBEAT_S, MAX_RETRY
    from .common import add_config_args
    from .train import add_telegram_args

    p = sub.add_parser("search", help="hyper-parameter / architecture search (Optuna, or NNI)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--trials", type=int, required=True, help="trials of the whole study (complete or pruned)")
    p.add_argument("--study", default=None, help="study name (default: <dataset>-<model>_<exp>)")
    p.add_argument("--storage", default=None,
                   help="sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB or journal:PATH "
                        "(default: sqlite study.db in the study folder)")
    p.add_argument("--objective", choices=METRICS, default=None,
                   help="validation metric to maximise (default: the experiment's train.monitor)")
    p.add_argument("--cost", choices=("params", "flops", "latency"), default=None,
                   help="a cost to minimise as a second objective (or, with --max-cost, a constraint)")
    p.add_argument("--max-cost", type=float, default=None, help="budget on --cost: one objective, cost <= budget")
    p.add_argument("--sampler", choices=("tpe", "random", "nsga2"), default="tpe")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed (default: random; give each concurrent worker its own)")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--devices", type=int, default=1, help="processes per trial (>1: a DDP run per trial)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, help="seconds between heartbeats of a running trial")
    p.add_argument("--grace", type=int, default=GRACE_S,
                   help="seconds without a heartbeat after which a trial's worker is taken as dead")
    p.add_argument("--max-retry", type=int, default=MAX_RETRY, help="re-runs of a dead worker's trial")
    p.add_argument("--report", action="store_true", help="print the table and write the plots; run no trial")
    p.add_argument("--backend", choices=("optuna", "nni"), default="optuna",
                   help="optuna (default), or nni: NNI's experiment manager (pip install 'streamseg[nni]')")
    p.add_argument("--nas", action="store_true",
                   help="with --backend nni: architecture search over the model.* parameters of search_space "
                        "(NNI's Random strategy, trials in this process)")
    p.add_argument("--concurrency", type=int, default=1, help="--backend nni: trials run at the same time")
    p.add_argument("--nni-port", type=int, default=None,
                   help="--backend nni: port of NNI's web server, which listens on ALL interfaces (default: a free one)")
    add_telegram_args(p, preview=False)
    p.set_defaults(func=run_search, telegram_every=1)


def _fixed_overrides(args: argparse.Namespace, configs: Any) -> tuple[list[str], str]:
    """The command line's -o items with the objective as `train.monitor`; returns (items, metric)."""
    fixed = list(args.override)
    params, applied = resolve_params(configs, fixed)
    if params.train.select_on != "val":
        raise ConfigError("train.select_on must be 'val' for a search: trials are compared on validation scores")
    metric = args.objective or params.train.monitor
    if args.objective and "train.monitor" in applied and applied["train.monitor"] != args.objective:
        raise ConfigError(f"--objective {args.objective} contradicts -o train.monitor={applied['train.monitor']}")
    if metric not in METRICS:
        raise ConfigError(f"train.monitor = {metric!r}: expected one of {list(METRICS)}")
    if "train.monitor" not in applied:
        fixed.append(f"train.monitor={metric}")
    return fixed, metric


def run_search(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from ..engine.rundir import experiment_dir
    from ..engine.runner import Hardware
    from ..search import Objective, SearchSpec, StudyConfig, open_storage, open_study, print_report, run_worker
    from ..search.report import save_plots, write_best
    from ..search.study import DONE, count
    from .train import _accelerator

    logging.getLogger("optuna").setLevel(logging.INFO)
    if args.max_cost is not None and args.cost is None:
        raise SystemExit("error: --max-cost needs --cost (params, flops or latency)")
    try:
        configs = load_configs(args.dataset, args.model, args.exp, args.config_root)
        fixed, metric = _fixed_overrides(args, configs)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if args.backend == "nni":
        from .search_nni import run_nni

        return run_nni(args, configs, fixed, metric, console)
    if args.nas or args.concurrency != 1 or args.nni_port is not None:
        raise SystemExit("error: --nas, --concurrency and --nni-port need --backend nni (the Optuna backend searches "
                         "architecture parameters such as model.num_layers as ordinary search_space keys; run more "
                         "workers for concurrency)")
    name = args.study or f"{configs.dataset_name}-{configs.model_name}_{configs.exp_name}"
    study_dir = experiment_dir(args.root, configs.dataset_name, configs.model_name, configs.exp_name) / "search" / name
    try:
        storage, url = open_storage(args.storage, study_dir, args.heartbeat, args.grace, args.max_retry)
    except ValueError as e:  # a malformed --storage or missing driver; the message shows the URL redacted
        raise SystemExit(f"error: {e}") from None
    except Exception as e:  # noqa: BLE001 (a refused password, a server down: one line, redacted)
        shown = redact(args.storage or str(study_dir))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SystemExit(f"error: --storage {shown}: cannot open the study storage: {redact(first)}") from None
    multi = args.cost is not None and args.max_cost is None
    cfg = StudyConfig(
        name=name,
        directions=["maximize", "minimize"] if multi else ["maximize"],
        defining={"objective": metric, "cost": args.cost, "max_cost": args.max_cost, "fixed_overrides": sorted(fixed),
                  "configs": [configs.dataset_name, configs.model_name, configs.exp_name]},
        sampler=args.sampler, seed=args.seed, pruner=args.pruner, max_cost=args.max_cost,
    )
    try:
        study = open_study(storage, cfg)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    console.print(f"study {name!r} in {redact(url)}; folder {study_dir}")
    if not args.report:
        if multi and args.pruner != "none":
            console.print("note: no pruning with two objectives (Optuna cannot prune multi-objective trials)")
        hw = Hardware(_accelerator(args.accelerator), args.devices, 1)
        spec = SearchSpec(args.dataset, args.model, args.exp, args.config_root, fixed, study_dir, args.root, hw,
                          cost=args.cost, multi_objective=multi, max_cost=args.max_cost,
                          prune=not multi)
        notify = _telegram_progress(args, metric)
        try:
            ran = run_worker(study, Objective(spec, configs), args.trials, on_trial_end=notify, note=console.print)
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        console.print(f"this worker ran {ran} trial(s)")
        if notify is not None:
            notify(study, None)
    print_report(console, study, metric, args.cost)
    write_best(study, study_dir / "best.json")
    for path in save_plots(study, study_dir / "plots", metric, args.cost):
        console.print(f"plot: {path}")
    done = count(study, DONE)
    if done < args.trials:
        states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        counts = ", ".join(f"{n} {k}" for k, n in states.items() if n)
        if args.report:
            console.print(f"study {name!r} is incomplete: {done} of {args.trials} trials finished ({counts})")
            return 0
        console.print(f"[bold yellow]warning[/bold yellow]: study {name!r} is incomplete: {done} of {args.trials} "
                      f"trials finished (complete or pruned; {counts}); failed trials do not count. Run the "
                      f"command again to continue it (exit code {EXIT_INCOMPLETE})")
        return EXIT_INCOMPLETE
    return 0


def _telegram_progress(args: argparse.Namespace, metric: str):
    """A trial-end hook that sends a search report every `--telegram-every` finished trials (None: off).
    Called with trial None at the end for the final report."""
    if args.telegram is None:
        return None
    from ..integrations.telegram import telegram_notifier_from_cli
    from ..search.report import best_trials
    from ..search.study import DONE, count

    notifier = telegram_notifier_from_cli(args.telegram, args.telegram_keys, None)
    if notifier is None:
        return None

    def notify(study, trial) -> None:
        done = count(study, DONE)
        if trial is not None and done % max(1, args.telegram_every) != 0:
            return
        best = best_trials(study)
        top = best[0] if best else None
        params = dict(item.split("=", 1) for item in top.user_attrs.get("overrides", [])) if top else {}
        notifier.search_progress(study.study_name, done, args.trials, f"val {metric}",
                                 top.values[0] if top else None, top.number if top else None, params,
                                 finished=trial is None)

    return notify
