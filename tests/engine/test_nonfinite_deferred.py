"""train.nonfinite="stop" on a GPU reads each step's finiteness flag one step late (no host-GPU sync per
step): the error still names the step, and no checkpoint is ever written from weights that step updated.
The CPU reads the flag at once, so these tests turn the deferred read on (`NonFinitePolicy.defer`)."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from streamseg.config import load_configs, resolve_params
from streamseg.engine import dist, runner
from streamseg.engine.checkpoint_io import load_checkpoint_file
from streamseg.engine.nonfinite import NonFinitePolicy, Where
from streamseg.engine.rundir import RunDir

from ..conftest import TINY
from .test_reliability import _PoisonOnce


@pytest.mark.parametrize("where", ["mid-epoch", "epoch's last batch"])
def test_deferred_stop_names_the_step_and_no_checkpoint_holds_its_update(tmp_path, synth_root, where):
    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, _ = resolve_params(configs, [*tiny, f"data.root={synth_root}", "train.epochs=2",
                                         "train.batch_size=1"])
    assert params.train.nonfinite == "stop"  # the default
    dm, _, module = runner.build(configs, params, dist.Launch(0, 0, 1, 0))
    batches = len(dm.train_dataloader())
    assert batches >= 3
    bad = 1 if where == "mid-epoch" else batches - 1  # its batch index in epoch 0 = its optimiser step
    module.net = _PoisonOnce(module.net, poison=bad + 1)
    module.nonfinite_policy.defer = True  # as on a GPU
    run = RunDir(tmp_path / "run", 0, None)
    run.make()
    callbacks = [cb for cb in runner._callbacks(params, run, dm.has_val) if "ProgressBar" not in type(cb).__name__]
    if where == "mid-epoch":  # a checkpoint after every optimiser step: the one after the bad step must not exist
        callbacks.append(ModelCheckpoint(dirpath=run.path / "steps", filename="{step}", every_n_train_steps=1,
                                         save_top_k=-1, enable_version_counter=False))
    trainer = runner._trainer(params, run, runner.Hardware(), dm, callbacks)
    with pytest.raises(FloatingPointError, match=rf"non-finite training loss nan at epoch 0, batch {bad}, "
                                                 rf"optimizer step {bad}, videos \['"):
        trainer.fit(module, datamodule=dm)
    # the read was deferred: the bad step's update happened in memory ...
    assert not all(torch.isfinite(p).all() for p in module.net.parameters())
    # ... and reached no checkpoint
    saved = sorted(run.path.rglob("*.ckpt"))
    steps = sorted(load_checkpoint_file(p)["global_step"] for p in saved)
    assert steps == (list(range(1, bad + 1)) if where == "mid-epoch" else []), steps
    for path in saved:
        assert all(torch.isfinite(v).all() for v in load_checkpoint_file(path)["state_dict"].values()), path


def test_the_deferred_flag_is_read_at_the_next_check_only():
    policy = NonFinitePolicy("stop", defer=True)
    policy.watch(torch.tensor(float("inf")), Where(3, 7, 40, ["a", None]))  # no error yet
    with pytest.raises(FloatingPointError, match=r"loss inf at epoch 3, batch 7, optimizer step 40, videos \['a'\]"):
        policy.settle()
    policy.settle()  # read once
    policy.watch(torch.tensor(1.0), Where(3, 8, 41, ["b"]))
    policy.settle()
    with pytest.raises(FloatingPointError, match="batch 9"):  # immediate without defer
        NonFinitePolicy("stop", defer=False).watch(torch.tensor(float("nan")), Where(3, 9, 42, ["c"]))


@pytest.mark.gpu
def test_on_a_gpu_the_flag_goes_through_pinned_memory_and_is_read_one_step_late():
    policy = NonFinitePolicy("stop")  # defer chosen by the loss's device
    nan = torch.tensor(float("nan"), device="cuda")
    policy.watch(nan, Where(0, 1, 1, ["v"]))  # no host wait, no error yet
    assert policy._host_flag is not None and policy._host_flag.is_pinned()
    with pytest.raises(FloatingPointError, match=r"loss nan at epoch 0, batch 1, optimizer step 1, videos \['v'\]"):
        policy.settle()
    policy.watch(torch.tensor(2.0, device="cuda"), Where(0, 2, 2, ["w"]))
    policy.settle()
