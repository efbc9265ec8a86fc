"""`StreamStep`, the optimised streaming step: the same logits as the model's own chunked forward
(eager, compiled, uint8 input with on-device preprocessing), per-slot resets, label agreement; CUDA
graphs on the GPU machine (marked `gpu`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamseg.data.streams import normalize_frames
from streamseg.deploy.accel import StreamStep, label_agreement
from streamseg.models import MemoryTCN, tsm_memtcn_mobilenet_v2

D, K, S, T = 6, 4, 3, 8


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features_model(seed: int = 0) -> MemoryTCN:
    torch.manual_seed(seed)
    return MemoryTCN(D, K, num_stages=2, num_layers=3, num_maps=8).eval()


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
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(K, num_layers=2, num_maps=8, frame_size=(32, 32)).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = [torch.randint(0, 256, (2, 3, 4, 48, 40), dtype=torch.uint8) for _ in range(2)]
    step = StreamStep(net, (3, 32, 32), streams=2, chunk=4, device="cpu", in_size=(48, 40), mean=mean, std=std)
    state = net.init_state(2)
    for x in raw:
        frames = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(8, 3, 48, 40).float(), size=(32, 32),
                               mode="bilinear", antialias=False, align_corners=False)
        ref_in = normalize_frames(frames.view(2, 4, 3, 32, 32).permute(0, 2, 1, 3, 4) / 255 * 255, mean, std)
        with torch.no_grad():
            logits, state = net(ref_in, state, None)
        torch.testing.assert_close(step.step(x), logits[-1], atol=1e-4, rtol=1e-4)


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(K, num_layers=2, num_maps=8, frame_size=(32, 32)).eval()
    chunks = [torch.randn(2, 3, 4, 32, 32) for _ in range(2)]
    plain = StreamStep(net, (3, 32, 32), streams=2, chunk=4, device="cpu")
    nhwc = StreamStep(net, (3, 32, 32), streams=2, chunk=4, device="cpu", channels_last=True)
    for x in chunks:
        torch.testing.assert_close(nhwc.step(x), plain.step(x), atol=1e-4, rtol=1e-4)


def test_label_agreement_is_one_for_the_same_model_and_lower_for_another():
    chunks = [torch.randn(S, D, T) for _ in range(3)]
    same = StreamStep(_features_model(0), (D,), streams=S, chunk=T, device="cpu")
    assert label_agreement(_features_model(0), same, chunks) == 1.0
    other = StreamStep(_features_model(1), (D,), streams=S, chunk=T, device="cpu")
    assert label_agreement(_features_model(0), other, chunks) < 1.0
    half = StreamStep(_features_model(0), (D,), streams=S, chunk=T, device="cpu", precision="bf16")
    assert label_agreement(_features_model(0), half, chunks) > 0.8


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
