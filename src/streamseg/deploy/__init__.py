"""Deployment: ONNX export with the streaming state explicit, runtimes, inference on video, benchmarks.

Needs the ``export`` extra (onnx, onnxscript, onnxruntime) for ONNX; those are imported lazily.
"""
