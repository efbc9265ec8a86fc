"""MS-TCN: parameter counts of the paper configuration, and equality with the official model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamseg.models import MSTCN


@pytest.mark.parametrize(("num_classes", "expected"), [(11, 796_780), (19, 800_396), (48, 813_504)])
def test_parameter_count_matches_official(num_classes: int, expected: int) -> None:
    # GTEA / 50Salads / Breakfast, 2048-d I3D input, 4 stages x 10 layers x 64 maps (tas-reference.md §2).
    model = MSTCN(2048, num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected


# A literal transcription of yabufarha/ms-tcn model.py, as the reference.
class _OfficialLayer(nn.Module):
    def __init__(self, dilation, in_channels, out_channels):
        super().__init__()
        self.conv_dilated = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.conv_1x1 = nn.Conv1d(out_channels, out_channels, 1)
        self.dropout = nn.Dropout()

    def forward(self, x, mask):
        out = F.relu(self.conv_dilated(x))
        out = self.conv_1x1(out)
        out = self.dropout(out)
        return (x + out) * mask[:, 0:1, :]


class _OfficialStage(nn.Module):
    def __init__(self, num_layers, num_f_maps, dim, num_classes):
        super().__init__()
        self.conv_1x1 = nn.Conv1d(dim, num_f_maps, 1)
        self.layers = nn.ModuleList(
            [copy.deepcopy(_OfficialLayer(2**i, num_f_maps, num_f_maps)) for i in range(num_layers)]
        )
        self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

    def forward(self, x, mask):
        out = self.conv_1x1(x)
        for layer in self.layers:
            out = layer(out, mask)
        return self.conv_out(out) * mask[:, 0:1, :]


class _OfficialMultiStage(nn.Module):
    def __init__(self, num_stages, num_layers, num_f_maps, dim, num_classes):
        super().__init__()
        self.stage1 = _OfficialStage(num_layers, num_f_maps, dim, num_classes)
        self.stages = nn.ModuleList(
            [
                copy.deepcopy(_OfficialStage(num_layers, num_f_maps, num_classes, num_classes))
                for _ in range(num_stages - 1)
            ]
        )

    def forward(self, x, mask):
        out = self.stage1(x, mask)
        outputs = out.unsqueeze(0)
        for s in self.stages:
            out = s(F.softmax(out, dim=1) * mask[:, 0:1, :], mask)
            outputs = torch.cat((outputs, out.unsqueeze(0)), dim=0)
        return outputs


def test_official_checkpoint_loads_and_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    official = _OfficialMultiStage(num_stages=3, num_layers=5, num_f_maps=16, dim=12, num_classes=7).eval()
    ours = MSTCN(12, 7, num_stages=3, num_layers=5, num_maps=16).eval()
    ours.load_state_dict(official.state_dict())  # strict: the parameter names are the official ones
    x = torch.randn(1, 12, 50)
    mask = torch.ones(1, 7, 50)  # the official mask is (B, num_classes, T)
    with torch.no_grad():
        expected = official(x, mask)
        logits, state = ours(x, (), mask[:, :1])
    assert state == ()
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-6)
    # Without a mask the model treats every frame as valid.
    torch.testing.assert_close(ours(x, ())[0], expected, atol=1e-6, rtol=1e-6)


def test_mask_shape_is_checked() -> None:
    model = MSTCN(4, 3, num_stages=1, num_layers=2, num_maps=8)
    with pytest.raises(ValueError, match=r"mask of shape \(B, 1, T\)"):
        model(torch.randn(2, 4, 10), (), torch.ones(2, 10))
    with pytest.raises(ValueError, match=r"x of shape \(B, 4, T\)"):
        model(torch.randn(2, 5, 10), ())
