"""`train.strategy` / `train.zero_stage` (streamseg.engine.strategies): accepted by `-o`, refused when
invalid or when this machine cannot run them (before any work), and reaching the Trainer
(`runner._trainer`: the strategy object's type). DDP runs on the CPU here (and under torchrun with gloo
processes in tests/engine/test_distributed.py, whose runs take the default `train.strategy=ddp`); Lightning
2.6 refuses FSDP on any accelerator but CUDA and DeepSpeed needs CUDA, so their runs are `gpu` tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy

from streamseg.config import ConfigError, load_configs, resolve_params
from streamseg.engine import dist, runner
from streamseg.engine.batches import BatchKind
from streamseg.engine.rundir import RunDir
from streamseg.engine.strategies import check_strategy, replicated_weights

from ..conftest import TINY, streamseg

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _params(*overrides: str, root: Path | str = "unused"):
    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, _ = resolve_params(configs, [*tiny, f"data.root={root}", *overrides])
    return configs, params


def _trainer(tmp_path: Path, params, hw: runner.Hardware) -> pl.Trainer:
    features = SimpleNamespace(has_val=False, batch_kind=BatchKind.VIDEOS)  # what _trainer reads of a DataModule
    return runner._trainer(params, RunDir(tmp_path / "run", 0, None), hw, features, [])


def test_the_strategy_keys_are_typed_overrides():
    _, params = _params("train.strategy=fsdp", "train.zero_stage=3")
    assert (params.train.strategy, params.train.zero_stage) == ("fsdp", 3)
    with pytest.raises(ConfigError, match=r"train.strategy='horovod': expected one of \['ddp', 'fsdp', 'deepspeed'\]"):
        _params("train.strategy=horovod")
    with pytest.raises(ConfigError, match=r"train.zero_stage='4': expected one of \[1, 2, 3\]"):
        _params("train.zero_stage=4")


def test_ddp_reaches_the_trainer(tmp_path):
    """The default: DDP over more than one process, a single device as is (what runs did before the key)."""
    _, params = _params()
    assert isinstance(_trainer(tmp_path, params, runner.Hardware("cpu", 2, 1)).strategy, DDPStrategy)
    assert isinstance(_trainer(tmp_path, params, runner.Hardware("cpu", 1, 1)).strategy, SingleDeviceStrategy)


def test_fsdp_reaches_the_trainer_which_refuses_it_on_the_cpu(tmp_path):
    """The Trainer gets an FSDPStrategy: Lightning itself refuses it without CUDA (the reason
    `check_strategy` refuses train.strategy=fsdp on the CPU before any work)."""
    _, params = _params("train.strategy=fsdp")
    with pytest.raises(ValueError, match="strategy `fsdp` requires a GPU accelerator"):
        _trainer(tmp_path, params, runner.Hardware("cpu", 2, 1))
    with pytest.raises(ConfigError, match=r"train.strategy='fsdp' needs CUDA GPUs \(--accelerator gpu\)"):
        check_strategy(params.train, "cpu")
    check_strategy(params.train, "gpu")


def test_deepspeed_not_installed_is_named_with_its_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else find_spec(name, *a))
    _, params = _params("train.strategy=deepspeed")
    with pytest.raises(ConfigError, match=r"needs the DeepSpeed package.*pip install 'streamseg\[deepspeed\]'"):
        check_strategy(params.train, "gpu")
    with pytest.raises(ConfigError, match="train.strategy='deepspeed' needs CUDA GPUs"):
        check_strategy(params.train, "cpu")


def test_zero_stage_without_deepspeed_is_refused():
    _, params = _params("train.zero_stage=3")
    with pytest.raises(ConfigError, match=r"train.zero_stage=3 is DeepSpeed's: it needs train.strategy=deepspeed"):
        check_strategy(params.train, "cpu")


def test_only_replicating_strategies_have_their_ranks_weights_compared():
    """runner.check_ranks_agree compares each rank's weight sums: under FSDP or ZeRO 3 a rank holds a shard,
    so the comparison would fail every sharded run."""
    assert replicated_weights(_params()[1].train)
    assert not replicated_weights(_params("train.strategy=fsdp")[1].train)
    assert replicated_weights(_params("train.strategy=deepspeed", "train.zero_stage=2")[1].train)
    assert not replicated_weights(_params("train.strategy=deepspeed", "train.zero_stage=3")[1].train)


def test_train_refuses_fsdp_on_the_cpu_before_any_work(tmp_path):
    """Through the CLI: one line naming the key, exit 2 (a config error), no data generated, no run directory."""
    data = tmp_path / "synth"
    r = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", "quick", *TINY, "-o", f"data.root={data}",
                  "-o", "train.strategy=fsdp", "--accelerator", "cpu", "--root", str(tmp_path / "runs"))
    assert r.returncode != 0, r.stdout
    assert "train.strategy='fsdp' needs CUDA GPUs" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not data.exists() and not (tmp_path / "runs").exists()


def _fit_on_gpu(tmp_path: Path, synth_root: Path, *overrides: str) -> pl.Trainer:
    configs, params = _params(*overrides, root=synth_root)
    check_strategy(params.train, "gpu")
    dm, _, module = runner.build(configs, params, dist.Launch(0, 0, 1, 0))
    run = RunDir(tmp_path / "run", 0, None)
    run.make()
    trainer = runner._trainer(params, run, runner.Hardware("gpu", 1, 1), dm, [])
    trainer.fit(module, datamodule=dm)
    assert trainer.current_epoch == params.train.epochs
    return trainer


@pytest.mark.gpu
def test_fsdp_trains_on_a_gpu(tmp_path, synth_root):
    trainer = _fit_on_gpu(tmp_path, synth_root, "train.strategy=fsdp")
    assert isinstance(trainer.strategy, FSDPStrategy)


@pytest.mark.gpu
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_trains_on_a_gpu(tmp_path, synth_root, stage):
    pytest.importorskip("deepspeed")
    from pytorch_lightning.strategies import DeepSpeedStrategy

    trainer = _fit_on_gpu(tmp_path, synth_root, "train.strategy=deepspeed", f"train.zero_stage={stage}")
    assert isinstance(trainer.strategy, DeepSpeedStrategy)
    assert trainer.strategy.config["zero_optimization"]["stage"] == stage
