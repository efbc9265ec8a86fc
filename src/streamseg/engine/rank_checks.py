"""Checks that every DDP rank runs the same thing: the same resolved params before training, the same
weights after it. A mismatch means a broken setup, so every rank fails loudly instead of rank 0 saving
its own result silently."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from typing import Any

from torch import nn

from ..config import ConfigError
from . import dist


def sha256(obj: Any) -> str:
    """The hash of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def check_ranks_params(params_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Every DDP rank must resolve the same params (they run the same command line and configs; a config
    that reads its host, the clock or an unseeded random number would break this). Returns each rank's
    `{rank, host, pid, params_sha256}`; raises ConfigError on every rank, naming the keys that differ."""
    mine = {"rank": dist.detect_launch().rank, "host": platform.node(), "pid": os.getpid(),
            "params_sha256": sha256(params_json)}
    gathered = dist.all_gather((mine, params_json))
    for rank, (info, other) in enumerate(gathered):
        if info["params_sha256"] != gathered[0][0]["params_sha256"]:
            from .rundir import _diff

            raise ConfigError(f"DDP rank {rank} resolved other params than rank 0 ({_diff(gathered[0][1], other)}); "
                              "every rank must run the same command with the same config files")
    return [info for info, _ in gathered]


def check_ranks_agree(net: nn.Module) -> list[list[float]]:
    """After DDP training every rank must hold the same weights; a mismatch means a broken setup
    (e.g. ranks that saw different data counts), so fail loudly instead of saving rank 0's silently.
    Returns every rank's per-tensor weight sums."""
    summary = [float(p.detach().double().sum()) for p in net.parameters()]
    gathered = dist.all_gather(summary)
    if any(g != gathered[0] for g in gathered):
        raise RuntimeError(f"DDP ranks ended training with different weights: {[g[:3] for g in gathered]}")
    return gathered
