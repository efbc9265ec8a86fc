"""`export onnx --int8`: static INT8 quantisation calibrated on videos keeps the fp32 graph's labels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from streamseg.data.video import VideoFileSource  # noqa: E402
from streamseg.deploy.infer import infer_video  # noqa: E402
from streamseg.deploy.quantize import calibration_feeds, label_agreement, quantize_int8  # noqa: E402
from streamseg.deploy.runtime import DeployMeta, OnnxStreamer  # noqa: E402

from .test_infer import tiny_meta  # noqa: E402


def conv_onnx(path, k: int = 4, bias: np.ndarray | None = None, outlier: float = 1.0):
    """A hand-built streaming step with weights to quantise (no torch export: minutes on a busy CPU):
    Conv (3 -> 8 channels, 4x4 patches) -> ReLU -> spatial mean -> MatMul to K classes + ``bias``, plus a
    tenth of the previous chunk's mean logits (the state). ``outlier`` scales the 8th channel of the mean,
    which the MatMul ignores: its range then sets the whole tensor's uint8 step, crushing the 7 others."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[1, 4, 4], strides=[1, 4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),  # (B, 8, T, 4, 4)
        helper.make_node("ReduceMean", ["r"], ["f0"], axes=[3, 4], keepdims=0),  # (B, 8, T)
        helper.make_node("Mul", ["f0", "scale"], ["f"]),
        helper.make_node("Transpose", ["f"], ["ft"], perm=[0, 2, 1]),  # (B, T, 8)
        helper.make_node("MatMul", ["ft", "w2"], ["zb"]),  # (B, T, K)
        helper.make_node("Add", ["zb", "b2"], ["z"]),
        helper.make_node("Transpose", ["z"], ["zt"], perm=[0, 2, 1]),  # (B, K, T)
        helper.make_node("Mul", ["state_in_0", "half"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "axis2"], ["s3"]),  # (B, K, 1)
        helper.make_node("Add", ["zt", "s3"], ["logits"]),
        helper.make_node("ReduceMean", ["logits"], ["state_out_0"], axes=[2], keepdims=0),  # (B, K)
    ]
    w2 = rng.normal(0, 1.0, (8, k)).astype(np.float32)
    w2[7] *= outlier == 1.0
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 1, 4, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1.0] * 7 + [outlier], np.float32)[:, None], "scale"),
             numpy_helper.from_array(np.zeros(k, np.float32) if bias is None else bias.astype(np.float32), "b2"),
             numpy_helper.from_array(np.array(0.1, np.float32), "half"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, "T", 16, 16]),
                        helper.make_tensor_value_info("state_in_0", TensorProto.FLOAT, ["B", k])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", k, "T"]),
         helper.make_tensor_value_info("state_out_0", TensorProto.FLOAT, ["B", k])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    tiny_meta(state_shapes=[[k]], onnx=path.name, chunk_size=6).to_json(path.with_suffix(".json"))
    return path


