"""ASFormer with the official recipe on Breakfast: `streamseg.config.bases.asformer_paper` at lr 1e-4
(official: 1e-4 on Breakfast, 5e-4 elsewhere).

    streamseg train -D breakfast -M asformer -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import asformer_paper
from streamseg.engine.recipes.asformer import asformer_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    asformer_paper(params)
    params.train.lr = 1e-4  # official: 1e-4 on Breakfast, 5e-4 elsewhere
