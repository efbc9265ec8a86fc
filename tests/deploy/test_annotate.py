"""The annotated video: one output frame per source frame, the label's colour swatch, and a timeline bar
whose colours change exactly where the predicted segments change."""

from __future__ import annotations

import av
import numpy as np
import pytest

from streamseg.deploy.annotate import BAR_H, EMPTY, PAD, TEXT_H, AnnotatedVideoWriter, pick_encoder
from streamseg.deploy.infer import infer_video

from .test_infer import _Brightness, _ramp_video, tiny_meta

TOL = 40  # per channel: lossy yuv420p encoding of flat colour areas


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return int(np.abs(got.astype(int) - want.astype(int)).max()) <= TOL


def _class_at(writer: AnnotatedVideoWriter, pixel: np.ndarray) -> int:
    """The class whose colour is nearest to ``pixel`` (-1: the grey of frames not seen yet)."""
    palette = np.concatenate([writer.colours, EMPTY[None]]).astype(int)
    i = int(np.abs(palette - pixel.astype(int)).sum(1).argmin())
    assert _close(pixel, palette[i]), (pixel, palette[i])  # and it is that colour, up to compression
    return -1 if i == len(writer.colours) else i


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("annotate")
    video = _ramp_video(tmp / "ramp.mp4", frames=36, fps=30)  # 16x16, brightening: 4 classes in turn
    meta = tiny_meta(sample_rate=1, fps=30.0)
    writer = AnnotatedVideoWriter(tmp / "out" / "ramp_annotated.mp4", meta.class_names, 30.0, num_frames=36,
                                  bg_classes=meta.bg_classes)
    with writer:
        result = infer_video(_Brightness(meta), video, chunk=5, on_frames=writer.write)
    return writer, result, _decode(writer.path)


def test_every_frame_is_written_once_at_a_legible_size(annotated) -> None:
    writer, result, frames = annotated
    assert len(frames) == writer.frames_written == len(result.labels) == 36
    assert frames[0].shape == (writer.height, writer.width, 3)
    assert writer.width == 320 and writer.video_h == 320  # a 16x16 video scaled up to the minimum width
    assert writer.height == 320 + PAD + TEXT_H + PAD + BAR_H + PAD


def test_bar_colours_change_where_segments_change(annotated) -> None:
    writer, result, frames = annotated
    events, n, w = result.events, 36, writer.width
    assert len({e["label_id"] for e in events}) >= 3  # the ramp crosses several brightness bins
    bar_y = writer.video_h + PAD + TEXT_H + PAD + BAR_H // 2
    bar = frames[-1][bar_y]  # the last frame: the whole video's segments
    for e in events:  # inside each segment: its class colour
        x0, x1 = e["start"] * w // n, e["end"] * w // n
        assert _class_at(writer, bar[(x0 + x1) // 2]) == e["label_id"], e
    for a, b in zip(events, events[1:]):  # across each boundary: the colour changes, from a's to b's
        x = a["end"] * w // n
        assert (_class_at(writer, bar[x - 4]), _class_at(writer, bar[x + 4])) == (a["label_id"], b["label_id"])
    # an early frame: the bar is filled up to that frame only (a cursor marks it), grey after it
    early = frames[9][bar_y]
    assert _class_at(writer, early[5 * w // n]) == result.labels[5]
    assert _class_at(writer, early[20 * w // n]) == -1 and _class_at(writer, early[-1]) == -1


def test_label_swatch_follows_the_frame_label(annotated) -> None:
    writer, result, frames = annotated
    y, x = writer.video_h + PAD + TEXT_H // 2, PAD + 4
    for i in range(0, 36, 5):
        assert _class_at(writer, frames[i][y, x]) == result.labels[i], i


def test_live_bar_scrolls_over_a_window(tmp_path) -> None:
    names = ["bg", "a", "b"]
    writer = AnnotatedVideoWriter(tmp_path / "live.mp4", names, 10.0, num_frames=None, width=100, window_s=2.0)
    frame = np.zeros((20, 20, 3), np.uint8)
    with writer:
        writer.write([frame] * 30, np.array([1] * 25 + [2] * 5), np.full(30, 0.9))
    bar = writer.bar()  # window = 20 frames: the last 20 (frames 10..29), 5 px each
    assert writer.window == 20
    assert (bar[:75] == writer.colours[1]).all() and (bar[75:95] == writer.colours[2]).all()
    assert (bar[95] == 255).all() and (bar[96:] == writer.colours[2]).all()  # the cursor: newest frame's start
    assert len(_decode(tmp_path / "live.mp4")) == 30


def test_bad_calls_and_missing_encoders_are_reported(tmp_path) -> None:
    writer = AnnotatedVideoWriter(tmp_path / "x.mp4", ["a"], 10.0)
    with pytest.raises(ValueError, match="2 frames, 1 labels, 1 confidences"):
        writer.write([np.zeros((4, 4, 3), np.uint8)] * 2, np.array([0]), np.array([1.0]))
    with pytest.raises(RuntimeError, match="none of the video encoders"):
        pick_encoder(("no_such_encoder",))
