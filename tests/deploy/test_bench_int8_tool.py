"""tools/bench_int8.py: the ONNX Runtime sessions it times against each other."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("onnxruntime")

from ..conftest import REPO  # noqa: E402
from .test_quantize import conv_onnx  # noqa: E402


def _bench_int8():
    spec = importlib.util.spec_from_file_location("bench_int8", REPO / "tools" / "bench_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [1, 2])
def test_timed_sessions_do_not_spin_between_calls(tmp_path, threads) -> None:
    # a two-thread session's pool threads spin after each call by default, on this 2-core machine slowing
    # the next session timed by ~3x (docs/benchmarks.md, "A better-trained run")
    streamer = _bench_int8().session(conv_onnx(tmp_path / "m.onnx"), "all", threads)
    opts = streamer.session.get_session_options()
    assert opts.intra_op_num_threads == threads
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_random_model_keeps_the_asked_number_of_encoder_blocks(tmp_path, synth_video_root) -> None:
    # `--random --num-blocks N`: the synth runs' 4-block encoder at any `--frame-size` (docs/benchmarks.md,
    # "Larger frame sizes"); a dropped argument would build the full MobileNetV2 both times
    import json

    import onnx

    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    convs = {}
    for blocks in (2, 3):
        path = _bench_int8()._random_model(40, video, tmp_path / f"b{blocks}" / "model.onnx", blocks)
        convs[blocks] = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
        assert json.loads(path.with_suffix(".json").read_text())["sample_shape"] == [3, 40, 40]
    # block 1 (t = 1): depthwise + project; block 2 (t = 6): expand + depthwise + project
    assert convs[3] - convs[2] == 3


def test_the_depthwise_variant_keeps_exactly_the_depthwise_convolutions_in_float(tmp_path, synth_video_root) -> None:
    # `--variants qdq-u8s8-dwfloat`: every Conv with group > 1 of the graph that is quantised, and no other
    import onnx

    bench = _bench_int8()
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    path = bench._random_model(40, video, tmp_path / "model.onnx", 3)
    names = bench._depthwise(path, bench.VARIANTS["qdq-u8s8-dwfloat"])
    graph = bench._prepared(path, bench.VARIANTS["qdq-u8s8-dwfloat"])
    groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in graph.node if n.op_type == "Conv"}
    assert len(names) == 2  # the stem conv, then blocks 1 and 2 with one depthwise 3x3 each
    assert sorted(names) == sorted(n for n, g in groups.items() if g > 1) and len(groups) > len(names)


def test_flips_are_counted_in_the_quarter_of_their_video() -> None:
    # `--margins`' drift check: flips late in long videos land in the last quarters whatever the lengths
    import numpy as np

    a = np.zeros(8, bool)
    a[[0, 1, 7]] = True  # quarters of 8 frames: 0-1, 2-3, 4-5, 6-7
    b = np.zeros(5, bool)
    b[[2, 4]] = True  # 4 * 2 // 5 = 1, 4 * 4 // 5 = 3
    assert _bench_int8()._quarters([a, b]) == [2, 1, 0, 2]


def test_logits_from_fp32s_state_feed_each_chunk_the_state_fp32_carried(tmp_path, synth_video_root) -> None:
    # `flipped_from_fp32_state`: the INT8 graph must see fp32's state at every chunk, never its own
    import numpy as np

    from streamseg.deploy.runtime import OnnxStreamer

    bench = _bench_int8()
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    path = bench._random_model(40, video, tmp_path / "model.onnx", 2)
    fp32, other = OnnxStreamer(path, threads=1), OnnxStreamer(path, threads=1)
    seen, carried = [], []

    class Recording:
        """Records the state each step is given; ``own``: then returns a state of its own, unlike fp32's."""

        def __init__(self, streamer, log, own):
            self.meta, self.streamer, self.log, self.own = streamer.meta, streamer, log, own

        def init_state(self, batch):
            return self.streamer.init_state(batch)

        def step(self, x, state):
            self.log.append([s.copy() for s in state])
            logits, new = self.streamer.step(x, state)
            return logits, [s + 1.0 for s in new] if self.own else new

    bench._logits(Recording(other, seen, True), video, 8, state_from=Recording(fp32, carried, False))
    assert len(seen) == len(carried) > 2
    for mine, theirs in zip(seen, carried):
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))


def test_the_first_chunks_variant_calibrates_on_each_videos_first_chunks(tmp_path, synth_video_root) -> None:
    # `qdq-u8s8-first`: the calibration before the windows were staggered, kept to compare against
    import numpy as np

    from streamseg.deploy.runtime import OnnxStreamer

    bench = _bench_int8()
    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:2]
    fp32 = OnnxStreamer(bench._random_model(40, videos[0], tmp_path / "model.onnx", 2), threads=1)
    feeds = bench._first_feeds(fp32, videos, 8, 4)
    assert len(feeds) == 4
    names = fp32.meta.state_names()[0]
    for i in (0, 2):  # each video's first chunk, from the zero state
        assert all(not feeds[i][n].any() for n in names)
    assert any(feeds[1][n].any() for n in names)  # its second chunk carries fp32's state
