"""Temporal shift semantics, state shapes and local weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from streamseg.models import tsm_mobilenet_v2, tsm_resnet50
from streamseg.models.tsm import ShiftedResidual, TSMEncoder

C = 16  # channels after the widening stem; shift_div 8 -> fold 2


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


class _Widen(nn.Module):
    """(N, 3, H, W) -> (N, 16, H, W): channel 0 repeated, so every channel carries the frame's value."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :1].expand(-1, C, -1, -1)


class _ReturnShifted(ShiftedResidual):
    """Outputs the shifted input itself, exposing what the shift did."""

    in_channels = C

    def forward(self, x: Tensor, shifted: Tensor) -> Tensor:
        return shifted


def _probe(causal: bool, length: int = 6) -> tuple[TSMEncoder, Tensor]:
    encoder = TSMEncoder([_Widen(), _ReturnShifted()], out_channels=C, shift_div=8, causal=causal, frame_size=(2, 2))
    # frame t has value t + 1 everywhere, so a feature's value names the frame it came from (0 = none)
    frames = (torch.arange(length, dtype=torch.float32) + 1).view(1, 1, length, 1, 1).expand(1, 3, length, 2, 2)
    return encoder, frames


def test_bidirectional_shift_reads_next_and_previous_frame() -> None:
    encoder, frames = _probe(causal=False)
    features, state = encoder(frames, encoder.init_state(1))
    t = torch.arange(6, dtype=torch.float32)
    assert state == () and encoder.lookahead == 1
    torch.testing.assert_close(features[0, 0], torch.where(t < 5, t + 2, 0.0))  # fold 0 <- t + 1
    torch.testing.assert_close(features[0, 2], t)  # fold 1 <- t - 1 (value t; 0 before the start)
    torch.testing.assert_close(features[0, 4], t + 1)  # the other 3/4 stay


def test_causal_shift_reads_two_and_one_frames_back_across_chunks() -> None:
    encoder, frames = _probe(causal=True)
    assert encoder.lookahead == 0
    state = encoder.init_state(1)
    assert [s.shape for s in state] == [torch.Size([1, 2, 4, 2, 2])]  # (B, 2 frames, 2 * fold, H, W)
    outs = []
    for start in (0, 1, 4):  # chunks of 1, 3 and 2 frames
        features, state = encoder(frames[:, :, start : {0: 1, 1: 4, 4: 6}[start]], state)
        outs.append(features)
    features = torch.cat(outs, dim=-1)
    t = torch.arange(6, dtype=torch.float32)
    torch.testing.assert_close(features[0, 0], torch.clamp(t - 1, min=0))  # fold 0 <- t - 2
    torch.testing.assert_close(features[0, 2], t)  # fold 1 <- t - 1
    torch.testing.assert_close(features[0, 4], t + 1)


def test_masked_frames_are_not_shifted_into_valid_ones() -> None:
    encoder, frames = _probe(causal=False)
    mask = torch.tensor([[[1.0, 1, 1, 1, 0, 0]]])
    features, _ = encoder(frames, (), mask)
    assert features[0, 0, 3] == 0  # frame 3's future group would read padding frame 4


@pytest.mark.parametrize(("build", "layers", "dim"), [(tsm_mobilenet_v2, 10, 1280), (tsm_resnet50, 16, 2048)])
def test_backbones_count_shift_layers(build, layers: int, dim: int) -> None:
    causal = build(frame_size=(32, 32))
    bidirectional = build(causal=False, frame_size=(32, 32))
    assert causal.num_shift_layers == layers and causal.out_channels == dim
    assert causal.lookahead == 0 and bidirectional.lookahead == layers
    assert len(causal.init_state(2)) == layers and bidirectional.init_state(2) == ()


def test_truncated_mobilenet_keeps_the_first_blocks() -> None:
    full = mobilenet_v2(weights=None)
    encoder = tsm_mobilenet_v2(frame_size=(32, 32), num_blocks=4)  # stem, 3 inverted residuals (1 residual)
    assert encoder.num_shift_layers == 1 and encoder.out_channels == full.features[3].out_channels == 24
    features, state = encoder(torch.zeros(2, 3, 5, 32, 32), encoder.init_state(2))
    assert features.shape == (2, 24, 5) and len(state) == 1
    assert tsm_mobilenet_v2(frame_size=(32, 32), num_blocks=1).out_channels == 32  # the Conv-BN-ReLU stem
    with pytest.raises(ValueError, match="num_blocks must be between 1 and 19, got 20"):
        tsm_mobilenet_v2(num_blocks=20)


def test_local_weights_load_and_bad_files_are_refused(tmp_path) -> None:
    torch.manual_seed(3)
    reference = mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    encoder = tsm_mobilenet_v2(weights=str(path), frame_size=(32, 32))
    torch.testing.assert_close(encoder.blocks[0][0].weight, reference.features[0][0].weight)
    torch.testing.assert_close(encoder.blocks[3].block.conv[2].weight, reference.features[3].conv[2].weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tsm_mobilenet_v2(weights=str(tmp_path / "missing.pth"))
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a state dict of torchvision's model"):
        tsm_mobilenet_v2(weights=str(tmp_path / "bad.pth"))


def test_frame_size_is_checked() -> None:
    encoder = tsm_mobilenet_v2(frame_size=(32, 32))
    with pytest.raises(ValueError, match=r"frame_size is fixed at construction"):
        encoder(torch.zeros(1, 3, 2, 16, 16), encoder.init_state(1))
