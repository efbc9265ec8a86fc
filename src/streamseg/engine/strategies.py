"""The distributed strategy of a run, from `train.strategy` (the `TrainParams` docstring lists the keys):
what `runner` passes to `pl.Trainer(strategy=...)`.

* "ddp" (default): Lightning's DDP with more than one process (`torchrun`, `--devices`, `--num-nodes`),
  "auto" (one device) otherwise: every process holds the whole model, gradients are all-reduced. CPU
  (gloo) or GPU (NCCL).
* "fsdp": Lightning's `FSDPStrategy` (PyTorch FullyShardedDataParallel, full sharding of parameters,
  gradients and optimiser state; checkpoints are saved whole, `state_dict_type="full"`, so `best.ckpt`
  loads as any other). GPU only: Lightning 2.6 refuses FSDP on another accelerator
  (`pytorch_lightning/trainer/connectors/accelerator_connector.py`: "requires a GPU accelerator").
* "deepspeed": Lightning's `DeepSpeedStrategy` at ZeRO stage `train.zero_stage` (1: optimiser state
  sharded, 2: + gradients, 3: + parameters). DeepSpeed is an optional extra (`pip install
  streamseg[deepspeed]`) and needs CUDA GPUs (Lightning 2.6's strategy raises "only supported on CUDA GPUs"
  otherwise). Its checkpoints are DeepSpeed's folders, not single files; every checkpoint reader takes them
  (`zero_checkpoint`, through `checkpoint_io`).

`check_strategy` refuses what cannot run (a GPU-only strategy on the CPU, DeepSpeed not installed) with
the key's name, before any data is read or any process group started.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..config import ConfigError, TrainParams

GPU_ONLY = ("fsdp", "deepspeed")


def check_strategy(t: TrainParams, accelerator: str) -> None:
    """ConfigError naming `train.strategy` / `train.zero_stage` when this machine cannot run them, or when
    the pair is one streamseg refuses: DeepSpeed ZeRO 3, whose test after training fails inside DeepSpeed
    (`trainer.test(ckpt_path=...)` builds an engine without an optimiser, DeepSpeed's
    `DeepSpeedZeRoOffload`, and loading the checkpoint into it raises "'DeepSpeedZeRoOffload' object has no
    attribute '_restore_from_bit16_weights'": deepspeedai/DeepSpeed#7272, open; seen here with DeepSpeed
    0.19.8 and Lightning 2.6.6 on an H100, tests/engine/test_strategies.py). Stage 1/2 and FSDP ran end to
    end there. ZeRO 3 folders made elsewhere are still read (`engine/zero_checkpoint.py`)."""
    if t.strategy == "deepspeed" and t.zero_stage == 3:
        raise ConfigError("train.zero_stage=3: DeepSpeed cannot load a ZeRO-3 checkpoint into the engine it builds "
                          "for testing (deepspeedai/DeepSpeed#7272), so the run's test after training would fail; "
                          "use train.zero_stage=1 or 2, or train.strategy=fsdp to shard the weights")
    if t.strategy in GPU_ONLY and accelerator != "gpu":
        raise ConfigError(f"train.strategy={t.strategy!r} needs CUDA GPUs (--accelerator gpu), got accelerator "
                          f"{accelerator!r}; Lightning runs only train.strategy='ddp' on the CPU")
    if t.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("train.strategy='deepspeed' needs the DeepSpeed package, which is not installed: "
                          "pip install 'streamseg[deepspeed]' (or train.strategy=ddp / fsdp)")
    if t.strategy != "deepspeed" and t.zero_stage != TrainParams.zero_stage:
        raise ConfigError(f"train.zero_stage={t.zero_stage} is DeepSpeed's: it needs train.strategy=deepspeed "
                          f"(got {t.strategy!r})")


def trainer_strategy(t: TrainParams, world: int) -> Any:
    """`pl.Trainer(strategy=...)` for `train.strategy` over ``world`` processes in all."""
    if t.strategy == "ddp":
        return "ddp" if world > 1 else "auto"
    if t.strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        return FSDPStrategy(state_dict_type="full")
    if t.strategy == "deepspeed":
        from pytorch_lightning.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=t.zero_stage)
    raise ConfigError(f"train.strategy={t.strategy!r}: expected one of ddp, fsdp, deepspeed")


def replicated_weights(t: TrainParams) -> bool:
    """Whether every rank holds the whole network after training, so `runner.check_ranks_agree` can compare
    the ranks' weights: DDP and DeepSpeed ZeRO 1/2 do; FSDP (full sharding) and ZeRO 3 keep a shard each."""
    return t.strategy == "ddp" or (t.strategy == "deepspeed" and t.zero_stage < 3)