def test_int8_graph_is_quantised_and_keeps_the_labels(tmp_path, synth_video_root) -> None:
    import onnx

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))
    fp32_path = conv_onnx(tmp_path / "m.onnx")
    with VideoFileSource(videos[0], 2, (16, 16)) as src:  # centre the classes on a video, so labels vary
        logits, _ = OnnxStreamer(fp32_path).step(tiny_meta().preprocess(src.read(1000)), [np.zeros((1, 4), "f")])
    fp32_path = conv_onnx(tmp_path / "m.onnx", bias=-logits[0].mean(1))
    held_out = videos[3:]
    int8_path, meta_path, report = quantize_int8(fp32_path, videos[:3], max_chunks=30, check_videos=held_out)
    assert int8_path == tmp_path / "m.int8.onnx" and meta_path == tmp_path / "m.int8.json"
    meta = DeployMeta.from_json(meta_path)
    assert meta.quantization == "int8-static" and meta.onnx == "m.int8.onnx"
    ops = {n.op_type for n in onnx.load(int8_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: int8 weights and activations
    weights = {i.name: i.data_type for i in onnx.load(int8_path).graph.initializer}
    assert onnx.TensorProto.INT8 in weights.values()

    assert meta.parity == report
    fp32, int8 = OnnxStreamer(fp32_path, threads=1), OnnxStreamer(int8_path, threads=1)
    assert label_agreement(fp32, int8, held_out) == report
    labels = np.concatenate([infer_video(fp32, v).labels for v in held_out])
    assert len(set(labels.tolist())) > 1  # the fp32 labels vary: agreement is not trivially 1
    assert report["frames"] == len(labels) and report["videos"] == 3
    assert report["label_agreement"] >= 0.9


def test_export_int8_names_bad_video_arguments_before_exporting(tmp_path) -> None:
    from streamseg.cli.main import main

    with pytest.raises(SystemExit, match="--int8-check needs --int8 VIDEOS"):
        main(["export", "onnx", str(tmp_path), "--int8-check", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"{tmp_path / 'nope'}: no such video file or folder"):
        main(["export", "onnx", str(tmp_path), "--int8", str(tmp_path / "nope")])  # not a run dir either: named first



def test_float_prefixes_keep_those_weights_float_and_options_are_checked(tmp_path, synth_video_root) -> None:
    import onnx

    from streamseg.deploy.quantize import Int8Options, quantize_graph

    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    fp32 = OnnxStreamer(conv_onnx(tmp_path / "m.onnx"))
    feeds = list(calibration_feeds(fp32, [video], chunk=6, max_chunks=4))
    out = quantize_graph(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, Int8Options(float_prefixes=("w2",)))
    graph = onnx.load(out).graph
    matmul = next(n for n in graph.node if n.op_type == "MatMul")
    assert "w2" in matmul.input  # the float weight itself, no DequantizeLinear in front of it
    assert any(n.op_type == "DequantizeLinear" and n.input[0].startswith("w1") for n in graph.node)
    weights = {i.name: i.data_type for i in graph.initializer}
    assert weights["w2"] == onnx.TensorProto.FLOAT
    with pytest.raises(ValueError, match="Int8Options.activations: expected one of"):
        quantize_graph(tmp_path / "m.onnx", tmp_path / "x.onnx", feeds, Int8Options(activations="int4"))


def _centred(path, video, **kw):
    """`conv_onnx` with the class bias centred on ``video``'s logits, so that its labels vary."""
    fp32_path = conv_onnx(path, **kw)
    with VideoFileSource(video, 2, (16, 16)) as src:
        logits, _ = OnnxStreamer(fp32_path).step(tiny_meta().preprocess(src.read(1000)), [np.zeros((1, 4), "f")])
    return conv_onnx(path, bias=-logits[0].mean(1), **kw)


def test_nodes_left_in_float_are_chosen_on_the_calibration_videos_and_raise_the_agreement(
        tmp_path, synth_video_root) -> None:
    import onnx

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))
    calib = videos[:4]
    fp32_path = _centred(tmp_path / "m.onnx", videos[0], outlier=1000.0)
    plain, plain_meta, _ = quantize_int8(fp32_path, calib, tmp_path / "plain.onnx", max_chunks=40, min_agreement=0)
    assert DeployMeta.from_json(plain_meta).int8_search is None
    mixed, mixed_meta, _ = quantize_int8(fp32_path, calib, max_chunks=40)  # default: 0.99
    search = DeployMeta.from_json(mixed_meta).int8_search
    assert search["min_agreement"] == 0.99 and search["folds"] == 2
    assert search["tried"]["0"] < 0.9  # every node quantised: the outlier channel crushes the features
    chosen = search["float_nodes"]
    assert search["reached"] and search["agreement"] >= 0.99
    assert search["agreement"] == search["tried"][str(len(chosen))]
    assert 0 < len(chosen) < len(search["ranked"])  # some nodes left in float, not all of them
    nodes = {n.name: n for n in onnx.load(mixed).graph.node}
    assert all(name in nodes for name in chosen)  # the chosen nodes are in the graph, unquantised
    assert not any(nodes[name].op_type.startswith("QLinear") for name in chosen)

    fp32 = OnnxStreamer(fp32_path, threads=1)
    ours, theirs = (label_agreement(fp32, OnnxStreamer(p, threads=1), calib)["label_agreement"]
                    for p in (mixed, plain))
    assert ours >= 0.97 and theirs < 0.9  # whole videos, original frames: near the cross-fitted figure
    labels = np.concatenate([infer_video(fp32, v).labels for v in calib])
    assert len(set(labels.tolist())) > 1  # fp32 labels vary: agreement is not trivially 1


def test_a_bad_min_agreement_is_refused_before_any_work(tmp_path, synth_video_root) -> None:
    from streamseg.cli.main import main

    for bad in ("1.5", "-0.1", "nan"):
        with pytest.raises(SystemExit, match=r"--int8-min-agreement: expected a fraction of frames in \[0, 1\]"):
            main(["export", "onnx", str(tmp_path), "--int8", str(tmp_path), "--int8-min-agreement", bad])
    with pytest.raises(ValueError, match=r"min_agreement: expected a fraction of frames in \[0, 1\].*99"):
        quantize_int8(tmp_path / "missing.onnx", [tmp_path], min_agreement=99)  # before the model is read
    one = sorted((synth_video_root / "Videos").glob("*.mp4"))[:1]
    with pytest.raises(ValueError, match="needs at least 2 calibration videos, got 1"):
        quantize_int8(conv_onnx(tmp_path / "m.onnx"), one)
    with pytest.raises(SystemExit, match="needs at least 2 calibration videos, got 1"):
        main(["export", "onnx", str(tmp_path), "--int8", str(one[0])])


@pytest.mark.parametrize("needed, expect_k, expect_tried",
                         [(5, 5, {0, 1, 2, 4, 8, 6, 5}), (99, 10, {0, 1, 2, 4, 8, 10})])
def test_search_takes_the_fewest_ranked_nodes_that_reach_the_threshold(needed, expect_k, expect_tried) -> None:
    """Doubling then bisection over k: the smallest k reaching it; none reaching it, the best k tried."""
    from streamseg.deploy.int8_search import Int8Search, _best, _search

    ranked = [f"n{i}" for i in range(10)]

    class Trial:  # agreement 0.99 from `needed` nodes in float on, else rising slowly with k
        def agreement(self, nodes):
            return 0.99 if len(nodes) >= needed else 0.9 + 0.001 * len(nodes)

    report = Int8Search(0.99, 2, 100, [], ranked=ranked, tried={0: 0.9})
    _search(report, Trial())
    assert _best(report) == expect_k and set(report.tried) == expect_tried


def test_calibration_logits_are_the_fp32_graphs_on_each_feed(tmp_path, synth_video_root) -> None:
    from streamseg.deploy.int8_search import calibration_videos

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:2]
    fp32 = OnnxStreamer(conv_onnx(tmp_path / "m.onnx"), threads=1)
    calib = calibration_videos(fp32, videos, chunk=6, max_chunks=6)
    assert sum(len(v.feeds) for v in calib) == 6  # 3 chunks a video
    for v in calib:  # the reference logits are those of the feeds (the state each chunk starts from)
        want = np.concatenate([fp32.step(f["x"], [f["state_in_0"]])[0][0] for f in v.feeds], axis=-1)
        np.testing.assert_array_equal(v.logits, want)


