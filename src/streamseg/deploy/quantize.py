"""INT8 ONNX for CPU edge boxes: static quantisation of an exported streaming step, calibrated on videos.

`quantize_int8(model.onnx, videos)` runs the fp32 graph over the calibration videos chunk by chunk (state
carried, as `infer` runs it) and hands those exact inputs (``x`` and the ``state_in_i`` of each chunk) to
ONNX Runtime's static quantiser (`quantize_graph`: by default `quant_pre_process` first, then
`onnxruntime.quantization.quantize_static` with QDQ format, int8 weights per channel, asymmetric uint8
activations, MinMax calibration; `Int8Options` says why and lists the alternatives), leaving in float the
nodes `int8_search.choose_float_nodes` finds must stay float for the labels to agree with fp32's on
``min_agreement`` of the calibration videos' frames. It writes ``model.int8.onnx`` and its metadata
(``model.int8.json``, ``quantization: "int8-static"``, ``int8_search``: that choice) beside the fp32
files; `OnnxStreamer`, `infer` and `serve` run it like any export.

`label_agreement` measures what matters for segmentation: the fraction of original frames whose label
the INT8 graph gives as the fp32 graph does, over whole videos run through `infer_video`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .infer import infer_video, open_source
from .runtime import OnnxStreamer, meta_path_for

__all__ = ["Int8Options", "calibration_feeds", "calibration_steps", "label_agreement", "prepare_graph",
           "quantize_graph", "quantize_int8", "quantize_prepared"]


def calibration_steps(fp32: OnnxStreamer, videos: Sequence[str | Path], chunk: int,
                      max_chunks: int = 64) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Chunk by chunk over ``videos`` (state carried by the fp32 graph), at most ``max_chunks`` in all:
    the graph's inputs ``{"x", "state_in_i"}`` and the fp32 graph's logits ``(1, K, T)`` for them (one
    fp32 run per chunk serves both the state and the reference labels)."""
    in_names, _ = fp32.meta.state_names()
    done = 0
    for video in videos:
        with open_source(video, fp32) as source:
            state = fp32.init_state(1)
            while done < max_chunks and len(frames := source.read(chunk)) > 0:
                x = fp32.meta.preprocess(frames)
                feed = {"x": x, **dict(zip(in_names, state))}
                logits, state = fp32.step(x, state)
                yield feed, logits
                done += 1
        if done >= max_chunks:
            return


