"""Video backbones (torchvision's; PySlowFast's X3D and SlowFast) as streaming encoders: shapes and gradients at the smallest sizes each
architecture accepts, honest look-ahead (clip_len - 1, no more, no less), the context carried in the
state (chunked == one pass), local weight files, and the size errors."""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.video import mvit_v2_s, r2plus1d_18, s3d

from streamseg.config.loader import import_file
from streamseg.models import (
    EncoderHead,
    MemoryTCN,
    VideoEncoder,
    WeightsError,
    mvit_v2_s_encoder,
    r2plus1d_18_encoder,
    s3d_encoder,
    slowfast_r50_encoder,
    swin3d_t_encoder,
    x3d_m_encoder,
)

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[..., VideoEncoder]
    out_channels: int
    frame_size: tuple[int, int]  # the smallest the architecture accepts (or close to it)
    clip_len: int
    context: int


# Smallest legal windows (context + clip_len) and frames: R(2+1)D and Swin3D take anything, S3D >= 8
# frames of >= 17x17, MViTv2-S an even window of sides that are multiples of 32, X3D anything (XS and S are
# the same network as M), SlowFast windows that are a multiple of alpha = 4.
BACKBONES = [
    Backbone("r2plus1d_18", r2plus1d_18_encoder, 512, (16, 16), clip_len=3, context=2),
    Backbone("s3d", s3d_encoder, 1024, (17, 17), clip_len=4, context=4),
    Backbone("mvit_v2_s", mvit_v2_s_encoder, 768, (32, 32), clip_len=2, context=2),
    Backbone("swin3d_t", swin3d_t_encoder, 768, (16, 16), clip_len=3, context=2),
    Backbone("x3d_m", x3d_m_encoder, 2048, (16, 16), clip_len=3, context=2),
    Backbone("slowfast_r50", slowfast_r50_encoder, 2304, (16, 16), clip_len=4, context=4),
]
PARAMS = [pytest.param(b, id=b.name) for b in BACKBONES]


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _encoder(b: Backbone, clip_len: int | None = None, context: int | None = None) -> VideoEncoder:
    """A fresh copy of the seeded encoder (building torchvision's models costs seconds on a busy CPU)."""
    clip_len = b.clip_len if clip_len is None else clip_len
    context = b.context if context is None else context
    return copy.deepcopy(_built(b, clip_len, context))


@functools.cache
def _built(b: Backbone, clip_len: int, context: int) -> VideoEncoder:
    torch.manual_seed(0)
    return b.build(clip_len=clip_len, context=context, frame_size=b.frame_size)


