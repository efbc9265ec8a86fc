"""The optional parts of the streaming contract, as base classes a model inherits to declare them.

The engine asks ``isinstance(net, FeedsBackLabels)`` (or ``SeedsPerVideo``) instead
of probing for methods, so a model states what it takes part in, in its class line, and a typo in a hook's
name is an error at class definition (the base's method is abstract in spirit: it raises).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Sequence

from torch import Tensor


class FeedsBackLabels:
    """A model that feeds the labels of frame t - `feedback_delay` back through its state (Transeger).

    ``feedback_delay``: calls of at most this many frames stream exactly (longer calls differ after their
    first ``feedback_delay`` frames), so the engine refuses a ``train.chunk_size`` above it.
    ``teacher_force(state, labels (B, T), mask (B, 1, T) | None) -> state``: the engine calls it in
    training after each chunk, to put that chunk's ground truth in the state instead of the predictions.
    """

    feedback_delay: int

    def teacher_force(self, state: tuple[Tensor, ...], labels: Tensor,
                      mask: Tensor | None = None) -> tuple[Tensor, ...]:
        raise NotImplementedError(f"{type(self).__name__} declares FeedsBackLabels but has no teacher_force")


class SeedsPerVideo:
    """A model whose evaluation draws noise from per-video generators (DiffAct): before each evaluation
    forward the engine hands it the batch's video indices in their split (None: no indices known)."""

    def set_video_indices(self, indices: Sequence[int] | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} declares SeedsPerVideo but has no set_video_indices")



class PostProcesses:
    """A model whose evaluation output's last stage is post-processed (DiffAct's median filter / purge), so
    that a test-time mean over several passes (`data.test_offsets`) can post-process the mean instead of
    each pass: ``raw_outputs()`` is a context in which the last stage is not post-processed; it yields the
    post-processing, ``(logits (B, K, T), valid (B, T) bool) -> logits (B, K, T)``."""

    def raw_outputs(self) -> AbstractContextManager[Callable[[Tensor, Tensor], Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} declares PostProcesses but has no raw_outputs")