def calibration_feeds(fp32: OnnxStreamer, videos: Sequence[str | Path], chunk: int,
                      max_chunks: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """The graph's inputs of `calibration_steps`, without the logits."""
    for feed, _ in calibration_steps(fp32, videos, chunk, max_chunks):
        yield feed


@dataclass(frozen=True)
class Int8Options:
    """How `quantize_graph` quantises (ONNX Runtime's `quantize_static` arguments; tools/bench_int8.py
    measures each side by side, docs/benchmarks.md). The defaults were the fastest measured on a 2-core
    x86 CPU with AVX512-VNNI (98.3 % label agreement with fp32 on a small trained run, the best of the
    variants; 99.6 % on a better-trained one): uint8 activations are the x86 kernels' native U8S8 form
    (int8 activations ran no faster than fp32 there). Speed on that CPU, with the fixed timing tool:
    1.16-1.24x fp32 at batch 1 and 1.32-1.43x at batch 8 (docs/benchmarks.md, "A better-trained run"), at
    32x32; with the full MobileNetV2 at 224x224 2.0-2.3x (random weights: "Larger frame sizes").

    fmt: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs around float ops, fused by ONNX Runtime) or
    ``"qoperator"`` (QLinearConv, QLinearAdd, ... written out). activations: ``"uint8"`` (asymmetric,
    U8S8: the x86 int8 kernels' native form) or ``"int8"``. symmetric: activation ranges symmetric
    around 0. per_channel: one weight scale per output channel. reduce_range: 7-bit weights (for CPUs
    without VNNI, whose U8S8 products can overflow). op_types: the op types to quantise (None: all that
    ONNX Runtime can). calibration: ``"minmax"``, ``"entropy"`` or ``"percentile"``. preprocess: run
    `quant_pre_process` first (shape inference and graph optimisation: BatchNorm folded into convs).
    float_prefixes: nodes with a weight whose name starts with one of these stay float (default: the
    temporal head, ``net.head.``: a few per cent of the compute, where the class scores are decided).
    """

    fmt: str = "qdq"
    activations: str = "uint8"
    symmetric: bool = False
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    calibration: str = "minmax"
    preprocess: bool = True
    float_prefixes: tuple[str, ...] = ("net.head.",)


def quantize_graph(onnx_path: str | Path, out: str | Path, feeds: Iterable[dict[str, np.ndarray]],
                   options: Int8Options = Int8Options(), float_nodes: Sequence[str] = ()) -> Path:
    """Static INT8 quantisation of the graph at ``onnx_path`` into ``out``, calibrated on ``feeds`` (graph
    inputs, e.g. `calibration_feeds`); ``float_nodes``: names of nodes of `prepare_graph`'s graph kept in
    float besides those of ``options.float_prefixes``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="streamseg-int8-") as tmp:
        src, keep_float = prepare_graph(onnx_path, Path(tmp), options)
        return quantize_prepared(src, out, feeds, options, [*keep_float, *float_nodes])


def prepare_graph(onnx_path: str | Path, tmp: Path, options: Int8Options = Int8Options()) -> tuple[Path, list[str]]:
    """The graph the quantiser reads, written in the folder ``tmp`` (`quant_pre_process`'s output with
    ``options.preprocess``; every node named), and the names of its nodes ``options.float_prefixes``
    keeps in float."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _check_options(options)
    src = Path(onnx_path)
    if options.preprocess:
        src = tmp / "pre.onnx"
        quant_pre_process(str(onnx_path), str(src), skip_symbolic_shape=True)
    return _nodes_with_weights(src, options.float_prefixes, tmp / "named.onnx")


def quantize_prepared(src: Path, out: str | Path, feeds: Iterable[dict[str, np.ndarray]], options: Int8Options,
                      float_nodes: Sequence[str], ranges: Path | None = None) -> Path:
    """`quantize_static` of `prepare_graph`'s graph ``src`` into ``out`` with the nodes ``float_nodes``
    left in float. ``ranges``: a file for the activation ranges calibrated on ``feeds``: written by the
    first call, read by later ones (the same ranges serve any ``float_nodes``; the search quantises the
    same graph many times)."""
    import inspect

    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    formats, types, methods = _check_options(options)
    feeds = iter(feeds)
    if options.calibration != "minmax":  # histogram calibrators stack the chunks: one shape only (full chunks)
        feeds = _same_shapes(feeds)

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quantize_static(str(src), str(out), Reader(), quant_format=formats[options.fmt],
                    nodes_to_exclude=list(float_nodes) or None, per_channel=options.per_channel,
                    reduce_range=options.reduce_range, activation_type=types[options.activations],
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(options.op_types) if options.op_types else None,
                    calibrate_method=methods[options.calibration],
                    extra_options={"ActivationSymmetric": options.symmetric},
                    **({"calibration_cache_path": str(ranges)}
                       if ranges and "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}))
    return Path(out)


def _check_options(options: Int8Options) -> tuple[dict, dict, dict]:
    """ONNX Runtime's values of ``options``' format, activation types and calibration methods (checked)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    for key, value, allowed in (("fmt", options.fmt, formats), ("activations", options.activations, types),
                                ("calibration", options.calibration, methods)):
        if value not in allowed:
            raise ValueError(f"Int8Options.{key}: expected one of {sorted(allowed)}, got {value!r}")
    return formats, types, methods


def _nodes_with_weights(path: Path, prefixes: tuple[str, ...], out: Path) -> tuple[Path, list[str]]:
    """The graph at ``path`` with every node named (the quantiser excludes nodes by name; an unnamed one
    would match every other unnamed one), saved as ``out``, and the names of its nodes that read an
    initializer named ``prefix...``."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    taken = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"streamseg_node_{i}"
            while node.name in taken:
                node.name += "_"
            taken.add(node.name)
    onnx.save(model, str(out))
    weights = {i.name for i in graph.initializer if prefixes and i.name.startswith(prefixes)}
    return out, [n.name for n in graph.node if weights.intersection(n.input)]


def _same_shapes(feeds: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The feeds shaped as the first one (a video's last, shorter chunk is left out)."""
    first = None
    for feed in feeds:
        shapes = {k: v.shape for k, v in feed.items()}
        first = first or shapes
        if shapes == first:
            yield feed


def quantize_int8(onnx_path: str | Path, videos: Sequence[str | Path], out: str | Path | None = None, *,
                  chunk: int | None = None, max_chunks: int = 64, check_videos: Sequence[str | Path] = (),
                  options: Int8Options = Int8Options(), min_agreement: float = 0.99,
                  folds: int = 2) -> tuple[Path, Path, dict | None]:
    """Static INT8 quantisation of an exported streaming step, calibrated on ``videos`` (at most
    ``max_chunks`` chunks, spread over them). With ``min_agreement`` > 0, the nodes that must stay in
    float for the labels to agree with fp32's on that fraction of the calibration videos' frames are
    chosen from them (`int8_search.choose_float_nodes`, ``folds`` cross-fitted folds) and recorded as
    the metadata's ``int8_search``. With ``check_videos``, the `label_agreement` with the fp32 graph on
    them is measured and stored as the metadata's ``parity``. Returns (int8 .onnx, its metadata, that
    report)."""
    from .int8_search import calibration_videos, check_min_agreement, choose_float_nodes

    onnx_path = Path(onnx_path)
    min_agreement = check_min_agreement(min_agreement)
    fp32 = OnnxStreamer(onnx_path)
    meta = fp32.meta
    if meta.input_kind != "frames" or not meta.streaming:
        raise ValueError(f"{onnx_path}: INT8 calibration needs a streaming video model")
    if not videos:
        raise ValueError(f"{onnx_path}: no calibration videos")
    if min_agreement > 0 and len(videos) < folds:
        raise ValueError(f"{onnx_path}: choosing the nodes kept in float needs at least {folds} calibration "
                         f"videos, got {len(videos)} (a min agreement of 0 quantises every node)")
    out = Path(out) if out is not None else onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")
    calib = calibration_videos(fp32, videos, chunk or meta.chunk_size or 32, max_chunks)
    search = None
    if min_agreement > 0:
        search = choose_float_nodes(onnx_path, calib, meta.state_names()[0], min_agreement, options, folds).as_dict()
    quantize_graph(onnx_path, out, [f for v in calib for f in v.feeds], options,
                   search["float_nodes"] if search else ())
    int8_meta = dataclasses.replace(meta, onnx=out.name, quantization="int8-static", parity=None,
                                    int8_search=search)
    int8_meta.to_json(meta_path_for(out))
    report = None
    if check_videos:
        report = label_agreement(fp32, OnnxStreamer(out), check_videos, chunk)
        dataclasses.replace(int8_meta, parity=report).to_json(meta_path_for(out))
    return out, meta_path_for(out), report


def label_agreement(reference: OnnxStreamer, other: OnnxStreamer, videos: Sequence[str | Path],
                    chunk: int | None = None) -> dict[str, float | int]:
    """Fraction of original frames labelled alike by two streamers over whole videos (`infer_video`)."""
    same = total = 0
    for video in videos:
        a = infer_video(reference, video, chunk).labels
        b = infer_video(other, video, chunk).labels
        same += int((a == b).sum())
        total += len(a)
    return {"label_agreement": round(same / max(total, 1), 6), "frames": total, "videos": len(videos)}

