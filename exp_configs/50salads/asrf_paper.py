"""ASRF with the official recipe on 50salads: `streamseg.config.bases.asrf_paper` at the dataset
config's sample rate 2 (the official TempDownSamp). A further difference: boundary targets are the label
changes of the subsampled labels (the official moves a boundary at frame i to i // 2).

    streamseg train -D 50salads -M asrf -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import asrf_paper
from streamseg.engine.recipes.asrf import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    asrf_paper(params)
