"""Export a model's streaming step to ONNX with its state as explicit inputs and outputs.

The graph (opset of torch's dynamo exporter; ``torch.onnx.export(dynamo=True)`` with ``dynamic_shapes``)::

    inputs   x            float32 (batch, C, time[, H, W])  preprocessed samples (see DeployMeta)
             state_in_i   float32 (batch, *state_shapes[i])   one per state tensor, zeros at a video's start
    outputs  logits       float32 (batch, K, time)           the last stage's logits
             state_out_i  float32 (batch, *state_shapes[i])   feed back as state_in_i for the next chunk

``batch`` and ``time`` are dynamic: any number of parallel streams, any chunk length (the end of a
video is a short chunk). Without ``dynamic_shapes`` the exporter freezes ``time`` at the example's length
and ONNX Runtime then rejects other chunk lengths (ecosystem notes, section 5).

Whole-video models (``lookahead is None``: MS-TCN) have no state; they export as the same graph with
only ``x``, to be run once per video (``time`` = the whole video). The metadata says so
(``lookahead: null``) and `streamseg infer` feeds them the whole video. A model whose Python code
branches on the input length (ASFormer, C2F-TCN as written) cannot be traced with a dynamic ``time``:
`export_onnx` raises `ExportError` naming the shape guard torch.export found.

Every export is checked (`check_parity`): ONNX Runtime and PyTorch run the same random stream of
chunks of lengths 1, 7, 16 and 5 (batch 2, state carried); logits and final state must agree within
``|onnx - torch| <= atol + rtol * max|torch|`` per tensor (default atol 1e-4, rtol 1e-3), else
`ParityError` is raised and the files are removed. The relative part uses the tensor's largest magnitude,
not each element's: float32 rounding in a deep network (ResNet-50 TSM: one state value of 4,096 off by
2.4e-4 at magnitude 0.1 while the tensor reaches ~1) scales with the activations, not with each value.
Small models agree to ~1e-7.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .runtime import DeployMeta, OnnxStreamer, load_trained_model, meta_path_for

__all__ = ["ExportError", "ParityError", "StreamingStep", "check_parity", "export_onnx", "export_trained"]

PARITY_CHUNKS = (1, 7, 16, 5)  # odd lengths, a single frame, one longer than the example: 29 frames
WHOLE_VIDEO_LENGTHS = (9, 23)  # whole-video models: two videos of different lengths
ATOL, RTOL = 1e-4, 1e-3
_EXAMPLE_BATCH, _EXAMPLE_TIME = 2, 7  # > 1, or torch.export would specialise the dims to 1
_MAX_TIME = 1 << 20  # frames per call the graph accepts (a bound torch.export needs; ~19 h at 15 fps)


def _size_oblivious():
    """Trace without specialising on sizes 0/1: a clip model's ``batch * clips`` or a chunk of one frame
    otherwise makes torch.export guard the graph to the example's case (e.g. "clips != 1"), and ONNX
    Runtime then fails on short chunks. The parity check below runs a chunk of 1 frame to prove it."""
    import contextlib

    try:
        import torch.fx.experimental._config as config
    except ImportError:  # a private module: absent in some future torch, the export then specialises
        return contextlib.nullcontext()
    if not hasattr(config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return config.patch(backed_size_oblivious=True)


class ParityError(RuntimeError):
    """ONNX Runtime's output differs from PyTorch's beyond the tolerance."""


class ExportError(RuntimeError):
    """The model cannot be traced into a graph with a dynamic batch and chunk length."""


class StreamingStep(nn.Module):
    """``forward(x, *state) -> (last-stage logits (B, K, T), *new_state)``: a contract model with flat
    tensor inputs and outputs, as ONNX needs (mask: none, every frame of a chunk is real)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new_state = self.net(x, tuple(state), None)
        return (logits[-1], *new_state)


# every state input shares the one "batch" dimension on purpose; the exporter says it keeps one name for it
_SHARED_BATCH_AXIS = r".*The axis name: batch will not be used.*"


