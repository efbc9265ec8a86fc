"""DiffAct on the synthetic dataset's features, sized to train in about five minutes on a 2-core CPU.

    streamseg train -D synth -M diffact -E quick

The GTEA model (1.2M parameters, 10 + 8 layers, DDIM 25 steps) costs ~2 s per validation video on 2
cores; this one keeps the architecture (mixed conv/attention layers, a cross-attention decoder conditioned
on three encoder layers, the diffusion loss) at half the width and depth, samples with 5 DDIM steps, and
trains faster than the official recipe allows (the official trains ~50k steps): less dropout, lr 2e-3,
2 videos per step, 60 epochs (720 steps: at 20 epochs the sampler was still weak, test Acc 53.7 against
88.9; docs/model_zoo.md). A median filter of 9 frames (as the official 50Salads / Breakfast post-processing)
removes the fragments an under-trained sampler leaves.
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.diffact import diffact_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.model.encoder_layers = 6
    params.model.encoder_maps = 32
    params.model.feature_layers = (3, 4, 5)
    params.model.encoder_dropout = 0.2
    params.model.channel_dropout = 0.1
    params.model.temporal_dropout = 0.1
    params.model.decoder_layers = 4
    params.model.decoder_maps = 16
    params.model.time_emb_dim = 64
    params.model.sampling_steps = 5
    params.model.postprocess = "median"
    params.model.postprocess_size = 9
    params.train.epochs = 60
    params.train.batch_size = 2
    params.train.lr = 2e-3
    params.train.seed = 0
