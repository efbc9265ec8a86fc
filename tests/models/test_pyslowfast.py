"""X3D and SlowFast: parameter counts equal to the published ones, and PySlowFast checkpoints (state dicts
under PySlowFast's names, written here from its module layout) load onto ours with every key mapped.

Streaming behaviour (shapes, gradients, honest look-ahead, chunked == whole) is swept with the other
video backbones in tests/models/test_video_backbones.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from streamseg.flops import count_flops
from streamseg.models import WeightsError, X3D, SlowFast, x3d_m_encoder, x3d_s_encoder, x3d_xs_encoder
from streamseg.models.pyslowfast import slowfast_r50_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py

# Published parameter counts with the Kinetics-400 classifier: PySlowFast MODEL_ZOO.md (X3D: 3.8 M) and
# PyTorchVideo's model zoo (X3D-XS/S/M 3.79 M, SlowFast R50 8x8 34.57 M).
PUBLISHED_M = {"x3d": 3.79, "slowfast_r50_8x8": 34.57}


def test_parameter_counts_are_the_published_ones() -> None:
    x3d, slowfast = X3D(num_classes=400), SlowFast(num_classes=400)
    assert round(sum(p.numel() for p in x3d.parameters()) / 1e6, 2) == PUBLISHED_M["x3d"]
    assert round(sum(p.numel() for p in slowfast.parameters()) / 1e6, 2) == PUBLISHED_M["slowfast_r50_8x8"]
    # the exact counts docs/model_zoo.md quotes
    assert (sum(p.numel() for p in x3d.parameters()), sum(p.numel() for p in slowfast.parameters())) == (
        3_794_322, 34_566_488)
    # the encoders drop only the classifier: 2048 (X3D) and 2048 + 256 (SlowFast) features x 400 classes + bias
    assert sum(p.numel() for p in x3d_m_encoder().parameters()) == sum(p.numel() for p in x3d.parameters()) - 2049 * 400
    assert sum(p.numel() for p in slowfast_r50_encoder().parameters()) == (
        sum(p.numel() for p in slowfast.parameters()) - 2305 * 400)


def test_x3d_variants_are_one_network_on_other_clips() -> None:
    encoders = [f() for f in (x3d_xs_encoder, x3d_s_encoder, x3d_m_encoder)]
    windows = [(e.clip_len + e.context, e.frame_size) for e in encoders]
    assert windows == [(4, (160, 160)), (13, (160, 160)), (16, (224, 224))]  # X3D paper's training clips
    shapes = [{k: v.shape for k, v in e.state_dict().items()} for e in encoders]
    assert shapes[0] == shapes[1] == shapes[2]


# ------------------------------------------------------------------------- PySlowFast's names and shapes


def _bn(keys: dict[str, tuple[int, ...]], prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.{name}"] = (channels,)
    keys[f"{prefix}.num_batches_tracked"] = ()


def _block(keys, prefix: str, dim_in: int, inner: int, dim_out: int, shortcut: bool, a: tuple, b: tuple,
           b_groups: int, se: int | None) -> None:
    """PySlowFast's ResBlock: branch1 (+ branch1_bn) when the shape changes, branch2 = the transform."""
    if shortcut:
        keys[f"{prefix}.branch1.weight"] = (dim_out, dim_in, 1, 1, 1)
        _bn(keys, f"{prefix}.branch1_bn", dim_out)
    keys[f"{prefix}.branch2.a.weight"] = (inner, dim_in, *a)
    _bn(keys, f"{prefix}.branch2.a_bn", inner)
    keys[f"{prefix}.branch2.b.weight"] = (inner, inner // b_groups, *b)
    _bn(keys, f"{prefix}.branch2.b_bn", inner)
    if se is not None:
        keys[f"{prefix}.branch2.se.fc1.weight"], keys[f"{prefix}.branch2.se.fc1.bias"] = (se, inner, 1, 1, 1), (se,)
        keys[f"{prefix}.branch2.se.fc2.weight"], keys[f"{prefix}.branch2.se.fc2.bias"] = (inner, se, 1, 1, 1), (inner,)
    keys[f"{prefix}.branch2.c.weight"] = (dim_out, inner, 1, 1, 1)
    _bn(keys, f"{prefix}.branch2.c_bn", dim_out)


def pyslowfast_x3d_keys(classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Names and shapes of PySlowFast's X3D-M state dict (configs/Kinetics/X3D_M.yaml: width factor 2,
    depth factor 2.2, bottleneck factor 2.25, SE ratio 0.0625 on every other block, DIM_C5 2048)."""
    keys: dict[str, tuple[int, ...]] = {
        "s1.pathway0_stem.conv_xy.weight": (24, 3, 1, 3, 3), "s1.pathway0_stem.conv.weight": (24, 1, 5, 1, 1)}
    _bn(keys, "s1.pathway0_stem.bn", 24)
    se_width = {54: 8, 108: 8, 216: 16, 432: 32}  # PySlowFast's round_width(inner * 0.0625)
    dim_in = 24
    for stage, (width, depth) in enumerate(zip((24, 48, 96, 192), (3, 5, 11, 7)), start=2):
        inner = int(2.25 * width)
        for i in range(depth):
            _block(keys, f"s{stage}.pathway0_res{i}", dim_in if i == 0 else width, inner, width, i == 0, (1, 1, 1),
                   (3, 3, 3), inner, se_width[inner] if i % 2 == 0 else None)
        dim_in = width
    keys["head.conv_5.weight"] = (432, 192, 1, 1, 1)
    _bn(keys, "head.conv_5_bn", 432)
    keys["head.lin_5.weight"] = (2048, 432, 1, 1, 1)
    keys["head.projection.weight"], keys["head.projection.bias"] = (classes, 2048), (classes,)
    return keys


def pyslowfast_slowfast_keys(classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Names and shapes of PySlowFast's SLOWFAST_8x8_R50 state dict (alpha 4, beta_inv 8, fusion ratio 2,
    fusion kernel 7; slow temporal kernels 1, 1, 3, 3 in res2..res5, fast 3)."""
    keys: dict[str, tuple[int, ...]] = {
        "s1.pathway0_stem.conv.weight": (64, 3, 1, 7, 7), "s1.pathway1_stem.conv.weight": (8, 3, 5, 7, 7)}
    _bn(keys, "s1.pathway0_stem.bn", 64)
    _bn(keys, "s1.pathway1_stem.bn", 8)
    slow_in, fast_in = 64, 8
    for stage, (depth, inner, kt) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), (1, 1, 3, 3)), start=2):
        keys[f"s{stage - 1}_fuse.conv_f2s.weight"] = (2 * fast_in, fast_in, 7, 1, 1)
        _bn(keys, f"s{stage - 1}_fuse.bn", 2 * fast_in)
        slow_in += 2 * fast_in
        for pathway, (dim_in, width, t) in enumerate(((slow_in, inner, kt), (fast_in, inner // 8, 3))):
            for i in range(depth):
                _block(keys, f"s{stage}.pathway{pathway}_res{i}", dim_in if i == 0 else 4 * width, width, 4 * width,
                       i == 0, (t, 1, 1), (1, 3, 3), 1, None)
        slow_in, fast_in = 4 * inner, inner // 2
    keys["head.projection.weight"], keys["head.projection.bias"] = (classes, 2304), (classes,)
    return keys


def _checkpoint(keys: dict[str, tuple[int, ...]], path: Path) -> dict[str, Tensor]:
    """A PySlowFast-style checkpoint file with random values; returns its model_state."""
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen))
             for k, shape in keys.items()}
    torch.save({"epoch": 300, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  ARCH: x3d\n"}, path)
    return state


@pytest.mark.parametrize(
    ("build", "keys", "probes"),
    [
        (x3d_m_encoder, pyslowfast_x3d_keys, {
            "s1.pathway0_stem.conv.weight": "stem_t.weight", "s4.pathway0_res10.branch2.se.fc2.bias": "stages.2.10.se.fc2.bias",
            "s5.pathway0_res0.branch1_bn.running_var": "stages.3.0.shortcut_bn.running_var", "head.lin_5.weight": "lin5.weight"}),
        (slowfast_r50_encoder, pyslowfast_slowfast_keys, {
            "s1.pathway1_stem.conv.weight": "fast_stem.conv.weight", "s3_fuse.conv_f2s.weight": "laterals.2.conv.weight",
            "s5.pathway0_res2.branch2.a.weight": "slow_stages.3.2.a.weight",
            "s4.pathway1_res0.branch1.weight": "fast_stages.2.0.shortcut.weight"}),
    ],
    ids=["x3d_m", "slowfast_r50"],
)
def test_pyslowfast_checkpoints_load_with_their_keys_mapped(build, keys, probes, tmp_path: Path) -> None:
    path = tmp_path / "model.pyth"
    theirs = _checkpoint(keys(), path)
    ours = build(clip_len=4, context=4, frame_size=(32, 32), weights=str(path)).trunk.net.state_dict()
    assert len(ours) == len(theirs) - 2  # every key but the classifier's weight and bias
    for their_key, our_key in probes.items():
        torch.testing.assert_close(ours[our_key], theirs[their_key], atol=0, rtol=0, msg=their_key)


def test_a_checkpoint_of_the_other_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "slowfast.pyth"
    _checkpoint(pyslowfast_slowfast_keys(), path)
    with pytest.raises(WeightsError, match=r"(?s)slowfast.pyth does not fit X3D.*missing keys.*PySlowFast checkpoint"):
        x3d_m_encoder(frame_size=(32, 32), weights=str(path))
    x3d_keys = pyslowfast_x3d_keys()
    del x3d_keys["s3.pathway0_res4.branch2.c.weight"]
    _checkpoint(x3d_keys, path)
    with pytest.raises(WeightsError, match=r"missing keys \(1\): stages\.1\.4\.c\.weight"):
        x3d_m_encoder(frame_size=(32, 32), weights=str(path))


def test_flops_per_view_are_the_published_ones() -> None:
    """GMACs of one pass at the published views (PySlowFast MODEL_ZOO.md: X3D-XS 0.60, S 1.96, M 4.73;
    PyTorchVideo: SlowFast R50 8x8 65.71 at 32 x 256 x 256); counted on the meta device (no arithmetic)."""
    views = [(x3d_xs_encoder, 2, 2, 160, 0.60), (x3d_s_encoder, 7, 6, 160, 1.96), (x3d_m_encoder, 8, 8, 224, 4.73),
             (slowfast_r50_encoder, 16, 16, 256, 65.71)]
    for build, clip_len, context, side, published in views:
        with torch.device("meta"):
            encoder = build(clip_len=clip_len, context=context, frame_size=(side, side))
        flops = count_flops(encoder, (torch.zeros(1, 3, clip_len, side, side, device="meta"), encoder.init_state(1, "meta")))
        assert abs(flops / 2e9 - published) <= 0.015, (encoder.name, flops / 2e9)  # published to 2 decimals (+ rounding)
