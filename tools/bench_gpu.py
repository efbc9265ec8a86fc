"""GPU speed and scale measurements behind docs/benchmarks.md ("GPU"): one command per part, JSON out.

    python tools/bench_gpu.py model  --out results/       # model-only streaming step, variants, agreement
    python tools/bench_gpu.py trained --runs RUN.. --out results/ # bf16/compiled labels vs fp32, trained runs
    python tools/bench_gpu.py e2e    --out results/       # mp4 -> labels with decode worker processes
    python tools/bench_gpu.py decode --decoders pyav nvdec --out results/ # PyAV workers vs NVDEC, decoding alone
    python tools/bench_gpu.py offline --out results/      # MS-TCN time-to-accuracy: official vs fast
    python tools/bench_gpu.py stream-train --out results/ # TSM+MemoryTCN end-to-end training throughput
    python tools/bench_gpu.py train-e2e --out results/    # training-step ceiling + streamseg train from H.264

Parts:
* ``model``: TSM-MobileNetV2 + MemoryTCN (SVTAS's paper model, 11 classes) at 224x224, chunks of 32,
  1 and 16 concurrent streams, for each optimisation level of `streamseg.deploy.accel.StreamStep`:
  fp32 eager -> bf16 -> + channels_last + torch.compile -> + CUDA graph. Throughput = S*T*steps/time
  (no per-step synchronisation, median of repeats); latency = per-step time with synchronisation
  (p50/p99). ``--models tsm_memtcn transeger`` picks the models (model config names).
* ``e2e``: synthetic H.264 clips (smooth moving texture, x264 veryfast, 30 fps) at 320x240 and 1280x720
  decoded by N worker processes; decode alone, model alone and both, to say which bounds the pipeline;
  for each ``--pixel-formats``: ``rgb`` (swscale rgb24 in the workers) and ``i420`` (the decoder's planes
  shipped, colour conversion + resize + normalisation inside the compiled step on the GPU); with
  ``--decoders pyav nvdec`` the i420 rows also run from NVDEC (`bench_pipeline(decoder="nvdec")`), one row
  per ``--nvdec-reader``.
* ``decode``: decoding alone per size, PyAV against NVDEC (``--nvdec-reader simple threaded ffmpeg``:
  PyNvVideoCodec's two decoders, FFmpeg's through PyAV): one reader on one clip, then the 16-stream loader
  over the clip list (PyAV worker processes, or one NVDEC reader per video decoding ahead in a thread
  pool); ``--decode-model eager`` adds the uncompiled inference step (a lower bound of the end-to-end rate,
  without compile time).
* ``offline``: time-to-accuracy of MS-TCN (4 stages x 10 layers x 64 maps) on 50Salads-sized synthetic
  features (66 videos of 9,000-11,000 frames, 2048-d; 40 train / 10 val / 16 test): the official recipe
  (one video per step, fp32, eager, read per step, lr 5e-4, 50 epochs) and fast-path runs (features on the
  GPU, bf16-mixed, uncompiled by default; ``:train.compile=true`` in a ``--fast`` spec compiles from a cold
  cache) at the batch sizes / learning rates / epochs of ``--fast``, same seed, one invocation; each run
  evaluates the test split every ``--eval-every`` epochs, and its time-to-accuracy is the wall clock from
  its process launch to the first evaluation within ``--tolerance`` points of the official run's final
  accuracy (`part_offline`'s docstring), split into start-up (launch -> first training batch, by phase:
  `STARTUP_PHASES`) and training (first batch -> target).
* ``stream-train``: `streamseg train` of TSM+MemoryTCN on synthetic videos at 224x224 (bf16-mixed),
  throughput from `TrainThroughput` and peak memory; run under torchrun for the DDP scaling figures.
* ``train-e2e``: in one run, (a) the training-step ceiling: TSM+MemoryTCN (15 classes), 16 streams x 32 at
  224x224, bf16 autocast, Adam, state carried, TBPTT over ``--tbptt`` chunks, ``torch.compile``; input on the
  GPU (normalised float), or native uint8 I420 320x240 + augmentation draws (the device preprocessing
  compiled in front of the step), with and without activation checkpointing; (b) `streamseg train -D synth
  -M tsm_memtcn -E chunk32` end to end from camera-like 320x240 H.264 (``streamseg data synth --camera``),
  sample rate 1, 16 streams, the same settings, for each ``--preprocess`` (cpu = the workers resize and
  augment; device-i420 / device-rgb = on the GPU); throughput (median epoch after the first), peak memory
  and compiled graph counts from metrics.json. ``--decoder nvdec`` decodes the device-i420 run on the GPU
  (``data.decoder=nvdec``, reader ``--nvdec-reader``); ``--size 1280x720`` uses HD camera footage (and I420
  of that size for the preprocessing ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from streamseg.data.video import VideoFileSource  # noqa: E402
from streamseg.deploy.accel import IN_FORMATS, StreamStep, bench_pipeline, label_agreement  # noqa: E402
from streamseg.deploy.bench import environment  # noqa: E402
from streamseg.models import tsm_memtcn_mobilenet_v2  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VARIANTS = {  # name: (precision, channels_last, compile, cuda_graph)
    "fp32-eager": ("fp32", False, False, False),
    "bf16-eager": ("bf16", False, False, False),
    "bf16-cl-compile": ("bf16", True, True, False),
    "bf16-cl-compile-graph": ("bf16", True, True, True),
    # autocast (fp32 weights and state) and fp16: closer to fp32 labels for trained models (part "trained")
    "bf16mixed-eager": ("bf16-mixed", False, False, False),
    "bf16mixed-cl-compile-graph": ("bf16-mixed", True, True, True),
    "fp16-eager": ("fp16", False, False, False),
    "fp16-cl-compile-graph": ("fp16", True, True, True),
}
DEFAULT_VARIANTS = ["fp32-eager", "bf16-eager", "bf16-cl-compile", "bf16-cl-compile-graph"]


def _dump(out: Path, name: str, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    print(json.dumps(data, indent=1, default=str), flush=True)


def time_step(step: StreamStep, x: torch.Tensor, steps: int, repeats: int) -> dict:
    """Throughput (no per-step sync) and latency (per-step sync) of ``step`` on a fixed input."""
    for _ in range(5):
        step.step(x)
    torch.cuda.synchronize()
    fps = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step.step(x)
        torch.cuda.synchronize()
        fps.append(step.streams * step.chunk * steps / (time.perf_counter() - t0))
    lat = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step.step(x)
        torch.cuda.synchronize()
        lat.append((time.perf_counter() - t0) * 1000)
    return {"frames_per_s": statistics.median(fps), "frames_per_s_runs": fps,
            "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99))}


def _build(name: str, num_classes: int = 11):
    if name == "tsm_memtcn":
        return tsm_memtcn_mobilenet_v2(num_classes)
    from streamseg.config.loader import import_file

    cfg = import_file(REPO / "model_configs" / f"{name}.py", f"_bench_{name}")
    p = cfg.Params()
    kwargs = {}
    import inspect

    if "class_names" in inspect.signature(cfg.build_model).parameters:
        kwargs["class_names"] = [f"action {i}" for i in range(num_classes)]
    return cfg.build_model(p, 1280, num_classes, **kwargs)


def part_model(args) -> dict:
    res: dict = {"environment": environment("cuda"), "chunk": args.chunk, "frame_size": [224, 224], "rows": []}
    for model_name in args.models:
        torch.manual_seed(0)
        net = _build(model_name).eval()
        for streams in args.streams:
            x32 = torch.randn(streams, 3, args.chunk, 224, 224, device="cuda")
            for vname in args.variants:
                precision, cl, comp, graph = VARIANTS[vname]
                row = {"model": model_name, "streams": streams, "variant": vname}
                try:
                    t0 = time.perf_counter()
                    step = StreamStep(net, (3, 224, 224), streams=streams, chunk=args.chunk, device="cuda",
                                      precision=precision, channels_last=cl, compile=comp, cuda_graph=graph)
                    torch.cuda.reset_peak_memory_stats()
                    row.update(time_step(step, x32.to(step.input_dtype()), args.steps, args.repeats))
                    row["setup_s"] = time.perf_counter() - t0
                    row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    if vname != "fp32-eager":
                        # agreement with fp32 eager over a stream of 8 chunks of smooth random frames
                        g = torch.Generator(device="cuda").manual_seed(1)
                        base = torch.randn(streams, 3, 1, 28, 28, device="cuda", generator=g)
                        chunks = []
                        for k in range(8):
                            low = base + 0.3 * k * torch.randn(base.shape, device="cuda", generator=g)
                            frames = torch.nn.functional.interpolate(low[:, :, 0], size=(224, 224), mode="bilinear")
                            chunks.append(frames[:, :, None].expand(-1, -1, args.chunk, -1, -1).contiguous())
                        row["label_agreement_vs_fp32_eager"] = label_agreement(net, step, chunks)
                    del step
                except Exception as e:  # record and go on: one failing variant must not lose the others
                    row["error"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                res["rows"].append(row)
                print(row, flush=True)
                torch.cuda.empty_cache()
    return res


def _split_videos(root: Path, split: str, sample_rate: int, size: tuple[int, int], class_names: list[str]):
    """A split of the dataset (``all``: every video): per video, uint8 frames (n, 3, H, W) at ``size`` and sampled labels."""
    if split == "all":
        names = sorted(v.name for v in (root / "Videos").iterdir())
    else:
        names = (root / "splits" / f"{split}.split1.bundle").read_text().split()
    index = {c: i for i, c in enumerate(class_names)}
    out = []
    for name in names:
        stem = Path(name).stem
        video = next((root / "Videos").glob(f"{stem}.*"), None)
        if video is None:
            raise FileNotFoundError(f"{root / 'Videos'}: no video file for {stem!r} (listed in the {split} split)")
        with VideoFileSource(str(video), sample_rate, size) as source:
            parts = []
            while len(part := source.read(256)):
                parts.append(part)
        frames = torch.cat(parts)
        gt = (root / "groundTruth" / f"{stem}.txt").read_text().split()[::sample_rate]
        unknown = sorted(set(gt) - set(index))
        if unknown:
            raise ValueError(f"{root / 'groundTruth' / f'{stem}.txt'}: labels {unknown[:5]} are not among the "
                             f"run's {len(index)} classes")
        labels = torch.tensor([index[g] for g in gt[: len(frames)]])
        out.append((stem, frames, labels))
    return out


def part_trained(args) -> dict:
    """Label agreement with fp32 eager of each faster StreamStep variant, for TRAINED runs streaming their
    dataset's videos of ``--split`` (all videos at once, one per slot, chunk by chunk, padded and masked at the end);
    also each variant's frame accuracy against the ground truth."""
    from streamseg.deploy.runtime import load_trained_model

    res: dict = {"environment": environment(args.device), "rows": []}
    root = Path(args.data_root)
    for run in args.runs:
        net, meta = load_trained_model(run, [f"data.root={root}"])
        h, w = meta.sample_shape[1:]
        videos = _split_videos(root, args.split, meta.sample_rate, (h, w), meta.class_names)
        streams, chunk = len(videos), args.chunk
        length = -(-max(len(f) for _, f, _ in videos) // chunk) * chunk
        x = torch.zeros(streams, 3, length, h, w, dtype=torch.uint8)
        mask = torch.zeros(streams, length, dtype=torch.bool)
        gt = torch.full((streams, length), -1)
        for i, (_, frames, labels) in enumerate(videos):
            x[i, :, : len(frames)] = frames.permute(1, 0, 2, 3)
            mask[i, : len(frames)] = True
            gt[i, : len(labels)] = labels
        chunks = [x[:, :, k : k + chunk].to(args.device) for k in range(0, length, chunk)]
        masks = [mask[:, k : k + chunk].float().to(args.device) for k in range(0, length, chunk)]
        labels: dict = {}
        for vname in args.variants:
            precision, cl, comp, graph = VARIANTS[vname]
            step = StreamStep(net, (3, h, w), streams=streams, chunk=chunk, device=args.device, precision=precision,
                              channels_last=cl, compile=comp, cuda_graph=graph, in_size=(h, w), mean=meta.mean,
                              std=meta.std)
            labels[vname] = torch.cat([step.step(c, m).argmax(1).cpu() for c, m in zip(chunks, masks)], 1)
            del step
        ref = labels[args.variants[0]]
        valid = mask & (gt >= 0)
        for vname, lab in labels.items():
            equal = (lab == ref) & mask
            per_video = [float(equal[i][mask[i]].float().mean()) for i in range(streams)]
            row = {"run": str(run), "model": type(net).__name__, "variant": vname, "reference": args.variants[0],
                   "frames": int(mask.sum()), "videos": streams, "chunk": chunk, "frame_size": [h, w],
                   "label_agreement": float(equal.sum() / mask.sum()), "min_video_agreement": min(per_video),
                   "accuracy": float(((lab == gt) & valid).sum() / valid.sum())}
            res["rows"].append(row)
            print(row, flush=True)
    return res


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour texture (noise at 1/8 resolution, linearly upsampled) plus mild grain; numpy only,
    so clip-making processes never touch torch's thread pools."""
    low = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    ys, xs = np.linspace(0, low.shape[0] - 1, h), np.linspace(0, low.shape[1] - 1, w)
    rows = np.stack([np.stack([np.interp(xs, np.arange(low.shape[1]), low[i, :, c]) for c in range(3)], -1)
                     for i in range(low.shape[0])])  # (h_low, w, 3)
    big = np.empty((h, w, 3), np.float32)
    for c in range(3):
        for j in range(w):
            big[:, j, c] = np.interp(ys, np.arange(low.shape[0]), rows[:, j, c])
    big += rng.normal(0, 6, big.shape).astype(np.float32)
    return np.clip(big, 0, 255).astype(np.uint8)


def make_clip(path: str, h: int, w: int, frames: int, seed: int, crf: int = 23) -> str:
    import av

    rng = np.random.default_rng(seed)
    tex = _texture(2 * h, 2 * w, rng)
    with av.open(path, "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "veryfast", "crf": str(crf)}
        for i in range(frames):  # the camera pans across the texture: 2 px right, 1 px down per frame
            dy, dx = (i // 2) % h, (2 * i) % w
            img = np.ascontiguousarray(tex[dy:dy + h, dx:dx + w])
            out.mux(st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(st.encode())
    return path


def _clips(folder: Path, h: int, w: int, n: int, frames: int, crf: int = 23) -> list[str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    tag = "" if crf == 23 else f"_crf{crf}"  # the default keeps the names earlier runs cached
    paths = [str(folder / f"clip{h}{tag}_{i:03d}.mp4") for i in range(n)]
    todo = [p for p in paths if not Path(p).is_file()]
    # spawn: forked children of a process that has used torch's thread pools can deadlock
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(make_clip, todo, [h] * len(todo), [w] * len(todo), [frames] * len(todo),
                      [paths.index(p) for p in todo], [crf] * len(todo)))
    return paths


def part_e2e(args) -> dict:
    res: dict = {"environment": environment("cuda"), "rows": []}
    torch.manual_seed(0)
    net = tsm_memtcn_mobilenet_v2(11).eval()
    steps: dict = {}  # one compiled + captured step per (input size, pixel format)
    sizes = (((240, 320), args.clips, args.clip_frames), ((720, 1280), args.clips // 2, args.clip_frames // 3))
    wanted = ["320x240"] if args.only_320 else args.sizes
    for (h, w), n, frames in [z for z in sizes if f"{z[0][1]}x{z[0][0]}" in wanted]:
        t0 = time.perf_counter()
        videos = _clips(Path(args.work) / "clips", h, w, n, frames)
        res[f"clips_{w}x{h}"] = {"videos": n, "frames_each": frames, "generate_s": time.perf_counter() - t0}
        # rgb: workers convert with swscale (and resize to 224 with --resize-on cpu); i420: workers ship the
        # decoder's planes at the native size, colour conversion + resize run in the compiled step
        decoders = [d for d in args.decoders if d == "pyav"]  # NVDEC: one row per reader (--nvdec-reader)
        decoders += [f"nvdec-{r}" for r in args.nvdec_reader if "nvdec" in args.decoders]
        configs = [(fmt, where, dec) for fmt in args.pixel_formats
                   for where in (args.resize_on if fmt == "rgb" else ["device"])
                   for dec in (decoders if fmt == "i420" else ["pyav"])]
        for workers in args.workers:
            for fmt, where, dec in configs:
                if dec != "pyav" and workers != args.workers[0]:
                    continue  # NVDEC uses no worker processes: one row per size
                row = {"video": f"{w}x{h}", "workers": workers if dec == "pyav" else 0, "pixel_format": fmt,
                       "resize_on": where, "decoder": dec, "streams": args.e2e_streams}
                try:
                    in_size = (h, w) if where == "device" else (224, 224)
                    if (in_size, fmt) not in steps:
                        colour = {}
                        if fmt == "i420":  # the clips' colour matrix, from the first one's header
                            with VideoFileSource(videos[0], pixel_path="i420") as source:
                                colour = dict(zip(("colorspace", "full_range"), source.colour))
                        steps[in_size, fmt] = StreamStep(
                            net, (3, 224, 224), streams=args.e2e_streams, chunk=args.chunk, device="cuda",
                            precision="bf16", channels_last=True, compile=True, cuda_graph=True, in_size=in_size,
                            mean=MEAN, std=STD, in_format=fmt, **colour)
                    step = steps[in_size, fmt]
                    x = torch.zeros(step.input_shape(), dtype=torch.uint8, device="cuda")
                    row["model_only"] = time_step(step, x, 30, 3)  # also compiles and captures
                    size = None if where == "device" else (224, 224)
                    common = dict(workers=workers, decode_size=size, repeat=args.repeat, pixel_format=fmt,
                                  decoder=dec.split("-")[0], nvdec_reader=dec.split("-")[-1] if dec != "pyav" else
                                  "simple")
                    for transfer in (args.transfers if dec == "pyav" else ["pageable"]):  # decode alone (+ hand-over, + copy), then with the model
                        key = "" if transfer == args.transfers[0] else f"_{transfer}"
                        row[f"decode_only{key}"] = bench_pipeline(step, videos, run_model=False, transfer=transfer,
                                                                  **common)
                        if transfer != "none":
                            step.reset()
                            row[f"end_to_end{key}"] = bench_pipeline(step, videos, transfer=transfer, **common)
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                res["rows"].append(row)
                print(row, flush=True)
                _dump(Path(args.out), "e2e_partial", res)
    # where one decode process spends its time (320x240): decode, + rgb24 conversion, + resize; and
    # decode + packing the planes as I420 (what the i420 workers do)
    try:
        import av

        v = _clips(Path(args.work) / "clips", 240, 320, args.clips, args.clip_frames)[0]
        t0 = time.perf_counter()
        with av.open(v) as c:
            n = sum(1 for _ in c.decode(video=0))
        dec = time.perf_counter() - t0
        prof = {"frames": n, "decode_ms_per_frame": 1000 * dec / n}
        for label, size, pixel_path in (("rgb24_native", None, "rgb24"), ("rgb24_resize224", (224, 224), "rgb24"),
                                        ("i420_native", None, "i420")):
            t0 = time.perf_counter()
            with VideoFileSource(v, 1, size, pixel_path=pixel_path) as s:
                while len(s.read(64)):
                    pass
            prof[f"{label}_ms_per_frame"] = 1000 * (time.perf_counter() - t0) / n
        res["single_process_profile_320x240"] = prof
    except Exception as e:
        res["profile_error"] = repr(e)
    return res


def part_decode(args) -> dict:
    """Decoding alone, PyAV against NVDEC, per size: (a) one reader (one video, chunks of 32 in turn, this
    process, I420 planes; NVDEC without decode-ahead); (b) the stream loader with ``--e2e-streams`` slots
    over the clip list (``--repeat`` times), PyAV in ``--workers`` processes (frames to the GPU) or NVDEC
    readers decoding ahead in a pool of one thread per slot (frames written on the GPU); no model, then (with
    ``--decode-model eager``) the same with the TSM+MemoryTCN inference step (bf16, channels-last, NOT
    compiled: a lower bound of what the compiled step reaches, without its compile time)."""
    from streamseg.data.nvdec import NvdecSource

    res: dict = {"environment": environment("cuda"), "one_reader": {}, "loader": []}
    net = tsm_memtcn_mobilenet_v2(11).eval()
    for size in args.sizes:
        h, w = _wh(size)
        n, frames = (args.clips, args.clip_frames) if h < 720 else (args.clips // 2, args.clip_frames // 3)
        videos = _clips(Path(args.work) / "clips", h, w, n, frames)
        clip = videos[0]
        row = {}
        readers = [("pyav", lambda: VideoFileSource(clip, pixel_path="i420"))]
        readers += [(f"nvdec-{r}", lambda r=r: NvdecSource(clip, (h, w), 1, "cuda", reader=r))
                    for r in args.nvdec_reader if "nvdec" in args.decoders]
        for name, make in readers:
            try:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                n = 0
                with make() as src:
                    while len(x := src.read(32)):
                        n += len(x)
                torch.cuda.synchronize()
                row[name] = {"frames": n, "frames_per_s": n / (time.perf_counter() - t0)}
            except Exception as e:
                row[name] = {"error": f"{type(e).__name__}: {e}"}
                traceback.print_exc()
        res["one_reader"][size] = row
        print("one reader", size, row, flush=True)
        with VideoFileSource(clip, pixel_path="i420") as source:
            colour = dict(zip(("colorspace", "full_range"), source.colour))
        step = StreamStep(net, (3, 224, 224), streams=args.e2e_streams, chunk=args.chunk, device="cuda",
                          precision="bf16", channels_last=True, in_size=(h, w), mean=MEAN, std=STD, in_format="i420",
                          **colour)
        decoders = [(d, r) for d in args.decoders for r in (args.nvdec_reader if d == "nvdec" else ["simple"])]
        for (dec, reader), model in [(d, m) for m in ([False, True] if args.decode_model == "eager" else [False])
                                       for d in decoders]:
            try:
                step.reset()
                r = bench_pipeline(step, videos, run_model=model, workers=args.workers[0], repeat=args.repeat,
                                   pixel_format="i420", decoder=dec, nvdec_reader=reader)
            except Exception as e:
                r = {"decoder": dec, "model": model, "error": f"{type(e).__name__}: {e}"}
                traceback.print_exc()
            res["loader"].append({"video": size, "streams": args.e2e_streams, **r})
            print("loader", size, res["loader"][-1], flush=True)
            _dump(Path(args.out), "decode_partial", res)
    return res


def _src_path() -> dict:
    """PYTHONPATH for a child process: the streamseg of this checkout (as the imports above), not another
    installed copy."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}


def _streamseg(*argv: str, env: dict | None = None, log: Path | None = None) -> tuple[int, str]:
    """Run the CLI; its output goes to ``log`` as it comes (kept if the run is killed) or is captured."""
    cmd = [sys.executable, "-m", "streamseg.cli.main", *argv]
    env = {**_src_path(), **(env or {})}
    print("$", " ".join(cmd), flush=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        tail = log.read_text(errors="replace")[-3000:]
        print(tail, flush=True)
        return p.returncode, tail
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})})
    print(p.stdout[-3000:], p.stderr[-3000:], flush=True)
    return p.returncode, p.stderr[-3000:]


def _metrics(root: Path, exp: str) -> dict:
    runs = sorted((root / "synth").glob(f"{exp}/version_*/metrics.json"))
    return json.loads(runs[-1].read_text()) if runs else {}


def _offline_history(root: Path) -> list[dict]:
    """Per evaluated epoch of the run under ``root``: wall clock at its end (``end_time``, from the
    TrainThroughput state in last.ckpt) and the test scores of that epoch's weights (metrics.csv: the run
    validates on the test split, train.select_on=test)."""
    import csv

    runs = sorted((root / "synth").glob("mstcn_quick/version_*"))
    if not runs:
        return []
    state = torch.load(runs[-1] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ends = {e["epoch"]: e["end_time"] for e in state["callbacks"]["TrainThroughput"]["history"]}
    rows = []
    with open(runs[-1] / "logs" / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/acc"):
                epoch = int(float(row["epoch"]))
                rows.append({"epoch": epoch, "end_time": ends.get(epoch),
                             **{k: float(row[f"val/{k}"]) for k in ("acc", "edit", "f1@10", "f1@25", "f1@50")}})
    return rows


def _time_to(history: list[dict], start: float, target: float) -> dict:
    """The first evaluation at or above ``target`` test accuracy: its epoch and seconds since ``start``."""
    hit = next((h for h in history if h["acc"] >= target and h["end_time"] is not None), None)
    return {"target_acc": target, "reached": hit is not None,
            "epoch": None if hit is None else hit["epoch"] + 1,
            "seconds": None if hit is None else hit["end_time"] - start,
            "stays_at_or_above_target_at_the_end": bool(history) and history[-1]["acc"] >= target}


STARTUP_PHASES = [  # (name, from, to): metrics.json startup_clock marks; "launch" = the bench starting the process
    ("imports_and_config", "launch", "train_and_test"),  # interpreter, torch, Lightning (torchmetrics), configs
    ("data_check", "train_and_test", "data_checked"),  # every label and feature file read (`streamseg.data.check`)
    ("model_build", "data_checked", "built"),
    ("run_dir_and_trainer", "built", "fit"),  # run directory, snapshot, Trainer (device initialised)
    ("fit_to_first_batch", "fit", "first_batch"),  # Lightning set-up, preloading the splits, the first batch
]


def _breakdown(metrics: dict, start: float, hit: dict) -> dict:
    """Where a run's time-to-accuracy went: seconds of each start-up phase (`STARTUP_PHASES`), launch to
    the first training batch, and first batch to the end of the evaluation that reached the target."""
    clock = {"launch": start, **(metrics.get("startup_clock") or {})}
    if any(clock.get(k) is None for _, a, b in STARTUP_PHASES for k in (a, b)):
        return {}
    out = {name: round(clock[b] - clock[a], 2) for name, a, b in STARTUP_PHASES}
    out["launch_to_first_batch"] = round(clock["first_batch"] - start, 2)
    if hit.get("seconds") is not None:
        out["first_batch_to_target"] = round(hit["seconds"] - out["launch_to_first_batch"], 2)
        out["startup_share"] = round(out["launch_to_first_batch"] / hit["seconds"], 3)
    return out


def part_offline(args) -> dict:
    """Time-to-accuracy of MS-TCN on features: the official recipe and the fast path, one invocation.

    Every run validates on the TEST split every ``--eval-every`` epochs (train.select_on=test: the
    evaluation is the measurement, never model selection; the final scores reported are the last epoch's,
    not a best-on-test pick). Time-to-accuracy = wall clock from launching the ``streamseg train`` process
    (imports, data loading, compile included) to the end of the first evaluation whose test accuracy is
    within ``--tolerance`` points of the official recipe's final accuracy (after ``--official-epochs``),
    evaluations included. The same rule times the official run itself. Each run's ``breakdown_s`` splits
    it at the first training batch (metrics.json ``startup_clock``): start-up phases, then training to
    the target. Fast runs that compile start with an empty compile cache (cold: every kernel compiled);
    ``--warm`` repeats the first fast run on the cache the cold one filled."""
    from streamseg.data.synth import SynthSpec, ensure

    videos, dim, lo, hi = (int(v) for v in args.offline_data.split(":"))
    stages, layers, maps = (int(v) for v in args.offline_model.split(":"))
    if args.official_epochs % args.eval_every:
        raise SystemExit(f"--official-epochs {args.official_epochs} must be a multiple of --eval-every "
                         f"{args.eval_every} (the official target is its final evaluation)")
    data = Path(args.work) / f"synth_{videos}x{dim}_{lo}-{hi}"
    t0 = time.perf_counter()
    ensure(data, SynthSpec(num_videos=videos, feature_dim=dim, min_frames=lo, max_frames=hi, with_videos=False))
    accel = "gpu" if args.device == "cuda" else "cpu"
    res: dict = {"environment": environment(args.device), "data": {"root": str(data), "videos": videos,
                 "feature_dim": dim, "frames": [lo, hi], "prepare_s": time.perf_counter() - t0},
                 "model": [stages, layers, maps], "eval_every": args.eval_every, "tolerance": args.tolerance}
    common = ["-D", "synth", "-M", "mstcn", "-E", "quick", "--accelerator", accel, "--devices", "1",
              "-o", f"data.root={data}", "-o", f"data.num_videos={videos}", "-o", f"data.feature_dim={dim}",
              "-o", f"data.min_frames={lo}", "-o", f"data.max_frames={hi}", "-o", "data.with_videos=false",
              "-o", f"model.num_stages={stages}", "-o", f"model.num_layers={layers}", "-o", f"model.num_maps={maps}",
              "-o", "train.select_on=test", "-o", f"train.val_every={args.eval_every}"]
    official = ["-o", "train.batch_size=1", "-o", "train.lr=5e-4", "-o", f"train.epochs={args.official_epochs}"]
    fast = [a for o in args.fast_overrides for a in ("-o", o)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = [("official", official, None)]
    for spec in args.fast:  # BATCH:LR:EPOCHS[:KEY=VALUE...]
        b, lr, ep, *more = spec.split(":")
        name = "_".join([f"fast_b{b}_lr{lr}_e{ep}", *(m.split(".")[-1].replace("=", "") for m in more)])
        cache = Path(args.work) / f"compile_cache_{stamp}_{name}"  # empty: a cold compile
        extra = fast + ["-o", f"train.batch_size={b}", "-o", f"train.lr={lr}", "-o", f"train.epochs={ep}",
                        "-o", f"train.compile_cache={cache}"] + [a for m in more for a in ("-o", m)]
        runs.append((name, extra, cache))
        if args.warm and len(runs) == 2:
            runs.append((f"{name}_warm_cache", extra, cache))
    # untimed: the libraries every run imports are read from disk once, so the first run timed (the
    # official one) does not pay for a cold file cache that the later ones find warm
    subprocess.run([sys.executable, "-c", "import streamseg.engine.runner, streamseg.cli.main"], check=True,
                   env={**os.environ, **_src_path()})
    for name, extra, _ in runs:
        root = Path(args.work) / f"runs_{stamp}_{name}"
        start = time.time()  # the process's launch: imports, data loading and compile count
        rc, err = _streamseg("train", *common, "-R", str(root), *extra)
        wall = time.time() - start
        m = _metrics(root, "mstcn_quick")
        hist = _offline_history(root)
        row = {"rc": rc, "wall_s": wall, "overrides": extra, "evaluations": len(hist),
               "final": hist[-1] if hist else None, "train_throughput": m.get("train_throughput")}
        if rc:
            row["stderr"] = err
        if name == "official":
            if not hist:
                res[name] = row
                return res
            row["final_acc_target"] = hist[-1]["acc"] - args.tolerance
        target = (row if name == "official" else res["official"])["final_acc_target"]
        row["time_to_accuracy"] = _time_to(hist, start, target)
        row["breakdown_s"] = _breakdown(m, start, row["time_to_accuracy"])
        row["history"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in h.items()
                           if k not in ("end_time", "start_time")}
                          | {"s": round(h["end_time"] - start, 2) if h["end_time"] else None}
                          for h in hist]
        if name != "official":
            mine, theirs = row["time_to_accuracy"]["seconds"], res["official"]["time_to_accuracy"]["seconds"]
            row["speedup_time_to_accuracy"] = theirs / mine if mine and theirs else None
            row["speedup_vs_official_full_run"] = res["official"]["wall_s"] / mine if mine else None
            # training alone (first batch -> target): what the speed-up would be with no start-up
            mine, theirs = (r["breakdown_s"].get("first_batch_to_target") for r in (row, res["official"]))
            row["speedup_after_first_batch"] = theirs / mine if mine and theirs else None
        res[name] = row
        print(name, {k: v for k, v in row.items() if k != "history"}, flush=True)
        _dump(Path(args.out), "offline_partial", res)
    _print_offline_table(res)
    return res


def _print_offline_table(res: dict) -> None:
    """One line per run: time-to-accuracy split into start-up (launch -> first training batch) and training
    (first batch -> the evaluation that reached the target), the speed-up over the official run, and the
    speed-up of the training part alone."""
    print(f"{'run':44s} {'epoch':>5s} {'tta s':>7s} {'startup':>7s} {'train':>7s} {'speed-up':>8s} "
          f"{'training':>8s}  start-up phases (s)")
    for name, row in res.items():
        if not isinstance(row, dict) or "time_to_accuracy" not in row:
            continue
        hit, b = row["time_to_accuracy"], row.get("breakdown_s", {})
        phases = " ".join(f"{k}={b[k]}" for k, _, _ in STARTUP_PHASES if k in b)
        speed, train = (row.get(k) for k in ("speedup_time_to_accuracy", "speedup_after_first_batch"))
        print(f"{name:44s} {hit['epoch'] or '-':>5} {hit['seconds'] or float('nan'):7.1f} "
              f"{b.get('launch_to_first_batch', float('nan')):7.1f} {b.get('first_batch_to_target', float('nan')):7.1f} "
              f"{'' if speed is None else f'{speed:.2f}x':>8s} {'' if train is None else f'{train:.2f}x':>8s}  "
              f"{phases}", flush=True)


def part_stream_train(args) -> dict:
    data = Path(args.work) / "synthvid"
    extra = ["-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "--accelerator", "gpu", "--devices", str(args.devices),
             "-o", f"data.root={data}", "-o", f"data.num_videos={args.num_videos}",
             "-o", "data.frame_size=224,224", "-o", "model.frame_size=224,224",
             "-o", f"train.epochs={args.epochs}", "-o", f"train.batch_size={args.batch}",
             "-o", "train.precision=bf16-mixed", "-o", f"train.num_workers={args.loader_workers}",
             "-o", "train.val_every=1000"]
    root = Path(args.work) / f"runs_stream_{args.devices}gpu_{args.launcher}"
    t0 = time.perf_counter()
    if args.launcher == "plain":  # one process; Lightning starts the other ranks itself
        rc, err = _streamseg("train", *extra, "-R", str(root))
    elif args.launcher == "torchrun":  # the documented single-node launcher
        rc, err = _run([str(REPO / "tools" / "run_singlenode.sh"), "train", str(args.devices), *extra, "-R", str(root)])
    else:  # "multinode": tools/run_multinode.sh as `devices` nodes of one GPU each on this host
        procs = []
        for node in range(args.devices):
            cmd = [str(REPO / "tools" / "run_multinode.sh"), "train", "1", str(args.devices), str(node), "127.0.0.1",
                   "29531", *extra, "-R", str(root)]
            cmd[cmd.index("--devices") + 1] = "1"  # GPUs per node
            print("$", " ".join(cmd), flush=True)
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**os.environ, "CUDA_VISIBLE_DEVICES": str(node)}))
        outs = [p.communicate()[0] for p in procs]
        rc = max(p.returncode for p in procs)
        err = "\n".join(o[-1500:] for o in outs)
        print(err, flush=True)
    m = _metrics(root, "tsm_memtcn_chunk32")
    return {"environment": environment("cuda"), "devices": args.devices, "launcher": args.launcher, "rc": rc,
            "wall_s": time.perf_counter() - t0, "args": extra, "stderr": err if rc else "",
            **{k: m.get(k) for k in ("acc", "edit", "f1@50", "train_throughput", "world_size")}}


def _wh(size: str) -> tuple[int, int]:
    """``"320x240"`` -> (H, W) = (240, 320)."""
    w, h = (int(v) for v in size.split("x"))
    return h, w


def _step_ceiling(args, preprocess: str, checkpointing: bool) -> dict:
    """Frames/s and peak memory of the compiled training step alone (see the module docstring)."""
    from streamseg.data.augment import augment_to_model
    from streamseg.engine.throughput import compiled_graphs
    from streamseg.models import SegmentationLoss, set_activation_checkpointing

    torch.manual_seed(0)
    b, t, k, dev = args.batch, args.chunk, 15, torch.device("cuda")
    net = tsm_memtcn_mobilenet_v2(k).to(dev).train()
    set_activation_checkpointing(net, checkpointing)
    net.compile()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss(k, reduction="sum")
    labels = torch.randint(0, k, (b, t), device=dev)
    mask = torch.ones(b, t, device=dev)
    if preprocess == "none":
        inputs = [torch.randn(b, 3, t, 224, 224, device=dev) for _ in range(2)]
        prep = None
    else:  # uint8 I420 at --size and per-stream augmentation draws, preprocessed on the device, compiled
        h0, w0 = _wh(args.size)
        inputs = [torch.randint(0, 256, (b, 1, t, h0 * 3 // 2, w0), dtype=torch.uint8, device=dev) for _ in range(2)]
        aug = torch.tensor([[0.9, 0.3, 0.6, 1.0, 1.1, 1.0]], dtype=torch.float64, device=dev).expand(b, -1)
        prep = torch.compile(lambda x: augment_to_model(x, aug, (224, 224), MEAN, STD, "i420"), dynamic=False)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    graphs0 = compiled_graphs()
    state = net.init_state(b, dev)
    window: list = []

    def step(i: int) -> None:
        nonlocal state
        x = inputs[i % 2] if prep is None else prep(inputs[i % 2])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, state = net(x, state, mask[:, None])
            loss, _ = loss_fn(logits, labels, mask)
        window.append(loss)
        if len(window) == args.tbptt:  # truncated back-propagation over train.tbptt_chunks chunks
            opt.zero_grad(set_to_none=True)
            (sum(window) / (args.tbptt * b * t)).backward()
            opt.step()
            state = tuple(s.detach() for s in state)
            window.clear()

    t0 = time.perf_counter()
    for i in range(6):  # compiles
        step(i)
    torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        torch.cuda.synchronize()
        runs.append(b * t * args.steps / (time.perf_counter() - t0))
    return {"input": preprocess, "activation_checkpointing": checkpointing, "frames_per_s": statistics.median(runs),
            "frames_per_s_runs": runs, "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
            "compile_s": setup, "graphs": compiled_graphs() - graphs0}


def _loader_only(args, data: Path) -> dict:
    """The training loader alone (decode workers -> device, no model): frames/s per data.preprocess."""
    from streamseg.engine import VideoStreamDataModule

    out = {}
    for prep in args.preprocess:
        dec = args.decoder if prep == "device-i420" else "pyav"
        dm = VideoStreamDataModule(str(data), 1, chunk_size=args.chunk, frame_size=(224, 224), batch_size=args.batch,
                                   num_workers=args.loader_workers, bg_classes=("background",), preprocess=prep,
                                   decoder=dec, decoder_fallback=False, nvdec_reader=args.nvdec_reader[0])
        dm.setup()
        loader = dm._loader("train", train=True)
        loader.device = torch.device("cuda")  # as under a GPU trainer
        frames = torch.zeros((), device="cuda")
        t0 = time.perf_counter()
        for batch in loader:
            frames += batch["mask"].sum()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        out[prep] = {"frames": int(frames), "wall_s": wall, "frames_per_s": float(frames) / wall,
                     "workers": args.loader_workers if dec == "pyav" else 0, "decoder": dec}
    return out


def part_train_e2e(args) -> dict:
    res: dict = {"environment": environment("cuda"), "ceiling": [], "e2e": {}}
    h0, w0 = _wh(args.size)
    data = Path(args.work) / ("cam320" if args.size == "320x240" else f"cam{args.size}")
    res["size"], res["decoder"] = args.size, args.decoder
    if not args.skip_train or args.loader_only:  # the step ceilings alone read no videos
        t0 = time.perf_counter()
        synth = ["--root", str(data), "--num-videos", str(args.num_videos), "--size", args.size, "--camera",
                 "--jobs", str(os.cpu_count())]
        rc, _ = _streamseg("data", "synth", *synth)
        res["synth"] = {"args": synth, "rc": rc, "seconds": time.perf_counter() - t0}
    for prep in [] if args.skip_train else args.preprocess:
        extra = ["-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "--accelerator", "gpu", "--devices", "1",
                 "-o", f"data.root={data}", "-o", f"data.num_videos={args.num_videos}", "-o", f"data.height={h0}",
                 "-o", f"data.width={w0}", "-o", "data.camera=true", "-o", "data.frame_size=224,224",
                 "-o", "model.frame_size=224,224", "-o", "data.sample_rate=1", "-o", f"data.preprocess={prep}",
                 "-o", f"train.epochs={args.epochs}", "-o", f"train.batch_size={args.batch}",
                 "-o", "train.precision=bf16-mixed", "-o", "train.compile=true", "-o", f"train.tbptt_chunks={args.tbptt}",
                 "-o", f"train.num_workers={args.loader_workers}", "-o", "train.val_every=1000"]
        if prep == "device-i420" and args.decoder == "nvdec":
            extra += ["-o", "data.decoder=nvdec", "-o", "data.decoder_fallback=false",
                      "-o", f"data.nvdec_reader={args.nvdec_reader[0]}"]
            prep = "device-i420-nvdec"
        root = Path(args.work) / f"runs_train_e2e_{prep}"
        t0 = time.perf_counter()
        rc, err = _streamseg("train", *extra, "-R", str(root), log=Path(args.out) / f"train_{prep}.log")
        m = _metrics(root, "tsm_memtcn_chunk32")
        res["e2e"][prep] = {"rc": rc, "wall_s": time.perf_counter() - t0, "args": extra, "stderr": err if rc else "",
                            **{k: m.get(k) for k in ("acc", "train_throughput")}}
        print(prep, res["e2e"][prep], flush=True)
        _dump(Path(args.out), "train_e2e_partial", res)
    if args.loader_only:
        res["loader_only"] = _loader_only(args, data)
        print("loader only", res["loader_only"], flush=True)
        _dump(Path(args.out), "train_e2e_partial", res)
    ceilings = {"gpu-input": ("none", False), "i420-input": (f"i420-{args.size}", False), "gpu-input-ckpt": ("none", True)}
    for prep, ckpt in (ceilings[c] for c in args.ceilings):
        try:
            row = _step_ceiling(args, prep, ckpt)
        except Exception as e:
            row = {"input": prep, "activation_checkpointing": ckpt, "error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        res["ceiling"].append(row)
        print(row, flush=True)
        torch.cuda.empty_cache()
        _dump(Path(args.out), "train_e2e_partial", res)
    return res


def _run(cmd: list[str]) -> tuple[int, str]:
    print("$", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable})
    print(p.stdout[-3000:], p.stderr[-3000:], flush=True)
    return p.returncode, p.stderr[-3000:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["model", "trained", "e2e", "decode", "offline", "stream-train", "train-e2e"])
    ap.add_argument("--out", default="results")
    ap.add_argument("--work", default="/tmp/streamseg_bench")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--streams", type=int, nargs="+", default=[16, 1])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                    help="StreamStep variants (the first is the agreement reference of part 'trained')")
    ap.add_argument("--models", nargs="+", default=["tsm_memtcn"],
                    help="model part: tsm_memtcn and/or model config names (e.g. transeger)")
    ap.add_argument("--runs", nargs="+", default=[], help="trained: run folders or checkpoints")
    ap.add_argument("--device", default="cuda", help="trained, offline: the device (cpu to try it without a GPU)")
    ap.add_argument("--data-root", default="data/synth", help="trained: the runs' dataset")
    ap.add_argument("--split", default="test", help="trained: test, val, train or all (every video: agreement is "
                    "about numerics, so more frames give a tighter figure)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--clip-frames", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[16])
    ap.add_argument("--e2e-streams", type=int, default=16)
    ap.add_argument("--sizes", nargs="+", default=["320x240", "1280x720"], choices=["320x240", "1280x720"],
                    help="e2e: input sizes (the 1280x720 clips are half as many and a third as long)")
    ap.add_argument("--only-320", action="store_true", help="e2e: same as --sizes 320x240")
    ap.add_argument("--repeat", type=int, default=4, help="e2e: play the clip list this many times")
    ap.add_argument("--resize-on", nargs="+", default=["device", "cpu"], choices=["device", "cpu"],
                    help="e2e, rgb frames: resize on the GPU (native frames shipped) and/or in the workers")
    ap.add_argument("--pixel-formats", nargs="+", default=list(IN_FORMATS), choices=list(IN_FORMATS),
                    help="e2e: what the decode workers ship: rgb (swscale rgb24) and/or i420 (the decoder's "
                         "planes, converted + resized on the GPU)")
    ap.add_argument("--transfers", nargs="+", default=["pageable"], choices=["pinned", "pageable", "none"],
                    help="e2e: how batches reach the GPU (bench_pipeline's transfer); 'none' = decode + hand-over "
                         "to the main process only (no model, no copy)")
    ap.add_argument("--epochs", type=int, default=20, help="stream-train epochs")
    ap.add_argument("--official-epochs", type=int, default=50, help="offline: epochs of the official recipe")
    ap.add_argument("--fast", nargs="*", default=["8:1e-3:40"], metavar="BATCH:LR:EPOCHS[:KEY=VALUE...]",
                    help="offline: fast-path runs to time, each with optional extra -o overrides after the epochs "
                         "(e.g. 8:1e-3:40:train.compile=true, 8:1e-3:40:train.length_bucket=0); "
                         "time-to-accuracy stops at the first evaluation that reaches the target, later epochs "
                         "only show whether the accuracy holds")
    # uncompiled: on the H100, compiling MS-TCN bought nothing per epoch (0.176 vs 0.183 s) and cost ~29 s
    ap.add_argument("--fast-overrides", nargs="*", default=["data.preload=device", "train.precision=bf16-mixed",
                    "train.compile=false", "train.length_bucket=2048"], help="offline: the fast path's -o overrides")
    ap.add_argument("--offline-data", default="66:2048:9000:11000", metavar="VIDEOS:DIM:MIN:MAX",
                    help="offline: synthetic features (50Salads-shaped by default: 40 train / 10 val / 16 test)")
    ap.add_argument("--offline-model", default="4:10:64", metavar="STAGES:LAYERS:MAPS", help="offline: MS-TCN size")
    ap.add_argument("--eval-every", type=int, default=1, help="offline: epochs between test evaluations")
    ap.add_argument("--tolerance", type=float, default=1.0, help="offline: accuracy points below the official")
    ap.add_argument("--warm", action=argparse.BooleanOptionalAction, default=False,
                    help="offline: also rerun the first fast recipe on the compile cache its cold run filled "
                         "(for a recipe with train.compile=true)")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--launcher", choices=["plain", "torchrun", "multinode"], default="plain",
                    help="stream-train: one process (Lightning spawns ranks), tools/run_singlenode.sh (torchrun), "
                         "or tools/run_multinode.sh with --devices nodes of one GPU on this host")
    ap.add_argument("--num-videos", type=int, default=120)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--loader-workers", type=int, default=6)
    ap.add_argument("--ceilings", nargs="*", default=["gpu-input", "i420-input", "gpu-input-ckpt"],
                    choices=["gpu-input", "i420-input", "gpu-input-ckpt"], help="train-e2e: step ceilings to measure")
    ap.add_argument("--skip-train", action="store_true", help="train-e2e: no streamseg train runs")
    ap.add_argument("--loader-only", action="store_true", help="train-e2e: also time the training loader alone")
    ap.add_argument("--tbptt", type=int, default=2, help="train-e2e: chunks per truncation window (train.tbptt_chunks)")
    ap.add_argument("--decoders", nargs="+", default=["pyav"], choices=["pyav", "nvdec"],
                    help="e2e: decoders for the i420 rows (nvdec: PyNvVideoCodec, streamseg[gpu-decode])")
    ap.add_argument("--decode-model", default="none", choices=["none", "eager"],
                    help="decode: also run each loader with the (uncompiled) inference step")
    ap.add_argument("--nvdec-reader", nargs="+", default=["simple"], choices=["simple", "threaded", "ffmpeg"],
                    help="decode, e2e: NVDEC readers to time (PyNvVideoCodec's simple / threaded, FFmpeg's); "
                         "train-e2e: data.nvdec_reader (the first)")
    ap.add_argument("--decoder", default="pyav", choices=["pyav", "nvdec"],
                    help="train-e2e: data.decoder of the device-i420 run and the loader-only timing")
    ap.add_argument("--size", default="320x240", choices=["320x240", "1280x720"],
                    help="train-e2e: the camera footage's size (streamseg data synth --camera --size)")
    ap.add_argument("--preprocess", nargs="+", default=["device-i420", "cpu"],
                    choices=["cpu", "device-rgb", "device-i420"], help="train-e2e: data.preprocess values to run")
    args = ap.parse_args()
    if args.part == "train-e2e" and (not args.skip_train or args.loader_only) and args.num_videos < 3:
        ap.error(f"--num-videos {args.num_videos}: train-e2e writes a dataset of train, val and test videos, "
                 "so at least 3 (or --skip-train without --loader-only: the step ceilings alone, no videos)")
    fn = {"model": part_model, "trained": part_trained, "e2e": part_e2e, "offline": part_offline,
          "stream-train": part_stream_train, "train-e2e": part_train_e2e, "decode": part_decode}[args.part]
    name = args.part if args.part != "stream-train" else f"stream-train-{args.devices}gpu-{args.launcher}"
    _dump(Path(args.out), name, fn(args))


if __name__ == "__main__":
    main()