def export_onnx(net: nn.Module, meta: DeployMeta, out: str | Path, *, check: bool = True,
                atol: float = ATOL, rtol: float = RTOL) -> tuple[Path, Path]:
    """Write ``out`` (.onnx) and its metadata (``out`` with suffix .json); return both paths.

    ``net`` is put in eval mode. ``meta.state_shapes`` must match ``net.init_state``; the parity result
    is stored in ``meta.parity``. Raises `ParityError` (files removed) when the check fails.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"{out}: the output file must end in .onnx")
    net = net.eval().cpu()
    state = net.init_state(_EXAMPLE_BATCH, "cpu")
    if [list(t.shape[1:]) for t in state] != [list(s) for s in meta.state_shapes]:
        raise ValueError(f"export_onnx: meta.state_shapes {meta.state_shapes} do not match the model's "
                         f"init_state {[list(t.shape[1:]) for t in state]}")
    x = torch.randn(_EXAMPLE_BATCH, meta.sample_shape[0], _EXAMPLE_TIME, *meta.sample_shape[1:])
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("time", min=1, max=_MAX_TIME)
    dynamic = ({0: batch, 2: frames}, tuple({0: batch} for _ in state)) if state else ({0: batch, 2: frames},)
    names_in, names_out = meta.state_names()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), _size_oblivious(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SHARED_BATCH_AXIS)
            program = torch.onnx.export(StreamingStep(net).eval(), (x, *state), dynamo=True, dynamic_shapes=dynamic,
                                        verbose=False, input_names=["x", *names_in], output_names=["logits", *names_out])
    except Exception as e:  # torch.export raises many types; all mean "this model cannot be traced"
        raise ExportError(_explain(net, e)) from e
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SHARED_BATCH_AXIS)
        program.save(str(out))
    meta.onnx = out.name
    meta.opset = _opset(out)
    meta_path = meta_path_for(out)
    meta.to_json(meta_path)
    if check:
        try:
            meta.parity = check_parity(net, out, atol=atol, rtol=rtol)
        except ParityError:
            out.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise
        meta.to_json(meta_path)
    return out, meta_path


def _explain(net: nn.Module, err: Exception) -> str:
    """A short reason for a failed export: the shape guard torch.export reports, if any."""
    text = str(err)
    guard = next((line.strip(" -") for line in text.splitlines()
                  if "Not all values of" in line or "specialized value" in line), None)
    name = type(net).__name__
    if guard is not None:
        return (f"{name} cannot be exported with a dynamic batch and chunk length: its forward has Python "
                f"control flow on the input's shape ({guard}). Make that code shape-independent (or use "
                "torch.cond) to export it.")
    first = next((line for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"{name}: torch.onnx.export failed: {type(err).__name__}: {first}"


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _compare(name: str, got: np.ndarray, ref: Tensor, atol: float, rtol: float, worst: dict) -> None:
    ref_np = ref.detach().cpu().numpy()
    if got.shape != ref_np.shape:
        raise ParityError(f"{name}: ONNX shape {got.shape}, PyTorch {ref_np.shape}")
    diff = np.abs(got - ref_np)
    worst["max_abs_diff"] = max(worst["max_abs_diff"], float(diff.max(initial=0.0)))
    bad = diff > atol + rtol * float(np.abs(ref_np).max(initial=0.0))
    if bad.any():
        i = np.unravel_index(np.argmax(diff), diff.shape)
        raise ParityError(f"{name}: ONNX Runtime and PyTorch differ at {tuple(int(j) for j in i)}: "
                          f"{got[i]:.6g} vs {ref_np[i]:.6g} (|diff| {diff[i]:.3g} > {atol} + {rtol} * max|torch|); "
                          f"{int(bad.sum())} of {bad.size} values out of tolerance")


def check_parity(net: nn.Module, onnx_path: str | Path, chunks: Sequence[int] = PARITY_CHUNKS, batch: int = 2,
                 atol: float = ATOL, rtol: float = RTOL, seed: int = 0) -> dict:
    """Run ONNX Runtime and PyTorch over one random multi-chunk stream and compare; raise `ParityError`.

    Streaming models: ``batch`` streams of chunks of the given lengths, each backend carrying its own
    state; every chunk's logits and the final state are compared. Whole-video models: one call per
    length in `WHOLE_VIDEO_LENGTHS`. Returns ``{"max_abs_diff", "atol", "rtol", "chunks", "batch"}``.
    """
    session = OnnxStreamer(onnx_path, threads=1)
    meta = session.meta
    gen = torch.Generator().manual_seed(seed)
    step = StreamingStep(net.eval())
    worst = {"max_abs_diff": 0.0}
    lengths = list(chunks) if meta.streaming else list(WHOLE_VIDEO_LENGTHS)
    ref_state = net.init_state(batch, "cpu")
    ort_state = session.init_state(batch)
    for c, length in enumerate(lengths):
        x = torch.randn(batch, meta.sample_shape[0], length, *meta.sample_shape[1:], generator=gen)
        with torch.no_grad():
            ref_logits, *ref_state = step(x, *ref_state)
        logits, ort_state = session.step(x.numpy(), ort_state)
        _compare(f"{Path(onnx_path).name}, chunk {c} ({length} frames), logits", logits, ref_logits, atol, rtol, worst)
    for i, (got, ref) in enumerate(zip(ort_state, ref_state)):
        _compare(f"{Path(onnx_path).name}, final state {i}", got, ref, atol, rtol, worst)
    return {**worst, "atol": atol, "rtol": rtol, "chunks": lengths, "batch": batch}


def export_trained(path: str | Path, out: str | Path | None = None, *, check: bool = True,
                   overrides: Sequence[str] = ()) -> tuple[Path, Path, DeployMeta, float]:
    """`streamseg export onnx`: a run directory or checkpoint to ``out`` (default ``<run>/export/model.onnx``).

    Returns (onnx path, metadata path, metadata, seconds taken).
    """
    started = time.time()
    net, meta = load_trained_model(path, overrides)
    if out is None:
        run = Path(path) if Path(path).is_dir() else Path(path).parent.parent
        out = run / "export" / "model.onnx"
    onnx_path, meta_path = export_onnx(net, meta, out, check=check)
    return onnx_path, meta_path, meta, time.time() - started
