"""Process-group setup before Lightning starts, so all ranks agree on the run directory.

Under torchrun or SLURM every rank runs the same command. The run directory (and whether to resume)
must be decided once, by rank 0, and broadcast; that needs a process group before the Trainer exists.
We initialise it from the same environment Lightning would detect; Lightning's DDP strategy sees the
group is already initialised and uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.plugins.environments import SLURMEnvironment, TorchElasticEnvironment


@dataclass
class Launch:
    rank: int
    local_rank: int
    world_size: int
    node_rank: int

    @property
    def is_zero(self) -> bool:
        return self.rank == 0


def detect_launch() -> Launch:
    """Ranks as given by torchrun or SLURM (srun); a single process otherwise."""
    for env_cls in (TorchElasticEnvironment, SLURMEnvironment):
        if env_cls.detect():
            env = env_cls()
            return Launch(env.global_rank(), env.local_rank(), env.world_size(), env.node_rank())
    return Launch(0, 0, 1, 0)


def launched_by_launcher() -> bool:
    return TorchElasticEnvironment.detect() or SLURMEnvironment.detect()


def init_process_group(launch: Launch, accelerator: str) -> None:
    """Initialise torch.distributed (gloo on CPU, NCCL on GPUs) when there is more than one rank."""
    if launch.world_size <= 1 or dist.is_initialized():
        return
    backend = "nccl" if accelerator == "gpu" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(launch.local_rank)
    if SLURMEnvironment.detect() and not TorchElasticEnvironment.detect():
        env = SLURMEnvironment()
        os.environ.setdefault("MASTER_ADDR", env.main_address)
        os.environ.setdefault("MASTER_PORT", str(env.main_port))
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size)


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
