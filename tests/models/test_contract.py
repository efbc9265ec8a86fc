"""The streaming contract, held by every model: every model config (`model_configs/*.py`, at its `TINY`
size: tests/configs.py) is a case, so a new model config gets every test; VARIANTS adds the
constructor options that no model config's defaults reach.

Contract: ``init_state(B, device)`` -> tuple of tensors with the batch on dim 0; ``forward(x, state, mask)``
-> ``(logits (S, B, K, T), new_state)``; ``lookahead`` is None or the true number of future frames a
prediction uses; causal models (lookahead 0) give the same logits chunk by chunk as whole. A model that
feeds its own predictions back (``feedback_delay``, Transeger) is exact for calls of at most that many
frames; "whole" means such calls for it, and longer calls are checked to differ only after the delay.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from streamseg.models import (
    FramewiseHead,
    MemoryTCN,
    transeger_features,
    tsm_memtcn_mobilenet_v2,
    tsm_memtcn_resnet50,
)

from ..configs import build_tiny, model_names, tiny_params

D, K = 6, 5  # feature channels and classes of the feature models
NAMES = ("background", "take_bowl", "pour_milk", "take_cup", "stirMilk")  # K names sharing words (Transeger)
# Transeger's label feedback: small sizes, feedback_delay 6 = half the test video (so the two-halves
# runs of test_state_does_not_leak_between_videos are exact, and chunks of 7 / whole videos are not)
TRANSEGER_TINY = dict(num_layers=3, num_maps=8, image_dim=8, text_dim=8, text_width=16, text_layers=1, text_heads=2,
                      context_tokens=2, feedback_delay=6)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    frame_shape: tuple[int, ...]  # one input frame: (D,) for features, (3, H, W) for RGB
    stages: int | None  # S of the training logits; None: a model config's, whatever its TINY size gives
    length: int = 20  # T of the test videos; long enough to cross the models' dilations and shifts
    marks: tuple = ()
    # A model with outputs besides the logits (ASRF's boundaries) adds a term on them, so the gradient
    # check reaches the parameters that only those outputs use.
    aux_loss: Callable[[nn.Module], Tensor] | None = None


def _diffact_decoder_loss(m: nn.Module) -> Tensor:
    """DiffAct's decoder learns through DiffActLoss's denoising pass on the features kept by the forward."""
    b, t = m.features.shape[0], m.features.shape[-1]
    return m.training_decoder_logits(torch.zeros(b, t, dtype=torch.long), torch.zeros(b, t), torch.ones(b, t)
                                     ).square().mean()


# What a model config's case needs besides its TINY size: the term on outputs besides the logits.
# (transeger's TINY feedback_delay 6 is half of FRAMES_LENGTH: the two-halves runs are exact; with a delay
# of 8 the reference's 8-frame calls differ from 1-frame chunks by ~1e-5 in float32, at this file's ATOL.)
CONFIG_CASE = {
    "asrf": dict(aux_loss=lambda m: m.boundary_logits.square().mean()),
    "diffact": dict(aux_loss=_diffact_decoder_loss),
}
FRAMES_LENGTH = 12  # T of the RGB cases: enough for the shifts and clips, small for the CPU
# (video_memtcn's TINY: clips of 4 frames + 4 frames of context, lookahead 3. Its causal form, clip_len=1,
# streams exactly in float64 - tests/models/test_video_backbones.py - but in float32 the 18 3D conv layers
# differ by ~3e-5 between batches of different sizes, beyond this file's 1e-5.)


def _config_case(name: str) -> Case:
    """The case of `model_configs/<name>.py` at its TINY size: RGB frames of its `frame_size` if its Params
    have one, else D feature channels."""
    frame_size = getattr(tiny_params(name), "frame_size", None)
    frame_shape = (D,) if frame_size is None else (3, *frame_size)
    extra = CONFIG_CASE.get(name, {})
    length = extra.get("length", FRAMES_LENGTH if frame_size is not None else Case.length)
    return Case(name, functools.partial(build_tiny, name, frame_shape[0], NAMES), frame_shape, None, length,
                aux_loss=extra.get("aux_loss"))


VARIANTS = [
    Case("memtcn_1stage", lambda: MemoryTCN(D, K, num_stages=1, num_layers=4, num_maps=8), (D,), 1),
    Case("framewise_linear", lambda: FramewiseHead(D, K), (D,), 1),
    Case(
        "tsm_memtcn_mobilenet_v2_bidirectional",
        lambda: tsm_memtcn_mobilenet_v2(K, num_stages=2, num_layers=2, num_maps=8, causal=False, frame_size=(16, 16)),
        (3, 16, 16),
        2,
        length=14,  # > lookahead 10 + the 3 changed frames of test_lookahead_is_honest
    ),
    Case(
        "tsm_memtcn_resnet50_causal",
        lambda: tsm_memtcn_resnet50(K, num_layers=2, num_maps=8, frame_size=(32, 32)),
        (3, 32, 32),
        1,
        length=6,
    ),
    Case("transeger_features", lambda: transeger_features(D, K, NAMES, **TRANSEGER_TINY), (D,), 1, length=12),
]

CASES = [_config_case(name) for name in model_names()] + VARIANTS

ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py
CHUNK_SIZES = (1, 3, 7, None)  # None = the whole video in one call


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.name, marks=c.marks) for c in cases]


ALL = _params(CASES)


def _model(case: Case, train: bool = False) -> nn.Module:
    """A fresh copy of the case's model: seeded, in train mode, or as :func:`_eval_model` builds it."""
    if train:
        torch.manual_seed(0)
        return case.build().train()
    return copy.deepcopy(_eval_model(case))


