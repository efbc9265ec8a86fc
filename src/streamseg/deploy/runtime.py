"""Run a trained model chunk by chunk, from its ONNX export or from PyTorch, with the state explicit.

Both backends share one small interface (`Streamer`)::

    state = streamer.init_state(batch)                   # zeros: the start of a video, per stream
    logits, state = streamer.step(x, state)              # x float32 (B, C, T[, H, W]) -> logits (B, K, T)

``x`` is the model's input *after* preprocessing (`DeployMeta.preprocess`): normalised frames or
features at the sample rate; ``logits`` are the last stage's, as numpy float32. ``T`` may differ from
call to call (the end of a video is a short chunk). A model with ``lookahead is None`` (MS-TCN, ...)
needs the whole video in one call; it has no state.

`DeployMeta` is what a deployment needs besides the weights: class names, fps and sample rate, the
input (kind, shape, normalisation), state shapes and look-ahead. `export onnx` writes it next to the
``.onnx`` file as JSON (``model.onnx`` -> ``model.json``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "DeployMeta",
    "OnnxStreamer",
    "Streamer",
    "TorchStreamer",
    "deploy_meta",
    "load_trained_model",
    "meta_path_for",
    "open_streamer",
]

META_FORMAT = 1  # bump when DeployMeta's JSON changes incompatibly


@dataclass
class DeployMeta:
    """Everything about a deployed model except its weights.

    class_names: K names, index = class id. bg_classes: names treated as background by the metrics.
    fps: original frames per second of the training videos. sample_rate: the model sees every
    ``sample_rate``-th original frame. input_kind: ``"frames"`` (RGB) or ``"features"``.
    sample_shape: one input sample, (3, H, W) for frames or (D,) for features.
    mean / std: frames are fed as ``(pixel / 255 - mean) / std`` per channel (RGB); empty for features.
    lookahead: future sampled frames a prediction uses (0 = causal); None = whole video per call.
    chunk_size: sampled frames per chunk in training (0 = whole videos); a hint, any T works.
    state_shapes: per state tensor, its shape without the batch dim (dim 0), in the model's order.
    onnx: file name of the ONNX graph beside this file (None for a PyTorch-only meta).
    parity: the export's ONNX-vs-PyTorch check (max differences, tolerance, chunk lengths); for an INT8
    graph, its label agreement with the fp32 graph.
    quantization: None (float32), or how the graph was quantised (``"int8-static"``).
    int8_search: for an INT8 graph, the nodes left in float and their label agreement with fp32 on the
    calibration videos (`deploy.int8_search.Int8Search`), or None.
    """

    class_names: list[str]
    fps: float
    sample_rate: int
    input_kind: Literal["frames", "features"]
    sample_shape: list[int]
    lookahead: int | None
    state_shapes: list[list[int]]
    bg_classes: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    chunk_size: int = 0
    onnx: str | None = None
    opset: int | None = None
    torch_version: str = torch.__version__
    parity: dict[str, Any] | None = None
    source: str = ""  # the run directory or checkpoint it came from
    quantization: str | None = None  # "int8-static" for `export onnx --int8` (deploy.quantize), else None
    int8_search: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def streaming(self) -> bool:
        """True when the model runs chunk by chunk (look-ahead known); False: whole videos only."""
        return self.lookahead is not None

    def state_names(self) -> tuple[list[str], list[str]]:
        """ONNX input and output names of the state tensors: state_in_i, state_out_i."""
        n = len(self.state_shapes)
        return [f"state_in_{i}" for i in range(n)], [f"state_out_{i}" for i in range(n)]

    def preprocess(self, samples: torch.Tensor) -> np.ndarray:
        """One video's samples to a batch of one: ``uint8 (T, 3, H, W)`` frames -> ``float32 (1, 3, T, H, W)``
        normalised; ``float32 (T, D)`` features -> ``(1, D, T)``."""
        if self.input_kind == "features":
            return samples.float().T.unsqueeze(0).contiguous().numpy()
        x = samples.float().div_(255.0)
        x = (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous().numpy()

    def to_json(self, path: str | Path) -> None:
        data = {"format": META_FORMAT, **dataclasses.asdict(self)}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> DeployMeta:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metadata file (export writes it beside the .onnx file)")
        data = json.loads(path.read_text())
        if data.pop("format", None) != META_FORMAT:
            raise ValueError(f"{path}: metadata format {data.get('format')!r}, this streamseg reads {META_FORMAT}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ValueError(f"{path}: unknown keys {unknown}, missing keys {missing}")
        return cls(**data)


def meta_path_for(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


class Streamer(Protocol):
    meta: DeployMeta

    def init_state(self, batch: int) -> Any: ...

    def step(self, x: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...


def _check_x(meta: DeployMeta, x: np.ndarray, where: str) -> None:
    want = (meta.sample_shape[0], *meta.sample_shape[1:])
    got = (x.shape[1], *x.shape[3:]) if x.ndim >= 3 else ()
    if x.ndim != 2 + len(meta.sample_shape) or got != want or x.shape[2] < 1:
        layout = "(B, C, T, H, W)" if meta.input_kind == "frames" else "(B, D, T)"
        raise ValueError(f"{where}: expected x {layout} with (C[, H, W]) = {tuple(want)} and T >= 1, "
                         f"got {tuple(x.shape)}")


class OnnxStreamer:
    """An ONNX Runtime session of an exported streaming step (see `streamseg.deploy.onnx_export`).

    Args:
        onnx_path: the ``.onnx`` file; its metadata is read from `meta_path_for(onnx_path)`.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        providers: ONNX Runtime execution providers, in order of preference.
    """

    def __init__(self, onnx_path: str | Path, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.meta = DeployMeta.from_json(meta_path_for(self.path))
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        except Exception as e:  # noqa: BLE001 (onnxruntime's own exception types: one line naming the file)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{self.path}: not a loadable ONNX model (truncated, corrupt or another format): "
                             f"{first}") from None
        self._in_names, self._out_names = self.meta.state_names()
        have = [i.name for i in self.session.get_inputs()]
        if have != ["x", *self._in_names]:
            raise ValueError(f"{self.path}: graph inputs {have} do not match its metadata "
                             f"({['x', *self._in_names]})")

    def init_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, *shape), np.float32) for shape in self.meta.state_shapes]

    def step(self, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        _check_x(self.meta, x, f"OnnxStreamer({self.path.name}).step")
        feeds = {"x": np.ascontiguousarray(x, np.float32), **dict(zip(self._in_names, state))}
        logits, *new_state = self.session.run(None, feeds)
        return logits, new_state


class TorchStreamer:
    """The same interface over a PyTorch contract model (eval mode, no gradients).

    Args:
        net: a model following the streaming contract.
        meta: its `DeployMeta` (see `load_trained_model`).
        device: where it runs. dtype: the compute dtype (autocast for bf16/fp16 on CUDA and CPU).
        channels_last: frames in channels-last memory (NHWC convolutions; faster on GPUs for 2D encoders).
        compile: `torch.compile` the step, the batch axis marked dynamic so that the batches of a serving
            pool (1 to N ready streams) share graphs: one for batch 1 (dynamo specialises it), one for the
            rest; only chunks of ``compiled_chunk`` frames (default: the training chunk, else 32; a
            `StreamPool` sets its own) run compiled, a video's short last chunk runs eagerly (no graph per
            length, no recompilation stalling the other streams).

    `step_frames` takes the uint8 frames themselves: they cross to the device as bytes (4x less than
    float32) and are normalised there by training's `streamseg.data.streams.normalize_frames`, the same
    float32 operations in the same order as `DeployMeta.preprocess`, so the model sees the same input as
    through `step`, bit for bit. `stage_frames` moves a chunk to the device beforehand, from the thread
    that made it (a `StreamPool` reader), so that the step only stacks device tensors.
    """

    def __init__(self, net: nn.Module, meta: DeployMeta, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, *, channels_last: bool = False, compile: bool = False) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            # tensors made on it say cuda:N, and torch.device("cuda") != torch.device("cuda:0")
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.meta = meta
        self.dtype = dtype
        frames = meta.input_kind == "frames"
        self.channels_last = channels_last and frames
        net = net.eval().to(self.device)
        self.net = net.to(memory_format=torch.channels_last) if self.channels_last else net
        if frames:  # on the device once, not copied there at every step
            self._mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device)
            self._std = torch.tensor(meta.std, dtype=torch.float32, device=self.device)
        self.compiled = compile
        self._compiled_fn = torch.compile(self._forward) if compile else None
        self.compiled_chunk = meta.chunk_size or 32
        self._local = threading.local()  # each staging thread's own CUDA stream

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        return self.net.init_state(batch, self.device)

    def _forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits, new_state = self.net(x, tuple(state), None)
        return logits[-1].float(), tuple(new_state)

    @torch.no_grad()
    def step_tensor(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        """Like `step`, on tensors already on the device: logits (B, K, T) float32 on the device."""
        if self.channels_last:  # (B, 3, T, H, W) whose memory is (B, T, H, W, 3): NHWC for the encoder
            x = x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
        fn = self._forward
        if self._compiled_fn is not None and x.shape[2] == self.compiled_chunk:
            fn = self._compiled_fn
            if x.shape[0] > 1:  # one graph for every batch > 1 (the pool's batches vary step to step)
                torch._dynamo.maybe_mark_dynamic(x, 0)
                for s in state:
                    torch._dynamo.maybe_mark_dynamic(s, 0)
        return fn(x, *state)

    def step(self, x: np.ndarray, state: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, tuple]:
        _check_x(self.meta, x, "TorchStreamer.step")
        logits, new_state = self.step_tensor(torch.from_numpy(np.asarray(x, np.float32)).to(self.device), state)
        return logits.cpu().numpy(), new_state

    def stage_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """A chunk of uint8 frames ``(T, 3, H, W)`` on this streamer's device, ready for `step_frames`.

        On a GPU the copy runs on the calling thread's own CUDA stream, and that thread (not the step's)
        waits for it: a pool's reader threads upload their chunks while the model runs, instead of the
        engine stacking every chunk on the host, pinning and uploading them between two model calls.
        On the CPU: ``frames`` themselves."""
        if self.device.type != "cuda" or frames.device == self.device:
            return frames
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            staged = frames.pin_memory().to(self.device, non_blocking=True)
        stream.synchronize()
        return staged

    @torch.no_grad()
    def step_frames(self, frames: Sequence[torch.Tensor], state: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, tuple]:
        """One chunk per stream of uint8 frames ``(T, 3, H, W)`` (equal T), normalised on the device."""
        if self.meta.input_kind != "frames":
            raise ValueError("TorchStreamer.step_frames: this model takes features; use step()")
        from ..data.streams import normalize_frames  # training's normalisation: the same float32 operations

        frames = list(frames)
        gpu = self.device.type == "cuda"
        staged = gpu and all(f.device == self.device for f in frames)
        # page-locked host chunks (a decode worker's ring buffers) go up one by one, without a host copy;
        # the caller keeps them unchanged until this call returns
        pinned = gpu and not staged and len({f.shape for f in frames}) == 1 and all(f.is_pinned() for f in frames)
        if pinned:
            _check_x(self.meta, frames[0][None].permute(0, 2, 1, 3, 4), "TorchStreamer.step_frames")
            # in the chunks' own memory layout (the rings are channels-last), so that each upload is a
            # plain copy: a layout change on the way would be made on the host first, into pageable memory
            last = all(f.permute(0, 2, 3, 1).is_contiguous() for f in frames)
            t, c, h, w = frames[0].shape
            x = torch.empty((len(frames), t, h, w, c) if last else (len(frames), t, c, h, w), dtype=torch.uint8,
                            device=self.device)
            for row, f in zip(x, frames):
                row.copy_(f.permute(0, 2, 3, 1) if last else f, non_blocking=True)
            if last:
                x = x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        else:
            x = torch.stack(frames if staged else [f.cpu() for f in frames])  # (B, T, 3, H, W) uint8
            _check_x(self.meta, x.permute(0, 2, 1, 3, 4), "TorchStreamer.step_frames")  # before the upload
        if staged:  # made on the stagers' streams: their memory is not reused before this stream has read it
            current = torch.cuda.current_stream(self.device)
            for f in frames:
                f.record_stream(current)
        elif gpu and not pinned:
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = normalize_frames(x.permute(0, 2, 1, 3, 4), self._mean, self._std).contiguous()  # (B, 3, T, H, W)
        logits, new_state = self.step_tensor(x, state)
        return logits.cpu().numpy(), new_state


def _resolve_run(path: Path) -> tuple[Path, str | Path]:
    """A run directory, or a checkpoint inside ``<run>/checkpoints/``, to (run directory, ckpt)."""
    from ..engine.zero_checkpoint import is_folder

    if path.is_dir() and not is_folder(path):
        if not (path / "config" / "params.json").is_file():
            raise FileNotFoundError(f"{path}: not a run directory (no config/params.json)")
        return path, "best"
    if path.suffix == ".ckpt" and (path.is_file() or is_folder(path)):  # a file, or a DeepSpeed run's folder
        run = path.parent.parent
        if not (run / "config" / "params.json").is_file():
            raise FileNotFoundError(f"{path}: a checkpoint must sit in <run dir>/checkpoints/ "
                                    f"(no {run / 'config' / 'params.json'})")
        return run, path
    raise FileNotFoundError(f"{path}: expected a run directory or a .ckpt file inside one")


def load_trained_model(path: str | Path, overrides: Sequence[str] = ()) -> tuple[nn.Module, DeployMeta]:
    """A trained run's network (eval mode, CPU) and its `DeployMeta`, from a run directory or checkpoint.

    The dataset folder of the run must exist (class names come from its ``mapping.txt``).
    """
    from ..engine.runner import load_trained

    run, ckpt = _resolve_run(Path(path))
    _, params, dm, module = load_trained(run, ckpt, overrides)
    net = module.net.eval()
    return net, deploy_meta(net, dm, int(params.train.chunk_size), source=str(path))


def deploy_meta(net: nn.Module, dm: Any, chunk_size: int, source: str = "") -> DeployMeta:
    """The `DeployMeta` of ``net`` trained on the DataModule ``dm`` (its ``info``; frames or features)."""
    from ..engine.stream_datamodule import VideoStreamDataModule

    info = dm.info
    state = net.init_state(1, "cpu")
    if isinstance(dm, VideoStreamDataModule):
        kind, shape, mean, std = "frames", [3, *dm.frame_size], list(dm.mean), list(dm.std)
    else:
        kind, shape, mean, std = "features", [info.in_channels], [], []
    return DeployMeta(
        class_names=list(info.class_names), fps=float(info.fps), sample_rate=int(info.sample_rate),
        input_kind=kind, sample_shape=shape, lookahead=net.lookahead,
        state_shapes=[list(t.shape[1:]) for t in state], bg_classes=[info.class_names[i] for i in info.bg_ids],
        mean=mean, std=std, chunk_size=chunk_size, source=source,
    )


# the one table of precision names (CLI --precision, benchmarks, StreamStep's pure casts)
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def open_streamer(model: str | Path, device: str = "cpu", threads: int | None = None, *, precision: str = "fp32",
                  channels_last: bool = False, compile: bool = False) -> Streamer:
    """``.onnx`` file -> `OnnxStreamer`; run directory or ``.ckpt`` -> `TorchStreamer` with the given
    autocast ``precision`` ("fp32", "bf16", "fp16"), ``channels_last`` and ``compile``."""
    model = Path(model)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if model.suffix == ".onnx":
        if precision != "fp32" or channels_last or compile:
            raise ValueError(f"{model}: --precision, --channels-last and --compile apply to PyTorch models "
                             "(a run directory or checkpoint), not to an ONNX export")
        return OnnxStreamer(model, threads=threads)
    net, meta = load_trained_model(model)
    return TorchStreamer(net, meta, device, PRECISIONS[precision], channels_last=channels_last, compile=compile)
