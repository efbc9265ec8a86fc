"""Shared bases of experiment configs: a function per experiment family sets what its per-dataset configs
share, so each `exp_configs/<dataset>/<model>_<exp>.py` states only its delta (detectron2's LazyConfig
model: a base imported, a few fields changed). Bases live in the package so that a run's snapshot
(`config/exp.py`) still imports them; a run's values are its `params.json` whatever a base says later.
A base sets the recipe's values that do not depend on the dataset; the dataset's file sets the rest (the
official per-dataset values) after calling it, and its docstring names what differs.

    from streamseg.config.bases import tsm_memtcn_chunk32

    def configure(params):
        tsm_memtcn_chunk32(params)
        params.data.sample_rate = 8  # the dataset's delta

`tests/config/test_exp_params.py` holds every experiment config to the params it resolved to before it
was rebuilt on these bases.
"""

from __future__ import annotations

from .params import RunParams


# ----------------------------------------------------------------------------------------------------
# the official recipes of the offline models (exp_configs/<dataset>/<model>_paper.py)


def mstcn_paper(params: RunParams) -> None:
    """MS-TCN with the paper's recipe (Farha & Gall, CVPR'19): Adam 5e-4, 50 epochs, one video per step,
    the official seed and training order, the last epoch's weights tested (no validation split: the
    standard TAS splits have none, and selecting on the test split is what inflated several published
    numbers)."""
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.seed = 1538574472  # the official code's seed
    params.train.shuffle = "python"  # the official training order (yabufarha/ms-tcn batch_gen.py)


def mstcn2_paper(params: RunParams) -> None:
    """MS-TCN++ with the official recipe (sj-li/MS-TCN2 train.sh and main.py): `mstcn_paper` for 100
    epochs (MS-TCN's loss: CE + 0.15 truncated MSE), seed 1538574472."""
    mstcn_paper(params)  # the same seed and training order (sj-li/MS-TCN2 batch_gen.py)
    params.train.epochs = 100  # train.sh --num_epochs=100


def asformer_paper(params: RunParams) -> None:
    """ASFormer with the official recipe (ChinaYi/ASFormer main.py, model.py): Adam 5e-4 with weight decay
    1e-5, ReduceLROnPlateau (0.5, patience 3: the `asformer_module` recipe), 120 epochs, one video per
    step, CE + 0.15 truncated MSE on every stage, input channel masking (the model config's 0.3), seed
    19980125, the official training order. The last epoch's weights are tested (the official script tests
    a chosen epoch; no test-set selection here)."""
    params.train.epochs = 120
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-5
    params.train.seed = 19980125  # the official main.py's seed
    params.train.shuffle = "asformer"  # the official training order (ChinaYi/ASFormer batch_gen.py)


def asrf_paper(params: RunParams) -> None:
    """ASRF with the official recipe (yiskw713/asrf libs/config.py, train.py, libs/helper.py): Adam 5e-4,
    no weight decay (libs/optimizer.py gives Adam none; the config's 1e-4 is SGD's), 50 epochs, one video
    per step, seed 0; loss (the model config's defaults, official): per stage CE with median-frequency
    class weights + 1.0 x the Gaussian-similarity T-MSE on the input features, averaged over stages, plus
    0.1 x the boundary BCE with the dataset's positive weight (frames / boundary frames). Evaluated on the
    boundary-refined prediction (the model's `refine`, boundary threshold 0.5; majority-vote ties as
    libs/postprocess.py: `model.tie_rule`).
    Difference: trained on the training split, over which the class weights and pos_weight are counted
    too (the official trains on, and counts over, train + its held-out val)."""
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 0.0  # official Adam: no weight decay (libs/optimizer.py)
    params.model.tie_rule = "official"  # libs/postprocess.py's majority-vote ties
    params.train.seed = 0  # train.py --seed default


def c2ftcn_paper(params: RunParams) -> None:
    """C2F-TCN with the official recipe (dipika-singhania/C2F-TCN train.py, dataset.py, eval.py): Adam,
    500 epochs, each frame the maximum of the features over a group of `data.sample_rate` frames (the
    group's most frequent label in training), seed 42; loss CE + 0.15 truncated MSE on the log of the
    decoder ensemble, the smoothing averaged over whole windows (`c2ftcn_module`). The official
    StepLR(500, 0.5) never fires within 500 epochs and is left out. Evaluation as the official eval.py
    (the published numbers): test-time augmentation over the dataset's group sizes (`data.test_rates`;
    `-o data.test_rates=[]` for the single rate, eval.py's `--compile_result`), so `streamseg test --ckpt
    none -o model.weights=best_<dataset>_unet.wt` gives the official predictions. The dataset's file sets
    the group size, the test group sizes, the window, the batch, lr and weight decay. Training augmentation
    as the official dataset.py: each epoch, half of the training videos re-pooled with a group size drawn
    log-uniformly for a 0.5x to 2x zoom, no crop (`data.zoom_augment`, streamseg.data.zoom).

    Differences: the last epoch's weights are tested (the official keeps the epoch with the best *test*
    accuracy; `train.select_on=test` would be that, and is not used); the shuffle order of the videos and
    the augmentation's random numbers."""
    params.data.pooling = "max"  # official: np.max over each group of chunk_size frames
    params.data.test_rate_weights = ()  # equally weighted test rates unless the dataset says otherwise
    params.data.zoom_augment = True  # official dataset.py: zoom_crop=(0.5, 2), smallest_cut=1.0
    params.train.epochs = 500
    params.train.seed = 42  # the official train.py's seed


def diffact_paper(params: RunParams) -> None:
    """DiffAct with the official recipe (Finspire13/DiffAct default_configs.py, main.py): Adam, 4
    single-video steps accumulated per optimiser step, the count running across epochs as the official
    (`train.accumulate_across_epochs`); DDIM 25 steps, each video's sampling noise seeded with its index in the test split
    (official `set_sampling_seed`); the last epoch's weights are tested (no validation split, no test-set
    selection). The dataset's file sets its `params_<dataset>` values (sizes, losses, post-processing,
    epochs, lr, weight decay)."""
    params.model.seed_by_video_index = True  # official: seed = the video's index in the test list
    # official main.py: one video per step, 4 steps accumulated, the count running across epochs
    params.train.batch_size = 1
    params.train.accumulate = 4
    params.train.accumulate_across_epochs = True
    params.train.val_every = 100  # official log_freq (only used with a validation split)


# ----------------------------------------------------------------------------------------------------
# end-to-end streaming on the real datasets' raw video (exp_configs/<dataset>/*_chunk32.py)


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


# ----------------------------------------------------------------------------------------------------
# the synthetic videos' end-to-end experiments (exp_configs/synth/*_chunk*.py, *_svtas*.py)


def synth_chunk32(params: RunParams) -> None:
    """End-to-end streaming on the synthetic videos, small enough to train on a CPU in minutes: 32x32
    frames (the videos are 64x64; 32x32 costs ~4x less) at sample rate 2 (15 fps -> 7.5 fps seen by the
    model), chunks of 32 sampled frames, gradients through the state over 2 chunks, 4 parallel streams,
    12 epochs of Adam at 1e-3."""
    params.data.input = "video"
    params.data.frame_size = (32, 32)
    params.data.sample_rate = 2
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 2
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3


def synth_sete(params: RunParams) -> None:
    """The synthetic videos' SVTAS-objective experiments (`-E svtas`, `-E svtasrl`): `synth_chunk32` with
    SVTAS's SETE schedule (an optimiser step per chunk, the state detached every chunk)."""
    synth_chunk32(params)
    params.train.tbptt_chunks = 1  # SETE: one chunk per step
