"""tools/bench_tcn_step.py on the CPU: its matrix-product form of MS-TCN's dilated convolution computes
what ``nn.Conv1d`` does (the benchmark's comparison is only fair if it does), and a timed variant leaves
the model and cuDNN's setting as it found them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_tcn_step  # noqa: E402

from streamseg.models.mstcn import DilatedResidualLayer  # noqa: E402


@pytest.mark.parametrize("dilation, frames", [(1, 7), (4, 20), (16, 9)])  # 16 > frames: every tap is padding
def test_the_gemm_form_equals_the_dilated_conv(dilation, frames):
    torch.manual_seed(dilation)
    conv = torch.nn.Conv1d(5, 6, kernel_size=3, padding=dilation, dilation=dilation)
    x = torch.randn(2, 5, frames)
    torch.testing.assert_close(bench_tcn_step.gemm_dilated(x, conv), conv(x), rtol=1e-5, atol=1e-5)


def test_a_variant_leaves_the_model_and_cudnn_as_they_were(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # a session's own setting
    before = DilatedResidualLayer.forward
    args = argparse.Namespace(frames=40, bucket=32, in_dim=8, steps=1, warmup=0)
    for variant in ("gemm", "cudnn-benchmark"):
        row = bench_tcn_step.step_time(variant, "fast", args, torch.device("cpu"))
        assert row["batch"] == 8 and row["frames"] == 32 and row["frames_per_s"] > 0
    assert DilatedResidualLayer.forward is before and torch.backends.cudnn.benchmark is True
    assert bench_tcn_step.max_abs_diff(args, torch.device("cpu")) < 1e-4
    assert DilatedResidualLayer.forward is before
