"""`data.features_dir`: a run reads (and the data check checks) another feature folder of the dataset,
e.g. one written by `streamseg extract`."""

from __future__ import annotations

import shutil

import numpy as np

from streamseg.config import TrainParams
from streamseg.engine.datacheck import run_data_problems
from streamseg.engine.datamodule import FeatureDataModule, TASDatasetParams


def test_features_dir_picks_another_feature_folder(synth_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    (root / "features_small").mkdir()
    for path in (root / "features").glob("*.npy"):
        np.save(root / "features_small" / path.name, np.load(path)[:3])  # D = 3 instead of the shipped D

    dm = FeatureDataModule.from_params(TASDatasetParams(root=str(root), features_dir="features_small"),
                                       TrainParams(), "synth")
    dm.setup()
    assert dm.info.in_channels == 3
    assert FeatureDataModule.from_params(TASDatasetParams(root=str(root)), TrainParams(), "synth").info.in_channels > 3

    assert run_data_problems(root, 1, False, "features_small") == []
    victim = sorted((root / "features_small").glob("*.npy"))[0]
    victim.unlink()
    problems = run_data_problems(root, 1, False, "features_small")
    assert [p.path for p in problems] == [str(victim)]
    assert run_data_problems(root, 1, False) == []  # the default folder is untouched
