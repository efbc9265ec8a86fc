"""Where an MS-TCN training step's time goes on a GPU: cuDNN's dilated convolutions against the same
convolution as one matrix product over shifted copies of the input, with and without cuDNN autotuning.

    python tools/bench_tcn_step.py --out tcn_step.json              # on a GPU
    python tools/bench_tcn_step.py --device cpu --frames 2000 --steps 2 --in-dim 64   # a CPU smoke run

Each row times ``--steps`` training steps (forward, the per-stage cross-entropy, backward, Adam) of MS-TCN
(4 stages x 10 layers x 64 maps, ``--in-dim`` features, 11 classes, dropout on) after ``--warmup`` steps,
on random features already on the device, for the two shapes of docs/benchmarks.md "Time-to-accuracy":

* ``official``: batch 1, one video of ``--frames`` frames, fp32 (the official recipe);
* ``fast``: batch 8 padded to ``--bucket`` frames, bf16 autocast (the fast path with length buckets).

Variants: ``cudnn`` (``nn.Conv1d``, as the model runs), ``cudnn-benchmark`` (the same with
``torch.backends.cudnn.benchmark``: cuDNN times its algorithms for each new shape and keeps the fastest),
and ``gemm`` (every dilated kernel-3 convolution computed as one matrix product of its (C_out, 3 C_in)
weight with the input and its two copies shifted by the dilation, zero-padded: the same function as the
padded dilated convolution, so the same weights give the same outputs up to float rounding, which the
``max_abs_diff`` column reports against ``cudnn`` in fp32). The frames-per-second column counts valid frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from streamseg.models.mstcn import MSTCN, DilatedResidualLayer  # noqa: E402


def gemm_dilated(x: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for a kernel-3 conv with padding = dilation, as one matmul over the shifted input."""
    d = conv.dilation[0]
    t = x.shape[-1]
    xp = F.pad(x, (d, d))
    taps = torch.cat([xp[..., : t], xp[..., d: d + t], xp[..., 2 * d: 2 * d + t]], dim=1)  # (B, 3C, T)
    w = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)  # (O, 3C): tap-major, like taps
    return torch.matmul(w.to(taps.dtype), taps) + conv.bias.to(taps.dtype)[:, None]


def _gemm_forward(self: DilatedResidualLayer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = self.dropout(self.conv_1x1(F.relu(gemm_dilated(x, self.conv_dilated))))
    return (x + out) * mask


def step_time(variant: str, shape: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    batch, frames, dtype = (1, args.frames, None) if shape == "official" else (8, args.bucket, torch.bfloat16)
    net = MSTCN(args.in_dim, 11).to(device)
    original, benchmark = DilatedResidualLayer.forward, torch.backends.cudnn.benchmark
    if variant == "gemm":
        DilatedResidualLayer.forward = _gemm_forward
    torch.backends.cudnn.benchmark = variant == "cudnn-benchmark"
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = torch.randn(batch, args.in_dim, frames, device=device)
        y = torch.randint(0, 11, (batch, frames), device=device)
        mask = torch.ones(batch, 1, frames, device=device)
        if batch > 1:  # padded like a bucketed batch: the valid lengths spread over the bucket's lower 80 %
            for i in range(batch):
                mask[i, :, int(frames * (0.8 + 0.2 * i / batch)):] = 0
        valid = int(mask.sum())

        def one() -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits, _ = net(x, mask=mask)
                loss = sum(F.cross_entropy(s.float(), y, reduction="none").mul(mask[:, 0]).sum() / valid
                           for s in logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(args.warmup):
            one()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            one()
        _sync(device)
        seconds = (time.perf_counter() - t0) / args.steps
    finally:
        DilatedResidualLayer.forward = original
        torch.backends.cudnn.benchmark = benchmark
    return {"shape": shape, "variant": variant, "batch": batch, "frames": frames,
            "ms_per_step": round(seconds * 1e3, 2), "frames_per_s": round(valid / seconds)}


def max_abs_diff(args, device: torch.device) -> float:
    """fp32 outputs of the gemm form against nn.Conv1d, same weights, eval mode (no dropout)."""
    torch.manual_seed(0)
    net = MSTCN(args.in_dim, 11).to(device).eval()
    x = torch.randn(1, args.in_dim, min(args.frames, 4096), device=device)
    original = DilatedResidualLayer.forward
    with torch.no_grad():
        ref, _ = net(x)
        DilatedResidualLayer.forward = _gemm_forward
        try:
            got, _ = net(x)
        finally:
            DilatedResidualLayer.forward = original
    return float((ref - got).abs().max())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=10_000, help="official shape: one video's frames")
    p.add_argument("--bucket", type=int, default=12_288, help="fast shape: the padded length of a batch of 8")
    p.add_argument("--in-dim", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=["cudnn", "cudnn-benchmark", "gemm"],
                   choices=["cudnn", "cudnn-benchmark", "gemm"])
    p.add_argument("--shapes", nargs="+", default=["official", "fast"], choices=["official", "fast"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_tcn_step: no CUDA device (use --device cpu for a smoke run)")
    rows = {"gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "max_abs_diff_gemm_vs_cudnn_fp32": max_abs_diff(args, device), "rows": []}
    print("max |gemm - cudnn| (fp32):", rows["max_abs_diff_gemm_vs_cudnn_fp32"], flush=True)
    for shape in args.shapes:
        for variant in args.variants:
            row = step_time(variant, shape, args, device)
            rows["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
