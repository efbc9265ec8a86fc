"""An annotated copy of a video: every original frame with its predicted label and a timeline bar.

Layout of each output frame (width ``W``, even)::

    +--------------------------------------+
    |  the video frame, scaled to width W  |
    +--------------------------------------+
    | [#] label  0.93          12.4 s      |   text row: class colour, label, confidence, media time
    | ===========|                         |   timeline bar: one colour per class, the segments so far
    +--------------------------------------+

Each output frame keeps its source frame's timestamp (pts, relative to the first frame), so the copy
plays with the source's clock even at a variable frame rate, and the time shown is that timestamp;
frames given as arrays (no timestamp) are placed ``1 / fps`` apart.
The bar spans the whole video when its length is known (a file), so it fills up from left to right;
for a live source (no known length) it shows the last ``window_s`` seconds and scrolls. Colours are the
segmentation plots' (`streamseg.viz.plots.class_colours`: tab20, background grey). Text is drawn with
Pillow's default font (Pillow comes with matplotlib and torchvision), frames are encoded with PyAV:
H.264 (``libx264``) when the FFmpeg build has it, else MPEG-4 Part 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["AnnotatedVideoWriter", "pick_encoder"]

ENCODERS = ("libx264", "h264", "mpeg4")  # first one this FFmpeg build can encode with
MIN_WIDTH = 320  # small videos (the 64x64 synthetic ones) are scaled up so that the label is legible
TEXT_H, BAR_H, PAD = 20, 12, 4  # panel rows, pixels: 4 + 20 + 4 + 12 + 4 = 44
EMPTY = np.array([48, 48, 48], np.uint8)  # bar colour of frames not seen yet
CURSOR = np.array([255, 255, 255], np.uint8)
TIME_BASE = Fraction(1, 90000)  # output pts unit: MPEG's 90 kHz clock, fine enough for any frame rate


def pick_encoder(preferred: Sequence[str] = ENCODERS) -> str:
    """The first codec in ``preferred`` this PyAV build can encode with."""
    for name in preferred:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # UnknownCodecError (its module moved between PyAV versions)
            continue
    raise RuntimeError(f"this PyAV/FFmpeg build has none of the video encoders {list(preferred)}")


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


class AnnotatedVideoWriter:
    """Encodes frames with their labels as they are labelled: ``write(frames, labels, confidences)`` per
    batch of original frames (in order), then ``close()``.

    Args:
        path: the output video (``.mp4``, ``.mkv``, ...).
        class_names: K names, index = class id. bg_classes: names drawn grey.
        fps: nominal frames per second (the source's): the clock of frames without a timestamp and the
            live bar's window.
        num_frames: the video's length when known (the bar spans it); None for a live source.
        width: output width (even); default: the source's, at least `MIN_WIDTH`.
        window_s: seconds of timeline the bar shows for a live source.
        codec: encoder name; default: `pick_encoder`.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str], fps: float, *, num_frames: int | None = None,
                 bg_classes: Sequence[str] = (), width: int | None = None, window_s: float = 60.0,
                 codec: str | None = None) -> None:
        from ..viz.plots import class_colours  # matplotlib: imported only when annotating

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        bg_ids = [i for i, n in enumerate(self.class_names) if n in set(bg_classes)]
        self.colours = (class_colours(len(self.class_names), bg_ids)[:, :3] * 255).round().astype(np.uint8)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.num_frames = num_frames
        self.window = max(1, int(round(window_s * self.fps)))
        self.codec = codec or pick_encoder()
        self._width = width
        self._timeline: list[int] = []  # label per frame written so far
        self._t0: float | None = None  # timestamp (s) of the first source frame
        self._last_s = -1.0  # media time of the last frame written
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._font = None
        self.frames_written = 0

    def _open(self, frame_w: int, frame_h: int) -> None:
        from PIL import ImageFont

        self.width = _even(self._width or max(frame_w, MIN_WIDTH))
        self.video_h = _even(frame_h * self.width / frame_w)
        self.height = self.video_h + PAD + TEXT_H + PAD + BAR_H + PAD
        self._container = av.open(str(self.path), "w")
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(self.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = stream.time_base = TIME_BASE  # pts from the source's timestamps
        if self.codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        else:
            stream.codec_context.qscale = 3  # as the synthetic videos: crisp edges, small files
        self._stream = stream
        try:
            self._font = ImageFont.load_default(size=14)  # Pillow >= 10.1 (FreeType)
        except (TypeError, OSError):
            self._font = ImageFont.load_default()

    def _rgb(self, frame: av.VideoFrame | np.ndarray) -> np.ndarray:
        """One frame as ``uint8 (video_h, width, 3)``."""
        if isinstance(frame, av.VideoFrame):
            return frame.to_ndarray(format="rgb24", width=self.width, height=self.video_h)
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(frame, np.uint8))
        return np.asarray(image.resize((self.width, self.video_h), Image.BILINEAR))

    def bar(self) -> np.ndarray:
        """The timeline bar for the frames written so far: ``uint8 (width, 3)``."""
        current = len(self._timeline) - 1
        if self.num_frames:  # the whole video, left to right
            first, span = 0, max(self.num_frames, current + 1)
        else:  # a live source: the last `window` frames, the newest at the right edge
            span = self.window
            first = max(0, current + 1 - span)
        frame_of_x = first + (np.arange(self.width) * span) // self.width
        row = np.tile(EMPTY, (self.width, 1))
        seen = frame_of_x <= current
        timeline = np.asarray(self._timeline)
        row[seen] = self.colours[timeline[frame_of_x[seen]]]
        cursor = min(self.width - 1, ((current - first) * self.width) // span)
        row[cursor] = CURSOR
        return row

    def _media_time(self, frame: av.VideoFrame | np.ndarray) -> float:
        """Seconds from the first frame: the source frame's timestamp, else one nominal frame later."""
        t = frame.time if isinstance(frame, av.VideoFrame) else None
        if t is not None:
            if self._t0 is None:
                self._t0 = t
            t -= self._t0
        if t is None or t <= self._last_s:  # no timestamp, or not after the last one (pts must grow)
            t = self._last_s + 1.0 / self.fps if self._last_s >= 0 else 0.0
        self._last_s = t
        return t

    def _panel(self, label: int, confidence: float, seconds: float) -> np.ndarray:
        from PIL import Image, ImageDraw

        panel = Image.new("RGB", (self.width, PAD + TEXT_H + PAD + BAR_H + PAD), (16, 16, 16))
        draw = ImageDraw.Draw(panel)
        y = PAD
        draw.rectangle((PAD, y + 3, PAD + TEXT_H - 6, y + TEXT_H - 3), fill=tuple(int(c) for c in self.colours[label]))
        draw.text((PAD + TEXT_H, y + 2), f"{self.class_names[label]}  {confidence:.2f}", fill=(255, 255, 255),
                  font=self._font)
        stamp = f"{seconds:.1f} s"
        draw.text((self.width - PAD - draw.textlength(stamp, font=self._font), y + 2), stamp, fill=(200, 200, 200),
                  font=self._font)
        out = np.asarray(panel).copy()
        top = PAD + TEXT_H + PAD
        out[top: top + BAR_H] = self.bar()[None]
        return out

    def write(self, frames: Sequence[av.VideoFrame | np.ndarray], labels: np.ndarray,
              confidences: np.ndarray) -> None:
        """Encode the next ``len(frames)`` original frames with their labels (int (n,)) and confidences (n,)."""
        if len(frames) != len(labels) or len(labels) != len(confidences):
            raise ValueError(f"AnnotatedVideoWriter.write: {len(frames)} frames, {len(labels)} labels, "
                             f"{len(confidences)} confidences (must be equal)")
        for frame, label, conf in zip(frames, np.asarray(labels).tolist(), np.asarray(confidences).tolist()):
            if self._container is None:
                w, h = (frame.width, frame.height) if isinstance(frame, av.VideoFrame) else frame.shape[1::-1]
                self._open(w, h)
            self._timeline.append(int(label))
            seconds = self._media_time(frame)
            image = np.concatenate([self._rgb(frame), self._panel(int(label), float(conf), seconds)])
            out = av.VideoFrame.from_ndarray(image, format="rgb24")
            out.pts, out.time_base = round(seconds / TIME_BASE), TIME_BASE
            for packet in self._stream.encode(out):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames written."""
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        return self.frames_written

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
