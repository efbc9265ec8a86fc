"""Shared bases of experiment configs: a function per experiment family sets what its per-dataset configs
share, so each `exp_configs/<dataset>/<model>_<exp>.py` states only its delta (detectron2's LazyConfig
model: a base imported, a few fields changed). Bases live in the package so that a run's snapshot
(`config/exp.py`) still imports them; a run's values are its `params.json` whatever a base says later.

    from streamseg.config.bases import tsm_memtcn_chunk32

    def configure(params):
        tsm_memtcn_chunk32(params)
        params.data.sample_rate = 8  # the dataset's delta
"""

from __future__ import annotations

from .params import RunParams


def tsm_memtcn_chunk32(params: RunParams) -> None:
    """End-to-end streaming TSM-MobileNetV2 + MemoryTCN on raw video (`Videos/<vid>.mp4`), paper-like:
    224x224 frames, chunks of 32 sampled frames (SVTAS's TSM configs), causal shifts and convolutions
    (lookahead 0), gradients through the state over 2 chunks, 2 parallel streams per GPU, 50 epochs of
    Adam at 5e-4, gradient norm clipped at 20 (the TSM reference training script), bf16. The dataset
    config sets `data.sample_rate`."""
    params.data.input = "video"
    params.data.frame_size = (224, 224)
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 2
    params.train.batch_size = 2  # streams per GPU
    params.train.epochs = 50
    params.train.lr = 5e-4
    params.train.grad_clip = 20.0  # the TSM reference training script clips the gradient norm at 20
    params.train.num_workers = 4
    params.train.precision = "bf16-mixed"


def transeger_chunk32(params: RunParams) -> None:
    """`tsm_memtcn_chunk32` for Transeger: the same image branch and training, and the previous chunk's
    labels fed back through the text branch (`model.feedback_delay` follows `train.chunk_size` after the
    overrides: model_configs/transeger.py `derive`; ground truth in training)."""
    tsm_memtcn_chunk32(params)
    params.model.feedback_delay = None


def synth_sete(params: RunParams) -> None:
    """The synthetic videos' SVTAS-objective experiments (`-E svtas`, `-E svtasrl`): 32x32 frames at sample
    rate 2, chunks of 32 sampled frames, SVTAS's SETE schedule (an optimiser step per chunk, the state
    detached every chunk), 4 streams, 12 epochs of Adam at 1e-3."""
    params.data.input = "video"
    params.data.frame_size = (32, 32)
    params.data.sample_rate = 2
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 1  # SETE: one chunk per step
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3
