"""The non-finite loss policy (`train.nonfinite`): a NaN/inf training loss is never trained on into a checkpoint.

``"stop"`` (the default) raises `FloatingPointError` naming the epoch, batch, optimiser step and videos of the
step whose loss was not finite. On a GPU, reading that flag right after the loss would make the host wait for
the GPU every step (the loss is computed asynchronously), so the flag stays on the device and is copied to
pinned host memory without blocking; it is read one step late, at the start of the next training batch, and
at every boundary where weights leave the process or are judged: before validation, at the end of each
training epoch and when a checkpoint is saved (`LightningModule.on_save_checkpoint` runs before the file is
written). So the bad step's optimiser update happens in memory, but no checkpoint, validation score or
next step is ever made from it. On the CPU the flag costs nothing to read, so it is read at once, before
the backward pass (the weights are never updated).

``"skip"`` warns (`NonFiniteLossWarning`, same details), contributes no gradient, makes no optimiser step for
that batch (under DDP: for that step on every rank, so the ranks' weights stay equal), restores the network's
buffers (BatchNorm statistics) to their values before the batch and counts the skips. Its check stays
synchronous: whether to step must be known before the optimiser steps, and agreed by all ranks
(`reduce_boolean_decision`), which reads the flag on the host anyway.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteLossWarning(RuntimeWarning):
    """A training batch had a NaN/inf loss and was skipped (train.nonfinite="skip")."""


@dataclass
class Where:
    """Where a training loss was computed (formatted only for an error or a warning)."""

    epoch: int
    batch: int
    step: int
    names: list

    def __str__(self) -> str:
        return (f"epoch {self.epoch}, batch {self.batch}, optimizer step {self.step}, "
                f"videos {[n for n in self.names if n is not None]}")


def _stop_error(loss: Tensor, where: Where) -> FloatingPointError:
    return FloatingPointError(f"non-finite training loss {loss.item()} at {where} "
                              "(set train.nonfinite=skip to skip such batches)")


class NonFinitePolicy:
    """`train.nonfinite` for one module. ``defer``: read the stop flag one step late (None: when the loss
    is on a GPU; the tests set it to exercise the deferred path on the CPU)."""

    def __init__(self, policy: str, defer: bool | None = None) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy, self.defer = policy, defer
        self.skipped = 0
        self._pending: tuple[Tensor, Any, Tensor, Where] | None = None  # (flag, event, loss, where)
        self._host_flag: Tensor | None = None  # pinned, allocated once
        self._buffers: list[Tensor] = []  # skip mode: float buffers before the current batch / window

    @property
    def skip(self) -> bool:
        return self.policy == "skip"

    # ------------------------------------------------------------------ stop
    def watch(self, loss: Tensor, where: Where) -> None:
        """Stop mode: raise now (``defer`` off) or keep the step's flag to `settle` later."""
        loss = loss.detach()
        defer = loss.is_cuda if self.defer is None else self.defer
        if not defer:
            if not bool(torch.isfinite(loss)):
                raise _stop_error(loss, where)
            return
        self.settle()  # at most one step is pending
        bad = ~torch.isfinite(loss)
        event = None
        if loss.is_cuda:
            if self._host_flag is None:
                self._host_flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            self._host_flag.copy_(bad, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            bad = self._host_flag
        self._pending = (bad, event, loss, where)

    def settle(self) -> None:
        """Raise FloatingPointError if the pending step's loss was not finite (it waits only for that
        step's loss, not for the work queued after it)."""
        if self._pending is None:
            return
        bad, event, loss, where = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if bool(bad):
            raise _stop_error(loss, where)

    # ------------------------------------------------------------------ skip
    def decide_skip(self, loss: Tensor, where: Where, reduce: Callable[[bool], bool], net: nn.Module) -> bool:
        """Skip mode: True when this step must be skipped (a loss on any rank is NaN/inf: ``reduce`` is the
        strategy's `reduce_boolean_decision(all=False)`); restores the buffers and warns."""
        bad = not bool(torch.isfinite(loss.detach()))
        # every rank must take the same decision, or their optimiser steps (and weights) would differ
        skip = reduce(bad)
        if skip:
            self.restore_buffers(net)
            self.skipped += 1
            what = f"non-finite training loss {loss.item()} at {where}" if bad else (
                f"a non-finite loss on another rank at {where}")
            warnings.warn(f"{what}: skipped ({self.skipped} skipped so far)", NonFiniteLossWarning, stacklevel=3)
        return skip

    def snapshot_buffers(self, net: nn.Module) -> None:
        """Copy the float buffers (BatchNorm running statistics: per-channel vectors, a few KB) so that a
        skipped batch's forward pass cannot leave NaN in them; skip mode only."""
        if self.skip:
            self._buffers = [b.detach().clone() for b in net.buffers() if b.is_floating_point()]

    @torch.no_grad()
    def restore_buffers(self, net: nn.Module) -> None:
        for b, saved in zip([b for b in net.buffers() if b.is_floating_point()], self._buffers):
            b.copy_(saved)
