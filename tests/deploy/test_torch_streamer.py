"""`TorchStreamer` for serving: uint8 chunks normalised on the device give the model the same input as
`DeployMeta.preprocess`; channels-last and the compiled step (batch axis dynamic, full chunks only) give
the same logits with a bounded number of graphs; the ONNX path refuses the PyTorch-only options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamseg.deploy.runtime import TorchStreamer, open_streamer
from streamseg.engine.throughput import compiled_graphs

from .test_infer import K, SIZE, _net, tiny_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def _chunks(batch: int, t: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (t, 3, *SIZE), dtype=torch.uint8, generator=g) for _ in range(batch)]


@pytest.fixture(scope="module")
def net():
    return _net(torch.rand(1, 3, 24, *SIZE) * 2 - 1)


def _state(streamer: TorchStreamer, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s.shape, generator=g) for s in streamer.init_state(batch))


def test_step_frames_gives_the_model_the_preprocessed_input_bit_for_bit(net) -> None:
    meta = tiny_meta()
    streamer = TorchStreamer(net, meta)
    chunks, state = _chunks(3, 5, seed=1), _state(streamer, 3, seed=2)
    x = np.concatenate([meta.preprocess(c) for c in chunks])
    want, want_state = streamer.step(x, state)
    got, got_state = streamer.step_frames(chunks, state)
    np.testing.assert_array_equal(got, want)
    for a, b in zip(got_state, want_state):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected x \(B, C, T, H, W\)"):
        streamer.step_frames([torch.zeros(5, 3, 8, 8, dtype=torch.uint8)], streamer.init_state(1))
    assert streamer.stage_frames(chunks[0]) is chunks[0]  # on the CPU nothing moves


@pytest.mark.gpu
def test_chunks_staged_on_the_gpu_by_other_threads_give_the_same_step(net, monkeypatch) -> None:
    """Chunks uploaded by reader threads (each on its own CUDA stream) give the logits and states of
    the same chunks uploaded by the step itself, bit for bit, and the step takes them as they are: only
    the logits come back to the host (``device="cuda"`` once compared unequal to the chunks' ``cuda:0``,
    and every staged chunk went back to the host and up again)."""
    from concurrent.futures import ThreadPoolExecutor

    streamer = TorchStreamer(net, tiny_meta(), device="cuda")
    chunks = _chunks(4, 5, seed=3)
    state = tuple(s.cuda() for s in _state(streamer, 4, seed=4))
    with ThreadPoolExecutor(4) as pool:
        staged = list(pool.map(streamer.stage_frames, chunks))
    assert all(c.device == streamer.device for c in staged)
    want, want_state = streamer.step_frames(chunks, state)
    to_host = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: (to_host.append(self.shape), real_cpu(self, *a, **k))[1])
    got, got_state = streamer.step_frames(staged, state)
    monkeypatch.undo()
    assert len(to_host) == 1  # the logits
    np.testing.assert_array_equal(got, want)
    for a, b in zip(got_state, want_state):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_channels_last_and_the_compiled_step_match_eager_with_two_graphs(net) -> None:
    meta = tiny_meta()
    eager = TorchStreamer(net, meta)
    fast = TorchStreamer(net, meta, channels_last=True, compile=True)
    fast.compiled_chunk = 6
    before = compiled_graphs()
    # batches of 3+ streams (on the CPU, conv kernels guard on batch x T < 16: batch 2 would add a graph)
    for i, (batch, t) in enumerate([(3, 6), (5, 6), (1, 6), (4, 6), (3, 4), (2, 1), (1, 6), (5, 6)]):
        chunks, state = _chunks(batch, t, seed=10 + i), _state(eager, batch, seed=20 + i)
        want, want_state = eager.step_frames(chunks, state)
        got, got_state = fast.step_frames(chunks, state)
        assert got.shape == (batch, K, t)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        for a, b in zip(got_state, want_state):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # one graph for batch 1, one for batches 3-5 of full chunks; the short chunks (T = 4, 1) ran eagerly
    assert compiled_graphs() - before == 2


def test_onnx_exports_refuse_the_pytorch_step_options(tmp_path) -> None:
    for options in ({"precision": "bf16"}, {"channels_last": True}, {"compile": True}):
        with pytest.raises(ValueError, match="apply to PyTorch models"):
            open_streamer(tmp_path / "model.onnx", **options)  # refused before the file is read
    with pytest.raises(ValueError, match="precision must be one of"):
        open_streamer(tmp_path / "model.onnx", precision="int4")
