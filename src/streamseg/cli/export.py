"""`streamseg export onnx RUN_DIR|CHECKPOINT [--out model.onnx]`: the streaming step as an ONNX graph.

The state tensors are explicit inputs (state_in_i) and outputs (state_out_i); batch and chunk length are
dynamic. A metadata file (model.json: class names, fps, sample rate, input size and normalisation, state
shapes, look-ahead) is written beside it. The export is checked: ONNX Runtime must match PyTorch over a
multi-chunk stream (|diff| <= 1e-4 + 1e-3 |torch|), else the command fails and writes nothing.
Whole-video models (MS-TCN: no look-ahead bound) export as a stateless graph run once per video.
Needs the `export` extra: pip install -e ".[export]".
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
    o.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"error: ONNX export needs the export extra ({e.name} is missing): "
                         "pip install -e '.[export]'") from None
    from ..deploy.onnx_export import ExportError, ParityError, export_trained
    from ..engine.checkpoint_io import CheckpointError

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
    print(f"took {seconds:.1f} s")
    return 0
