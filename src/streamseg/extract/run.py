"""`extract_features`: videos -> ``<out>/<video>.npy`` ``float32 (D, T)``, T = the video's frame count.

* Inputs (`list_videos`): a dataset root (its ``Videos/``), a folder of videos, a text file listing video
  paths (one a line, relative to the file; ``#`` comments), or video files. A video's name is its file
  stem, which must be a plain file name (no folders, not starting with ``.``, no control characters):
  nothing is ever written outside ``out``. Two videos with one name are an error.
* Sample rate ``s``: the encoder sees frames ``0, s, 2s, ...``; each feature is repeated over the ``s``
  original frames it stands for, so the file still has T columns and ``features[:, ::s]`` (what a dataset
  config with ``sample_rate = s`` reads) are exactly the computed ones.
* Sharding: under torchrun or SLURM (`streamseg.engine.dist`) every rank takes a disjoint share of the
  videos (balanced by file size; every rank computes the same plan from the same listing) on GPU
  ``local_rank % device_count``, so several ranks may share a GPU (more decoding processes per GPU). One gloo
  process group is set up only to agree on the manifest and gather the report.
* Resumable: a video whose ``.npy`` exists is skipped; each file is written to a temporary name in ``out``
  then renamed (atomic), so a killed run leaves finished files or none. ``out/extract.json`` records what
  made the features (`manifest_spec`); a run asking for different settings is refused, as is an ``out`` that
  already holds ``.npy`` files without a manifest.
* Errors: settings and weights are checked before any video is read; a video that cannot be decoded (or has
  no frames) is reported with its name and the others still finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.layout import check_video_name
from ..data.video import VideoFileSource
from .encoders import IMAGE_MODELS, EncoderSpec, build_encoder, flow_encoder
from .flow import FlowSpec, RaftFlow
from .frames import PrefetchReader, device_reader, i420_to_rgb, segments

__all__ = ["ExtractReport", "extract_features", "list_videos", "manifest_spec", "shard", "MANIFEST"]

MANIFEST = "extract.json"
MANIFEST_FORMAT = 1
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class ExtractReport:
    """What one call did (on rank 0 under DDP: all ranks together; elsewhere the rank's own share).
    failed: ``{name: error message}``. timing: with decode workers, where this process's time went
    (`streamseg.extract.pipeline.run_pipeline`; rank 0's under DDP); empty without."""

    out: Path
    rank: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)


def list_videos(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every video in ``inputs`` (module docstring), sorted by name."""
    found: list[tuple[str, Path, str]] = []  # name, path, where it was listed
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            folder = item / "Videos" if (item / "Videos").is_dir() else item
            videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not videos:
                raise ValueError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
            found += [(p.stem, p, str(folder)) for p in videos]
        elif item.suffix.lower() in (".txt", ".list", ".lst"):
            if not item.is_file():
                raise ValueError(f"{item}: no such list file")
            for number, line in enumerate(item.read_text().splitlines(), 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                path = Path(text) if Path(text).is_absolute() else item.parent / text
                found.append((path.stem, path, f"{item}:{number}"))
        elif item.is_file():
            found.append((item.stem, item, str(item)))
        else:
            raise ValueError(f"{item}: not a dataset root, a folder of videos, a list (.txt) or a video file")
    seen: dict[str, str] = {}
    for name, _, where in found:
        check_video_name(name, where)
        if name in seen:
            raise ValueError(f"{where}: video name {name!r} again (first from {seen[name]}); names must be unique")
        seen[name] = where
    return sorted((name, path) for name, path, _ in found)


def shard(videos: Sequence[tuple[str, Path]], rank: int, world_size: int) -> list[tuple[str, Path]]:
    """Rank ``rank``'s videos: the largest file first to the rank with the fewest bytes so far (ties: lowest
    rank). Disjoint, covers every video, and the same on every rank for the same listing."""
    sizes = [(p.stat().st_size if p.is_file() else 0, name, p) for name, p in videos]
    load = [0] * world_size
    mine = []
    for size, name, path in sorted(sizes, key=lambda s: (-s[0], s[1])):
        r = min(range(world_size), key=lambda i: (load[i], i))
        load[r] += size
        if r == rank:
            mine.append((name, path))
    return sorted(mine)


def _sha256(path: str | Path) -> str:
    """Of a file's bytes; of a folder (a DeepSpeed checkpoint): of each file's relative name and bytes, in order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _weights_id(weights: str | None, seed: int) -> dict[str, Any]:
    if weights is None:
        return {"weights": None, "seed": seed}  # random initialisation: the seed decides the weights
    path = Path(weights)
    if path.is_dir():  # a run directory (its best, else last, checkpoint) or a DeepSpeed folder
        from ..engine.checkpoint_io import find_checkpoint  # only here: the engine imports Lightning
        from ..engine.zero_checkpoint import is_folder

        try:
            path = path if is_folder(path) else find_checkpoint(path)
        except FileNotFoundError:
            raise ValueError(f"{weights}: no such weights file") from None
    elif not path.is_file():
        raise ValueError(f"{weights}: no such weights file")
    return {"weights": path.name, "weights_sha256": _sha256(path)}


def manifest_spec(spec: EncoderSpec, flow: FlowSpec | None, sample_rate: int, dim: int, seed: int,
                  decode: str = "rgb24") -> dict[str, Any]:
    """What decides the features, as the manifest records it; two runs with different specs do not mix."""
    out: dict[str, Any] = {"encoder": spec.encoder, **_weights_id(spec.weights, seed), "sample_rate": sample_rate,
                           "size": list(spec.size) if spec.size else None, "dim": dim}
    if decode != "rgb24":  # the colour conversion and resize differ slightly, so the features do
        out["decode"] = decode
    if spec.encoder not in (*IMAGE_MODELS, "run"):
        out["mode"] = spec.mode
        out.update({"window": spec.window} if spec.mode == "window" else {"chunk": spec.chunk,
                                                                           "overlap": spec.overlap})
    if flow is not None:
        out["flow"] = {"model": flow.model, "updates": flow.updates,
                       **{f"raft_{k}": v for k, v in _weights_id(flow.weights, seed).items()},
                       **{f"encoder_{k}": v for k, v in _weights_id(flow.encoder_weights, seed).items()}}
    return out


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


def _write_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def _prepare_out(out: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Check (or start) the manifest of ``out``; returns it. Temporary files a killed run left are removed
    (this runs on rank 0 before any rank writes)."""
    manifest = out / MANIFEST
    for stale in out.glob(".*.npy.*.tmp") if out.is_dir() else ():
        stale.unlink(missing_ok=True)
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data.get("spec") != spec:
            old = data.get("spec") or {}
            diff = [f"{k}: {old.get(k)!r} there, {spec.get(k)!r} now" for k in sorted(set(old) | set(spec))
                    if old.get(k) != spec.get(k)]
            raise ValueError(f"{manifest}: the features in {out} were made differently ({'; '.join(diff)}); "
                             "use another output folder, or delete this one to start again")
        return data
    if out.is_dir() and any(out.glob("*.npy")):
        raise ValueError(f"{out}: holds .npy files but no {MANIFEST}, so how they were made is unknown; "
                         "extract into another folder, e.g. <root>/features_<encoder>, and train with "
                         "-o data.features_dir=features_<encoder>")
    out.mkdir(parents=True, exist_ok=True)
    data = {"format": MANIFEST_FORMAT, "spec": spec, "videos": {}}
    _write_json(manifest, data)
    return data


class _Extractor:
    """The encoders (and flow) on a device; ``__call__(path) -> (float32 (D, T) array, fps)``."""

    def __init__(self, spec: EncoderSpec, flow: FlowSpec | None, sample_rate: int | None, device: torch.device,
                 dtype: torch.dtype, decode: str = "rgb24") -> None:
        self.rgb = build_encoder(spec).to(device)
        self.encoders = [self.rgb]
        self.flow = None
        if flow is not None:
            self.flow = RaftFlow(flow, self.rgb.size).to(device)
            self.encoders.append(flow_encoder(self.rgb, flow.encoder_weights).to(device))
        self.dim = sum(e.dim for e in self.encoders)
        # a trained run's encoder defaults to the run's sample rate, the others to every frame
        self.sample_rate = sample_rate if sample_rate is not None else getattr(self.rgb, "sample_rate", 1)
        self.device, self.dtype, self.decode = device, dtype, decode

    @torch.inference_mode()
    def __call__(self, path: Path) -> tuple[np.ndarray, float]:
        rgb, step = self.rgb, self.rgb.step
        left = max(e.left for e in self.encoders)
        for e in self.encoders:
            e.reset()
        if self.decode == "i420":  # 4:2:0 planes at the native size; colour and resize on the device
            source = VideoFileSource(path, self.sample_rate, None, pixel_path="i420")
            to_rgb = i420_to_rgb(source.height, source.width, rgb.size, source.colour)
        else:
            source, to_rgb = VideoFileSource(path, self.sample_rate, rgb.size), None
        reader = PrefetchReader(source, block=max(step, 16))
        try:
            read = device_reader(reader.read, self.device, [(rgb.mean, rgb.std)], self.flow, to_rgb)
            chunks = []
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                for streams, count in segments(read, step, left, max(e.right for e in self.encoders)):
                    parts = [e(s[left - e.left : left + step + e.right])[:count]
                             for e, s in zip(self.encoders, streams)]
                    # kept on the device until the video ends: a copy to the host per segment would make the
                    # CPU wait for the GPU before it prepares the next segment
                    chunks.append(torch.cat(parts, dim=1).float())
        finally:
            if reader.close():
                source.close()
        sampled = torch.cat(chunks).cpu()  # (ceil(T / s), D)
        frames = source.num_frames
        if sampled.shape[0] != -(-frames // self.sample_rate):
            raise ValueError(f"{sampled.shape[0]} sampled frames decoded, the video has {frames} frames")
        full = sampled.repeat_interleave(self.sample_rate, dim=0)[:frames]
        return np.ascontiguousarray(full.T.numpy(), dtype=np.float32), source.fps


class _OneProcess:
    """`streamseg.engine.dist`'s interface for a single process (no launcher)."""

    @staticmethod
    def detect_launch():
        from types import SimpleNamespace

        return SimpleNamespace(rank=0, local_rank=0, world_size=1, node_rank=0, is_zero=True)

    @staticmethod
    def init_process_group(launch, accelerator) -> None:
        pass

    broadcast = staticmethod(lambda obj: obj)
    all_gather = staticmethod(lambda obj: [obj])
    barrier = staticmethod(lambda: None)


def _dist():
    """`streamseg.engine.dist` (torchrun / SLURM ranks, as training reads them) under a launcher; else a
    single process, without importing the engine (and Lightning): a plain extraction starts seconds sooner."""
    launched = any(int(os.environ.get(var, "1") or "1") > 1 for var in ("WORLD_SIZE", "SLURM_NTASKS"))
    if launched:
        from ..engine import dist

        return dist
    return _OneProcess


def extract_features(
    inputs: Sequence[str | Path],
    out: str | Path,
    spec: EncoderSpec,
    flow: FlowSpec | None = None,
    sample_rate: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    decode: str = "rgb24",
    decode_workers: int = 0,
    segment_batch: int = 1,
) -> ExtractReport:
    """Extract features of every video in ``inputs`` into ``out`` (module docstring for the rules).

    Args:
        spec: the encoder (`EncoderSpec`); flow: add RAFT optical flow as a second stream (`FlowSpec`).
        sample_rate: encode every ``sample_rate``-th frame (features repeated to the full frame count); None:
            1, or the run's sample rate for ``encoder="run"``.
        device: ``"cpu"`` or ``"cuda"`` (each rank uses ``cuda:<local rank>``). dtype: ``"float32"``,
            ``"bfloat16"`` or ``"float16"`` (autocast; files are float32 either way).
        seed: seeds the random initialisation of encoders without weights (recorded in the manifest).
        decode: ``"rgb24"`` (swscale colour conversion and torch resize on the CPU, as training decodes) or
            ``"i420"`` (the decoder's 4:2:0 planes go to the device, which converts and resizes them: less CPU
            work per frame; even frame sizes only; features differ slightly from rgb24's).
        decode_workers: 0 decodes in a thread of this process, one video at a time; N > 0 decodes N videos at
            once in N worker processes and batches their segments (`streamseg.extract.pipeline`; not with flow
            or ``encoder="run"``). segment_batch: with workers, segments per network run (1: the same bits as
            without workers; more: one bigger run, equal to float rounding).
        progress: called after each video with ``{rank, index, total, name, frames, seconds, fps_rate, eta_s,
            status ("done" | "skipped" | "failed"), error}``.

    Returns:
        an `ExtractReport` (all ranks' videos on rank 0, the rank's own elsewhere).
    """
    dist = _dist()
    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, int)
                                    or sample_rate < 1):
        raise ValueError(f"extract: sample_rate must be an int >= 1, got {sample_rate!r}")
    if decode not in ("rgb24", "i420"):
        raise ValueError(f"extract: decode must be 'rgb24' or 'i420', got {decode!r}")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"extract: dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    if isinstance(decode_workers, bool) or not isinstance(decode_workers, int) or decode_workers < 0:
        raise ValueError(f"extract: decode_workers must be an int >= 0, got {decode_workers!r}")
    if isinstance(segment_batch, bool) or not isinstance(segment_batch, int) or segment_batch < 1:
        raise ValueError(f"extract: segment_batch must be an int >= 1, got {segment_batch!r}")
    if decode_workers and (flow is not None or spec.encoder == "run"):
        raise ValueError("extract: decode workers need a stateless encoder without flow (flow and a run's encoder "
                         "read each video in order in this process); use decode_workers=0")
    out = Path(out)
    videos = list_videos(inputs)
    launch = dist.detect_launch()
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", launch.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    own_group = launch.world_size > 1 and not torch.distributed.is_initialized()
    # gloo even for GPUs: the group only agrees on the manifest and gathers reports (small objects), and gloo lets
    # several ranks share one GPU (NCCL refuses two ranks on one device), so more processes can decode for it
    dist.init_process_group(launch, "cpu")
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # one segment shape per run: cuDNN picks its kernels once
    try:
        return _extract(out, videos, spec, flow, sample_rate, dev, dtypes[dtype], seed, launch, progress, decode,
                        decode_workers, segment_batch)
    finally:
        torch.backends.cudnn.benchmark = benchmark
        if own_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _extract(out, videos, spec, flow, sample_rate, dev, dtype, seed, launch, progress, decode, decode_workers,
             segment_batch) -> ExtractReport:
    dist = _dist()
    torch.manual_seed(seed)  # every rank builds the same randomly initialised encoders
    extractor = _Extractor(spec, flow, sample_rate, dev, dtype, decode)  # bad weights fail here, on every rank
    manifest_info = manifest_spec(spec, flow, extractor.sample_rate, extractor.dim, seed, decode)
    error = None
    if launch.is_zero:
        try:
            _prepare_out(out, manifest_info)
        except ValueError as e:
            error = str(e)
    error = dist.broadcast(error)
    if error:
        raise ValueError(error)

    mine = shard(videos, launch.rank, launch.world_size)
    report = ExtractReport(out, launch.rank)
    info: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    count = 0
    last = [start]  # when the previous video finished: a video's seconds run from there

    def finish(name: str, path: Path, features: np.ndarray | None, fps: float, error: str | None) -> None:
        """Write (or record the failure of) one video, then report progress."""
        nonlocal count
        event: dict[str, Any] = {"rank": launch.rank, "name": name, "frames": 0, "error": None}
        if error is None and features is not None:
            try:
                _atomic_write(out / f"{name}.npy", lambda p: _save_npy(p, features))
            except OSError as e:
                error = str(e)
        if error is not None:
            report.failed[name] = f"{path}: {error}" if str(path) not in error else error
            event.update(status="failed", error=report.failed[name])
        elif features is None:
            report.skipped.append(name)
            event["status"] = "skipped"
        else:
            report.done.append(name)
            report.frames += features.shape[1]
            info[name] = {"frames": int(features.shape[1]), "fps": fps}
            event.update(status="done", frames=int(features.shape[1]))
        count += 1
        now = time.perf_counter()
        elapsed = now - start
        event.update(index=count, total=len(mine), seconds=now - last[0],
                     fps_rate=report.frames / elapsed if elapsed > 0 else 0.0,
                     eta_s=elapsed / count * (len(mine) - count))
        last[0] = now
        if progress is not None:
            progress(event)

    todo = []
    for name, path in mine:
        if (out / f"{name}.npy").is_file():
            finish(name, path, None, 0.0, None)
        else:
            todo.append((name, path))
    if decode_workers:
        from .pipeline import run_pipeline

        run_pipeline(extractor, [(i, path) for i, (_, path) in enumerate(todo)], decode_workers, segment_batch,
                     lambda i, features, fps, err: finish(*todo[i], features, fps, err), report.timing)
    for name, path in todo if not decode_workers else ():
        try:
            features, fps = extractor(path)
        except (ValueError, OSError, RuntimeError) as e:
            finish(name, path, None, 0.0, str(e))
        else:
            finish(name, path, features, fps, None)
    report.seconds = time.perf_counter() - start

    gathered = dist.all_gather((report, info))
    if launch.is_zero:
        total = ExtractReport(out, seconds=max(r.seconds for r, _ in gathered), timing=gathered[0][0].timing)
        manifest = json.loads((out / MANIFEST).read_text())
        for r, videos_info in gathered:
            total.done += r.done
            total.skipped += r.skipped
            total.failed.update(r.failed)
            total.frames += r.frames
            manifest["videos"].update(videos_info)
        _write_json(out / MANIFEST, manifest)
        report = total
    dist.barrier()
    return report
