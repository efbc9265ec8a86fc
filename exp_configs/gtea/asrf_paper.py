"""ASRF with the official recipe on gtea: `streamseg.config.bases.asrf_paper` as it is.

    streamseg train -D gtea -M asrf -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import asrf_paper
from streamseg.engine.recipes.asrf import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    asrf_paper(params)
