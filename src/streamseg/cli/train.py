"""`streamseg train` and `streamseg test`.

One process:         streamseg train -D synth -M mstcn -E quick
N processes, 1 node: streamseg train ... --devices N   (re-launches itself under torchrun)
                     tools/run_singlenode.sh train N -D synth -M mstcn -E quick
Multi-node:          tools/run_multinode.sh train GPUS_PER_NODE NUM_NODES NODE_RANK MASTER_ADDR PORT ...
SLURM:               tools/slurm_train.sbatch (srun starts one task per GPU)
On a machine without GPUs, "devices" are CPU processes talking over gloo.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn
from pathlib import Path


from ..config import ConfigError
from .common import add_config_args, load_run_params, make_console, print_metrics

console = make_console()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train, then test the best checkpoint", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--new", action="store_true", help="start a fresh version instead of resuming")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--devices", type=int, default=1, help="processes per node (GPUs, or CPU processes)")
    p.add_argument("--num-nodes", type=int, default=1)
    add_telegram_args(p)
    p.set_defaults(func=run_train)

    t = sub.add_parser("test", help="score a trained run's checkpoint on the test split")
    add_config_args(t)
    t.add_argument("--version", type=int, default=None, help="run version (default: newest)")
    t.add_argument("--ckpt", default="best",
                   help="best, last, a checkpoint path, or none: no run, the model as its config builds it with "
                        "-o model.weights=PATH (e.g. an official MS-TCN / MS-TCN++ / ASFormer checkpoint); "
                        "results in <root>/<dataset>/<model>_<exp>/weights_<file stem>/")
    t.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    t.add_argument("--protocol", choices=["mstcn", "asformer"], default="mstcn",
                   help="F1 protocol: mstcn (MS-TCN/C2F-TCN eval.py, default) or asformer (MS-TCN++, ASFormer, "
                        "DiffAct, ASRF eval.py: the final segment ends one frame early); see docs/metrics.md")
    add_telegram_args(t, preview=False)
    t.set_defaults(func=run_test)


def _test_weights(args: argparse.Namespace, configs, params, exp_dir: Path) -> int:
    """`streamseg test --ckpt none -o model.weights=PATH`: score a state dict without a training run."""
    from ..data.errors import DataError
    from ..engine.rundir import write_json
    from ..engine.runner import test_weights
    from ..models.checkpoint import WeightsError

    weights = getattr(params.model, "weights", None)
    out = exp_dir / f"weights_{Path(weights).stem if weights else 'none'}"
    try:
        metrics = test_weights(configs, params, out, _accelerator(args.accelerator), extra_callbacks=_telegram(args),
                               protocol=args.protocol)
    except (ConfigError, DataError, WeightsError) as e:
        raise SystemExit(f"error: {e}") from None
    write_json(out / "metrics.json", metrics)
    print_metrics(console, metrics, title=f"{configs.dataset_name} / {configs.model_name}_{configs.exp_name} "
                                          f"(weights {Path(weights).name})")
    console.print(f"results: {out}")
    return 0


def add_telegram_args(p: argparse.ArgumentParser, preview: bool = True) -> None:
    p.add_argument("-B", "--telegram", type=int, default=None, metavar="N",
                   help="report progress to Telegram with the [TelegramN] section of --telegram-keys "
                        "(or STREAMSEG_TELEGRAM_TOKEN / _CHAT_ID); see docs/telegram.md")
    p.add_argument("--telegram-keys", default="tools/key.ini", help="key file (default: tools/key.ini)")
    p.add_argument("--telegram-every", type=int, default=10, help="epochs between progress reports")
    if preview:  # commands that train: the input preview at the start of training
        p.add_argument("--no-telegram-preview", dest="telegram_preview", action="store_false",
                       help="do not send the animated preview of augmented training chunks at the start")


def _telegram(args: argparse.Namespace) -> list:
    if args.telegram is None:
        return []
    from ..integrations.telegram import telegram_callback_from_cli

    cb = telegram_callback_from_cli(args.telegram, args.telegram_keys, every_n_epochs=args.telegram_every,
                                    preview=getattr(args, "telegram_preview", False))
    return [cb] if cb is not None else []


def _accelerator(value: str) -> str:
    if value != "auto":
        return value
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _relaunch_under_torchrun(devices: int) -> int:
    """Run this same command as `devices` processes with torchrun (standalone, one node)."""
    import subprocess

    cmd = [sys.executable, "-m", "streamseg.cli.torchrun", "--standalone", f"--nproc_per_node={devices}",
           "-m", "streamseg.cli.main", *sys.argv[1:]]
    return subprocess.call(cmd)


def _fail(error: object, same_on_every_rank: bool) -> NoReturn:
    """Exit with code 1 and `error: ...`. An error every rank finds identically (a config error, the
    dataset report, which is broadcast) is printed by rank 0 alone, so N processes do not print it N times."""
    import torch.distributed

    from ..engine import dist

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # tear the process group down before the interpreter does: left to exit, its C++ threads can
        # abort the process ("terminate called without an active exception", SIGABRT instead of exit 1)
        torch.distributed.destroy_process_group()
    if same_on_every_rank and not dist.detect_launch().is_zero:
        raise SystemExit(1)
    raise SystemExit(f"error: {error}")


def run_train(args: argparse.Namespace) -> int:
    from ..engine import dist
    from ..engine.runner import Hardware, train_and_test

    world = args.devices * args.num_nodes
    if world > 1 and not dist.launched_by_launcher():
        if args.num_nodes > 1:
            raise SystemExit("multi-node runs need a launcher: use tools/run_multinode.sh or SLURM (srun)")
        return _relaunch_under_torchrun(args.devices)
    try:
        configs, params, applied = load_run_params(args)
    except ConfigError as e:
        _fail(e, same_on_every_rank=True)
    hw = Hardware(_accelerator(args.accelerator), args.devices, args.num_nodes)
    from ..data.errors import DataError
    from ..engine.checkpoint_io import CheckpointError, CheckpointWriteError
    from ..engine.datacheck import DatasetProblems
    from ..models.checkpoint import WeightsError

    try:
        run, metrics = train_and_test(configs, params, applied, args.root, hw, new=args.new,
                                      extra_callbacks=_telegram(args))
    except (ConfigError, DataError, CheckpointError, CheckpointWriteError, WeightsError, FloatingPointError) as e:
        # expected failures (bad config or data, damaged checkpoint, full disk, NaN loss): the message
        # names the file / step; a traceback would only bury it
        if isinstance(e, DatasetProblems):
            e = f"{e}\n(to use your own copy of the dataset: -o data.root=/path/to/it)"
        _fail(e, same_on_every_rank=isinstance(e, (str, ConfigError)))
    if dist.detect_launch().is_zero:
        print_metrics(console, metrics, title=f"{configs.dataset_name} / {configs.model_name}_{configs.exp_name} (test)")
        console.print(f"run directory: {run.path}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from ..engine.rundir import experiment_dir, versions, write_json
    from ..engine.runner import test_checkpoint

    try:
        configs, params, _ = load_run_params(args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    exp_dir = experiment_dir(args.root, configs.dataset_name, configs.model_name, configs.exp_name)
    if args.ckpt == "none":
        return _test_weights(args, configs, params, exp_dir)
    found = versions(exp_dir)
    if not found:
        raise SystemExit(f"error: no runs in {exp_dir}; train first")
    version = args.version if args.version is not None else found[-1]
    run_path = exp_dir / f"version_{version}"
    from ..data.errors import DataError
    from ..engine.checkpoint_io import CheckpointError, find_checkpoint

    try:
        ckpt = find_checkpoint(run_path, args.ckpt)  # a file, or a DeepSpeed run's folder
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    from ..models.checkpoint import WeightsError

    try:
        metrics = test_checkpoint(configs, run_path, ckpt, _accelerator(args.accelerator), args.override,
                                  extra_callbacks=_telegram(args), protocol=args.protocol)
    except (ConfigError, DataError, CheckpointError, WeightsError) as e:
        raise SystemExit(f"error: {e}") from None
    write_json(run_path / "metrics.json", metrics)
    print_metrics(console, metrics, title=f"{configs.dataset_name} / {configs.model_name}_{configs.exp_name} ({ckpt.name})")
    return 0