@functools.cache
def _eval_model(case: Case) -> nn.Module:
    """The model, seeded; in eval mode with BatchNorm statistics calibrated on random input.

    torchvision's initialisation with BatchNorm's initial running statistics (mean 0, var 1) makes
    MobileNetV2 in eval mode shrink activations ~10x per stage, to a near-constant output; statistics
    measured on a few batches give input-sensitive logits, without which these tests would prove little.
    """
    torch.manual_seed(0)
    model = case.build()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for seed in range(2):
                x = _video(case, 2, seed=100 + seed)
                model(x, model.init_state(2, "cpu"))
    return model.eval()


def _video(case: Case, batch: int, length: int | None = None, seed: int = 1) -> Tensor:
    """Random input (B, C, T[, H, W])."""
    gen = torch.Generator().manual_seed(seed)
    length = case.length if length is None else length
    c, *hw = case.frame_shape
    return torch.randn(batch, c, length, *hw, generator=gen)


def _reference(model: nn.Module, x: Tensor) -> Tensor:
    """What a causal model's chunked runs must reproduce: one whole-video call; for a model that feeds
    its own predictions back (``feedback_delay``), calls of ``feedback_delay`` frames, the longest that
    are exact (a frame whose fed-back label lies in the same call gets none)."""
    return _run_chunked(model, x, getattr(model, "feedback_delay", None))[0]


def _run_chunked(model: nn.Module, x: Tensor, chunk: int | None, state: tuple[Tensor, ...] | None = None):
    """Run x chunk by chunk along time (dim 2), carrying the state; return (logits, state)."""
    state = model.init_state(x.shape[0], x.device) if state is None else state
    length = x.shape[2]
    chunk = length if chunk is None else chunk
    outs = []
    for start in range(0, length, chunk):
        logits, state = model(x[:, :, start : start + chunk], state)
        outs.append(logits)
    return torch.cat(outs, dim=-1), state


# --------------------------------------------------------------------------------------------- every model


@pytest.mark.parametrize("case", ALL)
def test_forward_backward_shapes(case: Case) -> None:
    model = _model(case, train=True)
    batch = 2
    x = _video(case, batch)
    state = model.init_state(batch, "cpu")
    mask = torch.ones(batch, 1, case.length)
    logits, new_state = model(x, state, mask)
    assert logits.dim() == 4 and logits.shape[1:] == (batch, K, case.length)
    assert case.stages is None or logits.shape[0] == case.stages
    assert torch.isfinite(logits).all()
    assert isinstance(new_state, tuple)
    assert [t.shape for t in new_state] == [t.shape for t in state]
    loss = logits.square().mean()
    if case.aux_loss is not None:
        loss = loss + case.aux_loss(model)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("case", ALL)
def test_init_state_has_batch_on_dim0(case: Case) -> None:
    model = _model(case)
    for batch in (1, 3):
        state = model.init_state(batch, "cpu")
        assert isinstance(state, tuple)
        assert all(isinstance(t, Tensor) and t.shape[0] == batch and t.is_floating_point() for t in state)
    one, three = model.init_state(1, "cpu"), model.init_state(3, "cpu")
    assert [t.shape[1:] for t in one] == [t.shape[1:] for t in three]
    assert model.lookahead is None or (isinstance(model.lookahead, int) and model.lookahead >= 0)
    if model.lookahead is None:
        assert state == ()  # offline models run whole videos and keep nothing between calls


