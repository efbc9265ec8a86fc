"""Gradient accumulation whose count runs across epochs (`train.accumulate_across_epochs`): DiffAct's loop.

The official DiffAct training loop (Finspire13/DiffAct ``main.py``, ``Trainer.train``) runs one video per
step, divides each video's loss by ``batch_size`` (4) before its backward pass, and steps the optimiser
(then zeroes the gradients) when a step counter, 1 at the start and never reset between epochs (it is saved
in ``latest.pt``), is a multiple of ``batch_size``. A window of 4 videos can so straddle an epoch's end:
with 3 training videos, the first step comes after video 1 of epoch 2, and the videos at the end of the
last epoch that do not complete a window never reach the weights.

Lightning's own accumulation (`train.accumulate` alone) restarts its count every epoch and steps on an
epoch's last batch. `CrossEpochAccumulation` replaces it (the Trainer then accumulates nothing itself):
`SegmentationModule` calls it from its `backward` (the loss divided by N), `optimizer_zero_grad` (zero only
at a window's start) and `optimizer_step` (step only after every N-th batch) hooks, and saves its count and
the gradients of an unfinished window in checkpoints, so a resumed run continues the window where it
stopped (the official resume keeps the count but starts from zero gradients). Lightning's ``global_step``
still counts batches, not optimiser steps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["CrossEpochAccumulation"]


class CrossEpochAccumulation:
    """Step the optimiser after every ``every``-th training batch of the run, counting across epochs.

    ``batches``: training batches begun so far in the run (the official counter minus 1).
    """

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"train.accumulate must be >= 1, got {every}")
        self.every, self.batches = every, 0
        self._carried: dict[str, Tensor] | None = None  # a resumed window's gradients, put back at its next batch

    def scale(self, loss: Tensor) -> Tensor:
        """The loss whose gradient the batch adds: divided by ``every`` (official ``total_loss /= batch_size``)."""
        return loss / self.every

    def zero_grad(self, optimizer: torch.optim.Optimizer, net: nn.Module) -> None:
        """Called before each batch's backward pass: zero the gradients when the batch opens a window; in a
        window resumed from a checkpoint, put its saved gradients back instead."""
        if (self.batches - 1) % self.every == 0:  # this batch (number `batches`, from 1) opens a window
            optimizer.zero_grad()
        elif self._carried is not None:
            for name, p in net.named_parameters():
                if name in self._carried:
                    p.grad = self._carried[name].to(device=p.device, dtype=p.dtype).clone()
        self._carried = None

    def step_now(self, closure: Callable[[], Any] | None) -> bool:
        """Count the batch; True when it closes a window (the caller steps, running ``closure``), else run
        ``closure`` here (forward and backward: its gradients add up) and return False."""
        self.batches += 1
        if self.batches % self.every == 0:
            return True
        if closure is not None:
            closure()
        return False

    def state_dict(self, net: nn.Module) -> dict:
        """The count and the unfinished window's gradients (plain tensors: checkpoints load with weights_only)."""
        grads = {}
        if self.batches % self.every:
            grads = {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}
        return {"every": self.every, "batches": self.batches, "grads": grads}

    def load_state_dict(self, state: dict) -> None:
        if int(state["every"]) != self.every:
            raise ValueError(f"the checkpoint accumulated {state['every']} batches per step, train.accumulate is "
                             f"{self.every}: resume with -o train.accumulate={state['every']}")
        self.batches = int(state["batches"])
        self._carried = dict(state["grads"]) or None
