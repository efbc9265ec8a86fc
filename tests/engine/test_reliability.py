"""Crashes, faults and bad input cost at most the work since the last checkpoint and never corrupt the disk
(docs/reliability.md lists each guarantee with the test below that holds it)."""

from __future__ import annotations

import ast
import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamseg.config import load_configs, resolve_params
from streamseg.data.check import check_dataset, format_problems
from streamseg.engine import dist
from streamseg.engine.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointFallbackWarning,
    CheckpointWriteError,
    atomic_save,
    load_checkpoint_file,
    previous_path,
    usable_checkpoint,
)
from streamseg.engine.datacheck import run_data_problems
from streamseg.engine.module import NonFiniteLossWarning
from streamseg.engine.rundir import RunDir, RunInUseWarning, claim_run_dir

from ..conftest import REPO, TINY, streamseg


def _ckpt(value: float, epoch: int = 0) -> dict:
    return {"state_dict": {"w": torch.full((64,), value)}, "epoch": epoch, "global_step": epoch + 1}


# ---------------------------------------------------------------------------------------------- checkpoints
def test_kill_during_a_checkpoint_write_leaves_the_previous_one_valid(tmp_path):
    """A process SIGKILLed half way through writing last.ckpt: last.ckpt is still the previous checkpoint."""
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from streamseg.engine.checkpoint_io import atomic_save
        atomic_save({{"state_dict": {{"w": torch.full((64,), 1.0)}}, "epoch": 0, "global_step": 1}}, {str(path)!r})
        real_write = os.write
        def dying_write(fd, data):  # the kernel takes half of the bytes, then the job is killed
            real_write(fd, bytes(data[: len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        os.write = dying_write
        atomic_save({{"state_dict": {{"w": torch.full((64,), 2.0)}}, "epoch": 1, "global_step": 2}}, {str(path)!r})
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == -9, out.stderr[-2000:]
    # the interrupted write went to the killed process's own partial file
    stale = list(tmp_path.glob("last.ckpt.*.partial"))
    assert len(stale) == 1 and re.fullmatch(r"last\.ckpt\.\d+\.partial", stale[0].name)
    assert load_checkpoint_file(path)["epoch"] == 0
    assert usable_checkpoint(path) == path
    # the next save (another process) uses its own partial file and keeps the previous generation
    atomic_save(_ckpt(3.0, epoch=2), path)
    assert load_checkpoint_file(path)["epoch"] == 2 and load_checkpoint_file(previous_path(path))["epoch"] == 0
    assert not path.with_name(f"last.ckpt.{os.getpid()}.partial").exists()


def test_damaged_checkpoint_falls_back_to_the_previous_generation(tmp_path):
    path = tmp_path / "last.ckpt"
    with pytest.raises(CheckpointError, match="no previous checkpoint last.prev.ckpt.*--new"):
        path.write_bytes(b"not a checkpoint")
        usable_checkpoint(path)
    path.unlink()
    atomic_save(_ckpt(1.0, epoch=0), path)
    atomic_save(_ckpt(2.0, epoch=1), path)
    good = path.read_bytes()

    # truncated (a copy cut short, a file system that lost the tail)
    path.write_bytes(good[: len(good) // 2])
    with pytest.warns(CheckpointFallbackWarning, match=r"last.ckpt: not a loadable checkpoint.*last.prev.ckpt \(epoch 0\)"):
        assert usable_checkpoint(path) == previous_path(path)

    # one flipped bit inside a tensor: torch.load alone would accept it; the zip CRC-32 does not
    flipped = bytearray(good)
    offset = good.index(torch.full((64,), 2.0).numpy().tobytes())
    flipped[offset + 100] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        load_checkpoint_file(path)
    with pytest.warns(CheckpointFallbackWarning):
        assert usable_checkpoint(path) == previous_path(path)

    # both generations damaged: a clear error naming both, no silent fresh start
    previous_path(path).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last.ckpt: .*previous checkpoint is unusable too: .*last.prev.ckpt"):
        usable_checkpoint(path)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, synth_root):
    """ENOSPC in the middle of writing last.ckpt during a real fit: a clear error, last.ckpt still loads."""
    import pytorch_lightning as pl

    trainer, module, dm, run = _tiny_trainer(tmp_path, synth_root, "train.epochs=3")

    class FillDiskAfterFirstEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                real_write = os.write

                def full(fd, data):
                    real_write(fd, bytes(data[: len(data) // 3]))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                monkeypatch.setattr(os, "write", full)

    trainer.callbacks.insert(0, FillDiskAfterFirstEpoch())
    last = run.checkpoints / "last.ckpt"
    with pytest.raises(CheckpointWriteError) as info:
        trainer.fit(module, datamodule=dm)
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(last) in message and "No space left on device" in message and "intact" in message
    assert load_checkpoint_file(last)["epoch"] == 0
    assert usable_checkpoint(last) == last
    assert not list(run.checkpoints.glob("*.partial"))


def test_a_resumed_run_keeps_every_earlier_row_of_metrics_csv_once_in_order(tmp_path, synth_root):
    """Epochs 0 and 1 finish, epoch 2 stops after its first step; resuming from last.ckpt (epoch 1) keeps the
    rows of epochs 0 and 1 as they were, drops the interrupted epoch's rows (they are redone), and appends."""
    import pytorch_lightning as pl

    class Crash(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 1:
                raise RuntimeError("crash")

    overrides = ("train.epochs=3", "train.log_every=1")
    trainer, module, dm, run = _tiny_trainer(tmp_path, synth_root, *overrides)
    trainer.callbacks.insert(0, Crash())
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(module, datamodule=dm)
    metrics = run.logs / "csv" / "metrics.csv"
    before = metrics.read_text().splitlines()
    header, rows = before[0].split(","), [r.split(",") for r in before[1:]]
    epochs = [int(r[header.index("epoch")]) for r in rows]
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2}  # epoch 2's first step was logged

    last = run.checkpoints / "last.ckpt"
    assert load_checkpoint_file(last)["epoch"] == 1
    trainer, module, dm, run = _tiny_trainer(tmp_path, synth_root, *overrides, resume_from=last)
    trainer.fit(module, datamodule=dm, ckpt_path=last, weights_only=True)
    after = metrics.read_text().splitlines()
    kept = 1 + sum(e <= 1 for e in epochs)
    assert after[:kept] == before[:kept]  # the header and every row of epochs 0 and 1, unchanged
    redone = [int(r.split(",")[header.index("epoch")]) for r in after[kept:]]
    assert redone == [2] * epochs.count(1)  # epoch 2 once, with as many rows as epoch 1 (steps, val, epoch end)
    steps = [int(r.split(",")[header.index("step")]) for r in after[1:]]
    assert steps == sorted(steps)


# ---------------------------------------------------------------------------------------------- one run, one process
_HOLD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from streamseg.engine.rundir import claim_run_dir
    run, lock = claim_run_dir(Path(sys.argv[1]), {"lr": 1})
    child = os.fork()  # like a DataLoader worker: it must not keep the lock alive after its parent died
    if child == 0:
        time.sleep(300)
        os._exit(0)
    print(run.version, child, flush=True)
    sys.stdin.read()  # holds the version until its stdin closes (or it is killed)
""")


def _holder(exp: Path) -> subprocess.Popen:
    """Another process that claims a version of `exp` and holds it, with a forked child; its first output
    line is the version and the child's pid."""
    return subprocess.Popen([sys.executable, "-c", _HOLD, str(exp)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_a_version_held_by_a_live_process_is_never_shared(tmp_path):
    exp = tmp_path / "exp"
    holder = _holder(exp)
    version, child = holder.stdout.readline().split()
    try:
        assert version == "0"
        # a second command while the first runs: the next version, saying which process holds version_0
        with pytest.warns(RunInUseWarning, match=rf"version_0 is in use by pid {holder.pid} on .*: starting version_1"):
            run, lock = claim_run_dir(exp, {"lr": 1})
        assert run.version == 1 and run.resume_from is None
        assert f"pid {os.getpid()}" in (run.path / "run.lock").read_text()
        # ... and a third one, while both run, takes version_2 (version_1 is held by this process)
        with pytest.warns(RunInUseWarning, match=rf"version_1 is in use by pid {os.getpid()}"):
            third, third_lock = claim_run_dir(exp, {"lr": 1})
        assert third.version == 2
        third_lock.release()
        lock.release()
        # released: the newest unfinished version is free again and is resumed
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again, again_lock = claim_run_dir(exp, {"lr": 1})
        assert again.version == 2
        again_lock.release()
    finally:
        holder.kill()
        holder.wait()
        os.kill(int(child), signal.SIGKILL)


def test_a_killed_holder_leaves_a_free_version_and_its_partial_checkpoints_are_removed(tmp_path):
    """The lock goes with the process (kill -9 included), even while a child it forked lives on; each process
    writes its own <name>.<pid>.partial, and the next holder of the version removes the dead writer's one."""
    exp = tmp_path / "exp"
    holder = _holder(exp)
    version, child = holder.stdout.readline().split()
    try:
        assert version == "0"
        checkpoints = exp / "version_0" / "checkpoints"
        checkpoints.mkdir(parents=True)
        stale = checkpoints / f"last.ckpt.{holder.pid}.partial"
        stale.write_bytes(b"half a checkpoint")
        holder.kill()
        holder.wait()
        os.kill(int(child), 0)  # the forked child still runs
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run, lock = claim_run_dir(exp, {"lr": 1})
        assert run.version == 0 and not stale.exists()
        lock.release()
    finally:
        holder.kill()
        os.kill(int(child), signal.SIGKILL)


@pytest.mark.slow
def test_two_identical_train_commands_started_together_run_two_versions(tmp_path, synth_root):
    args = ["train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path), "-o", f"data.root={synth_root}",
            *TINY, "-o", "train.epochs=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "streamseg.cli.main", *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    exp = tmp_path / "synth" / "mstcn_quick"
    assert sorted(p.name for p in exp.iterdir() if p.is_dir()) == ["version_0", "version_1"]
    assert all((exp / f"version_{v}" / "DONE").is_file() for v in (0, 1))
    # when they overlapped, the one that started version_1 said why, naming the other process (on a fast
    # machine the first may finish before the second chooses: then version_1 is simply the next run;
    # the message itself is held by test_a_version_held_by_a_live_process_is_never_shared)
    said = [i for i, (_, err) in enumerate(outs) if "version_0 is in use by pid" in err]
    assert len(said) <= 1, [err[-2000:] for _, err in outs]
    if said:
        assert f"version_0 is in use by pid {procs[1 - said[0]].pid} on " in outs[said[0]][1]


# ---------------------------------------------------------------------------------------------- NaN losses
class _PoisonOnce(nn.Module):
    """`net` whose `poison`-th training forward gets NaN inputs (a corrupt batch)."""

    def __init__(self, net: nn.Module, poison: int):
        super().__init__()
        self.inner, self.poison, self.calls = net, poison, 0

    @property
    def lookahead(self):
        return self.inner.lookahead

    def init_state(self, batch_size, device):
        return self.inner.init_state(batch_size, device)

    def forward(self, x, state, mask):
        if self.training:
            self.calls += 1
            if self.calls == self.poison:
                x = x * float("nan")
        return self.inner(x, state, mask)


def _tiny_trainer(tmp_path: Path, data: Path, *overrides: str, resume_from: Path | None = None):
    """The real engine (runner.build, _callbacks, _trainer) on tiny data, in this process."""
    from streamseg.engine import runner

    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, _ = resolve_params(configs, [*tiny, f"data.root={data}", *overrides])
    dm, _, module = runner.build(configs, params, dist.Launch(0, 0, 1, 0))
    run = RunDir(tmp_path / "run", 0, resume_from)
    run.make()
    callbacks = [cb for cb in runner._callbacks(params, run, dm.has_val) if "ProgressBar" not in type(cb).__name__]
    trainer = runner._trainer(params, run, runner.Hardware(), dm, callbacks)
    return trainer, module, dm, run


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_loss_on_features_is_never_trained_on(tmp_path, synth_root, policy):
    trainer, module, dm, run = _tiny_trainer(tmp_path, synth_root, "train.epochs=2", f"train.nonfinite={policy}")
    module.net = _PoisonOnce(module.net, poison=2)  # epoch 0, batch 1
    dm.setup()
    batch_videos = dm.names["train"]
    if policy == "stop":
        with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at epoch 0, batch 1, "
                                                     r"optimizer step 1, videos \['"):
            trainer.fit(module, datamodule=dm)
        assert all(torch.isfinite(p).all() for p in module.parameters())
        return
    with pytest.warns(NonFiniteLossWarning, match=r"epoch 0, batch 1, optimizer step 1, videos \[") as caught:
        trainer.fit(module, datamodule=dm)
    message = next(str(w.message) for w in caught if w.category is NonFiniteLossWarning)
    assert any(v in message for v in batch_videos), message
    batches = 2 * len(dm.train_dataloader())
    # exactly that step was skipped: Adam stepped once per other batch (Lightning's global_step counts
    # the skipped one too, as a step taken at that point of the schedule)
    adam_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert module.skipped_steps == 1 and adam_steps == {batches - 1}
    assert all(torch.isfinite(t).all() for t in [*module.parameters(), *module.buffers()])
    assert load_checkpoint_file(run.checkpoints / "last.ckpt")["skipped_steps"] == 1
    logged = (run.logs / "csv" / "metrics.csv").read_text().splitlines()
    column = logged[0].split(",").index("train/skipped_steps")
    assert [float(r.split(",")[column]) for r in logged[1:] if r.split(",")[column]] == [1.0, 1.0]


class _TinyStreamNet(nn.Module):
    """Pixels averaged per frame -> BatchNorm (buffers) -> causal MemoryTCN (carried state): the parts of
    a streaming model a NaN can poison, at a fraction of TSM's cost. (B, 3, T, H, W) -> (1, B, K, T)."""

    lookahead = 0

    def __init__(self, num_classes: int):
        super().__init__()
        from streamseg.models import MemoryTCN

        self.norm = nn.BatchNorm1d(3)
        self.tcn = MemoryTCN(3, num_classes, num_stages=1, num_layers=2, num_maps=8)

    def init_state(self, batch_size, device):
        return self.tcn.init_state(batch_size, device)

    def forward(self, x, state, mask):
        return self.tcn(self.norm(x.mean(dim=(3, 4))), state, mask)


def test_nonfinite_loss_on_streams_skips_and_restarts_the_poisoned_state(synth_video_root):
    import pytorch_lightning as pl

    from streamseg.engine import SegmentationModule, VideoStreamDataModule
    from streamseg.models import SegmentationLoss

    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=8, frame_size=(16, 16), batch_size=2,
                               bg_classes=("background",), augment=False)
    dm.setup()
    info = dm.info
    torch.manual_seed(0)
    module = SegmentationModule(_PoisonOnce(_TinyStreamNet(info.num_classes), poison=3), info,
                                SegmentationLoss(info.num_classes, reduction="sum"), optimizer=torch.optim.Adam,
                                nonfinite="skip")

    class Count(pl.Callback):
        batches = 0

        def on_train_batch_end(self, *args):
            Count.batches += 1

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[Count()])
    with pytest.warns(NonFiniteLossWarning, match=r"batch 2, optimizer step 2, videos \['"):
        trainer.fit(module, datamodule=dm)
    # one skip only: the NaN state was not carried into the following chunks of those streams
    assert module.skipped_steps == 1 and trainer.global_step == Count.batches - 1
    # BatchNorm statistics updated by the poisoned forward pass are restored too
    assert all(torch.isfinite(t).all() for t in [*module.parameters(), *module.buffers()])


# ---------------------------------------------------------------------------------------------- bad data
def _break_dataset(root: Path) -> dict[str, str]:
    """Damage a copy of the synthetic video dataset five ways; returns {defect: file it concerns}."""
    splits = root / "splits"
    names = [n.removesuffix(".txt") for s in ("train", "test") for n in (splits / f"{s}.split1.bundle").read_text().split()]
    truncated, corrupt, unlabelled, unknown, long_labels = names[:5]
    video = root / "Videos" / f"{truncated}.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    (root / "Videos" / f"{corrupt}.mp4").write_bytes(b"\x00garbage" * 64)
    (root / "groundTruth" / f"{unlabelled}.txt").unlink()
    lines = (root / "groundTruth" / f"{unknown}.txt").read_text().splitlines()
    lines[4] = "flying"
    (root / "groundTruth" / f"{unknown}.txt").write_text("\n".join(lines) + "\n")
    gt = root / "groundTruth" / f"{long_labels}.txt"
    gt.write_text(gt.read_text() + "background\n" * 20)
    (splits / "val.split1.bundle").write_text("")
    return {"truncated": str(video), "corrupt": f"{corrupt}.mp4", "missing labels": f"{unlabelled}.txt",
            "unknown label": f"{unknown}.txt:5", "length": f"{long_labels}.npy", "long labels": f"{long_labels}.mp4",
            "empty split": "val.split1.bundle"}


def test_bad_data_is_reported_all_at_once_and_training_refuses_to_start(tmp_path, synth_video_root):
    root = tmp_path / "broken"
    shutil.copytree(synth_video_root, root)
    where = _break_dataset(root)
    expected = format_problems(check_dataset(root, splits=[1]))
    for defect in ("truncated", "corrupt", "missing labels", "unknown label", "length", "long labels", "empty split"):
        assert where[defect] in expected, defect

    # rich wraps at the terminal width; a wide one keeps each problem on its line
    checked = streamseg("data", "check", str(root), "--split", "1", env={"COLUMNS": "400"})
    assert checked.returncode == 1
    assert all(line.strip() in checked.stdout for line in expected.splitlines()[1:])

    data = ["-o", f"data.root={root}", "-o", "data.num_videos=6", "-o", "data.min_frames=60",
            "-o", "data.max_frames=140"]  # the fixture's synthetic spec, so nothing is regenerated
    out = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path / "exp"), *TINY[:-2],
                    *data)
    assert out.returncode == 1
    # a run on features reads no videos: its gate gives data check's report without the Videos/ findings
    on_features = format_problems(check_dataset(root, splits=[1], check_videos=False))
    assert where["corrupt"] not in on_features
    assert on_features in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "exp").exists()  # refused before creating a run directory

    # streaming from video reads no features: their problem is dropped, the short video is reported
    streaming = "\n".join(str(p) for p in run_data_problems(root, 1, video_input=True))
    assert where["length"] not in streaming
    for defect in ("truncated", "corrupt", "missing labels", "unknown label", "long labels", "empty split"):
        assert where[defect] in streaming, defect
    assert "every label needs a frame" in streaming
    assert [p for p in check_dataset(root, splits=[1]) if "Videos" in p.path] == \
        [p for p in run_data_problems(root, 1, video_input=True) if "Videos" in p.path]  # one implementation


# ---------------------------------------------------------------------------------------------- untrusted files
class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling would call open(marker, "w"): a file appears if code ran
        return (open, (str(self.marker), "w"))


def test_loading_a_checkpoint_never_runs_code_from_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="needs code to unpickle, which is refused"):
        load_checkpoint_file(evil)
    with pytest.raises(Exception):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=True)
    assert not marker.exists()


def test_library_never_loads_files_in_a_way_that_can_run_code():
    """Every torch.load passes weights_only=True, np.load never allows pickles (numpy's default), and there is no pickle,
    eval/exec, yaml.load or ONNX custom-op library loading anywhere in the package."""
    offenders = []
    for path in sorted((REPO / "src" / "streamseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if owner == "torch" and name == "load":
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{where}: torch.load without weights_only=True")
            elif owner == "np" and name == "load" and "allow_pickle" in kw:  # numpy's default is False
                value = kw["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(f"{where}: np.load with allow_pickle")
            elif owner in ("pickle", "dill", "marshal") or name == "register_custom_ops_library" \
                    or (isinstance(func, ast.Name) and name in ("eval", "exec")) or (owner == "yaml" and name == "load"):
                offenders.append(f"{where}: {owner + '.' if owner else ''}{name}")
    assert offenders == []


# ---------------------------------------------------------------------------------------------- whole runs
def _quick_with(hook: str) -> str:
    """The repository's `-E quick` experiment with a `build_module` that runs `hook` before each step."""
    return (REPO / "exp_configs" / "synth" / "mstcn_quick.py").read_text() + textwrap.dedent(f"""

        import os
        import signal

        from streamseg.engine.recipes import default_module


        def build_module(net, params, info):
            module = default_module(net, params, info)
            step = module.training_step

            def training_step(batch, batch_idx):
                {hook}
                return step(batch, batch_idx)

            module.training_step = training_step
            return module
        """)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


# Tiny deterministic runs whose best epoch is a middle one, followed by a tie (validation Acc 0 / 25.9 / 25.9):
# a resumed run that forgets the best so far picks another best.ckpt. `train.log_every=1` writes a CSV row
# each step, so the rows of an interrupted epoch are there to be dropped on resume.
_RUN_ARGS = ["-o", "train.epochs=3", "-o", "train.deterministic=true", "-o", "train.lr=0.03",
             "-o", "train.monitor=acc", "-o", "train.log_every=1"]
_TIMING_COLUMNS = ("train/epoch_seconds", "train/frames_per_s")


def _train(root: Path, exp: str, data: Path) -> subprocess.CompletedProcess:
    return streamseg("train", "-D", "synth", "-M", "mstcn", "-E", exp, "-R", str(root), "-o", f"data.root={data}",
                     *TINY, *_RUN_ARGS)


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, synth_root) -> Path:
    """One uninterrupted run of `_RUN_ARGS`, the reference every kill-and-re-run test compares with."""
    root = tmp_path_factory.mktemp("clean")
    clean = _train(root, "quick", synth_root)
    assert clean.returncode == 0, clean.stderr[-3000:]
    return root / "synth" / "mstcn_quick" / "version_0"


def _history(run: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the wall-clock columns."""
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in _TIMING_COLUMNS} for row in csv.DictReader(f)]


def assert_same_run(run: Path, clean_run: Path) -> None:
    """Same final and best weights, test metrics and per-epoch history as the uninterrupted run."""
    for name in ("last.ckpt", "best.ckpt"):
        got, want = (load_checkpoint_file(r / "checkpoints" / name) for r in (run, clean_run))
        assert (got["epoch"], got["global_step"]) == (want["epoch"], want["global_step"]), name
        assert got["state_dict"].keys() == want["state_dict"].keys()
        for k in got["state_dict"]:
            torch.testing.assert_close(got["state_dict"][k], want["state_dict"][k], rtol=0, atol=0, msg=f"{name} {k}")
    got, want = (json.loads((r / "metrics.json").read_text()) for r in (run, clean_run))
    timing = ("train_seconds", "train_throughput", "startup_clock")
    assert {k: v for k, v in got.items() if k not in timing} == {k: v for k, v in want.items() if k not in timing}
    assert got["train_throughput"]["epochs"] == want["train_throughput"]["epochs"]
    assert _history(run) == _history(clean_run)


@pytest.mark.slow
def test_kill_mid_epoch_or_damaged_last_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, synth_root,
                                                                                      uninterrupted_run):
    """SIGKILL in the middle of epoch 1, re-run; then damage last.ckpt of the finished run and re-run:
    both end with the weights, best.ckpt, test metrics and history of an uninterrupted run (deterministic, CPU)."""
    # a fresh (not resumed) run kills itself at step 3 = epoch 1, batch 1 of 2: after last.ckpt of epoch 0
    killer = tmp_path / "mstcn_killer.py"
    killer.write_text(_quick_with("if module.trainer.ckpt_path is None and module.global_step == 3:\n"
                                  "                    os.kill(os.getpid(), signal.SIGKILL)"))
    killed = _train(tmp_path / "killed", str(killer), synth_root)
    assert killed.returncode == -9, killed.stderr[-3000:]
    run = tmp_path / "killed" / "synth" / "mstcn_killer" / "version_0"
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 0 and not (run / "DONE").exists()

    resumed = _train(tmp_path / "killed", str(killer), synth_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in run.parent.iterdir() if p.is_dir()) == ["version_0"]
    assert json.loads((run / "config" / "params.json").read_text()) == json.loads(
        (uninterrupted_run / "config" / "params.json").read_text())
    assert_same_run(run, uninterrupted_run)

    # last.ckpt damaged after the fact (the job is re-run because DONE is gone): the previous generation
    # (end of epoch 1) is used with a warning and epoch 2 is redone
    (run / "DONE").unlink()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    again = _train(tmp_path / "killed", str(killer), synth_root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "falling back to the previous checkpoint" in again.stderr and "last.prev.ckpt (epoch 1)" in again.stderr
    assert_same_run(run, uninterrupted_run)


def _killer_at_every_point(markers: Path) -> str:
    """`-E quick` that dies once at each point of a plan, in the order a run reaches them: a marker file per
    point records that it happened, so each re-run gets one point further."""
    return (REPO / "exp_configs" / "synth" / "mstcn_quick.py").read_text() + textwrap.dedent(f"""

        import errno
        import os
        import signal
        from pathlib import Path

        from streamseg.engine import checkpoint_io
        from streamseg.engine.recipes import default_module

        MARKERS = Path({str(markers)!r})


        def first_time(point):
            marker = MARKERS / point
            if marker.exists():
                return False
            marker.touch()
            return True


        def die():
            os.kill(os.getpid(), signal.SIGKILL)


        save = checkpoint_io.AtomicCheckpointIO.save_checkpoint


        def save_checkpoint(self, checkpoint, path, storage_options=None):
            real_write, at = os.write, (Path(path).name, checkpoint["epoch"])

            def dying_write(fd, data):  # half the bytes reach the file, then the job is killed
                real_write(fd, bytes(data[: len(data) // 2]))
                die()

            def full_write(fd, data):
                real_write(fd, bytes(data[: len(data) // 3]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            if at == ("last.ckpt", 1) and first_time("writing last.ckpt of epoch 1"):
                os.write = dying_write
            elif at == ("last.ckpt", 2) and first_time("disk full writing last.ckpt of epoch 2"):
                os.write = full_write
            save(self, checkpoint, path, storage_options)
            # killed before Lightning writes the epoch's end-of-epoch row to metrics.csv
            if at == ("last.ckpt", 1) and first_time("just after last.ckpt of epoch 1"):
                die()


        checkpoint_io.AtomicCheckpointIO.save_checkpoint = save_checkpoint


        def build_module(net, params, info):
            module = default_module(net, params, info)
            training_step, validation_step, test_step = module.training_step, module.validation_step, module.test_step

            def train(batch, batch_idx):
                if module.current_epoch == 0 and batch_idx == 1 and first_time("epoch 0, batch 1"):
                    die()
                return training_step(batch, batch_idx)

            def validate(batch, batch_idx):
                if module.current_epoch == 1 and first_time("validation of epoch 1"):
                    die()
                return validation_step(batch, batch_idx)

            def test(batch, batch_idx):
                if first_time("test"):
                    die()
                return test_step(batch, batch_idx)

            module.training_step, module.validation_step, module.test_step = train, validate, test
            return module
        """)


@pytest.mark.slow
def test_killed_at_every_point_and_re_run_ends_like_the_uninterrupted_run(tmp_path, synth_root, uninterrupted_run):
    """One run killed (SIGKILL) before its first checkpoint, during validation, half way through writing
    last.ckpt, just after writing it, stopped by a full disk, killed during test, then given a damaged
    last.ckpt: each time the same command is re-run, and the end is the uninterrupted run's best.ckpt,
    last.ckpt, metrics.json and metrics.csv history (deterministic, CPU)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    exp = tmp_path / "mstcn_killer.py"
    exp.write_text(_killer_at_every_point(markers))
    run = tmp_path / "runs" / "synth" / "mstcn_killer" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    # (point reached, exit code, epoch of last.ckpt afterwards (None: none yet), a warning of this run)
    plan = [("epoch 0, batch 1", -9, None, None), ("validation of epoch 1", -9, 0, None),
            ("writing last.ckpt of epoch 1", -9, 0, None), ("just after last.ckpt of epoch 1", -9, 1, None),
            # last.ckpt is ahead of metrics.csv: epoch 1 is redone from last.prev.ckpt
            ("disk full writing last.ckpt of epoch 2", 1, 1, "no end-of-epoch row for epoch 1"), ("test", -9, 2, None)]
    for point, code, epoch, warning in plan:
        out = _train(tmp_path / "runs", str(exp), synth_root)
        assert out.returncode == code, (point, out.stderr[-3000:])
        assert warning is None or warning in out.stderr, (point, out.stderr[-3000:])
        assert (markers / point).exists(), (point, out.stderr[-3000:])
        assert (load_checkpoint_file(last)["epoch"] if last.exists() else None) == epoch, point
        assert not (run / "DONE").exists()
        if code == 1:
            assert "No space left on device" in out.stderr, out.stderr[-3000:]
    # the last generation damaged on disk as well: resume falls back to last.prev.ckpt (epoch 1), redoes epoch 2
    last.write_bytes(last.read_bytes()[:1000])
    out = _train(tmp_path / "runs", str(exp), synth_root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "last.prev.ckpt (epoch 1)" in out.stderr
    assert sorted(p.name for p in run.parent.iterdir() if p.is_dir()) == ["version_0"]
    assert_same_run(run, uninterrupted_run)


@pytest.mark.slow
def test_a_dying_rank_ends_the_whole_job_with_no_orphans(tmp_path, synth_root):
    """Rank 1 exits (as if OOM-killed) at step 2 of a 2-process run: the launcher ends every rank and
    exits non-zero naming the failed rank, and no process of the job is left."""
    exp = tmp_path / "mstcn_dying.py"
    exp.write_text(_quick_with("if module.global_rank == 1 and module.global_step == 2:\n"
                               "                    os._exit(3)"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    root = tmp_path / "exp"
    proc = subprocess.Popen(
        ["bash", "tools/run_singlenode.sh", "train", "2", "-D", "synth", "-M", "mstcn", "-E", str(exp),
         "-R", str(root), "-o", f"data.root={synth_root}", *TINY, "-o", "train.batch_size=1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)  # a hang would fail here, not block the suite
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    # the launcher's one-line report names the failed rank and its exit code, and keeps that code
    assert proc.returncode == 3
    assert re.search(r"torchrun: .*rank 1 exited with code 3.*\(first: rank 1\)", err), err[-3000:]
    # (rank 0 may print its own broken-connection traceback before it is stopped: that is its error, not
    # torchrun's ChildFailedError report)
    assert "ChildFailedError" not in err
    left = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"
