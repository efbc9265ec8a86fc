"""Real DeepSpeed checkpoint folders made on the CPU, as Lightning's `DeepSpeedStrategy.save_checkpoint` makes
them: DeepSpeed's engine (ZeRO `stage`) over a module whose state dict is the Lightning checkpoint's, saved
with `save_checkpoint(folder, client_state=<the checkpoint less state_dict and optimizer_states>,
tag="checkpoint")`. Lightning's strategy itself refuses the CPU ("only supported on CUDA GPUs"), DeepSpeed's
engine does not (its CPU accelerator, one gloo process; it compiles its shared-memory op once, cached).

    python tests/engine/deepspeed_folders.py CHECKPOINT.ckpt OUT_FOLDER STAGE

runs in its own process (DeepSpeed initialises torch.distributed). `tests/engine/data/zero{2,3,3x2}/` were made
with DeepSpeed 0.19.8 by `python tests/engine/deepspeed_folders.py --toy tests/engine/data` (their
`expected.pt` is the state dict they hold; `zero3x2`: two ranks), so that reading them needs no DeepSpeed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn


def holder(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A module whose state dict has the keys and values of ``state_dict``: floating tensors as parameters,
    but normalisation statistics (``running_*``) and integers as buffers."""
    root = nn.Module()
    for key, value in state_dict.items():
        *path, name = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        if value.is_floating_point() and not name.startswith("running_"):
            module.register_parameter(name, nn.Parameter(value.clone()))
        else:
            module.register_buffer(name, value.clone())
    return root


def save(checkpoint: dict, folder: Path, stage: int) -> None:
    """``checkpoint`` (a Lightning checkpoint dict) as DeepSpeed's folder, in this process: one rank of the
    group that `make` started (MASTER_PORT, RANK, WORLD_SIZE in the environment)."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    model = holder(checkpoint["state_dict"])
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": stage},
              "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.Adam(model.parameters()), config=config)
    client = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
    engine.save_checkpoint(str(folder), client_state=client, tag="checkpoint")


def make(checkpoint: Path, folder: Path, stage: int, world: int = 1) -> None:
    """`save` in ``world`` child processes (the command line above, one gloo rank each); raises with their
    output when one fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = [subprocess.Popen([sys.executable, __file__, str(checkpoint), str(folder), str(stage)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world)})
             for r in range(world)]
    outputs = [p.communicate(timeout=600)[0] for p in ranks]
    assert all(p.returncode == 0 for p in ranks) and (folder / "latest").is_file(), "".join(o[-3000:] for o in outputs)


def toy(directory: Path) -> None:
    """The committed fixtures: a toy checkpoint as folders of ZeRO 2, ZeRO 3, and ZeRO 3 over 2 ranks (each
    rank a slice of every parameter, the last one padded), each with its expected.pt."""
    torch.manual_seed(0)
    state = {"net.0.weight": torch.randn(3, 5), "net.0.bias": torch.randn(3), "net.norm.running_mean": torch.randn(3),
             "net.norm.num_batches_tracked": torch.tensor(5), "head.weight": torch.randn(2, 3)}
    checkpoint = {"state_dict": state, "epoch": 3, "global_step": 7, "rng": {"torch": torch.tensor([1, 2, 3])},
                  "callbacks": {"ModelCheckpoint{'monitor': 'val/acc'}": {"best_model_score": torch.tensor(55.0)}}}
    for name, stage, world in (("zero2", 2, 1), ("zero3", 3, 1), ("zero3x2", 3, 2)):
        out = directory / name
        source = directory / f"{name}.source.ckpt"
        torch.save(checkpoint, source)
        make(source, out / "best.ckpt", stage, world)
        source.unlink()
        torch.save(state, out / "expected.pt")
        for script in out.glob("best.ckpt/*.py"):  # DeepSpeed's conversion scripts: not needed to read
            script.unlink()


if __name__ == "__main__":
    if sys.argv[1] == "--toy":
        toy(Path(sys.argv[2]))
    else:
        save(torch.load(sys.argv[1], map_location="cpu", weights_only=True), Path(sys.argv[2]), int(sys.argv[3]))
