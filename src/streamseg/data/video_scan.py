"""How many frames a video really has: decoded once, remembered by the file's size and mtime.

A container's frame count is a promise, not a fact: a stream-copy trim's header counts leading non-key
frames that no decoder shows (``ffmpeg -ss 0.45 -i a.mp4 -c copy b.mp4``: header 30, decodable 25), a
cut file's header counts frames that are gone, and ``.ts``/``.mkv`` headers hold no count at all.
`scan_video` decodes the whole stream (decode only: no colour conversion, FFmpeg's frame threads) and
records what came out; `streamseg data check` and the training gate (`streamseg.engine.datacheck`)
compare that with the labels through this one function.

A scan is cached in a JSON file (`default_cache_path`: ``$XDG_CACHE_HOME/streamseg/video_scans.json``,
else ``~/.cache/streamseg/video_scans.json``), keyed by the file's absolute path and valid while its
size and modification time (ns) are unchanged, so a second check of the same dataset decodes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from streamseg.data.decode import DecodeOptions, FrameDecoder, open_video, rotation_filters
from streamseg.data.errors import DataError

__all__ = ["VideoScan", "default_cache_path", "scan_video"]

_VERSION = 1  # bump when VideoScan's fields or their meaning change: older cache entries are ignored
_VFR_TOLERANCE = 0.02  # frame intervals within 2% of the median count as one rate (pts rounding)


@dataclass(frozen=True)
class VideoScan:
    """What decoding a whole video found.

    Attributes:
        frames: frames decoded (before any error).
        header_frames: the count the container header gives (0 when it gives none).
        fps: the stream's average rate (frames per second, 0.0 when unknown).
        height, width: upright frame size (after rotation).
        rotation: display rotation, degrees counter-clockwise (0 when none).
        interlaced: the header or a frame says interlaced.
        vfr: frame intervals differ (variable frame rate); ``min_fps``/``max_fps`` give the range.
        duration_s: presentation time from the first frame to the end of the last.
        error: why decoding stopped early (an FFmpeg error in words), or None.
    """

    frames: int
    header_frames: int
    fps: float
    height: int
    width: int
    rotation: int = 0
    interlaced: bool = False
    vfr: bool = False
    min_fps: float = 0.0
    max_fps: float = 0.0
    duration_s: float = 0.0
    error: str | None = None

    def notes(self) -> list[str]:
        """What a user should know about this footage, in words (rotation, interlacing, VFR, a header
        count that differs from what decodes); [] for a plain video."""
        out = []
        if self.rotation:
            out.append(f"rotated {self.rotation} degrees (display matrix): frames are turned upright")
        if self.interlaced:
            out.append("interlaced: deinterlaced with FFmpeg's bwdif filter")
        if self.vfr:
            out.append(f"variable frame rate ({self.min_fps:.3g}-{self.max_fps:.3g} fps): times come from "
                       "timestamps; frames are sampled by index")
        if self.error:
            out.append(f"decoding stops early, after {self.frames} frames: {self.error}")
        if self.header_frames and self.header_frames != self.frames:
            out.append(f"header says {self.header_frames} frames, {self.frames} decode")
        return out


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/streamseg/video_scans.json`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamseg" / "video_scans.json"


def _key(path: Path) -> tuple[str, dict[str, int]]:
    st = path.stat()
    return str(path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": _VERSION}


def _load(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(cache: Path, key: str, entry: dict) -> None:
    """Add one entry (read-modify-replace, atomic on POSIX); a cache that cannot be written is skipped."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = _load(cache)
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".video_scans.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, cache)
    except OSError:
        pass


def scan_video(path: str | Path, cache: Path | None | bool = True) -> VideoScan:
    """Decode all of ``path`` and say what it holds (`VideoScan`), from the cache when the file is unchanged.

    Args:
        path: the video file.
        cache: True: `default_cache_path`; a path: that JSON file; False/None: no cache.

    Raises:
        DataError: naming the file when it cannot be opened (missing, empty, not a video, no video stream).
            A decoding error part-way is not raised: it is the scan's ``error``, with the frames before it.
    """
    path = Path(path)
    cache_file = default_cache_path() if cache is True else (Path(cache) if cache else None)
    key = stamp = None
    if cache_file is not None and path.is_file():
        key, stamp = _key(path)
        hit = _load(cache_file).get(key)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            try:
                return VideoScan(**hit["scan"])
            except TypeError:
                pass  # an entry of another layout: scan again
    scan = _decode_all(path)
    if cache_file is not None and key is not None:
        _store(cache_file, key, {"stamp": stamp, "scan": asdict(scan)})
    return scan


def _decode_all(path: Path) -> VideoScan:
    from streamseg.data.video import _stream_info  # the header's count, as the readers plan with it

    container, stream = open_video(path)
    try:
        stream.thread_type = "AUTO"  # frame threads: counting is all decoding
        header_frames, fps, height, width = _stream_info(path, container, stream)
        if stream.frames <= 0:
            header_frames = 0  # an estimate from the duration is no count
        decoder = FrameDecoder(container, stream, DecodeOptions(rotate=False, deinterlace="off"))
        times: list[float] = []
        rotation, last_duration = 0, 0.0
        for frame in decoder:
            if not times and frame.rotation and rotation_filters(frame.rotation):  # quarter turns, as decoded
                rotation = int(round(frame.rotation)) % 360
            if frame.time is not None:
                times.append(float(frame.time))
            last_duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        if decoder.decoded == 0 and decoder.error is None:
            raise DataError(path, "the video stream has no decodable frame")
    finally:
        container.close()
    if rotation in (90, 270):
        height, width = width, height
    intervals = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    vfr, min_fps, max_fps = False, fps, fps
    if intervals:
        median = intervals[len(intervals) // 2]
        vfr = intervals[-1] > median * (1 + _VFR_TOLERANCE) or intervals[0] < median * (1 - _VFR_TOLERANCE)
        min_fps, max_fps = 1.0 / intervals[-1], 1.0 / intervals[0]
        last_duration = last_duration or median
    duration = (max(times) - min(times) + last_duration) if times else 0.0
    return VideoScan(frames=decoder.decoded, header_frames=header_frames, fps=fps, height=height, width=width,
                     rotation=rotation, interlaced=decoder.interlaced, vfr=vfr, min_fps=round(min_fps, 3),
                     max_fps=round(max_fps, 3), duration_s=round(duration, 4), error=decoder.error)
