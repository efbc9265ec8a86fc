"""Crashes, faults and bad input cost at most the work since the last checkpoint and never corrupt the disk
(docs/reliability.md lists each guarantee with the test below that holds it)."""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
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
from streamseg.engine.rundir import RunDir

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
    assert path.with_name("last.ckpt.partial").is_file()  # the interrupted write went elsewhere
    assert load_checkpoint_file(path)["epoch"] == 0
    assert usable_checkpoint(path) == path
    # the next save replaces the stale partial file and keeps the previous generation
    atomic_save(_ckpt(3.0, epoch=2), path)
    assert load_checkpoint_file(path)["epoch"] == 2 and load_checkpoint_file(previous_path(path))["epoch"] == 0
    assert not path.with_name("last.ckpt.partial").exists()


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


def _tiny_trainer(tmp_path: Path, data: Path, *overrides: str):
    """The real engine (runner.build, _callbacks, _trainer) on tiny data, in this process."""
    from streamseg.engine import runner

    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, _ = resolve_params(configs, [*tiny, f"data.root={data}", *overrides])
    dm, _, module = runner.build(configs, params, dist.Launch(0, 0, 1, 0))
    run = RunDir(tmp_path / "run", 0, None)
    run.make()
    callbacks = [cb for cb in runner._callbacks(params, run, dm.has_val) if "ProgressBar" not in type(cb).__name__]
    trainer = runner._trainer(params, run, runner.Hardware(), dm.has_val, callbacks)
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
                                stream_batches=True, nonfinite="skip")

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
    for defect in ("truncated", "corrupt", "missing labels", "unknown label", "length", "empty split"):
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
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "exp").exists()  # refused before creating a run directory

    # streaming from video reads no features: their problem is dropped, the short video is reported
    streaming = "\n".join(str(p) for p in run_data_problems(root, 1, video_input=True))
    assert where["length"] not in streaming
    for defect in ("truncated", "corrupt", "missing labels", "unknown label", "long labels", "empty split"):
        assert where[defect] in streaming, defect
    assert "streaming needs a frame for every label" in streaming


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


@pytest.mark.slow
def test_kill_mid_epoch_or_damaged_last_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, synth_root):
    """SIGKILL in the middle of epoch 1, re-run; then damage last.ckpt of the finished run and re-run:
    both end with the weights and test metrics of an uninterrupted run (deterministic, CPU)."""
    args = ["-R", "{root}", "-o", f"data.root={synth_root}", *TINY, "-o", "train.epochs=3",
            "-o", "train.deterministic=true"]
    # a fresh (not resumed) run kills itself at step 3 = epoch 1, batch 1 of 2: after last.ckpt of epoch 0
    killer = tmp_path / "mstcn_killer.py"
    killer.write_text(_quick_with("if module.trainer.ckpt_path is None and module.global_step == 3:\n"
                                  "                    os.kill(os.getpid(), signal.SIGKILL)"))

    def train(root: Path, exp: str) -> subprocess.CompletedProcess:
        return streamseg("train", "-D", "synth", "-M", "mstcn", "-E", exp, *[a.format(root=root) for a in args])

    clean = train(tmp_path / "clean", "quick")
    assert clean.returncode == 0, clean.stderr[-3000:]
    clean_run = tmp_path / "clean" / "synth" / "mstcn_quick" / "version_0"

    killed = train(tmp_path / "killed", str(killer))
    assert killed.returncode == -9, killed.stderr[-3000:]
    run = tmp_path / "killed" / "synth" / "mstcn_killer" / "version_0"
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 0 and not (run / "DONE").exists()

    def assert_same_as_clean() -> None:
        a, b = _weights(run / "checkpoints" / "last.ckpt"), _weights(clean_run / "checkpoints" / "last.ckpt")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
        got, want = (json.loads((r / "metrics.json").read_text()) for r in (run, clean_run))
        for key in ("acc", "edit", "f1@10", "f1@25", "f1@50", "best_val", "num_videos", "per_class", "checkpoint"):
            assert got[key] == want[key], key

    resumed = train(tmp_path / "killed", str(killer))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    assert json.loads((run / "config" / "params.json").read_text()) == json.loads(
        (clean_run / "config" / "params.json").read_text())
    assert_same_as_clean()

    # last.ckpt damaged after the fact (the job is re-run because DONE is gone): the previous generation
    # (end of epoch 1) is used with a warning and epoch 2 is redone
    (run / "DONE").unlink()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    again = train(tmp_path / "killed", str(killer))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "falling back to the previous checkpoint" in again.stderr and "last.prev.ckpt (epoch 1)" in again.stderr
    assert_same_as_clean()


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
    assert "ChildFailedError" not in err and "Traceback" not in err
    left = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"
