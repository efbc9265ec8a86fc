"""`streamseg export onnx RUN_DIR|CHECKPOINT [--out model.onnx]`: the streaming step as an ONNX graph.

The state tensors are explicit inputs (state_in_i) and outputs (state_out_i); batch and chunk length are
dynamic. A metadata file (model.json: class names, fps, sample rate, input size and normalisation, state
shapes, look-ahead) is written beside it. The export is checked: ONNX Runtime must match PyTorch over a
multi-chunk stream (|diff| <= 1e-4 + 1e-3 |torch|), else the command fails and writes nothing.
Whole-video models (MS-TCN: no look-ahead bound) export as a stateless graph run once per video.
Needs the `export` extra: pip install -e ".[export]".

--int8 VIDEOS also writes model.int8.onnx (+ model.int8.json) for CPU edge boxes: static INT8
quantisation (ONNX Runtime after its quant_pre_process, QDQ, per-channel int8 weights, asymmetric uint8
activations: `deploy.quantize.Int8Options`) calibrated on the chunks the fp32 graph sees when it runs
VIDEOS (a file or folder; use training videos) chunk by chunk, state carried. The nodes whose
quantisation flips labels stay in float: chosen on VIDEOS alone until the INT8 labels agree with fp32's
on --int8-min-agreement of their frames (default 0.99; cross-fitted, `deploy.int8_search`; needs at
least 2 videos; 0 quantises every node); the chosen nodes and that agreement go into model.int8.json.
--int8-check VIDEOS reports the label agreement of the INT8 graph with the fp32 one on them (held-out
videos), stored as the INT8 metadata's parity.

    streamseg export onnx RUN --int8 data/synth/Videos --int8-check data/synth/Videos
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model (ONNX with explicit streaming state)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    o = formats.add_parser("onnx", help="ONNX graph + metadata JSON", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("model", help="a run directory, or a checkpoint inside <run>/checkpoints/ (default: best)")
    o.add_argument("--out", default=None, help="output .onnx (default: <run>/export/model.onnx)")
    o.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    o.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a saved run parameter (e.g. data.root=/new/path/to/dataset)")
    o.add_argument("--int8", default=None, metavar="VIDEOS",
                   help="also write an INT8 graph calibrated on these videos (a file or folder)")
    o.add_argument("--int8-check", default=None, metavar="VIDEOS",
                   help="measure the INT8 graph's label agreement with fp32 on these videos")
    o.add_argument("--calib-chunks", type=int, default=64,
                   help="chunks of calibration data: a window of ceil(N / videos) consecutive chunks from each "
                        "video, the windows staggered over the videos (default 64)")
    o.add_argument("--int8-min-agreement", type=float, default=0.99, metavar="FRACTION",
                   help="keep the most sensitive nodes in float until the INT8 labels agree with fp32's on this "
                        "fraction of the calibration videos' frames (default 0.99; 0: quantise every node)")
    o.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"error: ONNX export needs the export extra ({e.name} is missing): "
                         "pip install -e '.[export]'") from None
    from ..deploy.infer import video_files
    from ..deploy.int8_search import check_min_agreement
    from ..deploy.onnx_export import ExportError, ParityError, export_trained
    from ..deploy.runtime import DeployMeta
    from ..engine.checkpoint_io import CheckpointError

    if args.int8_check and not args.int8:
        raise SystemExit("error: --int8-check needs --int8 VIDEOS")
    try:
        check_min_agreement(args.int8_min_agreement)
    except ValueError as e:  # "min_agreement: expected a fraction ..." -> the flag's name
        raise SystemExit(f"error: --int8-{str(e).replace('min_agreement', 'min-agreement', 1)}") from None
    try:  # the video lists before the (slow) export
        calib = list(video_files(args.int8)) if args.int8 else []
        check = list(video_files(args.int8_check)) if args.int8_check else []
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    if args.int8 and args.int8_min_agreement > 0 and len(calib) < 2:
        raise SystemExit(f"error: --int8 {args.int8}: choosing the nodes kept in float needs at least 2 "
                         f"calibration videos, got {len(calib)} (or --int8-min-agreement 0)")

    try:
        onnx_path, meta_path, meta, seconds = export_trained(args.model, args.out, check=not args.no_check,
                                                             overrides=args.override)
    except (FileNotFoundError, CheckpointError, ExportError, ParityError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    kind = "streaming step" if meta.streaming else "whole-video graph (no look-ahead bound: run once per video)"
    print(f"wrote {onnx_path} ({kind}, {len(meta.state_shapes)} state tensors, lookahead {meta.lookahead})")
    print(f"wrote {meta_path}")
    if meta.parity is not None:
        print(f"parity: ONNX Runtime vs PyTorch max |diff| {meta.parity['max_abs_diff']:.2e} over chunks "
              f"{meta.parity['chunks']} (tolerance {meta.parity['atol']} + {meta.parity['rtol']} |torch|)")
    if args.int8:
        from ..deploy.quantize import quantize_int8

        try:
            int8_path, int8_meta, report = quantize_int8(onnx_path, calib, chunk=meta.chunk_size or None,
                                                         max_chunks=args.calib_chunks, check_videos=check,
                                                         min_agreement=args.int8_min_agreement)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        print(f"wrote {int8_path} (static INT8, calibrated on {args.int8})")
        search = DeployMeta.from_json(int8_meta).int8_search
        if search is not None:
            print(f"INT8 nodes kept in float: {len(search['float_nodes'])} chosen + {len(search['base'])} "
                  f"(float_prefixes); label agreement with fp32 on the calibration videos (cross-fitted) "
                  f"{100 * search['agreement']:.2f} % of {search['frames']} sampled frames"
                  + ("" if search["reached"] else f", short of {100 * search['min_agreement']:.2f} %"))
        if report is not None:
            print(f"INT8 label agreement with fp32: {100 * report['label_agreement']:.2f} % of "
                  f"{report['frames']} frames ({report['videos']} videos)")
    print(f"took {seconds:.1f} s")
    return 0
