"""ASFormer with the official recipe on 50Salads: `streamseg.config.bases.asformer_paper` as it is
(sample_rate 2 comes from the dataset config, as official).

    streamseg train -D 50salads -M asformer -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import asformer_paper
from streamseg.engine.recipes.asformer import asformer_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    asformer_paper(params)
