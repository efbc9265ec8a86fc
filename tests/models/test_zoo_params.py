"""The offline model zoo: parameter counts of the paper configurations (tas-reference.md §2), equality
with literal transcriptions of the official modules (their checkpoints load through `model.weights`),
ASRF's refinement and loss, and the weights loader's errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamseg.config.loader import import_file
from streamseg.models import ASRF, MSTCN, MSTCN2, ASFormer, ASRFLoss, C2FTCN, WeightsError, refine_with_boundaries
from streamseg.models.asformer import official_window_mask
from streamseg.models.asrf import boundary_targets
from tests.models.test_mstcn import _OfficialMultiStage

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _model_config(name: str):
    return import_file(REPO / "model_configs" / f"{name}.py", f"_test_model_config_{name}")


# ------------------------------------------------------------------------------------------ parameter counts

# 2048-d I3D input; GTEA (11), 50Salads (19), Breakfast (48) classes; the arithmetic is in each model's
# module docstring. Counted with the official classes (tas-reference.md §2).
COUNTS = {
    "mstcn2": (MSTCN2, (994_220, 997_836, 1_010_944)),
    "asformer": (ASFormer, (1_130_860, 1_134_476, 1_147_584)),
    "asrf": (ASRF, (1_292_784, 1_296_400, 1_309_508)),
    "c2ftcn": (C2FTCN, (6_740_937, 6_747_129, 6_769_575)),
}


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts_match_official(name: str) -> None:
    cls, expected = COUNTS[name]
    got = tuple(sum(p.numel() for p in cls(2048, k).parameters()) for k in (11, 19, 48))
    assert got == expected


@pytest.mark.parametrize("name", list(COUNTS))
def test_model_config_defaults_are_the_paper_model(name: str) -> None:
    cfg = _model_config(name)
    model = cfg.build_model(cfg.Params(), 2048, 11)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name][1][0]


# ------------------------------------------------------------------------------ official transcriptions
# Literal transcriptions of the official forward passes (batch size 1, no padding), as references.


class _OfficialDRL(nn.Module):  # MS-TCN2 model.py DilatedResidualLayer (no mask)
    def __init__(self, dilation, in_channels, out_channels):
        super().__init__()
        self.conv_dilated = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.conv_1x1 = nn.Conv1d(out_channels, out_channels, 1)
        self.dropout = nn.Dropout()

    def forward(self, x):
        return x + self.dropout(self.conv_1x1(F.relu(self.conv_dilated(x))))


class _OfficialPG(nn.Module):
    def __init__(self, num_layers, num_f_maps, dim, num_classes):
        super().__init__()
        self.num_layers = num_layers
        self.conv_1x1_in = nn.Conv1d(dim, num_f_maps, 1)
        self.conv_dilated_1 = nn.ModuleList(
            nn.Conv1d(num_f_maps, num_f_maps, 3, padding=2 ** (num_layers - 1 - i), dilation=2 ** (num_layers - 1 - i))
            for i in range(num_layers)
        )
        self.conv_dilated_2 = nn.ModuleList(
            nn.Conv1d(num_f_maps, num_f_maps, 3, padding=2**i, dilation=2**i) for i in range(num_layers)
        )
        self.conv_fusion = nn.ModuleList(nn.Conv1d(2 * num_f_maps, num_f_maps, 1) for i in range(num_layers))
        self.dropout = nn.Dropout()
        self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

    def forward(self, x):
        f = self.conv_1x1_in(x)
        for i in range(self.num_layers):
            f_in = f
            f = self.conv_fusion[i](torch.cat([self.conv_dilated_1[i](f), self.conv_dilated_2[i](f)], 1))
            f = self.dropout(F.relu(f))
            f = f + f_in
        return self.conv_out(f)


class _OfficialRefinement(nn.Module):
    def __init__(self, num_layers, num_f_maps, dim, num_classes):
        super().__init__()
        self.conv_1x1 = nn.Conv1d(dim, num_f_maps, 1)
        self.layers = nn.ModuleList([copy.deepcopy(_OfficialDRL(2**i, num_f_maps, num_f_maps)) for i in range(num_layers)])
        self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

    def forward(self, x):
        out = self.conv_1x1(x)
        for layer in self.layers:
            out = layer(out)
        return self.conv_out(out)


class _OfficialMSTCN2(nn.Module):
    def __init__(self, num_layers_PG, num_layers_R, num_R, num_f_maps, dim, num_classes):
        super().__init__()
        self.PG = _OfficialPG(num_layers_PG, num_f_maps, dim, num_classes)
        self.Rs = nn.ModuleList(
            [copy.deepcopy(_OfficialRefinement(num_layers_R, num_f_maps, num_classes, num_classes)) for s in range(num_R)]
        )

    def forward(self, x):
        out = self.PG(x)
        outputs = out.unsqueeze(0)
        for R in self.Rs:
            out = R(F.softmax(out, dim=1))
            outputs = torch.cat((outputs, out.unsqueeze(0)), dim=0)
        return outputs


class _OfficialAttLayer(nn.Module):  # ASFormer model.py AttLayer, sliding_att only
    def __init__(self, q_dim, k_dim, v_dim, r1, r2, r3, bl, stage):
        super().__init__()
        self.query_conv = nn.Conv1d(q_dim, q_dim // r1, 1)
        self.key_conv = nn.Conv1d(k_dim, k_dim // r2, 1)
        self.value_conv = nn.Conv1d(v_dim, v_dim // r3, 1)
        self.conv_out = nn.Conv1d(v_dim // r3, v_dim, 1)
        self.bl, self.stage = bl, stage
        window_mask = torch.zeros((1, self.bl, self.bl + 2 * (self.bl // 2)))
        for i in range(self.bl):
            window_mask[:, :, i : i + self.bl] = 1
        self.window_mask = window_mask

    @staticmethod
    def _scalar_dot_att(q, k, v, padding_mask):
        _, c1, _ = q.shape
        energy = torch.bmm(q.permute(0, 2, 1), k)
        attention = energy / np.sqrt(c1)
        attention = attention + torch.log(padding_mask + 1e-6)
        attention = F.softmax(attention, dim=-1)
        attention = attention * padding_mask
        return torch.bmm(v, attention.permute(0, 2, 1))

    def forward(self, x1, x2, mask):
        q, k = self.query_conv(x1), self.key_conv(x1)
        v = self.value_conv(x2) if self.stage == "decoder" else self.value_conv(x1)
        m, c1, L = q.size()
        c2, c3, bl = k.shape[1], v.shape[1], self.bl
        assert m == 1
        nb = L // bl
        if L % bl != 0:
            q = torch.cat([q, torch.zeros((m, c1, bl - L % bl))], dim=-1)
            k = torch.cat([k, torch.zeros((m, c2, bl - L % bl))], dim=-1)
            v = torch.cat([v, torch.zeros((m, c3, bl - L % bl))], dim=-1)
            nb += 1
        padding_mask = torch.cat([torch.ones((m, 1, L)) * mask[:, 0:1, :], torch.zeros((m, 1, bl * nb - L))], dim=-1)
        q = q.reshape(m, c1, nb, bl).permute(0, 2, 1, 3).reshape(m * nb, c1, bl)
        k = torch.cat([torch.zeros(m, c2, bl // 2), k, torch.zeros(m, c2, bl // 2)], dim=-1)
        v = torch.cat([torch.zeros(m, c3, bl // 2), v, torch.zeros(m, c3, bl // 2)], dim=-1)
        padding_mask = torch.cat([torch.zeros(m, 1, bl // 2), padding_mask, torch.zeros(m, 1, bl // 2)], dim=-1)
        k = torch.cat([k[:, :, i * bl : (i + 1) * bl + (bl // 2) * 2] for i in range(nb)], dim=0)
        v = torch.cat([v[:, :, i * bl : (i + 1) * bl + (bl // 2) * 2] for i in range(nb)], dim=0)
        padding_mask = torch.cat([padding_mask[:, :, i * bl : (i + 1) * bl + (bl // 2) * 2] for i in range(nb)], dim=0)
        final_mask = self.window_mask.repeat(m * nb, 1, 1) * padding_mask
        output = self._scalar_dot_att(q, k, v, final_mask)
        output = self.conv_out(F.relu(output))
        output = output.reshape(m, nb, -1, bl).permute(0, 2, 1, 3).reshape(m, -1, nb * bl)
        return output[:, :, 0:L] * mask[:, 0:1, :]


class _OfficialConvFF(nn.Module):
    def __init__(self, dilation, in_channels, out_channels):
        super().__init__()
        self.layer = nn.Sequential(nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation), nn.ReLU())

    def forward(self, x):
        return self.layer(x)


class _OfficialAttModule(nn.Module):
    def __init__(self, dilation, in_channels, out_channels, r1, r2, stage, alpha):
        super().__init__()
        self.feed_forward = _OfficialConvFF(dilation, in_channels, out_channels)
        self.instance_norm = nn.InstanceNorm1d(in_channels, track_running_stats=False)
        self.att_layer = _OfficialAttLayer(in_channels, in_channels, out_channels, r1, r1, r2, dilation, stage)
        self.conv_1x1 = nn.Conv1d(out_channels, out_channels, 1)
        self.dropout = nn.Dropout()
        self.alpha = alpha

    def forward(self, x, f, mask):
        out = self.feed_forward(x)
        out = self.alpha * self.att_layer(self.instance_norm(out), f, mask) + out
        out = self.dropout(self.conv_1x1(out))
        return (x + out) * mask[:, 0:1, :]


class _OfficialEncoder(nn.Module):
    def __init__(self, num_layers, r1, r2, num_f_maps, input_dim, num_classes, channel_masking_rate):
        super().__init__()
        self.conv_1x1 = nn.Conv1d(input_dim, num_f_maps, 1)
        self.layers = nn.ModuleList(
            [_OfficialAttModule(2**i, num_f_maps, num_f_maps, r1, r2, "encoder", 1) for i in range(num_layers)]
        )
        self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)
        self.dropout = nn.Dropout2d(p=channel_masking_rate)
        self.channel_masking_rate = channel_masking_rate

    def forward(self, x, mask):
        if self.channel_masking_rate > 0:
            x = self.dropout(x.unsqueeze(2)).squeeze(2)
        feature = self.conv_1x1(x)
        for layer in self.layers:
            feature = layer(feature, None, mask)
        return self.conv_out(feature) * mask[:, 0:1, :], feature


class _OfficialDecoder(nn.Module):
    def __init__(self, num_layers, r1, r2, num_f_maps, input_dim, num_classes, alpha):
        super().__init__()
        self.conv_1x1 = nn.Conv1d(input_dim, num_f_maps, 1)
        self.layers = nn.ModuleList(
            [_OfficialAttModule(2**i, num_f_maps, num_f_maps, r1, r2, "decoder", alpha) for i in range(num_layers)]
        )
        self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

    def forward(self, x, fencoder, mask):
        feature = self.conv_1x1(x)
        for layer in self.layers:
            feature = layer(feature, fencoder, mask)
        return self.conv_out(feature) * mask[:, 0:1, :], feature


class _OfficialASFormer(nn.Module):  # MyTransformer
    def __init__(self, num_decoders, num_layers, r1, r2, num_f_maps, input_dim, num_classes, channel_masking_rate):
        super().__init__()
        self.encoder = _OfficialEncoder(num_layers, r1, r2, num_f_maps, input_dim, num_classes, channel_masking_rate)
        self.decoders = nn.ModuleList(
            [
                copy.deepcopy(_OfficialDecoder(num_layers, r1, r2, num_f_maps, num_classes, num_classes, math.exp(-3 * s)))
                for s in range(num_decoders)
            ]
        )

    def forward(self, x, mask):
        out, feature = self.encoder(x, mask)
        outputs = out.unsqueeze(0)
        for decoder in self.decoders:
            out, feature = decoder(F.softmax(out, dim=1) * mask[:, 0:1, :], feature * mask[:, 0:1, :], mask)
            outputs = torch.cat((outputs, out.unsqueeze(0)), dim=0)
        return outputs


def _save(model: nn.Module, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return str(path)


def test_mstcn_official_checkpoint_loads_through_model_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = _OfficialMultiStage(num_stages=2, num_layers=4, num_f_maps=8, dim=6, num_classes=5).eval()
    cfg = _model_config("mstcn")
    p = cfg.Params(num_stages=2, num_layers=4, num_maps=8, weights=_save(official, tmp_path, "epoch-50.model"))
    ours = cfg.build_model(p, 6, 5).eval()
    x = torch.randn(1, 6, 40)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ())[0], official(x, torch.ones(1, 5, 40)), atol=1e-6, rtol=1e-6)


def test_mstcn2_official_checkpoint_gives_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = _OfficialMSTCN2(num_layers_PG=5, num_layers_R=4, num_R=2, num_f_maps=8, dim=6, num_classes=5).eval()
    cfg = _model_config("mstcn2")
    p = cfg.Params(num_layers_pg=5, num_layers_r=4, num_refinements=2, num_maps=8)
    p.weights = _save(official, tmp_path, "epoch-100.model")
    ours = cfg.build_model(p, 6, 5).eval()
    assert isinstance(ours, MSTCN2)
    x = torch.randn(1, 6, 45)
    with torch.no_grad():
        expected = official(x)
        logits, state = ours(x, ())
    assert state == () and logits.shape == (3, 1, 5, 45)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("length", [37, 64])  # a ragged last block and an exact multiple of every window
def test_asformer_official_checkpoint_gives_the_same_logits(tmp_path: Path, length: int) -> None:
    torch.manual_seed(0)
    official = _OfficialASFormer(2, 5, 2, 2, 8, 6, 5, channel_masking_rate=0.3).eval()
    cfg = _model_config("asformer")
    p = cfg.Params(num_decoders=2, num_layers=5, num_maps=8, weights=_save(official, tmp_path, "epoch-120.model"))
    ours = cfg.build_model(p, 6, 5).eval()
    x = torch.randn(1, 6, length)
    with torch.no_grad():
        expected = official(x, torch.ones(1, 5, length))
        logits, _ = ours(x, ())
    assert logits.shape == (3, 1, 5, length)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_official_window_mask_keeps_the_column_defect() -> None:
    # bl = 4: window 4 + 2*2 = 8 keys; every row sees columns 0..6 (not a band), the last column never.
    mask = official_window_mask(4)
    assert mask.shape == (4, 8)
    assert torch.equal(mask, torch.tensor([[1.0] * 7 + [0.0]] * 4))
    assert torch.equal(official_window_mask(1), torch.ones(1, 1))


def test_weights_that_do_not_fit_name_the_file_and_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = _OfficialMSTCN2(4, 3, 2, 8, 6, 5)
    path = _save(official, tmp_path, "other.model")
    cfg = _model_config("mstcn2")
    # one refinement stage fewer: the file has unexpected keys Rs.1.*
    with pytest.raises(WeightsError, match=r"other\.model(.|\n)*unexpected keys(.|\n)*Rs\.1\.conv_1x1\.weight"):
        cfg.build_model(cfg.Params(num_layers_pg=4, num_layers_r=3, num_refinements=1, num_maps=8, weights=path), 6, 5)
    # another class count: shape mismatches
    with pytest.raises(WeightsError, match=r"shape mismatches(.|\n)*PG\.conv_out\.weight"):
        cfg.build_model(cfg.Params(num_layers_pg=4, num_layers_r=3, num_refinements=2, num_maps=8, weights=path), 6, 7)
    # an MS-TCN checkpoint is not an MS-TCN++ one: missing keys
    mstcn = MSTCN(6, 5, num_stages=2, num_layers=3, num_maps=8)
    with pytest.raises(WeightsError, match=r"missing keys(.|\n)*PG\."):
        cfg.build_model(cfg.Params(4, 3, 2, 8, weights=_save(mstcn, tmp_path, "mstcn.model")), 6, 5)
    with pytest.raises(WeightsError, match="no such file"):
        cfg.build_model(cfg.Params(weights=str(tmp_path / "absent.model")), 6, 5)


def test_weights_from_data_parallel_and_streamseg_checkpoints_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ASFormer(6, 5, num_decoders=1, num_layers=3, num_maps=8)
    state = model.state_dict()
    for prefix, wrap in (("module.", lambda s: s), ("net.", lambda s: {"state_dict": s, "epoch": 3})):
        path = tmp_path / f"{prefix}pt"
        torch.save(wrap({prefix + k: v for k, v in state.items()}), path)
        cfg = _model_config("asformer")
        loaded = cfg.build_model(cfg.Params(num_decoders=1, num_layers=3, num_maps=8, weights=str(path)), 6, 5)
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, state[k])


# -------------------------------------------------------------------------------------------------- ASRF


def test_asrf_official_names_load_after_renaming(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = ASRF(6, 5, num_layers=3, num_maps=8, num_stages_asb=2, num_stages_brb=2)
    # Official names: trunk and stage residual layers and stage inputs call their 1x1 conv `conv_in`.
    official_names = {
        k.replace("shared_layers.0.conv_1x1", "shared_layers.0.conv_in").replace("asb.0.conv_1x1", "asb.0.conv_in")
        .replace("asb.0.layers.2.conv_1x1", "asb.0.layers.2.conv_in").replace("brb.0.layers.1.conv_1x1", "brb.0.layers.1.conv_in"): v
        for k, v in ours.state_dict().items()
    }
    assert "asb.0.conv_in.weight" in official_names and "shared_layers.0.conv_in.bias" in official_names
    path = tmp_path / "final_model.prm"
    torch.save(official_names, path)
    cfg = _model_config("asrf")
    loaded = cfg.build_model(cfg.Params(num_layers=3, num_maps=8, num_stages_asb=2, num_stages_brb=2, weights=str(path)), 6, 5)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k])


def test_refinement_takes_the_majority_between_boundary_peaks() -> None:
    labels = torch.tensor([[0, 0, 1, 0, 2, 2, 2, 1, 2, 0]])
    logits = F.one_hot(labels, 3).permute(0, 2, 1).float() * 5
    prob = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.8, 0.4, 0.2, 0.6, 0.3, 0.95]])
    # peaks: frame 0 (always), 4 (0.8 > 0.3, 0.4); 7 is under the threshold 0.7; 9 is the last frame
    refined = refine_with_boundaries(logits, torch.logit(prob), None, threshold=0.7)
    assert refined.tolist() == [[0, 0, 0, 0, 2, 2, 2, 2, 2, 2]]
    # with threshold 0.5, frame 7 (0.6 > 0.2, 0.3) starts a segment [7, 10): labels 1, 2, 0 tie; the
    # tie goes to the larger probability sum, here class 0 made more confident
    logits[0, 0, 9] = 9
    refined = refine_with_boundaries(logits, torch.logit(prob), None, threshold=0.5)
    assert refined[0, 7:].tolist() == [0, 0, 0]


def test_refinement_ignores_padding() -> None:
    torch.manual_seed(0)
    logits, bounds = torch.randn(1, 4, 12), torch.randn(1, 1, 12) * 3
    alone = refine_with_boundaries(logits, bounds, None)
    padded = refine_with_boundaries(
        torch.cat([logits, torch.randn(1, 4, 5) * 9], -1), torch.cat([bounds, torch.full((1, 1, 5), 9.0)], -1),
        torch.cat([torch.ones(1, 12), torch.zeros(1, 5)], -1),
    )
    assert torch.equal(padded[:, :12], alone) and (padded[:, 12:] == 0).all()


def test_asrf_eval_output_is_the_refined_prediction() -> None:
    torch.manual_seed(0)
    model = ASRF(6, 5, num_layers=3, num_maps=8, num_stages_asb=2, num_stages_brb=2).eval()
    x = torch.randn(1, 6, 30)
    with torch.no_grad():
        logits, _ = model(x, ())
        classes, bounds = model.branches(x)
    assert torch.equal(logits[0], classes[0])
    assert torch.equal(logits[-1].argmax(1), refine_with_boundaries(classes[-1], bounds[-1]))
    model.refine_in_eval = False
    with torch.no_grad():
        torch.testing.assert_close(model(x, ())[0], classes)


def test_asrf_loss_adds_the_boundary_term() -> None:
    torch.manual_seed(0)
    model = ASRF(6, 5, num_layers=3, num_maps=8, num_stages_asb=3, num_stages_brb=2).train()
    labels = torch.tensor([[0, 0, 0, 1, 1, 3, 3, 3, -100, -100], [2, 2, 4, 4, 4, 4, 0, 0, 0, 0]])
    mask = (labels >= 0).float()
    assert boundary_targets(labels, mask)[0].tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 0, 0]
    loss_fn = ASRFLoss(model, 5)
    logits, _ = model(torch.randn(2, 6, 10), (), mask[:, None])
    loss, parts = loss_fn(logits, labels, mask)
    assert loss.item() == pytest.approx((parts["ce"] + parts["smooth"] + parts["boundary"]).item(), rel=1e-6)
    assert parts["boundary"] > 0 and int(parts["frames"]) == 18
    loss.backward()
    assert model.brb[0].conv_out.weight.grad.abs().sum() > 0  # the boundary branch learns
    # boundary term: 0.1 x the stage mean of the per-video mean BCE over valid frames
    b = model.boundary_logits.detach()
    t = boundary_targets(labels, mask)
    bce = [
        (F.binary_cross_entropy_with_logits(b[s, 0, 0, :8], t[0, :8]) + F.binary_cross_entropy_with_logits(b[s, 1, 0], t[1])) / 2
        for s in range(2)
    ]
    assert parts["boundary"].item() == pytest.approx(0.1 * (bce[0] + bce[1]).item() / 2, rel=1e-5)
    with pytest.raises(RuntimeError, match="boundary_logits do not belong"):
        loss_fn(logits[:, :1], labels[:1], mask[:1])


# ------------------------------------------------------------------------------------------------- C2F-TCN


def test_c2ftcn_windows_are_independent_and_the_output_is_a_log_ensemble() -> None:
    torch.manual_seed(0)
    model = C2FTCN(6, 5, window=384, wide=8, narrow=8).eval()
    x = torch.randn(1, 6, 500)  # two windows: [0, 384) and [384, 500) zero-padded
    with torch.no_grad():
        logits, _ = model(x, ())
        first, _ = model(x[:, :, :384], ())
        second, _ = model(x[:, :, 384:], ())
    assert logits.shape == (1, 1, 5, 500)
    torch.testing.assert_close(logits, torch.cat([first, second], -1))
    torch.testing.assert_close(logits.exp().sum(2), torch.ones(1, 1, 500), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="window must be >= 384"):
        C2FTCN(6, 5, window=200)


class _OfficialDoubleConv(nn.Module):  # C2F-TCN model.py double_conv / inconv / down / up / outconv / TPPblock
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel_size=5, padding=2), nn.BatchNorm1d(out_ch), nn.ReLU(inplace=True),
            nn.Conv1d(out_ch, out_ch, kernel_size=5, padding=2), nn.BatchNorm1d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv(x)


class _OfficialInconv(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = _OfficialDoubleConv(in_ch, out_ch)

    def forward(self, x):
        return self.conv(x)


class _OfficialDown(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.max_pool_conv = nn.Sequential(nn.MaxPool1d(2), _OfficialDoubleConv(in_ch, out_ch))

    def forward(self, x):
        return self.max_pool_conv(x)


class _OfficialUp(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="linear", align_corners=True)
        self.conv = _OfficialDoubleConv(in_channels, out_channels)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        diff = torch.tensor([x2.size()[2] - x1.size()[2]])
        x1 = F.pad(x1, [int(diff // 2), int(diff - diff // 2)])
        return self.conv(torch.cat([x2, x1], dim=1))


class _OfficialOutconv(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class _OfficialTPP(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.pool1, self.pool2 = nn.MaxPool1d(2, 2), nn.MaxPool1d(3, 3)
        self.pool3, self.pool4 = nn.MaxPool1d(5, 5), nn.MaxPool1d(6, 6)
        self.conv = nn.Conv1d(in_channels=in_channels, out_channels=1, kernel_size=1, padding=0)

    def forward(self, x):
        t = x.size(2)
        up = [F.interpolate(self.conv(p(x)), size=t, mode="linear", align_corners=True)
              for p in (self.pool1, self.pool2, self.pool3, self.pool4)]
        return torch.cat([*up, x], 1)


class _OfficialC2F(nn.Module):  # C2F_TCN, official widths 256 / 128
    def __init__(self, n_channels, n_classes):
        super().__init__()
        self.inc = _OfficialInconv(n_channels, 256)
        self.down1, self.down2 = _OfficialDown(256, 256), _OfficialDown(256, 256)
        self.down3, self.down4 = _OfficialDown(256, 128), _OfficialDown(128, 128)
        self.down5, self.down6 = _OfficialDown(128, 128), _OfficialDown(128, 128)
        self.up = _OfficialUp(260, 128)
        self.outcc0 = _OfficialOutconv(128, n_classes)
        self.up0 = _OfficialUp(256, 128)
        self.outcc1 = _OfficialOutconv(128, n_classes)
        self.up1 = _OfficialUp(256, 128)
        self.outcc2 = _OfficialOutconv(128, n_classes)
        self.up2 = _OfficialUp(384, 128)
        self.outcc3 = _OfficialOutconv(128, n_classes)
        self.up3 = _OfficialUp(384, 128)
        self.outcc4 = _OfficialOutconv(128, n_classes)
        self.up4 = _OfficialUp(384, 128)
        self.outcc = _OfficialOutconv(128, n_classes)
        self.tpp = _OfficialTPP(128)
        self.weights = torch.nn.Parameter(torch.ones(6))

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        x7 = self.tpp(self.down6(x6))
        x = self.up(x7, x6)
        y1 = self.outcc0(F.relu(x))
        x = self.up0(x, x5)
        y2 = self.outcc1(F.relu(x))
        x = self.up1(x, x4)
        y3 = self.outcc2(F.relu(x))
        x = self.up2(x, x3)
        y4 = self.outcc3(F.relu(x))
        x = self.up3(x, x2)
        y5 = self.outcc4(F.relu(x))
        x = self.up4(x, x1)
        return self.outcc(x), [y5, y4, y3, y2, y1], x


def _official_c2f_ensemble(outp, weights):  # train.py get_c2f_ensemble_output
    prob = F.softmax(outp[0], dim=1) * weights[0] / sum(weights)
    for i, ele in enumerate(outp[1]):
        up = F.interpolate(ele, size=outp[0].shape[-1], mode="linear", align_corners=True)
        prob = prob + F.softmax(up, dim=1) * weights[i + 1] / sum(weights)
    return prob


def test_c2ftcn_official_checkpoint_gives_the_same_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = _OfficialC2F(6, 5)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in official.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    official.eval()
    cfg = _model_config("c2ftcn")
    ours = cfg.build_model(cfg.Params(window=400, weights=_save(official, tmp_path, "best_gtea_unet.wt")), 6, 5).eval()
    x = torch.randn(1, 6, 400)
    with torch.no_grad():
        expected = torch.log(_official_c2f_ensemble(official(x), [1, 1, 1, 1, 0, 0]) + 1e-10)
        logits, _ = ours(x, ())
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-5)