@pytest.mark.parametrize("case", ALL)
def test_lookahead_is_honest(case: Case) -> None:
    """Changing frames >= t0 leaves the logits before t0 - lookahead untouched."""
    model = _model(case)
    if model.lookahead is None:
        pytest.skip("offline model: every frame may depend on the whole video")
    x = _video(case, 1)
    t0 = case.length - 3
    y = x.clone()
    y[:, :, t0:] = _video(case, 1, length=3, seed=7)
    with torch.no_grad():
        a, _ = model(x, model.init_state(1, "cpu"))
        b, _ = model(y, model.init_state(1, "cpu"))
    keep = t0 - model.lookahead
    assert keep > 0, "test video too short for this lookahead"
    torch.testing.assert_close(a[..., :keep], b[..., :keep], atol=ATOL, rtol=0)
    assert not torch.allclose(a[..., t0:], b[..., t0:])  # the changed frames do matter


@pytest.mark.parametrize("case", ALL)
def test_padding_does_not_change_valid_frames(case: Case) -> None:
    """A video padded with garbage frames (mask 0) in a batch gives the logits it gets alone."""
    model = _model(case)
    valid = case.length - case.length // 3
    alone = _video(case, 1, length=valid)
    batch = _video(case, 2, seed=3)  # row 1: another full-length video; row 0: ours + garbage frames
    batch[0:1, :, :valid] = alone
    mask = torch.ones(2, 1, case.length)
    mask[0, 0, valid:] = 0
    with torch.no_grad():
        ref, _ = model(alone, model.init_state(1, "cpu"), torch.ones(1, 1, valid))
        out, _ = model(batch, model.init_state(2, "cpu"), mask)
    torch.testing.assert_close(out[:, 0:1, :, :valid], ref, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("case", ALL)
def test_state_does_not_leak_between_videos(case: Case) -> None:
    """Two stream slots: slot 1 switches to video B (its state row reset), slot 0 carries on with A."""
    model = _model(case)
    video_a = _video(case, 1, seed=1)
    video_b = _video(case, 1, seed=2)
    half = case.length // 2
    with torch.no_grad():
        a_whole = _reference(model, video_a)
        b_fresh, _ = model(video_b[:, :, :half], model.init_state(1, "cpu"))
        # Both slots play the first half of A ...
        _, state = model(torch.cat([video_a[:, :, :half]] * 2), model.init_state(2, "cpu"))
        # ... then slot 1 is reset to a fresh stream (row 1 of every state tensor) and plays B.
        fresh = model.init_state(2, "cpu")
        state = tuple(torch.cat([s[:1], f[1:]]) for s, f in zip(state, fresh))
        nxt = torch.cat([video_a[:, :, half : 2 * half], video_b[:, :, :half]])
        out, _ = model(nxt, state)
    torch.testing.assert_close(out[:, 1:2], b_fresh, atol=ATOL, rtol=1e-5)
    if model.lookahead == 0:  # slot 0 continued A exactly
        assert half <= getattr(model, "feedback_delay", half), "halves longer than the feedback delay"
        torch.testing.assert_close(out[:, 0:1], a_whole[..., half : 2 * half], atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------------------- causal models

CAUSAL = _params([c for c in CASES if _model(c).lookahead == 0])


@pytest.mark.parametrize("case", CAUSAL)
@pytest.mark.parametrize("chunk", CHUNK_SIZES, ids=lambda c: f"chunk{c or 'whole'}")
def test_chunked_equals_whole(case: Case, chunk: int | None) -> None:
    model = _model(case)
    x = _video(case, 2)
    delay = getattr(model, "feedback_delay", None)
    with torch.no_grad():
        whole, whole_state = _run_chunked(model, x, delay)  # delay None: one call
        chunked, chunked_state = _run_chunked(model, x, chunk)
    if delay is not None and (chunk or case.length) > delay:
        # label feedback (Transeger): a call longer than feedback_delay is exact on its first
        # feedback_delay frames only; later ones get no label where the reference has the prediction
        torch.testing.assert_close(chunked[..., :delay], whole[..., :delay], atol=ATOL, rtol=1e-5)
        assert not torch.allclose(chunked, whole, atol=1e-3), "the fed-back labels change nothing"
        return
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=1e-5)
    for a, b in zip(chunked_state, whole_state):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("case", CAUSAL)
def test_gradient_flows_through_state(case: Case) -> None:
    """The model never detaches its state: truncating back-propagation is the engine's decision."""
    model = _model(case)
    if not model.init_state(1, "cpu"):
        pytest.skip("stateless model")
    x = _video(case, 1).requires_grad_(True)
    half = case.length // 2
    _, state = model(x[:, :, :half], model.init_state(1, "cpu"))
    logits, _ = model(x[:, :, half:], state)
    logits.sum().backward()
    assert x.grad[:, :, :half].abs().sum() > 0
