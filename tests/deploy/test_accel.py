"""`StreamStep`, the optimised streaming step: the same logits as the model's own chunked forward
(eager, compiled, uint8 input with on-device preprocessing), per-slot resets, label agreement; CUDA
graphs on the GPU machine (marked `gpu`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamseg.data.streams import normalize_frames
from streamseg.data.synth_render import render_frames
from streamseg.data.video import resize_frames
from streamseg.deploy.accel import StreamStep, label_agreement
from streamseg.models import MemoryTCN, tsm_memtcn_mobilenet_v2

D, K, S, T = 6, 4, 3, 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
H0, W0 = 48, 40  # the uint8 frames' native size
SIZE = (32, 32)  # the frame model's input size


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _features_model(seed: int = 0) -> MemoryTCN:
    torch.manual_seed(seed)
    return MemoryTCN(D, K, num_stages=2, num_layers=3, num_maps=8).eval()


def _clip(frames: int, seed: int, size: tuple[int, int] = (H0, W0)) -> torch.Tensor:
    """``uint8 (frames, 3, H, W)``: coloured glyphs moving over a backdrop (`synth_render`), one glyph per
    quarter of the clip, so the frames differ in colour and layout."""
    appearance = np.repeat(np.arange(4), -(-frames // 4))[:frames]
    phase = (np.arange(frames) % 4) / 4
    jitter = np.random.default_rng(seed).normal(size=(frames, 3)) * 0.5
    rgb = render_frames(appearance, phase, jitter, ["background", "stir", "cut", "fry"], (90, 120, 60), *size)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()


def _streams(clips: list[torch.Tensor], start: int, length: int) -> torch.Tensor:
    """Frames ``start:start+length`` of each clip ``(n, C, H, W)`` -> one chunk ``(S, C, T, H, W)``."""
    return torch.stack([c[start : start + length].permute(1, 0, 2, 3) for c in clips]).contiguous()


def _frame_model(calibrate: torch.Tensor) -> torch.nn.Module:
    """A small random TSM-MobileNetV2 (4 blocks) + MemoryTCN whose logits depend on its frames.

    With fresh BatchNorm statistics a random encoder's features shrink to ~1e-9 (the full 17 blocks give
    the same logits for any input), which would make every comparison of logits below hold trivially; the
    statistics are set from ``calibrate`` (normalised ``(B, 3, T, 32, 32)`` frames; one train-mode pass,
    cumulative average)."""
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(K, num_layers=2, num_maps=8, frame_size=SIZE, num_blocks=4)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(calibrate, net.init_state(calibrate.shape[0]), None)
    return net.eval()


def _assert_depends_on_frames(net, x: torch.Tensor) -> None:
    """Guard: the model's logits for ``x`` (normalised frames) change when the frames are mirrored, by far
    more than the tolerances the tests compare with (measured ~0.1)."""
    with torch.no_grad():
        a = net(x, net.init_state(x.shape[0]), None)[0]
        b = net(x.flip(-1), net.init_state(x.shape[0]), None)[0]
    assert (a - b).abs().max() > 1e-2, "the logits must depend on the frames for the comparison to mean anything"


def _reference(net, chunks, masks=None):
    """The model's own chunked forward with the state carried: last-stage logits per chunk."""
    state = net.init_state(S)
    outs = []
    with torch.no_grad():
        for i, x in enumerate(chunks):
            logits, state = net(x, state, None if masks is None else masks[i])
            outs.append(logits[-1])
    return outs


