"""`train.strategy` / `train.zero_stage` (streamseg.engine.strategies): accepted by `-o`, refused when
invalid or when this machine cannot run them (before any work), and reaching the Trainer
(`runner._trainer`: the strategy object's type). DDP runs on the CPU here (and under torchrun with gloo
processes in tests/engine/test_distributed.py, whose runs take the default `train.strategy=ddp`); Lightning
2.6 refuses FSDP on any accelerator but CUDA and DeepSpeed needs CUDA, so their runs are `gpu` tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

from streamseg.config import ConfigError, load_configs, resolve_params
from streamseg.engine import runner, zero_checkpoint
from streamseg.engine.batches import BatchKind
from streamseg.engine.checkpoint_io import load_checkpoint_file
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


def test_cudnn_benchmark_reaches_torch_and_off_leaves_the_session_setting(tmp_path, monkeypatch):
    """train.cudnn_benchmark=true turns cuDNN's autotuning on through the Trainer; the default (false)
    leaves whatever the session set (a Python API user's own torch.backends.cudnn.benchmark)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    _, params = _params("train.cudnn_benchmark=true")
    _trainer(tmp_path, params, runner.Hardware("cpu", 1, 1))
    assert torch.backends.cudnn.benchmark is True
    _, params = _params()
    _trainer(tmp_path, params, runner.Hardware("cpu", 1, 1))
    assert torch.backends.cudnn.benchmark is True  # the session's setting, left alone
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    _trainer(tmp_path, params, runner.Hardware("cpu", 1, 1))
    assert torch.backends.cudnn.benchmark is False


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


def test_zero_stage_3_is_refused_before_any_work():
    """DeepSpeed's ZeRO-3 test after training failed on the H100 (deepspeedai/DeepSpeed#7272: "'DeepSpeedZeRoOffload'
    object has no attribute '_restore_from_bit16_weights'", DeepSpeed 0.19.8), so the pair is refused up front,
    on any machine, with the stages and strategy that work."""
    _, params = _params("train.strategy=deepspeed", "train.zero_stage=3")
    for accelerator in ("gpu", "cpu"):
        with pytest.raises(ConfigError, match=r"train.zero_stage=3: .*DeepSpeed#7272.*zero_stage=1 or 2"):
            check_strategy(params.train, accelerator)


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


GPU = "gpu"  # the accelerator of the gpu tests' runs (a dry run of their code on the CPU sets "cpu")


def _train_on_gpu(tmp_path: Path, synth_root: Path, *overrides: str) -> tuple[list[str], Path, dict]:
    """`streamseg train` on one GPU with ``overrides``, test after training included: (the command, the run
    directory, its metrics.json)."""
    cmd = ["train", "-D", "synth", "-M", "mstcn", "-E", "quick", *TINY, "-o", f"data.root={synth_root}",
           *[a for o in overrides for a in ("-o", o)], "--accelerator", GPU, "-R", str(tmp_path)]
    out = streamseg(*cmd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    run = tmp_path / "synth" / "mstcn_quick" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    test_names = (synth_root / "splits" / "test.split1.bundle").read_text().split()
    assert metrics["num_videos"] == len(test_names) and 0 <= metrics["acc"] <= 100
    assert (run / "DONE").is_file() and len(list((run / "predictions").iterdir())) == len(test_names)
    best = run / "checkpoints" / "best.ckpt"  # tested when it exists (a validation split), a file or a folder
    assert metrics["checkpoint"] == ("best.ckpt" if best.exists() else "last.ckpt")
    return cmd, run, metrics


def _rescored_alike(run: Path, metrics: dict) -> None:
    """`streamseg test --ckpt <the run's>` without the strategy (one device, `streamseg.api.Run.evaluate`)
    scores the saved weights as the run's own test did; `load_trained` (export, infer) loads them strictly."""
    from streamseg.api import Run
    from streamseg.engine.assembly import load_trained

    again = Run(run).evaluate(Path(metrics["checkpoint"]).stem, accelerator=GPU)
    print("run's test:", {k: metrics[k] for k in ("acc", "edit", "f1@50")},
          "streamseg test:", {k: again[k] for k in ("acc", "edit", "f1@50")})
    for key in ("acc", "edit", "f1@50"):  # the same weights; a GPU's reductions may differ in the last bits
        assert abs(again[key] - metrics[key]) < 0.5, key
    load_trained(run, Path(metrics["checkpoint"]).stem)


@pytest.mark.gpu
def test_fsdp_trains_and_tests_on_a_gpu(tmp_path, synth_root):
    """FSDP saves whole files (`state_dict_type="full"`) through the atomic plugin, so every reader takes them."""
    _, run, metrics = _train_on_gpu(tmp_path, synth_root, "train.strategy=fsdp")
    ckpt = run / "checkpoints" / metrics["checkpoint"]
    assert ckpt.is_file()
    assert all(k.startswith("net.") for k in load_checkpoint_file(ckpt)["state_dict"])
    _rescored_alike(run, {**metrics, "checkpoint": str(ckpt)})


@pytest.mark.gpu
@pytest.mark.parametrize("stage", [2])  # 3 is refused (test_zero_stage_3_is_refused_before_any_work)
def test_deepspeed_trains_tests_and_resumes_on_a_gpu(tmp_path, synth_root, stage):
    """DeepSpeed's folders: the run's own test reads them through DeepSpeed, `streamseg test` and
    `load_trained` without it (engine/zero_checkpoint.py), and a run resumes from its last.ckpt folder."""
    pytest.importorskip("deepspeed")
    cmd, run, metrics = _train_on_gpu(tmp_path, synth_root, "train.strategy=deepspeed", f"train.zero_stage={stage}")
    ckpt = run / "checkpoints" / metrics["checkpoint"]
    states = zero_checkpoint.model_states_file(ckpt)
    assert ckpt.is_dir() and states is not None, sorted(p.name for p in ckpt.rglob("*"))
    assert torch.load(states, weights_only=True)["ds_config"]["zero_optimization"]["stage"] == stage
    assert states.name == "mp_rank_00_model_states.pt"
    _rescored_alike(run, {**metrics, "checkpoint": str(ckpt)})

    (run / "DONE").unlink()  # unfinished again: the same command resumes it from last.ckpt/ (DeepSpeed's load,
    (run / "metrics.json").unlink()  # and checkpoint_with_history's epoch of the folder), then tests again
    out = streamseg(*cmd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert (run / "DONE").is_file() and (run / "metrics.json").is_file() and not run.with_name("version_1").exists()