def _frames(b: Backbone, length: int, batch: int = 1, seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(batch, 3, length, *b.frame_size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _calibrated(encoder: VideoEncoder, b: Backbone) -> VideoEncoder:
    """In float64 and eval mode, with BatchNorm statistics measured on random windows.

    With the initial statistics (mean 0, var 1) deep CNNs shrink activations to a near-constant output,
    which would make equality checks vacuous. float64: these tests check that the streaming arithmetic is
    exact; in float32 the deep 3D convs differ by ~1e-5 relative between batches of different sizes
    (other conv algorithms), which is noise, not a streaming error."""
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        encoder.train()
        with torch.no_grad():
            x = _frames(b, 2 * b.clip_len, batch=2, seed=50)
            encoder(x, encoder.init_state(2))
    return encoder.eval().double()


@pytest.mark.parametrize("b", PARAMS)
def test_forward_backward_at_the_smallest_sizes(b: Backbone) -> None:
    encoder = _encoder(b).train()
    length = 2 * b.clip_len + 1  # two whole clips and a partial one
    x = _frames(b, length, batch=2)
    state = encoder.init_state(2)
    assert encoder.out_channels == b.out_channels and encoder.lookahead == b.clip_len - 1
    assert [t.shape for t in state] == [(2, 3, b.context, *b.frame_size)]
    features, new_state = encoder(x, state, torch.ones(2, 1, length))
    assert features.shape == (2, b.out_channels, length) and torch.isfinite(features).all()
    assert [t.shape for t in new_state] == [t.shape for t in state]
    features.square().mean().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient (would break DDP): {missing[:5]}"
    nonfinite = [n for n, p in encoder.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not nonfinite, f"non-finite gradients: {nonfinite[:5]}"


@pytest.mark.parametrize("b", PARAMS)
def test_lookahead_is_exactly_the_rest_of_the_clip(b: Backbone) -> None:
    """Changing frame t0 changes the features from the start of t0's clip on, and none before."""
    encoder = _calibrated(_encoder(b), b)
    clip = b.clip_len
    x = _frames(b, 3 * clip, dtype=torch.float64)
    t0 = 2 * clip - 1  # the last frame of clip 1
    y = x.clone()
    y[:, :, t0] = _frames(b, 1, seed=7, dtype=torch.float64)[:, :, 0]
    with torch.no_grad():
        a, _ = encoder(x, encoder.init_state(1))
        c, _ = encoder(y, encoder.init_state(1))
    first = t0 - encoder.lookahead  # = the start of clip 1
    assert first == clip
    torch.testing.assert_close(a[..., :first], c[..., :first], atol=1e-10, rtol=0)
    # the whole clip (and the next, through its context) reads the changed frame: the lookahead is not overstated
    changed = (a - c).abs().amax(dim=1)[0] > 1e-4
    assert changed[first : t0 + 1].all(), changed


@pytest.mark.parametrize("b", PARAMS)
def test_state_carries_the_context(b: Backbone) -> None:
    """Calls of whole clips, state carried, give the features of one pass; without the carried state
    (a fresh one) the second call's features differ, so the context is really used."""
    encoder = _calibrated(_encoder(b), b)
    clip = b.clip_len
    x = _frames(b, 4 * clip, batch=2, dtype=torch.float64)
    with torch.no_grad():
        whole, whole_state = encoder(x, encoder.init_state(2))
        state, parts = encoder.init_state(2), []
        for start, stop in ((0, clip), (clip, 3 * clip), (3 * clip, 4 * clip)):
            out, state = encoder(x[:, :, start:stop], state)
            parts.append(out)
        fresh, _ = encoder(x[:, :, clip : 3 * clip], encoder.init_state(2))
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state[0], whole_state[0], atol=0, rtol=0)
    torch.testing.assert_close(whole_state[0], x[:, :, -b.context :], atol=0, rtol=0)
    assert not torch.allclose(fresh[..., :clip], whole[..., clip : 2 * clip], atol=1e-4)


def test_partial_clips_and_masked_frames_read_as_zero_frames() -> None:
    """A call of a length that is not a multiple of clip_len pads its last clip with zero frames, and
    masked frames are zeroed: a padded batch row gives the features of its valid frames alone."""
    b = BACKBONES[0]
    encoder = _calibrated(_encoder(b), b)
    valid = 2 * b.clip_len + 1
    alone = _frames(b, valid, dtype=torch.float64)
    batch = _frames(b, 3 * b.clip_len, batch=2, seed=3, dtype=torch.float64)
    batch[0:1, :, :valid] = alone
    mask = torch.ones(2, 1, 3 * b.clip_len, dtype=torch.float64)
    mask[0, 0, valid:] = 0
    zero_padded = torch.cat([alone, torch.zeros_like(batch[0:1, :, valid:])], dim=2)
    with torch.no_grad():
        ref, _ = encoder(alone, encoder.init_state(1))
        padded, _ = encoder(zero_padded, encoder.init_state(1))
        out, _ = encoder(batch, encoder.init_state(2), mask)
    torch.testing.assert_close(out[0:1, :, :valid], ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(padded[..., :valid], ref, atol=1e-10, rtol=1e-10)


def test_causal_with_clips_of_one_frame() -> None:
    """clip_len = 1: lookahead 0, and any chunking streams exactly."""
    b = BACKBONES[0]
    encoder = _calibrated(_encoder(b, clip_len=1, context=3), b)
    assert encoder.lookahead == 0
    x = _frames(b, 7, batch=2, dtype=torch.float64)
    with torch.no_grad():
        whole, _ = encoder(x, encoder.init_state(2))
        state, parts = encoder.init_state(2), []
        for start in range(0, 7, 3):
            out, state = encoder(x[:, :, start : start + 3], state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, atol=1e-10, rtol=1e-10)


def test_no_context_means_no_state() -> None:
    b = BACKBONES[0]
    encoder = _encoder(b, context=0)
    assert encoder.init_state(2) == () and encoder.num_state_tensors == 0
    features, state = encoder(_frames(b, 5, batch=2), ())
    assert features.shape == (2, 512, 5) and state == ()


def test_encoder_head_composition() -> None:
    b = BACKBONES[0]
    encoder = _encoder(b)
    model = EncoderHead(encoder, MemoryTCN(encoder.out_channels, 4, num_stages=2, num_layers=2, num_maps=8))
    assert model.lookahead == b.clip_len - 1 and model.num_classes == 4
    state = model.init_state(2)
    assert len(state) == encoder.num_state_tensors + len(model.head.init_state(2))
    logits, new_state = model(_frames(b, 7, batch=2), state)
    assert logits.shape == (2, 2, 4, 7) and [t.shape for t in new_state] == [t.shape for t in state]
    with pytest.raises(ValueError, match="head expects 64 input channels, encoder gives 512"):
        EncoderHead(encoder, MemoryTCN(64, 4))


# -------------------------------------------------------------------------------------------- weights


def test_weights_round_trip_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(123)
    net = r2plus1d_18(weights=None)
    path = tmp_path / "r2plus1d_18.pth"
    torch.save({"state_dict": net.state_dict()}, path)  # containers are unwrapped
    encoder = r2plus1d_18_encoder(clip_len=2, context=2, frame_size=(16, 16), weights=str(path))
    ours = encoder.trunk.state_dict()
    theirs = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], atol=0, rtol=0, msg=k)


def test_mvit_is_torchvisions_mvit_v2_s_and_its_weights_fit_16x224_only(tmp_path: Path) -> None:
    """At 16 frames of 224x224 the encoder loads a torchvision mvit_v2_s state dict (so the block table is
    torchvision's); at another size the relative-position tables differ and the error says why."""
    torch.manual_seed(0)
    path = tmp_path / "mvit_v2_s.pth"
    torch.save(mvit_v2_s(weights=None).state_dict(), path)
    encoder = mvit_v2_s_encoder(clip_len=8, context=8, frame_size=(224, 224), weights=str(path))
    reference = torch.load(path, weights_only=True)
    torch.testing.assert_close(encoder.trunk.blocks[3].attn.rel_pos_h, reference["blocks.3.attn.rel_pos_h"])
    with pytest.raises(WeightsError, match=r"(?s)mvit_v2_s.pth does not fit.*shape mismatches.*16 frames of 224x224"):
        mvit_v2_s_encoder(clip_len=2, context=2, frame_size=(32, 32), weights=str(path))


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "s3d.pth"
    torch.save(s3d(weights=None).state_dict(), other)
    with pytest.raises(WeightsError, match=r"(?s)s3d.pth does not fit VideoResNet.*missing keys.*unexpected keys"):
        r2plus1d_18_encoder(frame_size=(16, 16), weights=str(other))
    with pytest.raises(WeightsError, match="no_such.pth: no such file"):
        s3d_encoder(weights=str(tmp_path / "no_such.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a loadable checkpoint or weights file"):
        s3d_encoder(weights=str(junk))


# ----------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("build", "kwargs", "expected"),
    [
        (s3d_encoder, dict(clip_len=3, context=2, frame_size=(32, 32)), r">= 8 frames .* >= 17x17 .* = 5 frames of 32x32"),
        (s3d_encoder, dict(clip_len=4, context=4, frame_size=(16, 16)), r">= 17x17 pixels; .* = 8 frames of 16x16"),
        (mvit_v2_s_encoder, dict(clip_len=2, context=1, frame_size=(32, 32)), r"even number of frames .* = 3 frames"),
        (mvit_v2_s_encoder, dict(clip_len=2, context=2, frame_size=(48, 32)), r"multiples of 32 .* 4 frames of 48x32"),
        (r2plus1d_18_encoder, dict(clip_len=0, context=2, frame_size=(16, 16)), r"clip_len must be >= 1"),
        (slowfast_r50_encoder, dict(clip_len=3, context=2, frame_size=(16, 16)), r"multiple of alpha = 4 .* = 5 frames"),
    ],
    ids=["s3d_short_window", "s3d_small_frames", "mvit_odd_window", "mvit_frame_size", "zero_clip", "slowfast_window"],
)
def test_illegal_sizes_name_what_is_expected(build, kwargs, expected) -> None:
    with pytest.raises(ValueError, match=expected):
        build(**kwargs)


@pytest.mark.parametrize("b", PARAMS)
def test_gradients_are_right_at_the_smallest_sizes(b: Backbone) -> None:
    """float32 gradients == float64 ones at the smallest sizes. S3D's minimum window (8, not the
    architectural 5) keeps clear of a torch CPU bug: the conv3d weight gradient of its first temporal
    conv (kernel 7, stride 2) is garbage on 5-7 frames, which this test catches."""
    x = _frames(b, b.clip_len, batch=2)
    grads = []
    for dtype in (torch.float32, torch.float64):
        encoder = _encoder(b).eval().to(dtype)
        features, _ = encoder(x.to(dtype), encoder.init_state(2))
        features.square().mean().backward()
        grads.append({n: p.grad.double() for n, p in encoder.named_parameters()})
    # relative L2 error over all parameters: float32 rounding stays below 1% (the bug gives ~1e5); per
    # parameter it can be large where the exact gradient is ~0 (e.g. key biases before a softmax)
    names = list(grads[1])
    g32, g64 = (torch.cat([g[n].flatten() for n in names]) for g in grads)
    error = ((g32 - g64).norm() / g64.norm()).item()
    worst = max(names, key=lambda n: (grads[0][n] - grads[1][n]).norm().item())
    assert error < 1e-2, f"relative gradient error {error:.3g}, mostly in {worst}"


def test_frames_of_another_size_are_refused() -> None:
    encoder = _encoder(BACKBONES[0])
    with pytest.raises(ValueError, match=r"expected frames of shape \(B, 3, T, 16, 16\).*got \(1, 3, 4, 32, 32\)"):
        encoder(torch.zeros(1, 3, 4, 32, 32), encoder.init_state(1))


# ------------------------------------------------------------------------------------------ model config


def test_model_config_offers_every_backbone() -> None:
    config = import_file(REPO / "model_configs" / "video_memtcn.py", "_test_model_config_video_memtcn")
    choices = typing.get_args(typing.get_type_hints(config.Params)["backbone"])
    x3d_inputs = {"x3d_xs", "x3d_s"}  # X3D-M's network with other default clips (tests/models/test_pyslowfast.py)
    assert set(choices) == set(config.ENCODERS) == {b.name for b in BACKBONES} | x3d_inputs
    assert all(config.ENCODERS[b.name] is b.build for b in BACKBONES)
    b = BACKBONES[1]  # S3D: the quickest to build
    p = config.Params(backbone=b.name, clip_len=b.clip_len, context=b.context, frame_size=b.frame_size,
                      num_layers=2, num_maps=8)
    model = config.build_model(p, in_channels=3, num_classes=5)
    assert isinstance(model, EncoderHead) and model.encoder.out_channels == b.out_channels
    assert model.lookahead == b.clip_len - 1 and model.num_classes == 5
