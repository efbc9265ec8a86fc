"""INT8 against fp32 ONNX Runtime on the CPU: quantisation variants side by side, throughput and labels, JSON out.

    python tools/bench_int8.py --model RUN_DIR --calib TRAIN_VIDEOS --check TEST_VIDEOS --gt GROUND_TRUTH --out r.json
    python tools/bench_int8.py --random --frame-size 32 --calib VIDEOS --check VIDEOS   # no trained run at hand
    python tools/bench_int8.py --onnx model.onnx --calib ... --check ... --variants default --profile 20

``--model``: a trained run (or .ckpt), exported here (fp32, parity-checked); ``--onnx``: an existing fp32
export; a whole-video features model (MS-TCN) takes folders of ``.npy`` features (D, T) as ``--calib`` and
``--check``, one call per file, and is timed on ``--chunk`` frames per call; ``--random``: the `-E chunk32`
architecture (TSM-MobileNetV2 + MemoryTCN, 11 classes; ``--num-blocks 4`` as the synth runs) with random
weights and BatchNorm statistics from one video (an agreement on random weights says little; the speed
does not depend on the weights).

Each variant of `--variants` (names in ``VARIANTS``: format, activation type, per-channel weights,
reduce_range, which op types, calibration method, `quant_pre_process`) is quantised from the same
calibration chunks (`calibration_videos` over ``--calib``: about ``--calib-chunks`` in windows staggered over the videos;
``AUTO`` variants also choose the nodes kept in float on them, as `export onnx --int8`), and run over whole
``--check`` videos through `infer_video`: label agreement with fp32, and with ``--gt`` (a groundTruth
folder of per-frame class names) the accuracy of each. Throughput: original frames per second of one
`OnnxStreamer.step` on chunks of ``--chunk`` sampled frames at batch 1 and ``--batch`` streams, every
session (fp32 and each variant, at each ONNX Runtime setting of ``SESSIONS``) timed in turn within one
round, ``--rounds`` rounds, median over rounds: a busy machine slows them alike. ``--profile N`` adds ONNX
Runtime's per-op profile (N steps at ``--batch``) of fp32 and the default INT8 graph: time per op type.
``--margins``: per variant, how many sampled frames of ``--check`` change label and fp32's top-2 softmax
margin on them (near ties flip first), with the share of frames below a few margins; where in the videos
they fall (per quarter, and in the first chunk, whose state is fresh), and how many flip when every chunk
of the INT8 graph starts from the state fp32 carried to it (the error of one chunk alone: if the flips
mostly vanish, the INT8 state drifting over a video is what flips them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamseg.deploy.infer import infer_video, video_files
from streamseg.deploy.onnx_export import export_onnx, export_trained
from streamseg.deploy.int8_search import calibration_videos, choose_float_nodes
from streamseg.deploy.quantize import Int8Options, calibration_feeds, quantize_graph
from streamseg.deploy.runtime import DeployMeta, OnnxStreamer, meta_path_for

CONV_MATMUL = ("Conv", "MatMul", "Gemm")
# name -> options; "default" is Int8Options(), the library's default
VARIANTS: dict[str, Int8Options] = {
    "default": Int8Options(),
    "qdq-s8s8": Int8Options(activations="int8"),
    "qdq-s8s8-nopre": Int8Options(activations="int8", preprocess=False),
    "qdq-u8s8-nopre": Int8Options(preprocess=False),
    "qdq-s8s8-sym": Int8Options(activations="int8", symmetric=True),
    "qop-u8s8": Int8Options(fmt="qoperator"),
    "qop-s8s8": Int8Options(fmt="qoperator", activations="int8"),
    "qdq-u8s8-tensor": Int8Options(per_channel=False),
    "qdq-u8s8-reduce": Int8Options(reduce_range=True),
    "qdq-u8s8-convmm": Int8Options(op_types=CONV_MATMUL),
    "qop-u8s8-convmm": Int8Options(fmt="qoperator", op_types=CONV_MATMUL),
    "qdq-u8s8-allq": Int8Options(float_prefixes=()),  # the temporal head quantised too
    "qdq-s8s8-nopre-allq": Int8Options(activations="int8", preprocess=False, float_prefixes=()),  # the first version
    "qdq-u8s8-entropy": Int8Options(calibration="entropy"),
    "qdq-u8s8-percentile": Int8Options(calibration="percentile"),
    "qdq-u8s8-firstfloat": Int8Options(float_prefixes=("net.head.", "net.encoder.blocks.0.")),  # + the first conv
    "qdq-u8s8-tcnfloat": Int8Options(),  # + every node after the encoder's last weight (`_after_encoder`)
    "qdq-u8s8-dwfloat": Int8Options(),  # + every depthwise convolution (`_depthwise`)
    "qdq-u8s8-int8state": Int8Options(),  # calibrated again on the INT8 graph's own states (`_int8_state_feeds`)
    "qdq-u8s8-first": Int8Options(),  # calibrated on each video's first chunks, as before the ninth session (`_first_feeds`)
}
# name -> min agreement: the default options with the nodes kept in float chosen on the calibration videos
# (`int8_search.choose_float_nodes`, as `export onnx --int8` does)
AUTO = {"auto": 0.99, "auto-0.995": 0.995}
# ONNX Runtime session settings timed: (graph optimisation level, intra-op threads)
SESSIONS = {"all-t2": ("all", 2), "extended-t2": ("extended", 2), "basic-t2": ("basic", 2), "all-t1": ("all", 1)}


def _prepared(fp32_path: Path, options: Int8Options) -> Any:
    """The graph (``onnx.GraphProto``) that `quantize_graph` quantises, whose node names it takes."""
    import tempfile

    import onnx

    from streamseg.deploy.quantize import prepare_graph

    with tempfile.TemporaryDirectory() as tmp:
        return onnx.load(str(prepare_graph(fp32_path, Path(tmp), options)[0])).graph


def _depthwise(fp32_path: Path, options: Int8Options) -> list[str]:
    """The depthwise convolutions (``Conv`` with ``group`` > 1) of `prepare_graph`'s graph: MobileNetV2's
    known weak spot under INT8 (one 3x3 filter per channel, so per-channel weight scales still leave each
    channel's activation range to one scale)."""
    return [n.name for n in _prepared(fp32_path, options).node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def _after_encoder(fp32_path: Path, options: Int8Options) -> list[str]:
    """The nodes of `prepare_graph`'s graph after the last one that reads a ``net.encoder.`` weight: the
    temporal part (MemoryTCN with its state Concat/Slice and mask Mul), the residual Add and spatial mean."""
    graph = _prepared(fp32_path, options)
    weights = {i.name for i in graph.initializer if i.name.startswith("net.encoder.")}
    last = max(i for i, n in enumerate(graph.node) if weights.intersection(n.input))
    return [n.name for n in graph.node[last + 1:]]


def _int8_state_feeds(int8_path: Path, meta: DeployMeta, calib: list) -> list[dict[str, np.ndarray]]:
    """The calibration chunks with the state the INT8 graph at ``int8_path`` carries over each video
    (as at inference) instead of fp32's."""
    meta.to_json(meta_path_for(int8_path))
    int8, names = OnnxStreamer(int8_path, threads=2), meta.state_names()[0]
    feeds = []
    for video in calib:
        state = [video.feeds[0][n] for n in names]  # fp32's at the window's start, then the INT8 graph's own
        for feed in video.feeds:
            feeds.append({"x": feed["x"], **dict(zip(names, state))})
            _, state = int8.step(feed["x"], state)
    return feeds


def _first_feeds(fp32: OnnxStreamer, videos: list[Path], chunk: int, chunks: int) -> list[dict[str, np.ndarray]]:
    """Each video's first ``ceil(chunks / len(videos))`` chunks, fp32's state carried from zero: the
    calibration `calibration_videos` made before its windows were staggered over the videos (ninth
    session), kept to compare against."""
    per_video = -(-chunks // max(len(videos), 1))
    return [feed for video in videos for feed in calibration_feeds(fp32, [video], chunk, per_video)]


def session(path: Path, level: str, threads: int, profile: str | None = None) -> OnnxStreamer:
    """An `OnnxStreamer` whose ONNX Runtime session uses optimisation ``level`` and ``threads``, its pool
    threads not spinning after a call: the sessions are timed in turn, and a spinning thread of the one
    timed before took a core from the next (fp32 at batch 1 ran ~3x slower in such moments on 2 cores)."""
    import onnxruntime as ort

    streamer = OnnxStreamer(path, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if profile:
        opts.enable_profiling, opts.profile_file_prefix = True, profile
    streamer.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return streamer


def _random_model(frame: int, video: Path, out: Path, num_blocks: int | None = None) -> Path:
    from streamseg.data.video import VideoFileSource
    from streamseg.models import tsm_memtcn_mobilenet_v2

    torch.manual_seed(0)
    k, sr = 11, 2
    net = tsm_memtcn_mobilenet_v2(k, frame_size=(frame, frame), num_blocks=num_blocks)
    meta = DeployMeta(class_names=[f"c{i}" for i in range(k)], fps=15.0, sample_rate=sr, input_kind="frames",
                      sample_shape=[3, frame, frame], lookahead=0, chunk_size=32,
                      state_shapes=[list(t.shape[1:]) for t in net.init_state(1, "cpu")],
                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    for m in net.modules():  # BatchNorm statistics of a real video, so that labels vary
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with VideoFileSource(video, sr, (frame, frame)) as src, torch.no_grad():
        net.train()(torch.from_numpy(meta.preprocess(src.read(100_000))), net.init_state(1, "cpu"), None)
    return export_onnx(net.eval(), meta, out)[0]


def _inputs(meta: DeployMeta, batch: int, chunk: int) -> np.ndarray:
    shape = meta.sample_shape
    return np.random.default_rng(0).normal(size=(batch, shape[0], chunk, *shape[1:])).astype(np.float32)


def _speed(streamer: OnnxStreamer, x: np.ndarray, steps: int) -> float:
    """Original frames per second of one step on ``x`` (median of ``steps`` calls after one warm-up)."""
    state = streamer.init_state(len(x))
    streamer.step(x, state)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        streamer.step(x, state)
        times.append(time.perf_counter() - t)
    return x.shape[0] * x.shape[2] * streamer.meta.sample_rate / statistics.median(times)


def _labels(streamer: OnnxStreamer, videos: list[Path], chunk: int | None) -> dict[str, np.ndarray]:
    if streamer.meta.input_kind == "features":  # a whole-video model: one call per (D, T) .npy file
        return {v.stem: streamer.step(_features(v), [])[0][0].argmax(0) for v in videos}
    return {v.stem: infer_video(streamer, v, chunk).labels for v in videos}


def _logits(streamer: OnnxStreamer, video: Path, chunk: int, state_from: OnnxStreamer | None = None) -> np.ndarray:
    """(K, T) logits over a video's sampled frames, chunk by chunk. The streamer carries its own state, or
    with ``state_from`` every chunk starts from the state that streamer (fp32) carried to it: the logits
    then hold one chunk's error of ``streamer``, none accumulated through the state."""
    from streamseg.deploy.infer import open_source

    with open_source(video, streamer) as source:
        state, out = streamer.init_state(1), []
        while len(frames := source.read(chunk)) > 0:
            x = streamer.meta.preprocess(frames)
            logits, new_state = streamer.step(x, state)
            state = new_state if state_from is None else state_from.step(x, state)[1]
            out.append(logits[0])
    return np.concatenate(out, axis=-1)


def _quarters(flipped: list[np.ndarray]) -> list[int]:
    """Flipped frames in each quarter of their video's sampled frames (first to last): flips that the
    state carries along pile up in the later quarters, rounding near ties does not."""
    counts = [0, 0, 0, 0]
    for f in flipped:
        for i in np.flatnonzero(f):
            counts[min(4 * int(i) // len(f), 3)] += 1
    return counts


def _margins(ref: list[np.ndarray], streamer: OnnxStreamer, videos: list[Path], chunk: int,
             fp32: OnnxStreamer | None = None) -> dict:
    """Where the labels differ: fp32's top-2 softmax margin there (near ties flip first), sampled frames;
    the flips per quarter of the videos; with ``fp32``, also the flips when every chunk starts from fp32's
    state (``flipped_from_fp32_state``: far fewer of those means the error is carried by the state)."""
    flipped, margins, forced = [], [], []
    for logits, video in zip(ref, videos):
        p = np.exp(logits - logits.max(0))
        top2 = np.sort(p / p.sum(0), axis=0)[-2:]
        margins.append(top2[1] - top2[0])
        flipped.append(_logits(streamer, video, chunk).argmax(0) != logits.argmax(0))
        if fp32 is not None:
            forced.append(_logits(streamer, video, chunk, state_from=fp32).argmax(0) != logits.argmax(0))
    m, f = np.concatenate(margins), np.concatenate(flipped)
    out = {"sampled_frames": len(m), "flipped": int(f.sum()),
           "largest_fp32_margin_flipped": round(float(m[f].max()), 4) if f.any() else None,
           "share_fp32_margin_below": {t: round(float((m < t).mean()), 4) for t in (0.01, 0.02, 0.05)},
           "flipped_by_quarter": _quarters(flipped),
           "flipped_in_first_chunk": int(sum(x[:chunk].sum() for x in flipped))}
    if fp32 is not None:
        out["flipped_from_fp32_state"] = int(sum(x.sum() for x in forced))
    return out


def _features(path: Path) -> np.ndarray:
    return np.load(path).astype(np.float32)[None]  # (D, T) -> (1, D, T)


def _inputs_of(folder: str, features: bool) -> list[Path]:
    """The videos of a file or folder, or for a features model its ``.npy`` files (D, T)."""
    if not features:
        return list(video_files(folder))
    files = sorted(Path(folder).glob("*.npy")) if Path(folder).is_dir() else [Path(folder)]
    if not files:
        raise SystemExit(f"error: {folder}: no .npy feature files")
    return files


def _scores(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], gt: dict[str, np.ndarray] | None) -> dict:
    a, b = np.concatenate(list(ref.values())), np.concatenate(list(got.values()))
    out = {"label_agreement": round(float((a == b).mean()), 6), "frames": len(a)}
    if gt is not None:
        truth = np.concatenate([gt[k][: len(got[k])] for k in got])
        out["accuracy"] = round(float((b[: len(truth)] == truth).mean()), 6)
    return out


def _ground_truth(folder: Path, meta: DeployMeta, videos: list[Path]) -> dict[str, np.ndarray]:
    ids = {name: i for i, name in enumerate(meta.class_names)}
    out = {}
    for v in videos:
        path = folder / f"{v.stem}.txt"
        names = path.read_text().split()
        unknown = sorted(set(names) - set(ids))
        if unknown:
            raise SystemExit(f"error: {path}: classes {unknown[:3]} are not the model's {meta.class_names}")
        out[v.stem] = np.array([ids[n] for n in names])
    return out


def _profile(path: Path, x: np.ndarray, steps: int, threads: int, prefix: Path) -> dict:
    """ONNX Runtime's per-node profile of ``steps`` calls: milliseconds per call and share, per op type."""
    streamer = session(path, "all", threads, str(prefix))
    state = streamer.init_state(len(x))
    streamer.step(x, state)
    for _ in range(steps):
        streamer.step(x, state)
    trace = json.loads(Path(streamer.session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (steps + 1)
    total = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {"ms_per_call": round(total, 2),
            "by_op": {op: {"ms": round(ms, 2), "share": round(ms / total, 3)} for op, ms in top[:12]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a trained run directory or checkpoint")
    src.add_argument("--onnx", help="an fp32 .onnx export (its .json beside it)")
    src.add_argument("--random", action="store_true", help="the chunk32 architecture with random weights")
    p.add_argument("--calib", required=True, help="calibration videos (a file or folder; training videos)")
    p.add_argument("--check", required=True, help="held-out videos for label agreement (a file or folder)")
    p.add_argument("--gt", default=None, help="a groundTruth folder (<video>.txt, a class name per frame)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *AUTO])
    p.add_argument("--frame-size", type=int, default=32, help="--random: input H = W")
    p.add_argument("--num-blocks", type=int, default=None,
                   help="--random: keep MobileNetV2's first N feature blocks (the synth runs: 4; default all 19)")
    p.add_argument("--work", default="bench_int8", help="folder for the exported graphs")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sessions", nargs="+", default=list(SESSIONS), choices=list(SESSIONS),
                   help="ONNX Runtime settings timed for fp32 and the default (the other variants: all-t2)")
    p.add_argument("--steps", type=int, default=5, help="timed calls per session per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calib-chunks", type=int, default=64)
    p.add_argument("--profile", type=int, default=0, metavar="N", help="per-op profile of N calls (0: none)")
    p.add_argument("--margins", action="store_true",
                   help="per variant, fp32's top-2 softmax margin on the sampled frames whose label changed")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.random:
        fp32_path = _random_model(args.frame_size, next(video_files(args.calib)), work / "model.onnx", args.num_blocks)
    elif args.model:
        fp32_path = export_trained(args.model, work / "model.onnx")[0]
    else:
        fp32_path = Path(args.onnx)
    fp32 = OnnxStreamer(fp32_path, threads=2)
    meta = fp32.meta
    features = meta.input_kind == "features"
    calib_videos, check_videos = _inputs_of(args.calib, features), _inputs_of(args.check, features)
    gt = _ground_truth(Path(args.gt), meta, check_videos) if args.gt else None
    if features and set(args.variants) & set(AUTO):
        raise SystemExit(f"error: {sorted(AUTO)} variants need a streaming video model")
    if features:  # whole-video models (MS-TCN): one feed per calibration video
        feeds = [{"x": _features(v)} for v in calib_videos[: args.calib_chunks]]
    else:  # as `export onnx --int8`: spread over the videos
        calib = calibration_videos(fp32, calib_videos, args.chunk, args.calib_chunks)
        feeds = [f for v in calib for f in v.feeds]
    ref = _labels(fp32, check_videos, args.chunk)
    ref_logits = [_logits(fp32, v, args.chunk) for v in check_videos] if args.margins and not features else None
    result: dict = {"model": args.model or args.onnx or f"random tsm_memtcn {args.frame_size}x{args.frame_size}"
                             f" blocks {args.num_blocks or 'all'}",
                    "chunk": args.chunk, "batch": args.batch, "calibration_chunks": len(feeds),
                    "calib_videos": len(calib_videos), "check_videos": len(check_videos),
                    "fp32": _scores(ref, ref, gt), "variants": {}}
    paths = {"fp32": fp32_path}
    for name in args.variants:
        out = work / f"model.{name}.onnx"
        started = time.perf_counter()
        options, search = VARIANTS.get(name, Int8Options()), None
        try:
            if name in AUTO:
                search = choose_float_nodes(fp32_path, calib, meta.state_names()[0], AUTO[name], options)
            extra = (search.float_nodes if search
                     else _after_encoder(fp32_path, options) if name.endswith("tcnfloat")
                     else _depthwise(fp32_path, options) if name.endswith("dwfloat") else ())
            first = _first_feeds(fp32, calib_videos, args.chunk, args.calib_chunks) if name.endswith("first") else None
            quantize_graph(fp32_path, out, iter(first or feeds), options, extra)
            if name.endswith("int8state"):
                quantize_graph(fp32_path, out, iter(_int8_state_feeds(out, meta, calib)), options)
        except Exception as e:  # noqa: BLE001 (a variant ONNX Runtime cannot build is reported, not fatal)
            result["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"{name}: failed: {result['variants'][name]['error']}", flush=True)
            continue
        quant_s = time.perf_counter() - started
        meta.to_json(meta_path_for(out))
        scores = _scores(ref, _labels(OnnxStreamer(out, threads=2), check_videos, args.chunk), gt)
        result["variants"][name] = {"options": options.__dict__, "quantize_s": round(quant_s, 1), **scores}
        if search:
            result["variants"][name]["int8_search"] = search.as_dict()
        if ref_logits is not None:
            result["variants"][name]["margins"] = _margins(ref_logits, OnnxStreamer(out, threads=2), check_videos,
                                                           args.chunk, fp32)
        paths[name] = out
        print(f"{name}: {json.dumps(result['variants'][name])}", flush=True)

    # every (graph, session setting) timed once per round, rounds interleaved (--rounds 0: labels only)
    timed = [(g, s) for g in paths for s in args.sessions if s == "all-t2" or g in ("fp32", "default", *AUTO)]
    sessions = {(g, s): session(paths[g], *SESSIONS[s]) for g, s in timed}
    inputs = {b: _inputs(meta, b, args.chunk) for b in sorted({1, args.batch})}
    speeds: dict = defaultdict(list)
    for _ in range(args.rounds):
        for key, streamer in sessions.items():
            for b, x in inputs.items():
                speeds[key, b].append(_speed(streamer, x, args.steps))
    speed = {}
    for (g, s), _ in sessions.items() if args.rounds else ():
        row = {}
        for b in inputs:
            med = statistics.median(speeds[(g, s), b])
            base = statistics.median(speeds[("fp32", s), b])
            row[f"batch{b}_frames_per_s"] = round(med, 1)
            row[f"batch{b}_vs_fp32_same_session"] = round(med / base, 2)
        speed[f"{g} {s}"] = row
        print(f"{g} {s}: {json.dumps(row)}", flush=True)
    result["speed"] = speed
    if args.profile:
        x = inputs[args.batch]
        result["profile"] = {g: _profile(paths[g], x, args.profile, 2, work / f"profile_{g}")
                             for g in ("fp32", "default") if g in paths}
        print(json.dumps(result["profile"], indent=1), flush=True)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