def test_calibration_windows_are_staggered_over_the_videos_with_fp32s_state(tmp_path, synth_video_root) -> None:
    # each video's first chunks alone start from the zero state, so whatever the state feeds would be
    # calibrated on ranges later chunks exceed (docs/benchmarks.md): video v of V starts its window at
    # (v + 1/2) / V of the chunks before its last window, the state fp32 carried there in its feeds
    from streamseg.data.video import probe
    from streamseg.deploy.infer import open_source
    from streamseg.deploy.int8_search import calibration_videos

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:3]
    fp32 = OnnxStreamer(conv_onnx(tmp_path / "m.onnx"), threads=1)
    calls = []
    step = fp32.step
    fp32.step = lambda x, state: (calls.append(1), step(x, state))[1]
    calib = calibration_videos(fp32, videos, chunk=6, max_chunks=6)  # 2 chunks a video
    assert [len(v.feeds) for v in calib] == [2, 2, 2]
    ran = 0
    for v, (video, got) in enumerate(zip(videos, calib)):
        with open_source(video, fp32) as source:  # every chunk of the video, fp32's state carried
            state, chunks = [np.zeros_like(got.feeds[0]["state_in_0"])], []
            while len(frames := source.read(6)) > 0:
                x = fp32.meta.preprocess(frames)
                chunks.append((x, state))
                state = step(x, state)[1]
        assert len(chunks) == -(-(-(-probe(video)[0] // fp32.meta.sample_rate)) // 6)  # the header count
        start = int((v + 0.5) / 3 * (len(chunks) - 2))
        assert start > 0
        for (x, state), feed in zip(chunks[start:start + 2], got.feeds):
            np.testing.assert_array_equal(feed["x"], x)
            np.testing.assert_array_equal(feed["state_in_0"], state[0])
        ran += start + 2
    assert len(calls) == ran  # the fp32 graph ran each chunk up to each window's end once
