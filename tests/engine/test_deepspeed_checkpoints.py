"""A `train.strategy=deepspeed` run saves `best.ckpt` / `last.ckpt` as DeepSpeed folders, not files: every
reader of checkpoints takes them (engine/zero_checkpoint.py, engine/checkpoint_io.py).

The folders are real DeepSpeed ones, made on the CPU by DeepSpeed's engine as Lightning's DeepSpeed strategy
makes them (tests/engine/deepspeed_folders.py): `data/zero{2,3,3x2}/` (3x2: ZeRO 3 over two ranks) were
made once with DeepSpeed 0.19.8 and are read without DeepSpeed; the end-to-end test makes one from a trained
run and needs DeepSpeed (`pip install 'streamseg[deepspeed]'`; skipped without it). Lightning's strategy
itself runs only on CUDA GPUs: tests/engine/test_strategies.py's `gpu` tests train with it and read what it
saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from streamseg.engine.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    checkpoint_epoch,
    checkpoint_exists,
    find_checkpoint,
    load_checkpoint_file,
    usable_checkpoint,
)
from streamseg.engine.rundir import claim_run_dir

from ..conftest import TINY, streamseg

DATA = Path(__file__).parent / "data"


def _folder(tmp_path: Path, stage: int | str) -> Path:
    run = tmp_path / "run"
    shutil.copytree(DATA / f"zero{stage}", run / "checkpoints", dirs_exist_ok=True)
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("stage", [2, 3, "3x2"])
def test_a_zero_folder_reads_as_a_lightning_checkpoint(tmp_path, stage):
    """ZeRO 2: the module states hold the weights; ZeRO 3: rebuilt from the optimiser shards' fp32 slices
    ("3x2": two ranks, each holding half of every parameter, padded where its size is odd)."""
    folder = _folder(tmp_path, stage)
    assert len(list(folder.glob("checkpoint/*optim_states.pt"))) == (2 if stage == "3x2" else 1)
    expected = torch.load(folder.parent / "expected.pt", weights_only=True)
    ckpt = load_checkpoint_file(folder)
    assert sorted(ckpt["state_dict"]) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    assert (ckpt["epoch"], ckpt["global_step"]) == (3, 7) and checkpoint_epoch(folder) == 3
    assert torch.equal(ckpt["rng"]["torch"], torch.tensor([1, 2, 3])) and "callbacks" in ckpt
    assert not {"module", "ds_config", "param_shapes"} & set(ckpt)  # DeepSpeed's own keys are left out
    assert usable_checkpoint(folder) == folder and checkpoint_exists(folder)
    assert find_checkpoint(folder.parent.parent, "best") == folder


def test_best_falls_back_to_a_last_folder_and_a_run_resumes_from_one(tmp_path):
    folder = _folder(tmp_path, 2)
    folder.rename(folder.with_name("last.ckpt"))
    run = folder.parent.parent
    assert find_checkpoint(run, "best") == run / "checkpoints" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt: no such checkpoint"):
        find_checkpoint(run, tmp_path / "nowhere.ckpt")
    (run / "checkpoints" / "plain").mkdir()  # a folder that is not DeepSpeed's is not a checkpoint
    assert not checkpoint_exists(run / "checkpoints" / "plain")

    exp = tmp_path / "exp"
    shutil.copytree(run, exp / "version_0")
    (exp / "version_0" / "config").mkdir()
    (exp / "version_0" / "config" / "params.json").write_text(json.dumps({"a": 1}))
    resumed, lock = claim_run_dir(exp, {"a": 1})
    lock.release()
    assert resumed.resume_from == exp / "version_0" / "checkpoints" / "last.ckpt"


def test_feature_extraction_identifies_a_folder_by_its_files(tmp_path):
    """`streamseg extract` with a trained run's encoder records which weights it ran (extract/run.py)."""
    from streamseg.extract.run import _weights_id

    folder = _folder(tmp_path, 3)
    first = _weights_id(str(folder.parent.parent), 0)
    assert first["weights"] == "best.ckpt" and _weights_id(str(folder), 0) == first
    shard = folder / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes() + b"x")
    assert _weights_id(str(folder), 0)["weights_sha256"] != first["weights_sha256"]