def test_eager_step_equals_the_models_chunked_forward():
    net = _features_model()
    chunks = [torch.randn(S, D, T) for _ in range(4)]
    step = StreamStep(net, (D,), streams=S, chunk=T, device="cpu")
    for want, x in zip(_reference(net, chunks), chunks):
        torch.testing.assert_close(step.step(x), want)
    assert next(net.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_reset_restarts_only_the_given_slots():
    net = _features_model()
    chunks = [torch.randn(S, D, T) for _ in range(3)]
    step = StreamStep(net, (D,), streams=S, chunk=T, device="cpu")
    step.step(chunks[0])
    step.step(chunks[1])
    step.reset(torch.tensor([True, False, False]))
    got = step.step(chunks[2])
    fresh = _reference(net, chunks[2:])[0]
    carried = _reference(net, chunks)[2]
    torch.testing.assert_close(got[0], fresh[0])
    torch.testing.assert_close(got[1:], carried[1:])
    assert not torch.allclose(fresh[1:], carried[1:])  # the state matters, so the check above means something


def test_masked_padding_frames_do_not_change_valid_logits():
    net = _features_model()
    x = torch.randn(S, D, T)
    mask = torch.ones(S, 1, T)
    mask[:, :, T // 2 :] = 0
    step = StreamStep(net, (D,), streams=S, chunk=T, device="cpu")
    a = step.step(x, mask)[..., : T // 2].clone()
    step.reset()
    x2 = x.clone()
    x2[..., T // 2 :] = 1e3
    b = step.step(x2, mask)[..., : T // 2]
    torch.testing.assert_close(a, b)


def test_uint8_input_is_resized_and_normalised_on_the_device_like_the_cpu_path():
    clips = [_clip(8, seed) for seed in (0, 1)]  # two streams, two chunks of 4 frames each
    raw = [_streams(clips, k, 4) for k in (0, 4)]  # uint8 (2, 3, 4, 48, 40)
    step_args = dict(streams=2, chunk=4, device="cpu", mean=MEAN, std=STD)

    def float_path(x: torch.Tensor) -> torch.Tensor:  # the step's kernel written out: float resize, normalise
        f = x.permute(0, 2, 1, 3, 4).reshape(8, 3, H0, W0).float()
        f = F.interpolate(f, size=SIZE, mode="bilinear", antialias=False, align_corners=False)
        return normalize_frames(f.view(2, 4, 3, *SIZE).permute(0, 2, 1, 3, 4) / 255, MEAN, STD)

    net = _frame_model(torch.cat([float_path(x) for x in raw], dim=2))
    step = StreamStep(net, (3, *SIZE), in_size=(H0, W0), **step_args)
    for k, x in enumerate(raw):
        with torch.no_grad():
            got = step._preprocess(x)
        assert got.shape == (2, 3, 4, *SIZE) and got.dtype == torch.float32
        torch.testing.assert_close(got, float_path(x), atol=1e-5, rtol=0)
        # the CPU path (decode workers: uint8 resize, rounded to code values; then `normalize_frames`)
        # agrees up to that rounding: torch's fixed-point uint8 kernel is within 1 code value of float
        cpu = normalize_frames(_streams([resize_frames(c, SIZE) for c in clips], 4 * k, 4), MEAN, STD)
        assert (got - cpu).abs().max() <= 1 / (255 * min(STD)) + 1e-5, (got - cpu).abs().max()

    # end to end: the step's logits are the model's on the float path's input, state carried across chunks
    _assert_depends_on_frames(net, float_path(raw[0]))
    state = net.init_state(2)
    for x in raw:
        with torch.no_grad():
            logits, state = net(float_path(x), state, None)
        torch.testing.assert_close(step.step(x), logits[-1], atol=1e-4, rtol=1e-4)

    # frames already at the model's size skip the resize and are only normalised
    same_size = StreamStep(net, (3, *SIZE), in_size=SIZE, **step_args)
    x = _streams([c[:, :, :32, :32] for c in clips], 0, 4)
    with torch.no_grad():
        torch.testing.assert_close(same_size._preprocess(x), normalize_frames(x, MEAN, STD), atol=1e-5, rtol=0)


@pytest.mark.parametrize("uint8", [False, True], ids=["float", "uint8"])
def test_channels_last_gives_the_same_logits(uint8):
    clips = [_clip(8, seed, SIZE) for seed in (0, 1)]
    chunks = [_streams(clips, k, 4) for k in (0, 4)]  # uint8 (2, 3, 4, 32, 32)
    normalised = [normalize_frames(x, MEAN, STD) for x in chunks]
    net = _frame_model(torch.cat(normalised, dim=2))
    _assert_depends_on_frames(net, normalised[0])
    kw = dict(streams=2, chunk=4, device="cpu")
    if uint8:  # the layout is set after the on-device normalisation
        kw.update(in_size=SIZE, mean=MEAN, std=STD)
    else:
        chunks = normalised
    plain = StreamStep(net, (3, *SIZE), **kw)
    nhwc = StreamStep(net, (3, *SIZE), channels_last=True, **kw)
    for x in chunks:
        torch.testing.assert_close(nhwc.step(x), plain.step(x), atol=1e-4, rtol=1e-4)


def test_label_agreement_is_one_for_the_same_model_and_lower_for_another():
    # one stage: an untrained second stage flattens the labels to one class whatever the input, so
    # agreement would be 1 or 0 trivially; this model's labels vary over the frames
    torch.manual_seed(0)
    chunks = [torch.randn(S, D, T) for _ in range(3)]

    def model(seed: int) -> MemoryTCN:
        torch.manual_seed(seed)
        return MemoryTCN(D, K, num_stages=1, num_layers=3, num_maps=8).eval()

    labels = [torch.cat([c.argmax(1) for c in _reference(model(seed), chunks)]) for seed in (0, 1)]
    assert len(labels[0].unique()) >= 3, "the labels must depend on the frames for the comparison to mean anything"
    same = StreamStep(model(0), (D,), streams=S, chunk=T, device="cpu")
    assert label_agreement(model(0), same, chunks) == 1.0
    other = StreamStep(model(1), (D,), streams=S, chunk=T, device="cpu")
    share = (labels[0] == labels[1]).float().mean().item()
    assert 0 < share < 1 and label_agreement(model(0), other, chunks) == pytest.approx(share)
    half = StreamStep(model(0), (D,), streams=S, chunk=T, device="cpu", precision="bf16")
    assert label_agreement(model(0), half, chunks) > 0.8


def test_mixed_precision_keeps_fp32_weights_and_state_and_runs_convolutions_in_bf16():
    """``bf16-mixed``: weights, input and state stay fp32 (a fresh state equals the model's own), the step
    runs under autocast, so its logits differ from fp32 by bf16 rounding only, and less than a pure bf16
    cast's do on this model (fp32 state and normalisations)."""
    net = _features_model()
    chunks = [torch.randn(S, D, T) for _ in range(4)]
    mixed = StreamStep(net, (D,), streams=S, chunk=T, device="cpu", precision="bf16-mixed")
    pure = StreamStep(net, (D,), streams=S, chunk=T, device="cpu", precision="bf16")
    assert mixed.input_dtype() == torch.float32 and all(s.dtype == torch.float32 for s in mixed.state)
    assert next(mixed.net.parameters()).dtype == torch.float32
    err_mixed = err_pure = 0.0
    for want, x in zip(_reference(net, chunks), chunks):
        got = mixed.step(x)
        torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.05)
        err_mixed += (got.float() - want).abs().mean().item()
        err_pure += (pure.step(x.bfloat16()).float() - want).abs().mean().item()
    assert 0 < err_mixed < err_pure  # > 0: autocast was on (the convolutions ran in bf16)


def test_bad_arguments_are_named():
    net = _features_model()
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        StreamStep(net, (D,), streams=S, chunk=T, device="cpu", cuda_graph=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        StreamStep(net, (D,), streams=S, chunk=T, device="cpu", precision="int8")
    step = StreamStep(net, (D,), streams=S, chunk=T, device="cpu")
    with pytest.raises(ValueError, match=r"expected x of shape \(3, 6, 8\)"):
        step.step(torch.randn(S, D, T + 1))


@pytest.mark.slow
def test_compiled_step_equals_eager():
    net = _features_model()
    chunks = [torch.randn(S, D, T) for _ in range(3)]
    step = StreamStep(net, (D,), streams=S, chunk=T, device="cpu", compile=True)
    for want, x in zip(_reference(net, chunks), chunks):
        torch.testing.assert_close(step.step(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_step_equals_eager_on_the_gpu(compile):
    """The replayed graph (state copied inside it, resets outside) gives what the eager step gives on
    the same GPU (CPU references would differ by TF32 rounding, not by graph bugs)."""
    net = _features_model()
    chunks = [torch.randn(S, D, T, device="cuda") for _ in range(4)]
    masks = [torch.ones(S, 1, T, device="cuda") for _ in chunks]
    masks[-1][:, :, 5:] = 0
    graph = StreamStep(net, (D,), streams=S, chunk=T, device="cuda", compile=compile, cuda_graph=True)
    eager = StreamStep(net, (D,), streams=S, chunk=T, device="cuda")
    for i, (x, m) in enumerate(zip(chunks, masks)):
        if i == 2:  # a reset between steps is seen by the replayed graph
            rows = torch.tensor([False, True, False])
            graph.reset(rows)
            eager.reset(rows)
        valid = m[0, 0] > 0
        torch.testing.assert_close(graph.step(x, m)[..., valid], eager.step(x, m)[..., valid], atol=1e-4, rtol=1e-4)
