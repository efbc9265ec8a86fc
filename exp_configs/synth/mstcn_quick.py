"""MS-TCN on the synthetic dataset's features, sized to train in a couple of minutes on a 2-core CPU.

    streamseg train -D synth -M mstcn -E quick

The paper model (4 stages x 10 layers x 64 maps) costs ~28 GFLOP per synthetic epoch (24 videos x ~400
frames x 40 layers x 64*64*3*2 FLOP, x3 for the backward pass): ~20 s an epoch on 2 cores. This recipe
keeps the multi-stage refinement but halves the width: 3 x 8 x 32 is ~8x cheaper.
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.model.num_stages = 3
    params.model.num_layers = 8
    params.model.num_maps = 32
    params.train.epochs = 30
    params.train.batch_size = 4  # videos per step; the paper uses 1, 4 is faster on a CPU
    params.train.lr = 1e-3
    params.train.seed = 0


def search_space(trial) -> dict:
    """`streamseg search -D synth -M mstcn -E quick --trials 20`: learning rate and network size.
    Names of the suggestions are the override keys, so Optuna's tables read like `-o` flags."""
    return {
        "train.lr": trial.suggest_float("train.lr", 1e-4, 1e-2, log=True),
        "model.num_layers": trial.suggest_int("model.num_layers", 4, 10),
        "model.num_maps": trial.suggest_categorical("model.num_maps", [16, 32, 64]),
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5, step=0.1),
    }
