"""How NVDEC decoding scales with readers: N readers in threads of one process against N processes.

    python tools/bench_nvdec.py --work /tmp/w --size 1280x720 --clips 16 --frames 300 --readers 1 4 16 \
        --modes thread process --out nvdec.json

Each reader decodes whole clips (reader i takes clip i modulo ``--clips``) through
`streamseg.data.nvdec.NvdecSource` in chunks of 32 (``--layer reader``: NV12 planes repacked as I420 on the
GPU, as training and inference read them) or through PyNvVideoCodec's ``SimpleDecoder.get_batch_frames``
alone (``--layer raw``: the decoder's own frames, nothing else), or through FFmpeg's own NVDEC decoder
(``--layer ffmpeg``: PyAV's CUDA hardware acceleration, the frames kept in GPU memory and taken as DLPack
tensors, nothing else; a second library driving the same engines). Decoder creation and, for processes, the
imports and CUDA start-up are outside the timed span: every reader opens its decoder, waits at a barrier,
then decodes; the aggregate rate is all frames over the span from the first start to the last end.

What it tells: if threads scale far below processes, the readers serialise in the process (Python's
GIL held by the decode call, or a per-process lock); if processes do not scale either, the bound is
the decoder hardware or the driver. ``--utilisation`` tells those two apart: ``nvidia-smi`` samples the
decoder engines' and the GPU's utilisation every 100 ms during each timed span (mean and max in the
row); decoders near 100 % mean the NVDEC engines themselves are the bound. Each row also gives the
clips' bit rate: the engines' H.264 throughput falls as the bit rate rises (entropy decoding), so
``--crf`` (x264's quality, 23 by default; higher is fewer bits) shows how much the footage decides.
Needs a GPU with NVDEC and PyNvVideoCodec (``streamseg[gpu-decode]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import _clips, _wh  # noqa: E402 (the same camera-like clips as bench_gpu.py)

CHUNK = 32


def _decode(path: str, size: tuple[int, int], layer: str, ready, out: dict) -> None:
    """Open, wait for every reader, decode the whole clip; ``out``: frames, start and end (time.time)."""
    import torch

    from streamseg.data.nvdec import NvdecSource, import_pynvvideocodec

    if layer == "ffmpeg":
        import av
        from av.codec.hwaccel import HWAccel

        container = av.open(path, hwaccel=HWAccel("cuda", allow_software_fallback=False, is_hw_owned=True))
        ready.wait()
        start, n = time.time(), 0
        for frame in container.decode(video=0):
            if frame.format.name != "cuda":
                raise RuntimeError(f"FFmpeg decoded {path} in {frame.format.name}, not on the GPU")
            # luma, interleaved chroma; PyAV exports CUDA planes only when asked without a stream
            torch.from_dlpack(frame.planes[0].__dlpack__()), torch.from_dlpack(frame.planes[1].__dlpack__())
            n += 1
        container.close()
    elif layer == "raw":
        nvc = import_pynvvideocodec()
        dec = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
        ready.wait()
        start, n = time.time(), 0
        while got := dec.get_batch_frames(CHUNK):
            n += len(got)
    else:
        src = NvdecSource(path, size, 1, "cuda")
        ready.wait()
        start, n = time.time(), 0
        while len(x := src.read(CHUNK)):
            n += len(x)
        src.close()
    torch.cuda.synchronize()
    out.update(frames=n, start=start, end=time.time())


def _process(path: str, size: tuple[int, int], layer: str, ready, results) -> None:
    out: dict = {}
    try:
        _decode(path, size, layer, ready, out)
    except Exception as e:  # noqa: BLE001 (reported, not raised: the other readers go on)
        ready.abort()
        out["error"] = f"{type(e).__name__}: {e}"
    results.put(out)


class Utilisation:
    """``nvidia-smi`` sampling the decoder and GPU utilisation (percent) every 100 ms while open."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.decoder,utilization.gpu", "--format=csv,noheader,nounits",
             "-i", "0", "-lms", "100"]

    def __enter__(self) -> Utilisation:
        self.proc = subprocess.Popen(self.QUERY, stdout=subprocess.PIPE, text=True)
        self.samples: list[tuple[float, float, float]] = []  # (time, decoder %, gpu %)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.strip().split(",")
            if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
                self.samples.append((time.time(), float(parts[0]), float(parts[1])))

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.reader.join(5)

    def within(self, start: float, end: float) -> dict:
        got = [(d, g) for t, d, g in self.samples if start <= t <= end]
        if not got:
            return {"util_samples": 0}
        dec, gpu = zip(*got)
        return {"util_samples": len(got), "decoder_util_mean": round(sum(dec) / len(dec), 1),
                "decoder_util_max": max(dec), "gpu_util_mean": round(sum(gpu) / len(gpu), 1)}


def run(paths: list[str], size: tuple[int, int], readers: int, mode: str, layer: str,
        utilisation: Utilisation | None = None) -> dict:
    picked = [paths[i % len(paths)] for i in range(readers)]
    if mode == "thread":
        ready = threading.Barrier(readers)
        outs: list[dict] = [{} for _ in picked]

        def reader(path: str, out: dict) -> None:
            try:
                _decode(path, size, layer, ready, out)
            except Exception as e:  # noqa: BLE001 (reported; the other readers must not wait for this one)
                ready.abort()
                out["error"] = f"{type(e).__name__}: {e}"

        threads = [threading.Thread(target=reader, args=(p, o)) for p, o in zip(picked, outs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        ctx = multiprocessing.get_context("spawn")
        ready, results = ctx.Barrier(readers), ctx.Queue()
        procs = [ctx.Process(target=_process, args=(p, size, layer, ready, results)) for p in picked]
        for p in procs:
            p.start()
        outs = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        return {"mode": mode, "layer": layer, "readers": readers, "error": errors[0]}
    frames = sum(o["frames"] for o in outs)
    start, end = min(o["start"] for o in outs), max(o["end"] for o in outs)
    span = end - start
    row = {"mode": mode, "layer": layer, "readers": readers, "frames": frames, "seconds": round(span, 3),
           "frames_per_s": round(frames / span), "per_reader": round(frames / span / readers)}
    if utilisation is not None:
        row.update(utilisation.within(start, end))
    return row


def bit_rate_mbps(paths: list[str], frames: int, fps: float = 30.0) -> float:
    """The clips' mean bit rate (megabits per second of video)."""
    return round(sum(os.path.getsize(p) for p in paths) * 8 / (len(paths) * frames / fps) / 1e6, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="folder for the clips")
    p.add_argument("--size", default="1280x720", help="WxH of the clips")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=300, help="frames per clip")
    p.add_argument("--readers", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--modes", nargs="+", choices=["thread", "process"], default=["thread", "process"])
    p.add_argument("--layers", nargs="+", choices=["reader", "raw", "ffmpeg"], default=["reader", "raw"])
    p.add_argument("--crf", type=int, nargs="+", default=[23], help="x264 CRF of the clips (one set per value)")
    p.add_argument("--utilisation", action="store_true", help="sample NVDEC and GPU utilisation (nvidia-smi)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    h, w = _wh(args.size)
    rows = []
    with Utilisation() if args.utilisation else contextlib.nullcontext() as util:
        for crf in args.crf:
            paths = _clips(Path(args.work) / "clips", h, w, args.clips, args.frames, crf)
            mbps = bit_rate_mbps(paths, args.frames)
            for layer in args.layers:
                for mode in args.modes:
                    for n in args.readers:
                        rows.append({"crf": crf, "mbit_per_s": mbps, **run(paths, (h, w), n, mode, layer, util)})
                        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