class Evil:  # a global no DeepSpeed shard holds: must never be imported or called while reading
    pass


def test_damaged_or_foreign_folders_are_refused_in_one_line(tmp_path):
    folder = _folder(tmp_path, 3)
    shard = folder / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    good = shard.read_bytes()
    torch.save({"optimizer_state_dict": {"fp32_flat_groups": [torch.zeros(3)], "x": Evil()}}, shard)
    foreign = r"optim_states.pt: refers to \['tests.engine.test_deepspeed_checkpoints.Evil'\]"
    with pytest.raises(CheckpointError, match=foreign):
        load_checkpoint_file(folder)
    shard.unlink()
    with pytest.raises(CheckpointError, match="optim_states.pt: missing"):
        load_checkpoint_file(folder)
    shard.write_bytes(good)
    states = folder / "checkpoint" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    saved = torch.load(states, weights_only=True)
    for key, bad in (("dp_world_size", 0), ("dp_world_size", "x"), ("param_shapes", {"a": 1})):
        torch.save({**saved, key: bad}, states)
        with pytest.raises(CheckpointError, match=r"model_states.pt: expected dp_world_size a positive int"):
            load_checkpoint_file(folder)
    torch.save({**saved, "param_shapes": [{"net.w": "x"}]}, states)
    with pytest.raises(CheckpointError, match=r"param_shapes\['net.w'\] = 'x' is not a shape"):
        load_checkpoint_file(folder)
    torch.save(saved, states)
    states.write_bytes(states.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model_states.pt: cannot be read as DeepSpeed model states") as e:
        usable_checkpoint(folder)
    assert "\n" not in str(e.value) and "no previous checkpoint" in str(e.value)


def test_the_checkpoint_plugin_removes_a_folder(tmp_path):
    """Lightning's DeepSpeed strategy removes old checkpoints through the Trainer's CheckpointIO plugin."""
    folder = _folder(tmp_path, 2)
    AtomicCheckpointIO().remove_checkpoint(folder)
    assert not folder.exists() and (folder.parent / "expected.pt").is_file()


@pytest.mark.slow  # about 2 CPU-minutes (a training run, DeepSpeed's engine in a child process, a test pass)
def test_test_export_and_the_api_read_a_deepspeed_run(tmp_path, synth_root):
    """A CPU run whose best.ckpt is replaced by the DeepSpeed folder of the same weights (made by DeepSpeed's
    engine): `streamseg.api.Run.evaluate` (`streamseg test`) scores it as the run scored the file, and
    `load_trained` (export, infer) loads the same weights."""
    pytest.importorskip("deepspeed")
    from streamseg.api import Run
    from streamseg.deploy.runtime import load_trained_model
    from streamseg.engine.assembly import load_trained

    from .deepspeed_folders import make

    tiny = ["-o", "train.epochs=1", *TINY[2:]]
    out = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path), *tiny,
                    "-o", f"data.root={synth_root}")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "synth" / "mstcn_quick" / "version_0"
    trained = json.loads((run / "metrics.json").read_text())
    best = run / "checkpoints" / "best.ckpt"
    weights = torch.load(best, weights_only=True)["state_dict"]
    make(best, tmp_path / "zero2", 2)
    best.unlink()
    (run / "checkpoints" / "best.prev.ckpt").unlink(missing_ok=True)
    (tmp_path / "zero2").rename(best)
    assert (best / "checkpoint" / "mp_rank_00_model_states.pt").is_file()

    rescored = Run(run).evaluate("best")  # `streamseg test --ckpt best`, in this process
    assert rescored["checkpoint"] == str(best)
    for key in ("acc", "edit", "f1@50"):
        assert abs(rescored[key] - trained[key]) < 1e-9, key

    _, _, _, module = load_trained(run, "best")
    for key, value in weights.items():
        assert torch.equal(module.state_dict()[key], value), key
    net, _ = load_trained_model(best)  # what export and infer call
    assert torch.equal(net.state_dict()[next(iter(net.state_dict()))], weights[f"net.{next(iter(net.state_dict()))}"])
