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
    """

    def __init__(self, net: nn.Module, meta: DeployMeta, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.net = net.eval().to(device)
        self.meta = meta
        self.device = torch.device(device)
        self.dtype = dtype

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        return self.net.init_state(batch, self.device)

    @torch.no_grad()
    def step_tensor(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        """Like `step`, on tensors already on the device: logits (B, K, T) float32 on the device."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits, new_state = self.net(x, state, None)
        return logits[-1].float(), new_state

    def step(self, x: np.ndarray, state: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, tuple]:
        _check_x(self.meta, x, "TorchStreamer.step")
        logits, new_state = self.step_tensor(torch.from_numpy(np.asarray(x, np.float32)).to(self.device), state)
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


def open_streamer(model: str | Path, device: str = "cpu", threads: int | None = None) -> Streamer:
    """``.onnx`` file -> `OnnxStreamer`; run directory or ``.ckpt`` -> `TorchStreamer`."""
    model = Path(model)
    if model.suffix == ".onnx":
        return OnnxStreamer(model, threads=threads)
    net, meta = load_trained_model(model)
    return TorchStreamer(net, meta, device)
