"""Streaming: running a net chunk by chunk with its state carried, and truncated back-propagation.

Offline batches (whole videos, `chunked_forward`): the video is cut into chunks of `chunk_size` frames
and the state is detached every `tbptt_chunks` chunks, so gradients reach at most that many chunks back.

Stream batches (`StreamState`, `TBPTTWindow`): each batch is one chunk of B parallel stream slots; the state
lives across steps, slots flagged ``reset`` get the initial state, and the loss of `tbptt_chunks`
consecutive chunks is summed into one window whose mean over its valid frames is back-propagated once
(the module then steps the optimiser and truncates the state: `StreamState.truncate`).

A net that feeds its own predictions back (`models.FeedsBackLabels`, e.g. Transeger) gets each training
chunk's ground truth in its state before the next chunk; evaluation keeps the net's own predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..models import FeedsBackLabels

State = tuple[Tensor, ...]


def teacher_force(net: nn.Module, state: State, labels: Tensor, mask: Tensor) -> State:
    """In training, the next chunk sees this chunk's ground truth instead of the predictions (nets that
    declare `FeedsBackLabels`); other nets' state is returned as it is."""
    return net.teacher_force(state, labels, mask) if isinstance(net, FeedsBackLabels) else state


def chunked_forward(net: nn.Module, x: Tensor, mask: Tensor, chunk_size: int, tbptt_chunks: int,
                    labels: Tensor | None = None) -> Tensor:
    """x (B, C, T[, H, W]), mask (B, 1, T) -> logits (S, B, K, T), chunk by chunk with the state carried,
    detached every `tbptt_chunks` chunks; with ``labels`` (B, T) (training) teacher-forced."""
    state = net.init_state(x.shape[0], x.device)
    outs = []
    for i, start in enumerate(range(0, x.shape[2], chunk_size)):
        if i % tbptt_chunks == 0:
            state = tuple(s.detach() for s in state)
        sl = slice(start, start + chunk_size)
        logits, state = net(x[:, :, sl], state, mask[:, :, sl])
        if labels is not None:
            state = teacher_force(net, state, labels[:, sl], mask[:, :, sl])
        outs.append(logits)
    return torch.cat(outs, dim=-1)


class StreamState:
    """The carried state of B stream slots (one per training or evaluation pass)."""

    def __init__(self) -> None:
        self.state: State | None = None

    def reset(self) -> None:
        self.state = None

    def forward(self, net: nn.Module, batch: dict) -> Tensor:
        """One chunk: logits (S, B, K, T); the new state is kept (not detached: see `truncate`)."""
        logits, self.state = net(batch["x"], self._slot_state(net, batch), batch["mask"].unsqueeze(1))
        return logits

    def teacher_force(self, net: nn.Module, batch: dict) -> None:
        self.state = teacher_force(net, self.state, batch["labels"], batch["mask"].unsqueeze(1))

    def truncate(self) -> None:
        """Gradients never flow further back than this point (the end of a truncation window)."""
        if self.state is not None:
            self.state = tuple(s.detach() for s in self.state)

    def drop_if_nonfinite(self) -> None:
        """After a skipped window: a state that went non-finite would poison every later chunk of its
        streams, so all slots restart from the initial state; a finite one is kept (truncated)."""
        if self.state is not None and any(not torch.isfinite(s).all() for s in self.state):
            self.state = None
        else:
            self.truncate()

    def _slot_state(self, net: nn.Module, batch: dict) -> State:
        """The state with the rows of slots that start a new video (batch["reset"]) set to the initial state."""
        x, state = batch["x"], self.state
        init = net.init_state(x.shape[0], x.device)
        if state is None or len(state) != len(init) or any(s.shape != i.shape for s, i in zip(state, init)):
            return init
        reset = batch["reset"].to(x.device)
        return tuple(torch.where(reset.view(-1, *([1] * (s.dim() - 1))), i, s) for s, i in zip(state, init))


class TBPTTWindow:
    """The summed loss of the chunks since the last optimiser step (stream batches)."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.clear()

    def clear(self) -> None:
        self.loss: Any = 0.0
        self.frames: Any = 0
        self.count = 0
        self.names: list[str] = []

    @property
    def empty(self) -> bool:
        return self.count == 0

    def add(self, loss_sum: Tensor, frames: Tensor, names: list) -> None:
        self.loss = self.loss + loss_sum
        self.frames = self.frames + frames
        self.count += 1
        self.names.extend(n for n in names if n is not None and n not in self.names)

    def closes(self, last_batch: bool) -> bool:
        """The window is full, or the epoch ends."""
        return self.count >= self.chunks or last_batch

    def mean(self) -> Tensor:
        """The window's loss per valid frame."""
        return self.loss / self.frames.clamp(min=1)


def video_chunks(batch: dict, sample_rate: int) -> Tensor:
    """(B,) chunks of each slot's video: ceil(ceil(full_length / sample_rate) / chunk) (0 for an empty slot)."""
    sampled = -(-batch["full_length"] // sample_rate)
    return -(-sampled // batch["x"].shape[2])
